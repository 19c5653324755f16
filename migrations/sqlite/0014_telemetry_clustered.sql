-- Telemetry samples and rollups clustered by their key (SQLite only; PostgreSQL keeps 0010's
-- tables). As rowid tables each row lived twice, in the table and in its primary-key index,
-- and a read of one series' range looked every row up by rowid; WITHOUT ROWID keeps the rows
-- in key order, so a series' range is one contiguous read and an insert writes one b-tree.
-- The time-only indexes go too: retention is an hourly scan, and SQLite (without ANALYZE)
-- preferred them to the key for the range reads, reading every series of a time range.

CREATE TABLE telemetry_samples_new (
    org           TEXT    NOT NULL,
    series_id     BIGINT  NOT NULL,
    ts_ms         BIGINT  NOT NULL,
    value         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (org, series_id, ts_ms)
) WITHOUT ROWID;
INSERT INTO telemetry_samples_new SELECT org, series_id, ts_ms, value FROM telemetry_samples;
DROP TABLE telemetry_samples;
ALTER TABLE telemetry_samples_new RENAME TO telemetry_samples;

CREATE TABLE telemetry_rollups_new (
    org           TEXT    NOT NULL,
    series_id     BIGINT  NOT NULL,
    resolution_ms BIGINT  NOT NULL,
    bucket_ms     BIGINT  NOT NULL,
    min_v         DOUBLE PRECISION NOT NULL,
    max_v         DOUBLE PRECISION NOT NULL,
    sum_v         DOUBLE PRECISION NOT NULL,
    count_v       BIGINT  NOT NULL,
    last_ts_ms    BIGINT  NOT NULL,
    last_v        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (org, series_id, resolution_ms, bucket_ms)
) WITHOUT ROWID;
INSERT INTO telemetry_rollups_new
    SELECT org, series_id, resolution_ms, bucket_ms, min_v, max_v, sum_v, count_v, last_ts_ms,
           last_v FROM telemetry_rollups;
DROP TABLE telemetry_rollups;
ALTER TABLE telemetry_rollups_new RENAME TO telemetry_rollups;

-- Telemetry from users' agents (embedded column; production keeps these in ClickHouse):
-- series (a metric name plus sorted labels, per org), raw samples, 1m/5m/1h rollups
-- recomputed from their source as data arrives, and log lines. Every key starts with the
-- org, so one tenant's rows are never read for another. Sample times are unix
-- milliseconds (Prometheus' resolution), log times unix nanoseconds.

CREATE TABLE telemetry_series (
    org           TEXT    NOT NULL,
    series_id     BIGINT  NOT NULL,                    -- hash of the sorted labels
    name          TEXT    NOT NULL,                    -- __name__
    labels        TEXT    NOT NULL,                    -- JSON object, __name__ included
    created_at    BIGINT  NOT NULL,                    -- unix microseconds
    PRIMARY KEY (org, series_id)
);
CREATE INDEX telemetry_series_name ON telemetry_series (org, name);

CREATE TABLE telemetry_samples (
    org           TEXT    NOT NULL,
    series_id     BIGINT  NOT NULL,
    ts_ms         BIGINT  NOT NULL,
    value         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (org, series_id, ts_ms)
);
CREATE INDEX telemetry_samples_ts ON telemetry_samples (ts_ms);

CREATE TABLE telemetry_rollups (
    org           TEXT    NOT NULL,
    series_id     BIGINT  NOT NULL,
    resolution_ms BIGINT  NOT NULL,                    -- 60000, 300000, 3600000
    bucket_ms     BIGINT  NOT NULL,                    -- start of the bucket
    min_v         DOUBLE PRECISION NOT NULL,
    max_v         DOUBLE PRECISION NOT NULL,
    sum_v         DOUBLE PRECISION NOT NULL,
    count_v       BIGINT  NOT NULL,
    last_ts_ms    BIGINT  NOT NULL,
    last_v        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (org, series_id, resolution_ms, bucket_ms)
);
CREATE INDEX telemetry_rollups_bucket ON telemetry_rollups (resolution_ms, bucket_ms);

CREATE TABLE telemetry_logs (
    org           TEXT    NOT NULL,
    line_id       BIGINT  NOT NULL,                    -- hash of time, stream and line
    ts_ns         BIGINT  NOT NULL,
    service       TEXT    NOT NULL,
    level         TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    labels        TEXT    NOT NULL,                    -- JSON object
    attributes    TEXT    NOT NULL,                    -- JSON object or ''
    PRIMARY KEY (org, line_id)
);
CREATE INDEX telemetry_logs_time ON telemetry_logs (org, ts_ns, line_id);

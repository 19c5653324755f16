-- Whole-metric rollups: per org, metric name, resolution and bucket, the sum, count, min and
-- max of the `last` values of every series of that name (what `sum(metric)` and its kin read
-- at each step), so such a query reads one row per step instead of one per series and step.
-- The telemetry writer only marks a bucket it touched (`version` + 1); the values are
-- recomputed from telemetry_rollups later, by a background settler or by the first query
-- that needs them, and are valid only while `settled = version`. `min_age_ms` is the
-- smallest `last_ts_ms - bucket_ms` among the series: a query whose lookback excludes a
-- series' last sample (an age at or below its freshness bound) cannot use the row.
-- A bucket has a row exactly when some series of the metric has that rollup bucket.

CREATE TABLE telemetry_metric_rollups (
    org           TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    resolution_ms BIGINT  NOT NULL,
    bucket_ms     BIGINT  NOT NULL,
    version       BIGINT  NOT NULL,
    settled       BIGINT  NOT NULL,
    sum_v         DOUBLE PRECISION NOT NULL,
    count_v       BIGINT  NOT NULL,
    min_v         DOUBLE PRECISION NOT NULL,
    max_v         DOUBLE PRECISION NOT NULL,
    min_age_ms    BIGINT  NOT NULL,
    PRIMARY KEY (org, name, resolution_ms, bucket_ms)
);
-- The settler's work queue: only rows whose values are stale.
CREATE INDEX telemetry_metric_rollups_stale ON telemetry_metric_rollups (org, name, resolution_ms)
    WHERE settled <> version;

-- Existing rollups get their rows, stale, so they are settled like new ones.
INSERT INTO telemetry_metric_rollups
    SELECT r.org, s.name, r.resolution_ms, r.bucket_ms, 1, 0, 0, 0, 0, 0, 0
    FROM telemetry_rollups r JOIN telemetry_series s ON s.org = r.org AND s.series_id = r.series_id
    GROUP BY r.org, s.name, r.resolution_ms, r.bucket_ms;

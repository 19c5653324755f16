-- The probe and the status page: the probe's lease (one probe runs at a time across
-- instances), its runs (round trips; kept two days), and per-day counts of each component's
-- observed states (the uptime bars; kept probe.history_days). Times are unix microseconds.

CREATE TABLE probe_lease (
    name          TEXT    PRIMARY KEY,
    owner         TEXT    NOT NULL,                    -- the instance holding it
    expires_at    BIGINT  NOT NULL
);

CREATE TABLE probe_runs (
    id            BIGSERIAL PRIMARY KEY,
    probe_id      TEXT    NOT NULL UNIQUE,             -- the probe event's payload id
    instance      TEXT    NOT NULL,                    -- the instance that sent it
    sent_at       BIGINT  NOT NULL,
    projected_at  BIGINT,                              -- when the probe projection applied it
    finished_at   BIGINT,
    outcome       TEXT    NOT NULL,                    -- pending | ok | timeout | append_failed
    round_trip_us BIGINT
);
CREATE INDEX probe_runs_sent ON probe_runs (sent_at);

CREATE TABLE status_daily (
    component     TEXT    NOT NULL,
    day           BIGINT  NOT NULL,                    -- days since 1970-01-01 (UTC)
    operational_n BIGINT  NOT NULL,                    -- evaluations in each state that day
    degraded_n    BIGINT  NOT NULL,
    down_n        BIGINT  NOT NULL,
    PRIMARY KEY (component, day)
);

-- Alert rules (src/alerts/rules): the rules per org, the durable state of each pending or
-- firing alert, the never-reused transition numbers per alert, and the history of every
-- transition. A transition writes its state row, its history row and its outbox event in one
-- transaction (fenced by the shard lease), so a restart neither re-fires nor loses one.

CREATE TABLE alert_rules (
    org           TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    source        TEXT    NOT NULL,                    -- api, file, builtin
    spec          TEXT    NOT NULL,                    -- the rule as JSON (its API shape)
    created_at    BIGINT  NOT NULL,                    -- unix microseconds
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (org, name)
);

-- Alerts that are pending or firing, one row per alert (org, rule, label set). A resolved
-- alert (or a pending one that cleared) leaves the table.
CREATE TABLE alert_state (
    fingerprint   TEXT    PRIMARY KEY,                 -- hash of org, rule, sorted labels
    org           TEXT    NOT NULL,
    rule          TEXT    NOT NULL,
    state         TEXT    NOT NULL,                    -- pending, firing
    labels        TEXT    NOT NULL,                    -- JSON object, alertname included
    annotations   TEXT    NOT NULL,                    -- JSON object, templates expanded
    severity      TEXT    NOT NULL,
    targets       TEXT    NOT NULL,                    -- JSON array of target names
    public        BOOLEAN NOT NULL,
    value         DOUBLE PRECISION,
    active_since  BIGINT  NOT NULL,                    -- unix ms: the condition first held
    fired_at      BIGINT,                              -- unix ms: it started firing
    last_true_at  BIGINT  NOT NULL                     -- unix ms: the condition last held
);
CREATE INDEX alert_state_rule ON alert_state (org, rule);

-- The last transition number of each alert, kept after it resolves, so a refiring alert's
-- sequence goes on and never repeats.
CREATE TABLE alert_sequences (
    fingerprint   TEXT    PRIMARY KEY,
    last_seq      BIGINT  NOT NULL
);

-- Every transition, in the same transaction as its state change and its event.
CREATE TABLE alert_history (
    id            BIGSERIAL PRIMARY KEY,
    transition_id TEXT    NOT NULL UNIQUE,             -- the event's id (UUIDv7)
    org           TEXT    NOT NULL,
    rule          TEXT    NOT NULL,
    fingerprint   TEXT    NOT NULL,
    sequence      BIGINT  NOT NULL,
    from_state    TEXT    NOT NULL,
    to_state      TEXT    NOT NULL,
    at_ms         BIGINT  NOT NULL,
    value         DOUBLE PRECISION,
    severity      TEXT    NOT NULL,
    labels        TEXT    NOT NULL,
    annotations   TEXT    NOT NULL
);
CREATE INDEX alert_history_org ON alert_history (org, id);
CREATE INDEX alert_history_rule ON alert_history (org, rule, id);

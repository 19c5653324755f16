-- Alert notifications (the alerts role's `alert-notifications` group and its sender):
-- webhook targets managed per org through the admin API, one delivery row per (transition,
-- target) written in the consumer's transaction, and the notifications the sender forms from
-- them (several deliveries of one rule and target, at most one per alert) and POSTs, retried
-- with backoff and dead-lettered. Times are unix microseconds.

CREATE TABLE alert_targets (
    org             TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    secret          TEXT    NOT NULL,                  -- whsec_<base64>, never answered on reads
    rate_per_minute DOUBLE PRECISION NOT NULL,
    burst           BIGINT  NOT NULL,
    timeout_ms      BIGINT  NOT NULL,
    headers         TEXT    NOT NULL DEFAULT '{}',     -- JSON object of extra request headers
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    PRIMARY KEY (org, name)
);

CREATE TABLE alert_notifications (
    id              BIGSERIAL PRIMARY KEY,
    webhook_id      TEXT    NOT NULL,                  -- stable across retries
    org             TEXT    NOT NULL,
    rule            TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    body            TEXT    NOT NULL,                  -- the exact JSON sent on every attempt
    state           TEXT    NOT NULL,                  -- pending | delivered | dead
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_at         BIGINT  NOT NULL,                  -- when the next attempt is due
    last_error      TEXT,
    claimed_by      TEXT,
    claimed_until   BIGINT,
    claim_epoch     BIGINT  NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    delivered_at    BIGINT,
    UNIQUE (org, target, webhook_id)
);
CREATE INDEX alert_notifications_due ON alert_notifications (state, org, target, next_at);

CREATE TABLE alert_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    transition_id   TEXT    NOT NULL,
    org             TEXT    NOT NULL,
    rule            TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    sequence        BIGINT  NOT NULL,
    status          TEXT    NOT NULL,                  -- the transition's `to`
    transition      TEXT    NOT NULL,                  -- the event's payload (JSON)
    state           TEXT    NOT NULL,                  -- pending | delivered | dead
    reason          TEXT,                              -- why dead: unknown_target, the last error
    notification_id BIGINT  REFERENCES alert_notifications (id),
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    UNIQUE (transition_id, target),
    UNIQUE (org, target, rule, fingerprint, sequence)  -- a repeated transition is not sent again
);
CREATE INDEX alert_deliveries_ungrouped ON alert_deliveries (org, target, state, notification_id);
CREATE INDEX alert_deliveries_notification ON alert_deliveries (notification_id);

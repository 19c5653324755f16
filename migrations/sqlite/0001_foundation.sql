-- Foundation: the outbox (the log in embedded mode), idempotency records, API keys,
-- webhook message ids and the built-in schema registry. Times are unix microseconds.

CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- the log offset in embedded mode
    event_id      TEXT    NOT NULL,                    -- UUIDv7 (a redriven event reappears under its id)
    topic         TEXT    NOT NULL,
    event_key     TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    schema_id     BIGINT  NOT NULL,
    payload       BLOB    NOT NULL,                    -- Confluent wire format: 0, id, Avro
    headers       TEXT    NOT NULL,                    -- JSON object: ce_*, traceparent, …
    lane          BIGINT  NOT NULL,                    -- hash(key) mod relay lanes
    created_at    BIGINT  NOT NULL,
    published_at  BIGINT                               -- set when the broker acknowledged
);
CREATE INDEX outbox_event_id ON outbox (event_id);
CREATE INDEX outbox_topic_id ON outbox (topic, id);
CREATE INDEX outbox_pending ON outbox (lane, id) WHERE published_at IS NULL;
CREATE INDEX outbox_created ON outbox (created_at);

CREATE TABLE idempotency_keys (
    principal     TEXT    NOT NULL,
    idem_key      TEXT    NOT NULL,
    fingerprint   TEXT    NOT NULL,                    -- sha256 of route + body
    response      TEXT    NOT NULL,                    -- the JSON answer given the first time
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (principal, idem_key)
);
CREATE INDEX idempotency_created ON idempotency_keys (created_at);

CREATE TABLE api_keys (
    id            TEXT    PRIMARY KEY,                 -- short public id (key prefix)
    name          TEXT    NOT NULL UNIQUE,
    key_hash      TEXT    NOT NULL UNIQUE,             -- sha256 of the whole key
    scopes        TEXT    NOT NULL,                    -- space separated
    created_at    BIGINT  NOT NULL,
    revoked_at    BIGINT
);

CREATE TABLE webhook_messages (
    webhook       TEXT    NOT NULL,
    msg_id        TEXT    NOT NULL,
    received_at   BIGINT  NOT NULL,
    PRIMARY KEY (webhook, msg_id)
);
CREATE INDEX webhook_messages_received ON webhook_messages (received_at);

CREATE TABLE registry_schemas (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,   -- the Confluent schema id
    fingerprint   TEXT    NOT NULL UNIQUE,
    schema_text   TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE registry_versions (
    subject       TEXT    NOT NULL,
    version       BIGINT  NOT NULL,
    schema_id     BIGINT  NOT NULL REFERENCES registry_schemas (id),
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (subject, version)
);

CREATE TABLE registry_config (
    subject       TEXT    PRIMARY KEY,                 -- '' is the global level
    compatibility TEXT    NOT NULL
);

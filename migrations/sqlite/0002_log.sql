-- The event log and consumer runtime: inbox (dedup per consumer group), embedded-log offsets
-- and leases, replay requests, dead letters, and the first projection (notifications).

CREATE TABLE inbox (
    group_name    TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    processed_at  BIGINT  NOT NULL,
    PRIMARY KEY (group_name, event_id)
);
CREATE INDEX inbox_processed ON inbox (processed_at);

CREATE TABLE consumer_offsets (
    group_name    TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    partition_no  BIGINT  NOT NULL,
    next_offset   BIGINT  NOT NULL,                    -- the next offset to read
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (group_name, topic, partition_no)
);

CREATE TABLE consumer_leases (
    group_name    TEXT    PRIMARY KEY,
    owner         TEXT    NOT NULL,
    expires_at    BIGINT  NOT NULL
);

CREATE TABLE consumer_seeks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name    TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    mode          TEXT    NOT NULL,                    -- beginning | offset | time
    position      BIGINT  NOT NULL,                    -- offset, or unix micros for time
    rebuild       BOOLEAN NOT NULL,                    -- truncate the read model and forget the inbox
    requested_at  BIGINT  NOT NULL,
    applied_at    BIGINT
);
CREATE INDEX consumer_seeks_group ON consumer_seeks (group_name, id);

CREATE TABLE dead_letters (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT    NOT NULL,
    group_name    TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    partition_no  BIGINT  NOT NULL,
    log_offset    BIGINT  NOT NULL,
    event_key     TEXT,
    payload       BLOB    NOT NULL,
    headers       TEXT    NOT NULL,
    error         TEXT    NOT NULL,
    attempts      BIGINT  NOT NULL,
    failed_at     BIGINT  NOT NULL,
    redriven_at   BIGINT
);
CREATE INDEX dead_letters_open ON dead_letters (group_name, failed_at) WHERE redriven_at IS NULL;
CREATE INDEX dead_letters_topic ON dead_letters (topic, failed_at);

CREATE TABLE notifications (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,   -- the stream cursor
    event_id      TEXT    NOT NULL UNIQUE,
    user_id       TEXT    NOT NULL,                    -- whose event it is (the sender)
    event_type    TEXT    NOT NULL,                    -- identity.login, user.message, media.upload_ready, …
    payload       TEXT    NOT NULL,                    -- JSON
    visibility    TEXT    NOT NULL,                    -- private | broadcast | direct
    recipient_id  TEXT,
    event_time    BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL
);
CREATE INDEX notifications_user ON notifications (user_id, id);
CREATE INDEX notifications_recipient ON notifications (recipient_id, id);
CREATE INDEX notifications_visibility ON notifications (visibility, id);

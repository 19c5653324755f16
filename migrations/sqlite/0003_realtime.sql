-- Realtime and read models: per-user stats, per-minute event counts by topic and type,
-- projection snapshots and the key that signs stream tokens. Times are unix microseconds.
-- (Streams in this process are woken in-process; SQLite has no NOTIFY.)

CREATE TABLE user_stats (
    user_id         TEXT    PRIMARY KEY,
    first_login_at  BIGINT,                            -- earliest login time seen
    last_login_at   BIGINT,                            -- latest login time seen
    messages_sent   BIGINT  NOT NULL,
    first_event_at  BIGINT  NOT NULL,                  -- event times, not processing times,
    last_event_at   BIGINT  NOT NULL                   -- so a replay reproduces the row
);

CREATE TABLE user_event_counts (
    user_id       TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,                    -- ce_type, e.g. identity.login.events
    count         BIGINT  NOT NULL,
    PRIMARY KEY (user_id, event_type)
);

CREATE TABLE event_counts (
    topic         TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    minute        BIGINT  NOT NULL,                    -- start of the event-time minute
    count         BIGINT  NOT NULL,
    PRIMARY KEY (topic, event_type, minute)
);
CREATE INDEX event_counts_minute ON event_counts (minute);

CREATE TABLE projection_snapshots (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name    TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    positions     TEXT    NOT NULL,                    -- JSON: the group's committed positions
    inbox         TEXT    NOT NULL,                    -- JSON: event ids applied at the cut
    data          TEXT    NOT NULL,                    -- JSON: the read model's tables
    row_count     BIGINT  NOT NULL
);
CREATE INDEX projection_snapshots_group ON projection_snapshots (group_name, id);

CREATE TABLE realtime_keys (
    name          TEXT    PRIMARY KEY,
    secret        TEXT    NOT NULL,                    -- hex HMAC key shared by every instance
    created_at    BIGINT  NOT NULL
);

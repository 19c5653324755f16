-- Media sagas and the credit economy: credit accounts with an append-only ledger, the upload
-- saga's state, the files read model (soft delete), and durable saga timers.
-- Times are unix microseconds.

CREATE TABLE credit_accounts (
    user_id       TEXT    PRIMARY KEY,
    balance       BIGINT  NOT NULL CHECK (balance >= 0),
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);

CREATE TABLE credit_ledger (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       TEXT    NOT NULL,
    request_id    TEXT    NOT NULL,                    -- the upload request ('account' for the grant)
    kind          TEXT    NOT NULL,                    -- grant | charge | refund
    amount        BIGINT  NOT NULL,                    -- signed change of the balance
    balance_after BIGINT  NOT NULL,
    reason        TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    UNIQUE (user_id, request_id, kind)                 -- one charge and one refund per request
);
CREATE INDEX credit_ledger_user ON credit_ledger (user_id, id);

CREATE TABLE media_uploads (
    request_id      TEXT    PRIMARY KEY,
    user_id         TEXT    NOT NULL,
    file_name       TEXT    NOT NULL,
    media_type      TEXT    NOT NULL,
    file_size       BIGINT  NOT NULL,                  -- declared by the client
    upload_path     TEXT    NOT NULL,                  -- uploads/{user}/{request_id}/{file_name}
    file_path       TEXT    NOT NULL,                  -- files/{user}/{request_id}/{file_name}
    state           TEXT    NOT NULL,                  -- approved | signed | received | confirmed | rejected | expired | dead_lettered
    reason          TEXT,
    upload_url      TEXT,
    url_expires_at  BIGINT,
    move_attempts   BIGINT  NOT NULL DEFAULT 0,        -- failed move attempts so far
    traceparent     TEXT,                              -- the intent's trace, continued by timers
    correlation_id  TEXT,
    started_at      BIGINT  NOT NULL,                  -- when the intent was accepted
    updated_at      BIGINT  NOT NULL,
    finished_at     BIGINT,
    head_checked_at BIGINT
);
CREATE INDEX media_uploads_user ON media_uploads (user_id, started_at);
CREATE INDEX media_uploads_state ON media_uploads (state, head_checked_at);

CREATE TABLE media_files (
    file_path     TEXT    PRIMARY KEY,                 -- files/{user}/{request_id}/{file_name}
    user_id       TEXT    NOT NULL,
    request_id    TEXT    NOT NULL UNIQUE,
    file_name     TEXT    NOT NULL,
    media_type    TEXT    NOT NULL,
    file_size     BIGINT  NOT NULL,                    -- as stored
    status        TEXT    NOT NULL,                    -- active | deleted
    created_at    BIGINT  NOT NULL,
    deleted_at    BIGINT
);
CREATE INDEX media_files_user ON media_files (user_id, status, created_at);

CREATE TABLE saga_timers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL,                    -- upload_ttl | upload_move | remove_object
    request_id    TEXT    NOT NULL,
    fire_at       BIGINT  NOT NULL,
    attempts      BIGINT  NOT NULL DEFAULT 0,
    payload       TEXT    NOT NULL DEFAULT '{}',       -- JSON
    claimed_by    TEXT,                                -- the instance working on it
    claimed_until BIGINT,                              -- its lease
    created_at    BIGINT  NOT NULL,
    UNIQUE (kind, request_id)
);
CREATE INDEX saga_timers_due ON saga_timers (fire_at);

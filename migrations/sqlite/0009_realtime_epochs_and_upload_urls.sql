-- Realtime epochs and single-use upload URLs.
--
-- `read_model_epochs`: the epoch of a read model whose ids restart when it is rebuilt. The
-- notifications projection moves it on every reset (`replay --rebuild`, snapshot restore) in
-- the reset's own transaction; realtime cursors carry it (`<epoch>:<id>`), so a client whose
-- cursor belongs to an older epoch is told to reset instead of being silently shifted.
-- Cursors from before this migration (plain ids) belong to the initial epoch 1.
--
-- `blob_put_claims`: one row per substrate-signed PUT URL (local backend) that has been used
-- or is being used, keyed by the URL's signature, so a URL uploads once. Rows whose URL has
-- expired are deleted (the signature check refuses those URLs anyway).
--
-- `media_uploads_upload_path`: the blob endpoint and upload detection look sagas up by key.

CREATE TABLE read_model_epochs (
    model         TEXT    PRIMARY KEY,                 -- 'notifications'
    epoch         BIGINT  NOT NULL,                    -- 1, then + 1 on every reset
    changed_at    BIGINT  NOT NULL                     -- unix microseconds (0: never reset)
);
INSERT INTO read_model_epochs (model, epoch, changed_at) VALUES ('notifications', 1, 0);

CREATE TABLE blob_put_claims (
    signature     TEXT    PRIMARY KEY,                 -- the URL's HMAC (hex)
    object_key    TEXT    NOT NULL,
    state         TEXT    NOT NULL,                    -- writing | used
    writer        TEXT    NOT NULL,                    -- the request holding a `writing` claim
    claimed_at    BIGINT  NOT NULL,                    -- unix microseconds
    url_expires   BIGINT  NOT NULL                     -- the URL's expiry, unix seconds
);
CREATE INDEX blob_put_claims_expiry ON blob_put_claims (url_expires);

CREATE INDEX media_uploads_upload_path ON media_uploads (upload_path);

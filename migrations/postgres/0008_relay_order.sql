-- Relay order under failure, and consumer robustness.
--
-- Outbox rows carry their key's hash. The relay derives a row's lane at read time from it and
-- the lane count kept in `relay_layout` (seeded from `log.relay_lanes` by the first relay, then
-- changed only by `substrate relay set-lanes`), so a changed setting can neither strand rows in
-- lanes that no longer exist nor split a key over two lanes. Rows written before this
-- migration have no hash yet; the relay fills it in. The `lane` column is no longer read.
ALTER TABLE outbox ADD COLUMN key_hash BIGINT;
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_unhashed ON outbox (id) WHERE published_at IS NULL AND key_hash IS NULL;

CREATE TABLE relay_layout (
    id            BIGINT  PRIMARY KEY,                 -- always 1
    lanes         BIGINT  NOT NULL,
    changed_at    BIGINT  NOT NULL
);

-- Rows the relay cannot send (too large for the producer, or refused by the broker again and
-- again). While a row is parked, the later rows of its key (topic + event key) wait; an
-- operator redrives it (the relay tries again) or discards it (marked done without sending).
CREATE TABLE relay_parked (
    id            BIGSERIAL PRIMARY KEY,
    outbox_id     BIGINT  NOT NULL,
    event_id      TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    event_key     TEXT    NOT NULL,
    error         TEXT    NOT NULL,
    attempts      BIGINT  NOT NULL,
    parked_at     BIGINT  NOT NULL,
    resolved_at   BIGINT,
    resolution    TEXT                                 -- redriven | discarded
);
CREATE UNIQUE INDEX relay_parked_open ON relay_parked (topic, event_key) WHERE resolved_at IS NULL;

-- One dead letter per group and event: a write repeated after a failed offset commit is a
-- no-op. Duplicates written before this migration are dropped (an open one is kept over a
-- redriven one, then the latest).
DELETE FROM dead_letters WHERE EXISTS (
    SELECT 1 FROM dead_letters d
    WHERE d.group_name = dead_letters.group_name
      AND d.event_id = dead_letters.event_id
      AND ((d.redriven_at IS NULL AND dead_letters.redriven_at IS NOT NULL)
           OR ((d.redriven_at IS NULL) = (dead_letters.redriven_at IS NULL) AND d.id > dead_letters.id))
);
CREATE UNIQUE INDEX dead_letters_event ON dead_letters (group_name, event_id);

-- Fenced leases (src/store/lease.rs): one table for every "one holder at a time" — embedded
-- consumer groups (`consumer.{group}`), relay lanes (`relay.lane.{n}`) and the probe
-- (`probe`). Expiry is measured on the database's clock. `epoch` grows with every grant to a
-- new holder and is checked by every write made under the lease, so a stale holder's write is
-- refused. Rows are never deleted (a release only expires them), so epochs never go back.
-- Live members of a scope (relays splitting the lanes) announce themselves in
-- `lease_members`. Saga timers keep their per-row claims, now with an epoch of their own.
-- The tables this replaces are dropped: their leases are plain rows that lapse within
-- seconds, and a process of the previous release keeps nothing in them worth keeping.
-- Times are unix microseconds.

CREATE TABLE leases (
    name          TEXT    PRIMARY KEY,
    owner         TEXT    NOT NULL,                    -- the holder (kept after a release)
    epoch         BIGINT  NOT NULL,                    -- +1 on every grant to a new holder
    expires_at    BIGINT  NOT NULL,                    -- database clock; 0 = released
    granted_at    BIGINT  NOT NULL                     -- when this holder got it
);

CREATE TABLE lease_members (
    scope         TEXT    NOT NULL,
    owner         TEXT    NOT NULL,
    expires_at    BIGINT  NOT NULL,
    PRIMARY KEY (scope, owner)
);

-- +1 on every claim and every re-arm; completing a timer checks it.
ALTER TABLE saga_timers ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT 0;

DROP TABLE consumer_leases;
DROP TABLE relay_leases;
DROP TABLE relay_members;
DROP TABLE probe_lease;

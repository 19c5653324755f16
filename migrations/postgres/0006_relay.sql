-- The Kafka relay: outbox lanes (hash of the key) are leased by relay instances, so one lane
-- (and so one key) is published by one instance at a time, in id order. Members announce
-- themselves so instances can split the lanes fairly. Times are unix microseconds.

CREATE TABLE relay_members (
    owner         TEXT    PRIMARY KEY,
    expires_at    BIGINT  NOT NULL
);

CREATE TABLE relay_leases (
    lane          BIGINT  PRIMARY KEY,
    owner         TEXT    NOT NULL,
    expires_at    BIGINT  NOT NULL
);

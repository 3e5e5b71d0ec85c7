-- Federation transactions, both ways.

-- What waits to be sent to each destination, in order (`id`). Rows leave when a transaction
-- holding them was accepted; a restart resumes from here.
CREATE TABLE federation_outbox (
    id BIGSERIAL PRIMARY KEY,
    destination TEXT NOT NULL,
    -- 'pdu' or 'edu'
    kind TEXT NOT NULL CHECK (kind IN ('pdu', 'edu')),
    -- The PDU or EDU as JSON.
    body TEXT NOT NULL,
    queued_ts BIGINT NOT NULL
);
-- A destination's next batch, oldest first.
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, kind, id);

-- Each destination's retry state and who sends to it. A process sends to a destination only while
-- it holds the lease (`lease_owner` until `lease_until_ts`), taken with FOR UPDATE SKIP LOCKED: one
-- transaction in flight per destination across every process on the database; a process that dies
-- loses the lease when it runs out and another takes over.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    -- No attempt before this time (ms); 0: now.
    retry_at_ts BIGINT NOT NULL DEFAULT 0,
    -- The last wait, doubled on each failure up to a cap; 0 after a success.
    retry_interval_ms BIGINT NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until_ts BIGINT NOT NULL DEFAULT 0
);

-- Transactions received, per origin and transaction ID: a retried transaction is answered from
-- here. (PDUs and EDUs are not applied yet: that is the next stage.)
CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    -- The answer given, as JSON.
    response TEXT NOT NULL,
    pdu_count INTEGER NOT NULL,
    edu_count INTEGER NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- The outbound federation queue, durable and bounded (issue #19).

-- A local event in a room shared with other servers is queued in the statement that stores it
-- (store::events::insert_batch), so a committed event is never lost between the commit and the
-- queue. Such a row names the event by its stream position and the PDU is read from `events` when
-- the transaction is built: a queued PDU costs one small row per destination, not a copy of the
-- event. (Rows queued before this migration keep their body; an event purged before it was sent
-- is skipped.)
ALTER TABLE federation_outbox ALTER COLUMN body DROP NOT NULL;
ALTER TABLE federation_outbox ADD COLUMN stream_ordering BIGINT;
-- An EDU that a newer one makes pointless (a user's typing notice in a room, their read receipt
-- there) carries a key: queueing another with the same key for the same destination replaces it
-- (and moves it to the end of the queue), so the EDUs waiting for a server that is down stay
-- bounded by its rooms and their users instead of growing with time.
ALTER TABLE federation_outbox ADD COLUMN edu_key TEXT;
ALTER TABLE federation_outbox ADD CONSTRAINT federation_outbox_has_body
    CHECK (body IS NOT NULL OR (kind = 'pdu' AND stream_ordering IS NOT NULL));
-- The replacement above (ON CONFLICT).
CREATE UNIQUE INDEX federation_outbox_edu_key ON federation_outbox (destination, edu_key)
    WHERE edu_key IS NOT NULL;

-- Received transactions are remembered for a day (a sender retries within minutes, then backs
-- off), then pruned by the maintenance task: this index finds the old ones.
CREATE INDEX federation_inbound_txns_received ON federation_inbound_txns (received_ts);

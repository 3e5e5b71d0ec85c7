-- Sliding sync (MSC4186, issue #20): what each connection has been sent, kept in the database so a
-- `pos` survives a restart and works on every process sharing it.

-- One row per position handed out to a connection (user, device, conn_id). The row's `pos` is the
-- token the client sends back; the row says how far the client has everything: the room-event stream
-- position and typing clock the response covered, and per room what it was sent (`rooms`: room ID →
-- {"at": stream position up to which the client has the room, "m": the membership it was sent
-- with, "tl": timeline_limit, "rs": required_state}). Only a few rows are kept per connection (the
-- one in use and the newest ones after it, so a retried request still finds its `pos`), and
-- connections unused for a week are dropped.
CREATE TABLE sliding_sync_positions (
    pos BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    stream_position BIGINT NOT NULL,
    typing BIGINT NOT NULL,
    rooms JSONB NOT NULL,
    -- Last time the position was created or used (touched at most hourly): expiry.
    last_used_ts BIGINT NOT NULL
);
-- A connection's positions, for lookup and for pruning all but the newest.
CREATE INDEX sliding_sync_positions_conn ON sliding_sync_positions (user_id, device_id, conn_id, pos);
-- Expiry of unused connections.
CREATE INDEX sliding_sync_positions_used ON sliding_sync_positions (last_used_ts);

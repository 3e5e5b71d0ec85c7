-- Spaces.

-- Pagination sessions of GET /rooms/{roomId}/hierarchy. The walk of a space tree is depth-first;
-- a page ends where the limit is reached, and what is left of the walk (the queue of rooms still to
-- visit, and the rooms already visited) is kept here under the random token handed out as
-- `next_batch`, so that the next page goes on from exactly there whatever changed in the rooms
-- meanwhile (Synapse keeps the same in its `sessions` table). In the database, not in memory: any
-- of several Axon processes may serve the next page. A token is good for five minutes and only for
-- the same user, room, `suggested_only` and `max_depth`.
CREATE TABLE hierarchy_sessions (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    suggested_only BOOLEAN NOT NULL,
    -- NULL: no maximum depth was asked for.
    max_depth BIGINT,
    -- The rooms still to visit: [{"room_id", "depth"}], the next one last.
    queue JSONB NOT NULL,
    -- The rooms already visited (shown or not), never shown twice.
    processed TEXT[] NOT NULL,
    created_ts BIGINT NOT NULL
);
-- Pruning of expired sessions.
CREATE INDEX hierarchy_sessions_created ON hierarchy_sessions (created_ts);

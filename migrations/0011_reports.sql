-- Content reports: what users report to the server's admins (POST /rooms/{roomId}/report/{eventId},
-- /rooms/{roomId}/report, /users/{userId}/report), listed with `axon report list`.
CREATE TABLE reports (
    -- Also the listing order (newest first): no other index is needed.
    id BIGSERIAL PRIMARY KEY,
    -- 'event', 'room' or 'user'.
    kind TEXT NOT NULL CHECK (kind IN ('event', 'room', 'user')),
    -- Who reported.
    reporter TEXT NOT NULL,
    -- The room reported, or the event's room.
    room_id TEXT,
    -- The event reported (event reports).
    event_id TEXT,
    -- The user reported (user reports).
    target_user_id TEXT,
    -- The reporter's reason, as given (may be empty; event reports may leave it out).
    reason TEXT,
    -- Event reports: the whole request body (as Synapse keeps it, with any `score`).
    content JSONB,
    received_ts BIGINT NOT NULL
);

-- Federation: invites from other servers, and events kept without being shown (issue #19).

-- What the inviting server told us about a room this server is not in when it invited a local
-- user (`invite_room_state` of `PUT /_matrix/federation/v2/invite`), as stripped state events (a
-- JSON array of {type, state_key, sender, content}). The invitee's /sync shows it as the invite's
-- `invite_state` while their membership is still that invite (`event_id`). One row per room and
-- user, replaced by a later invite and deleted when the user joins, rejects or the invite is
-- withdrawn; a room's deletion deletes its rows.
CREATE TABLE remote_invites (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    user_id TEXT NOT NULL,
    -- The invite event this state came with.
    event_id TEXT NOT NULL,
    invite_state TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- Events from other servers that passed the checks against their auth events and the state before
-- them but not against the room's current state (the spec's "soft failure"): kept so that other
-- servers can fetch them (`GET /_matrix/federation/v1/event/{eventId}`) and later events may cite
-- them, but never shown to clients nor cited as prev_events by new local events; hence outside
-- `events`, which everything a client reads comes from. Grows with soft-failed events (rare: a
-- banned or demoted user's server sending on an old part of the room); a room's deletion deletes
-- its rows.
CREATE TABLE soft_failed_events (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    -- The PDU as received (federation format).
    pdu TEXT NOT NULL,
    received_ts BIGINT NOT NULL
);
-- A room's rows, for its deletion.
CREATE INDEX soft_failed_events_room ON soft_failed_events (room_id);

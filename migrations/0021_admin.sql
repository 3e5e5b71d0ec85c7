-- The Synapse-compatible admin API (issue #21).

-- A locked account keeps its sessions but every request gets 401 M_USER_LOCKED until an admin
-- unlocks it (PUT /_synapse/admin/v2/users/{userId} with "locked").
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;

-- A shadow-banned user's messages and state changes are answered with made-up event IDs and never
-- stored or delivered (POST/DELETE /_synapse/admin/v1/users/{userId}/shadow_ban).
ALTER TABLE users ADD COLUMN shadow_banned BOOLEAN NOT NULL DEFAULT FALSE;

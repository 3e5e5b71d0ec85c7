-- The Synapse-compatible admin API (issue #21).

-- A locked account keeps its sessions but every request gets 401 M_USER_LOCKED until an admin
-- unlocks it (PUT /_synapse/admin/v2/users/{userId} with "locked").
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;

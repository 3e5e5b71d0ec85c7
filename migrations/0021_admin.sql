-- The Synapse-compatible admin API (issue #21).

-- A locked account keeps its sessions but every request gets 401 M_USER_LOCKED until an admin
-- unlocks it (PUT /_synapse/admin/v2/users/{userId} with "locked").
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;

-- A shadow-banned user's messages and state changes are answered with made-up event IDs and never
-- stored or delivered (POST/DELETE /_synapse/admin/v1/users/{userId}/shadow_ban).
ALTER TABLE users ADD COLUMN shadow_banned BOOLEAN NOT NULL DEFAULT FALSE;

-- Rooms an admin blocked (DELETE /_synapse/admin/v2/rooms/{roomId} with "block"): local users may
-- not join them, whether or not the room still exists here.
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);

-- Background admin jobs (room deletions, history purges) and their outcome, for the status
-- endpoints. Pruned by the maintenance task a week after they finish.
CREATE TABLE admin_jobs (
    job_id TEXT PRIMARY KEY,
    -- `delete_room` or `purge_history`.
    kind TEXT NOT NULL,
    room_id TEXT NOT NULL,
    -- Synapse's words: `scheduled`, `active`/`shutting_down`/`purging`, `complete`, `failed`.
    status TEXT NOT NULL,
    error TEXT,
    -- What the job did (the shutdown's kicked users, aliases, new room).
    result JSONB,
    created_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);
-- The status of a room's deletions.
CREATE INDEX admin_jobs_room ON admin_jobs (room_id, created_ts);

-- Quarantined media (POST /_synapse/admin/v1/media/quarantine/…): the admin who quarantined it.
-- Downloads and thumbnails of quarantined media answer 404, as Synapse.
ALTER TABLE media ADD COLUMN quarantined_by TEXT;
-- The admin API lists a user's media, newest first, and cleans up media by age.
CREATE INDEX media_uploader_created ON media (uploader, created_ts);
CREATE INDEX media_created ON media (created_ts);

-- Each user's server notices room (POST /_synapse/admin/v1/send_server_notice), created on the
-- first notice by the notices user.
CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

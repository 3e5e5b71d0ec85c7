-- Receipts, notifications (unread counts), presence and pushers. Account data (including tags,
-- m.fully_read and the user's push rules, kept as global account data m.push_rules) lives in
-- account_data from 0001.

-- The newest receipt per (room, user, type, thread). m.read and m.read.private reset unread counts.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    -- '' for an unthreaded receipt, 'main' or a thread root's event ID for a threaded one.
    thread_id TEXT NOT NULL DEFAULT '',
    event_id TEXT NOT NULL,
    -- The receipted event's stream_ordering: "read up to here" for unread counts, and receipts
    -- only move forward.
    event_stream BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    -- Global stream position of the last change, for /sync.
    stream_position BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
-- Incremental sync: receipts that changed in the user's rooms since a position.
CREATE INDEX receipts_stream ON receipts (room_id, stream_position);

-- One row per event that notifies a local user (push rule actions with "notify"): unread counts,
-- GET /notifications.
CREATE TABLE notifications (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    -- The event's stream_ordering; with user_id the key, so re-evaluating an event is harmless.
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    -- 'main' for the main timeline, else the thread root's event ID.
    thread_id TEXT NOT NULL DEFAULT 'main',
    -- The push rule actions, JSON.
    actions TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
-- Unread counts per room of a user after the user's receipt.
CREATE INDEX notifications_room ON notifications (user_id, room_id, stream_ordering);

-- The presence of local users.
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    -- online, unavailable or offline.
    state TEXT NOT NULL,
    status_msg TEXT,
    -- Last user activity (a sync with set_presence=online, a PUT /presence, ...).
    last_active_ts BIGINT NOT NULL,
    -- Last time a client of the user synced: no sync for a while means offline.
    last_sync_ts BIGINT NOT NULL,
    stream_position BIGINT NOT NULL
);
-- Incremental sync: presence changes since a position.
CREATE INDEX presence_stream ON presence (stream_position);
-- The inactivity sweep finds users still shown online or unavailable.
CREATE INDEX presence_not_offline ON presence (state) WHERE state <> 'offline';

-- Where to push a user's notifications (POST /pushers/set).
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    -- The pusher's data object, JSON (url, format, custom keys).
    data TEXT NOT NULL,
    -- The access token's device, so that logging the device out can remove its pushers.
    device_id TEXT,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
-- append=false removes the same (app_id, pushkey) of other users.
CREATE INDEX pushers_app_key ON pushers (app_id, pushkey);

-- Axon's core schema: accounts, rooms, events and the global stream.
-- Times are milliseconds since the Unix epoch (BIGINT), as the Matrix API speaks them.

-- The global stream. Every write that /sync reports (events, account data, receipts, ...) bumps this
-- single row in its own transaction. The row lock makes those transactions commit in position order,
-- so the committed value is a watermark: nothing at or below it is still in flight, on any process.
CREATE TABLE stream_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    position BIGINT NOT NULL
);
INSERT INTO stream_head (position) VALUES (0);

-- Small server-wide values: the ed25519 signing key, and anything else generated once.
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL,
    created_ts BIGINT NOT NULL
);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest BOOLEAN NOT NULL DEFAULT FALSE,
    -- A deactivated user keeps its row so the name is never issued again.
    deactivated BOOLEAN NOT NULL DEFAULT FALSE,
    displayname TEXT,
    avatar_url TEXT,
    created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored only as SHA-256 hashes: a database leak does not leak sessions.
CREATE TABLE access_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    -- Set when the client asked for refresh tokens; NULL means the token does not expire.
    expires_ts BIGINT,
    created_ts BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
-- Logout of a device and logout/all find tokens by owner.
CREATE INDEX access_tokens_owner ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_owner ON refresh_tokens (user_id, device_id);

-- User-Interactive Authentication sessions: which stages a session has completed.
CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    -- The user the session authenticates (NULL for registration).
    user_id TEXT,
    completed TEXT[] NOT NULL DEFAULT '{}',
    created_ts BIGINT NOT NULL
);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    -- NULL: unlimited.
    uses_allowed INTEGER,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_ts BIGINT,
    created_ts BIGINT NOT NULL
);

-- Single-use nonces of the Synapse-compatible shared-secret registration.
CREATE TABLE registration_nonces (
    nonce TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL
);

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    -- The newest event: rooms are linear here, so it is the only forward extremity.
    head_event_id TEXT NOT NULL,
    head_depth BIGINT NOT NULL,
    -- Published in the public room directory.
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);

CREATE TABLE events (
    -- Position in the global stream; also the topological order, since each room is one chain.
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    event_type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    depth BIGINT NOT NULL,
    -- The full signed PDU, canonical JSON. TEXT, not JSONB: the bytes must survive exactly.
    pdu TEXT NOT NULL,
    -- The event in the client format, without `unsigned`, ready to be served as it is.
    client_json TEXT NOT NULL,
    -- unsigned.prev_content / prev_sender / replaces_state of a state event, fixed at write time.
    state_unsigned TEXT,
    -- Local echo: the sending device and its transaction ID.
    device_id TEXT,
    txn_id TEXT,
    redacted_by TEXT,
    -- m.relates_to, indexed for /relations and bundled aggregations.
    relates_to TEXT,
    rel_type TEXT,
    contains_url BOOLEAN NOT NULL DEFAULT FALSE
);
-- Timelines and /messages walk one room in stream order.
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
-- State as of any position ("member event at P", state before a timeline): the newest state event
-- per (type, state_key) at or below P, without replaying the room.
CREATE INDEX events_state_history ON events (room_id, event_type, state_key, stream_ordering)
    WHERE state_key IS NOT NULL;
CREATE INDEX events_relations ON events (relates_to, rel_type, stream_ordering)
    WHERE relates_to IS NOT NULL;
-- timestamp_to_event: the event of a room nearest a time.
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);

-- The current state of each room.
CREATE TABLE room_state (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);

-- Current membership per (room, user): joined rooms, member lists and sync read it.
CREATE TABLE memberships (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    -- Set by /forget: the room disappears from the user's view.
    forgotten BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_id, user_id)
);
-- "Which rooms is this user in", for /sync and /joined_rooms.
CREATE INDEX memberships_user ON memberships (user_id, membership);

-- Idempotency of PUT .../{txnId}: one device, one endpoint (scope includes the room and event type).
CREATE TABLE event_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);
-- Pruning after the retention period.
CREATE INDEX event_txns_created ON event_txns (created_ts);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    -- '' for global account data: keeps the primary key simple.
    room_id TEXT NOT NULL DEFAULT '',
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_position BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
-- Incremental sync: what changed for this user since a position.
CREATE INDEX account_data_stream ON account_data (user_id, stream_position);

CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id BIGSERIAL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

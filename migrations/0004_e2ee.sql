-- End-to-end encryption: the server stores and relays keys and encrypted messages, never plaintext.
-- Every JSON object a client signed is kept as TEXT exactly as it arrived (JSONB would reorder keys and
-- normalise numbers); signatures added later by other keys live in e2e_signatures and are merged in
-- when the keys are served, so a device re-uploading its keys never loses them.

-- The identity keys of each device (POST /keys/upload device_keys).
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    -- The device's ed25519 public key, extracted to check cross-signing signatures made by the device.
    ed25519_key TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys; /keys/claim deletes the row it hands out, so each key is given out once.
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    -- The primary key serves claims (oldest key of one algorithm for one device, by key_id) and counts.
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- One fallback key per device and algorithm, handed out when the one-time keys run out.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    -- Set when a claim handed it out; /sync then no longer lists the algorithm as unused.
    used BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- The current cross-signing keys of each user (master, self_signing, user_signing).
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL CHECK (key_type IN ('master', 'self_signing', 'user_signing')),
    -- The unpadded base64 public key, which is also its key ID after "ed25519:".
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    stream_position BIGINT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload, on a device key (target_key_id = device ID) or a
-- cross-signing key (target_key_id = its public key).
CREATE TABLE e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    -- "ed25519:<key>", as it appears under signatures.<signer_user_id>.
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    -- The primary key serves /keys/query, which reads every signature on a user's keys.
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- One row per change of a user's device list (keys uploaded, device added or removed, cross-signing keys
-- replaced), at its own stream position: /sync and /keys/changes report users changed in (since, upto].
CREATE TABLE e2e_device_list_changes (
    stream_position BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL
);
-- /sync and /keys/changes scan a position range: the primary key serves them.

-- To-device messages waiting for their device. Each message has its own stream position, so a batch cut
-- by a limit ends exactly at a message. A message is deleted when a later /sync acknowledges it.
CREATE TABLE e2e_to_device (
    stream_position BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL
);
-- /sync reads and acknowledges one device's queue in position order.
CREATE INDEX e2e_to_device_recipient ON e2e_to_device (user_id, device_id, stream_position);

-- Server-side key backup versions. Deleted versions stay (deleted = TRUE) so their numbers are never
-- reused and a repeated DELETE still succeeds, as the spec asks.
CREATE TABLE e2e_backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    -- Bumped on every change of the stored keys; served as the opaque etag.
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

-- The backed-up session keys of a version.
CREATE TABLE e2e_backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BOOLEAN NOT NULL,
    -- session_data, opaque to the server.
    session_data TEXT NOT NULL,
    -- The primary key serves reads of a whole version, of a room, of a session, and the count.
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES e2e_backup_versions (user_id, version)
);

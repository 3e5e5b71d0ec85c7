-- Federation identity: this server's signing keys and the keys of other servers.

-- This server's ed25519 signing keys. The current one has no `expired_ts`; `axon keys rotate` marks it
-- expired and adds a new one, and the expired ones stay published as `old_verify_keys` so that what
-- they signed can still be checked. The legacy key kept in `server_secrets` (`signing_key_ed25519`,
-- version `a_axon`) is moved here on first start.
CREATE TABLE signing_keys (
    -- The key's version, as in `ed25519:<key_version>`.
    key_version TEXT PRIMARY KEY,
    -- The key pair (PKCS#8 DER), as ruma's Ed25519KeyPair reads it.
    secret BYTEA NOT NULL,
    -- The unpadded base64 public key, as published.
    public_key TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expired_ts BIGINT
);
-- At most one current key, whichever process creates it first.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((TRUE)) WHERE expired_ts IS NULL;

-- Other servers' verify keys, checked (their self-signature, and a notary's when one answered) before
-- they are kept. A key is valid for requests and events until `valid_until_ts`; an old key
-- (`expired_ts`) only for what was signed before it expired (synapse: `server_signature_keys`).
CREATE TABLE remote_server_keys (
    server_name TEXT NOT NULL,
    -- `ed25519:abc`
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- The latest key response each server signed itself, as received: Axon answers notary queries
-- (`/_matrix/key/v2/query`) with it, countersigned (synapse: `server_keys_json`).
CREATE TABLE remote_server_key_responses (
    server_name TEXT PRIMARY KEY,
    key_json TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);

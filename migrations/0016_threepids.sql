-- Email addresses on accounts (issue #18): validation sessions and the addresses users hold.

-- A validation session: a client asked (POST …/email/requestToken) to prove it controls an address.
-- The mail carries a link with the token; opening it sets `validated_at`. The client then uses
-- (sid, client_secret) to add the address to its account or to reset its password. Only a digest of
-- the token is kept. A later send_attempt with the same client_secret and address reuses the session
-- (same sid) with a new token; the same or a lower one sends nothing (the spec's idempotency).
CREATE TABLE threepid_validation_sessions (
    sid TEXT PRIMARY KEY,
    -- `add` (/account/3pid/email/requestToken) or `reset` (/account/password/email/requestToken):
    -- a session proves an address for the one operation it was started for.
    purpose TEXT NOT NULL,
    medium TEXT NOT NULL,
    -- Canonical (lower-cased) address.
    address TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    -- SHA-256 of the token mailed last.
    token_hash BYTEA NOT NULL,
    last_send_attempt BIGINT NOT NULL,
    next_link TEXT,
    -- When the token mailed last stops being accepted.
    token_expires_ts BIGINT NOT NULL,
    validated_at BIGINT,
    created_ts BIGINT NOT NULL
);
-- A requestToken finds the session to continue by its client secret and address.
CREATE INDEX threepid_validation_sessions_secret
    ON threepid_validation_sessions (client_secret, medium, address);
-- Pruning of old sessions.
CREATE INDEX threepid_validation_sessions_created ON threepid_validation_sessions (created_ts);

-- The third-party identifiers of local users: one address belongs to at most one user.
CREATE TABLE user_threepids (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    CONSTRAINT user_threepids_unique_address UNIQUE (medium, address)
);
-- GET /account/3pid lists a user's addresses.
CREATE INDEX user_threepids_user ON user_threepids (user_id);

-- Access tokens from the admin API's "login as" (POST /_synapse/admin/v1/users/{userId}/login). As
-- Synapse's puppet tokens, each acts as `user_id` but belongs to the admin `admin_id` and has no
-- device: the user does not see it among its devices, and its own logouts leave it alone. Requests
-- made with it record no last-seen activity on the user's devices.
CREATE TABLE puppet_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    admin_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    -- The admin's valid_until_ms; NULL: valid until logged out.
    expires_ts BIGINT,
    created_ts BIGINT NOT NULL
);

-- Short-lived tokens other than access tokens, kept as the SHA-256 of the token (as access_tokens):
-- a database dump reveals none that still works.

-- OpenID tokens (POST /user/{userId}/openid/request_token): a third party (a widget, an integration
-- manager, a call server) exchanges one at GET /_matrix/federation/v1/openid/userinfo for the user
-- ID. Usable any number of times until they expire, as in Synapse (`open_id_tokens`).
CREATE TABLE openid_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (user_id),
    -- After this (ms since the epoch) the token is refused; housekeeping deletes it.
    expires_ts BIGINT NOT NULL
);
-- Housekeeping deletes the expired tokens.
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);

-- Login tokens (POST /login/get_token, then an `m.login.token` login): single use. A login deletes
-- its token with DELETE … RETURNING, so of two logins racing with one token exactly one finds it.
CREATE TABLE login_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (user_id),
    -- After this (ms since the epoch) the token is refused; housekeeping deletes it.
    expires_ts BIGINT NOT NULL
);
-- Housekeeping deletes the expired tokens.
CREATE INDEX login_tokens_expiry ON login_tokens (expires_ts);

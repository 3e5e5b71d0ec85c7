-- Accounts: what the account surface needs beyond 0001.

-- A UIA session is bound to the operation it authenticates (register, change_password, delete_devices,
-- deactivate), so a session completed for one cannot authorise another.
ALTER TABLE uia_sessions ADD COLUMN purpose TEXT NOT NULL DEFAULT '';
-- The registration token the session's m.login.registration_token stage validated; it is consumed
-- only when the account is created.
ALTER TABLE uia_sessions ADD COLUMN registration_token TEXT;
-- Pruning of abandoned sessions.
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);

-- Refresh-token rotation (spec: the old refresh token stays valid until the new access or refresh
-- token is used). An access token minted with a refresh token remembers it ...
ALTER TABLE access_tokens ADD COLUMN refresh_token_hash BYTEA;
-- ... and a refresh token that has been exchanged remembers its successor.
ALTER TABLE refresh_tokens ADD COLUMN next_token_hash BYTEA;
-- "Revoke the predecessor of this token" on the first use of its successor.
CREATE INDEX refresh_tokens_next ON refresh_tokens (next_token_hash) WHERE next_token_hash IS NOT NULL;
-- Deleting the access tokens of a refresh token when it is exchanged.
CREATE INDEX access_tokens_refresh ON access_tokens (refresh_token_hash) WHERE refresh_token_hash IS NOT NULL;

-- Pruning of expired shared-secret registration nonces.
CREATE INDEX registration_nonces_created ON registration_nonces (created_ts);

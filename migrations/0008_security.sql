-- Security and moderation.

-- The digest of the request (method, path, body without `auth`) that started a UIA session: the
-- session completes only that request. Only a digest is kept, never the body.
ALTER TABLE uia_sessions ADD COLUMN operation TEXT;

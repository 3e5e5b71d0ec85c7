-- Data an operation keeps with its User-Interactive Authentication session, as a JSON object.
-- Registration keeps its first request's parameters here (so the last stage may leave them out; the
-- password only as its hash) and, once the account exists, the user ID it registered, so that
-- retrying the completed registration answers for the same account.
ALTER TABLE uia_sessions ADD COLUMN data JSONB NOT NULL DEFAULT '{}';

-- The User-Agent of the device's most recently recorded request, for /admin/whois.
ALTER TABLE devices ADD COLUMN last_seen_user_agent TEXT;

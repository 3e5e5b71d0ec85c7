-- The content repository. File bytes live on disk, content-addressed by SHA-256 (identical uploads are
-- stored once); these tables hold what the files are and who uploaded them.

-- One row per mxc://<our server>/<media_id>. A row made by POST /_matrix/media/v1/create has no file
-- yet (sha256 NULL) until its upload arrives; every other row is inserted only after its file is on disk.
CREATE TABLE media (
    media_id TEXT PRIMARY KEY,
    uploader TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    -- Hex SHA-256 of the bytes: the file's name on disk. NULL while an asynchronous upload is pending.
    sha256 TEXT,
    size BIGINT,
    content_type TEXT,
    filename TEXT,
    uploaded_ts BIGINT,
    -- A pending (created, not yet uploaded) ID is dead after this; NULL once uploaded.
    unused_expires_ts BIGINT,
    -- Whether the deprecated unauthenticated endpoints may serve it (media.legacy_unauthenticated_downloads
    -- at the time of upload): new media is frozen out of them by default.
    legacy_access BOOLEAN NOT NULL DEFAULT FALSE
);
-- POST /create counts a user's pending uploads to cap them; only pending rows are indexed.
CREATE INDEX media_pending_by_uploader ON media (uploader, unused_expires_ts) WHERE sha256 IS NULL;

-- Generated thumbnails, keyed by the source file's hash (not the media ID) so that identical uploads
-- share them, and by the standard size that was generated.
CREATE TABLE media_thumbnails (
    source_sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    animated BOOLEAN NOT NULL,
    -- The thumbnail's own file, content-addressed like uploads.
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (source_sha256, width, height, method, animated)
);

-- URL previews already computed, so that every client in a room asking for the same link causes one
-- outbound fetch per hour, not one each.
CREATE TABLE media_url_previews (
    url TEXT PRIMARY KEY,
    og JSONB NOT NULL,
    fetched_ts BIGINT NOT NULL
);

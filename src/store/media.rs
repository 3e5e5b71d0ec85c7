//! media, media_thumbnails and media_url_previews: what the files on disk are.

use serde_json::Value;
use sqlx::PgExecutor;

pub struct MediaRow {
    pub media_id: String,
    pub uploader: String,
    pub sha256: Option<String>,
    pub size: Option<i64>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub unused_expires_ts: Option<i64>,
    pub legacy_access: bool,
    /// An admin quarantined it: it is served to no one.
    pub quarantined: bool,
}

/// What an uploaded file is; the row of a finished upload.
pub struct NewFile<'a> {
    pub sha256: &'a str,
    pub size: i64,
    pub content_type: Option<&'a str>,
    pub filename: Option<&'a str>,
}

pub async fn insert_uploaded(
    db: impl PgExecutor<'_>,
    media_id: &str,
    uploader: &str,
    file: &NewFile<'_>,
    legacy_access: bool,
) -> sqlx::Result<()> {
    let now = super::now_ms();
    sqlx::query!(
        "INSERT INTO media (media_id, uploader, created_ts, sha256, size, content_type, filename, uploaded_ts, legacy_access)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $3, $8)",
        media_id,
        uploader,
        now,
        file.sha256,
        file.size,
        file.content_type,
        file.filename,
        legacy_access
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn insert_pending(
    db: impl PgExecutor<'_>,
    media_id: &str,
    uploader: &str,
    unused_expires_ts: i64,
    legacy_access: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO media (media_id, uploader, created_ts, unused_expires_ts, legacy_access) VALUES ($1, $2, $3, $4, $5)",
        media_id,
        uploader,
        super::now_ms(),
        unused_expires_ts,
        legacy_access
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A user's created-but-not-uploaded IDs that have not expired.
pub async fn count_pending(db: impl PgExecutor<'_>, uploader: &str, now: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM media WHERE uploader = $1 AND sha256 IS NULL AND unused_expires_ts > $2"#,
        uploader,
        now
    )
    .fetch_one(db)
    .await
}

/// Fills a pending row. False when it was no longer pending (uploaded meanwhile) or has expired.
pub async fn complete_pending(
    db: impl PgExecutor<'_>,
    media_id: &str,
    file: &NewFile<'_>,
) -> sqlx::Result<bool> {
    let now = super::now_ms();
    let result = sqlx::query!(
        "UPDATE media SET sha256 = $2, size = $3, content_type = $4, filename = $5, uploaded_ts = $6,
                unused_expires_ts = NULL
         WHERE media_id = $1 AND sha256 IS NULL AND unused_expires_ts > $6",
        media_id,
        file.sha256,
        file.size,
        file.content_type,
        file.filename,
        now
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn find(db: impl PgExecutor<'_>, media_id: &str) -> sqlx::Result<Option<MediaRow>> {
    sqlx::query_as!(
        MediaRow,
        r#"SELECT media_id, uploader, sha256, size, content_type, filename, unused_expires_ts, legacy_access,
                  quarantined_by IS NOT NULL AS "quarantined!"
           FROM media WHERE media_id = $1"#,
        media_id
    )
    .fetch_optional(db)
    .await
}

pub struct ThumbnailRow {
    pub sha256: String,
    pub content_type: String,
    pub size: i64,
}

/// The key of a generated thumbnail: source file and the standard size asked of it.
pub struct ThumbnailKey<'a> {
    pub source_sha256: &'a str,
    pub width: i32,
    pub height: i32,
    pub method: &'a str,
    pub animated: bool,
}

pub async fn find_thumbnail(
    db: impl PgExecutor<'_>,
    key: &ThumbnailKey<'_>,
) -> sqlx::Result<Option<ThumbnailRow>> {
    sqlx::query_as!(
        ThumbnailRow,
        "SELECT sha256, content_type, size FROM media_thumbnails
         WHERE source_sha256 = $1 AND width = $2 AND height = $3 AND method = $4 AND animated = $5",
        key.source_sha256,
        key.width,
        key.height,
        key.method,
        key.animated
    )
    .fetch_optional(db)
    .await
}

/// Records a thumbnail; a concurrent request that generated the same one first wins harmlessly (the
/// file is content-addressed, so both wrote the same bytes to the same place).
pub async fn insert_thumbnail(
    db: impl PgExecutor<'_>,
    key: &ThumbnailKey<'_>,
    thumb: &ThumbnailRow,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO media_thumbnails (source_sha256, width, height, method, animated, sha256, content_type, size, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        key.source_sha256,
        key.width,
        key.height,
        key.method,
        key.animated,
        thumb.sha256,
        thumb.content_type,
        thumb.size,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A preview fetched after `since` (ms), if any.
pub async fn find_url_preview(
    db: impl PgExecutor<'_>,
    url: &str,
    since: i64,
) -> sqlx::Result<Option<Value>> {
    sqlx::query_scalar!(
        "SELECT og FROM media_url_previews WHERE url = $1 AND fetched_ts > $2",
        url,
        since
    )
    .fetch_optional(db)
    .await
}

pub async fn save_url_preview(db: impl PgExecutor<'_>, url: &str, og: &Value) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO media_url_previews (url, og, fetched_ts) VALUES ($1, $2, $3)
         ON CONFLICT (url) DO UPDATE SET og = EXCLUDED.og, fetched_ts = EXCLUDED.fetched_ts",
        url,
        og,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Bytes of media on disk: every uploaded file and thumbnail, each content hash counted once.
pub async fn stored_bytes(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT ((SELECT COALESCE(SUM(size), 0) FROM
                      (SELECT DISTINCT ON (sha256) size FROM media WHERE sha256 IS NOT NULL) AS files)
                 + (SELECT COALESCE(SUM(size), 0) FROM media_thumbnails))::BIGINT AS "bytes!""#
    )
    .fetch_one(db)
    .await
}

//! media, as the admin API sees it: a user's media, deletion, quarantine, cleanup by age.

use sqlx::{PgExecutor, Postgres, QueryBuilder};

/// A local media item as the admin API lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminMediaRow {
    pub media_id: String,
    pub created_ts: i64,
    pub size: Option<i64>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub quarantined_by: Option<String>,
    pub uploader: String,
    /// Hex SHA-256 of the bytes (None while an asynchronous upload is pending).
    pub sha256: Option<String>,
    /// Served by the deprecated unauthenticated endpoints too.
    pub legacy_access: bool,
}

const COLUMNS: &str = "media_id, created_ts, size, content_type, filename, quarantined_by, uploader, sha256, legacy_access";

/// The orderings of a user's media listing.
pub fn order_column(order_by: &str) -> Option<&'static str> {
    Some(match order_by {
        "media_id" => "media_id",
        "upload_name" => "filename",
        "created_ts" => "created_ts",
        // No access times are kept: the upload time stands in.
        "last_access_ts" => "created_ts",
        "media_length" => "size",
        "media_type" => "content_type",
        "quarantined_by" => "quarantined_by",
        "safe_from_quarantine" => "media_id",
        _ => return None,
    })
}

/// One page of the user's media.
pub async fn of_uploader(
    db: impl PgExecutor<'_>,
    uploader: &str,
    order: &'static str,
    descending: bool,
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<AdminMediaRow>> {
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {COLUMNS} FROM media WHERE uploader = "));
    let dir = if descending { "DESC" } else { "ASC" };
    q.push_bind(uploader)
        .push(format!(
            " ORDER BY {order} {dir} NULLS LAST, media_id ASC LIMIT "
        ))
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    q.build_query_as().fetch_all(db).await
}

pub async fn count_of_uploader(db: impl PgExecutor<'_>, uploader: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM media WHERE uploader = $1"#,
        uploader
    )
    .fetch_one(db)
    .await
}

/// Uploaded media older than `before_ts` and larger than `size_gt` bytes, not quarantined; with
/// `keep_profiles`, not used as a user's or a room's avatar (`mxc_prefix` is `mxc://server/`).
pub async fn old_media(
    db: impl PgExecutor<'_>,
    before_ts: i64,
    size_gt: i64,
    keep_profiles: bool,
    mxc_prefix: &str,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT m.media_id FROM media m
           WHERE m.created_ts < $1 AND m.sha256 IS NOT NULL AND m.size > $2 AND m.quarantined_by IS NULL
             AND NOT ($3 AND (
                 EXISTS (SELECT 1 FROM users u WHERE u.avatar_url = $4 || m.media_id)
                 OR EXISTS (SELECT 1 FROM room_state s JOIN events e USING (event_id)
                            WHERE s.event_type = 'm.room.avatar' AND s.state_key = ''
                              AND e.client_json::jsonb -> 'content' ->> 'url' = $4 || m.media_id)))
           ORDER BY m.created_ts LIMIT $5"#,
        before_ts,
        size_gt,
        keep_profiles,
        mxc_prefix,
        limit
    )
    .fetch_all(db)
    .await
}

/// Deletes the media rows; returns the IDs deleted and the files they named.
pub async fn delete(
    db: impl PgExecutor<'_>,
    media_ids: &[String],
) -> sqlx::Result<Vec<(String, Option<String>)>> {
    let rows = sqlx::query!(
        "DELETE FROM media WHERE media_id = ANY($1) RETURNING media_id, sha256",
        media_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.media_id, r.sha256)).collect())
}

/// Deletes the thumbnails of a file no media row names anymore; returns their files.
pub async fn delete_orphan_thumbnails(
    db: impl PgExecutor<'_>,
    source_sha256: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "DELETE FROM media_thumbnails t WHERE t.source_sha256 = $1
           AND NOT EXISTS (SELECT 1 FROM media m WHERE m.sha256 = $1)
         RETURNING t.sha256",
        source_sha256
    )
    .fetch_all(db)
    .await
}

/// Whether any media row or thumbnail still names the file.
pub async fn file_in_use(db: impl PgExecutor<'_>, sha256: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT (EXISTS (SELECT 1 FROM media WHERE sha256 = $1)
                OR EXISTS (SELECT 1 FROM media_thumbnails WHERE sha256 = $1)) AS "used!""#,
        sha256
    )
    .fetch_one(db)
    .await
}

/// Quarantines (`Some(admin)`) or releases (`None`) the media; false when there is no such media.
pub async fn set_quarantined(
    db: impl PgExecutor<'_>,
    media_id: &str,
    by: Option<&str>,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE media SET quarantined_by = $2 WHERE media_id = $1",
        media_id,
        by
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes media IDs created for asynchronous uploads that expired unused (no file names them).
pub async fn prune_expired_pending(db: impl PgExecutor<'_>, now: i64) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "DELETE FROM media WHERE sha256 IS NULL AND unused_expires_ts < $1",
        now
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

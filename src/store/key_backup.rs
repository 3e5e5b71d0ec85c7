//! e2e_backup_versions and e2e_backup_keys: server-side key backup.

use sqlx::{PgConnection, PgExecutor};

pub struct VersionRow {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
    pub count: i64,
}

/// Serialises version creation and key writes of one user (the version numbers and the "current
/// version" check must not race).
pub async fn lock_user(conn: &mut PgConnection, user_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('e2e_backup:' || $1, 0))",
        user_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Creates the next version, numbered past every version the user ever had.
pub async fn create_version(
    conn: &mut PgConnection,
    user_id: &str,
    algorithm: &str,
    auth_data: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"INSERT INTO e2e_backup_versions (user_id, version, algorithm, auth_data)
           SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3 FROM e2e_backup_versions WHERE user_id = $1
           RETURNING version"#,
        user_id,
        algorithm,
        auth_data
    )
    .fetch_one(conn)
    .await
}

/// The newest version that is not deleted, or the given one; with its key count.
pub async fn get_version(
    db: impl PgExecutor<'_>,
    user_id: &str,
    version: Option<i64>,
) -> sqlx::Result<Option<VersionRow>> {
    sqlx::query_as!(
        VersionRow,
        r#"SELECT v.version, v.algorithm, v.auth_data, v.etag,
                  (SELECT COUNT(*) FROM e2e_backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version) AS "count!"
           FROM e2e_backup_versions v
           WHERE v.user_id = $1 AND NOT v.deleted AND ($2::bigint IS NULL OR v.version = $2)
           ORDER BY v.version DESC LIMIT 1"#,
        user_id,
        version
    )
    .fetch_optional(db)
    .await
}

/// Whether the version ever existed (deleted or not).
pub async fn version_ever_existed(
    db: impl PgExecutor<'_>,
    user_id: &str,
    version: i64,
) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar!(
        "SELECT 1 AS one FROM e2e_backup_versions WHERE user_id = $1 AND version = $2",
        user_id,
        version
    )
    .fetch_optional(db)
    .await?
    .is_some())
}

pub async fn update_auth_data(
    db: impl PgExecutor<'_>,
    user_id: &str,
    version: i64,
    auth_data: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE e2e_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2",
        user_id,
        version,
        auth_data
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the version deleted and drops its keys.
pub async fn delete_version(
    conn: &mut PgConnection,
    user_id: &str,
    version: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM e2e_backup_keys WHERE user_id = $1 AND version = $2",
        user_id,
        version
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE e2e_backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2",
        user_id,
        version
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub struct SessionRow {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: String,
}

/// The stored sessions of a version, optionally of one room and one session.
pub async fn sessions(
    db: impl PgExecutor<'_>,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> sqlx::Result<Vec<SessionRow>> {
    sqlx::query_as!(
        SessionRow,
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
         FROM e2e_backup_keys
         WHERE user_id = $1 AND version = $2 AND ($3::text IS NULL OR room_id = $3) AND ($4::text IS NULL OR session_id = $4)",
        user_id,
        version,
        room_id,
        session_id
    )
    .fetch_all(db)
    .await
}

/// The stored sessions among the given (room, session) pairs.
pub async fn sessions_among(
    conn: &mut PgConnection,
    user_id: &str,
    version: i64,
    room_ids: &[String],
    session_ids: &[String],
) -> sqlx::Result<Vec<SessionRow>> {
    sqlx::query_as!(
        SessionRow,
        "SELECT k.room_id, k.session_id, k.first_message_index, k.forwarded_count, k.is_verified, k.session_data
         FROM e2e_backup_keys k JOIN UNNEST($3::text[], $4::text[]) AS s(room_id, session_id)
           ON k.room_id = s.room_id AND k.session_id = s.session_id
         WHERE k.user_id = $1 AND k.version = $2",
        user_id,
        version,
        room_ids,
        session_ids
    )
    .fetch_all(conn)
    .await
}

pub async fn upsert_sessions(
    conn: &mut PgConnection,
    user_id: &str,
    version: i64,
    rows: &[SessionRow],
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO e2e_backup_keys
             (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
         SELECT $1, $2, * FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bool[], $8::text[])
         ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE
         SET first_message_index = EXCLUDED.first_message_index, forwarded_count = EXCLUDED.forwarded_count,
             is_verified = EXCLUDED.is_verified, session_data = EXCLUDED.session_data",
        user_id,
        version,
        &rows.iter().map(|r| r.room_id.clone()).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.session_id.clone()).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.first_message_index).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.forwarded_count).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.is_verified).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.session_data.clone()).collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes sessions of a version (all, one room's, or one); returns how many went.
pub async fn delete_sessions(
    conn: &mut PgConnection,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "DELETE FROM e2e_backup_keys
         WHERE user_id = $1 AND version = $2 AND ($3::text IS NULL OR room_id = $3) AND ($4::text IS NULL OR session_id = $4)",
        user_id,
        version,
        room_id,
        session_id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Bumps the version's etag after its keys changed; returns the new (etag, count).
pub async fn bump_etag(
    conn: &mut PgConnection,
    user_id: &str,
    version: i64,
) -> sqlx::Result<(i64, i64)> {
    let row = sqlx::query!(
        r#"UPDATE e2e_backup_versions v SET etag = etag + 1 WHERE user_id = $1 AND version = $2
           RETURNING etag, (SELECT COUNT(*) FROM e2e_backup_keys k WHERE k.user_id = $1 AND k.version = $2) AS "count!""#,
        user_id,
        version
    )
    .fetch_one(conn)
    .await?;
    Ok((row.etag, row.count))
}

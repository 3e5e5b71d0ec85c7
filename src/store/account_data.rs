//! account_data: global (room_id '') and per-room account data; also memberships lookups it needs.

use sqlx::{PgConnection, PgExecutor};

pub struct AccountDataRow {
    pub room_id: String,
    pub data_type: String,
    pub content: String,
}

pub async fn get(
    db: impl PgExecutor<'_>,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        user_id,
        room_id,
        data_type
    )
    .fetch_optional(db)
    .await
}

/// The same row, locked until the transaction ends (read-modify-write of tags and push rules).
pub async fn get_for_update(
    conn: &mut PgConnection,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3 FOR UPDATE",
        user_id,
        room_id,
        data_type
    )
    .fetch_optional(conn)
    .await
}

/// Serialises read-modify-write of one (user, room, type) even when the row does not exist yet.
pub async fn lock_key(
    conn: &mut PgConnection,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> sqlx::Result<()> {
    let key = format!("account_data|{user_id}|{room_id}|{data_type}");
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn put(
    conn: &mut PgConnection,
    user_id: &str,
    room_id: &str,
    data_type: &str,
    content: &str,
    position: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO account_data (user_id, room_id, data_type, content, stream_position) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, room_id, data_type)
         DO UPDATE SET content = EXCLUDED.content, stream_position = EXCLUDED.stream_position",
        user_id,
        room_id,
        data_type,
        content,
        position
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Everything of the user that changed in (since, upto].
pub async fn changed(
    db: impl PgExecutor<'_>,
    user_id: &str,
    since: i64,
    upto: i64,
) -> sqlx::Result<Vec<AccountDataRow>> {
    sqlx::query_as!(
        AccountDataRow,
        "SELECT room_id, data_type, content FROM account_data
         WHERE user_id = $1 AND stream_position > $2 AND stream_position <= $3
         ORDER BY stream_position",
        user_id,
        since,
        upto
    )
    .fetch_all(db)
    .await
}

/// The user's room account data of one type, room by room (their tags: `m.tag`).
pub async fn rooms_of_type(
    db: impl PgExecutor<'_>,
    user_id: &str,
    data_type: &str,
) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query!(
        "SELECT room_id, content FROM account_data WHERE user_id = $1 AND room_id <> '' AND data_type = $2",
        user_id,
        data_type
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.room_id, r.content)).collect())
}

/// The contents of one global type for several users (push rules of a room's members).
pub async fn global_of_users(
    db: impl PgExecutor<'_>,
    user_ids: &[String],
    data_type: &str,
) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query!(
        "SELECT user_id, content FROM account_data WHERE user_id = ANY($1) AND room_id = '' AND data_type = $2",
        user_ids,
        data_type
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.content)).collect())
}

/// The user's membership in a room, if any row exists (any state, forgotten or not).
pub async fn membership(
    db: impl PgExecutor<'_>,
    user_id: &str,
    room_id: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT membership FROM memberships WHERE room_id = $1 AND user_id = $2",
        room_id,
        user_id
    )
    .fetch_optional(db)
    .await
}

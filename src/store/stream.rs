//! stream_head: the global stream position and its watermark (see the migration's comment).

use sqlx::{PgConnection, PgExecutor};

/// The committed watermark: every write at or below it is visible.
pub async fn current(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!("SELECT position FROM stream_head")
        .fetch_one(db)
        .await
}

/// The same, inside a caller's (repeatable-read) transaction, so later reads agree with it.
pub async fn current_in(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar!("SELECT position FROM stream_head")
        .fetch_one(conn)
        .await
}

/// Claims `count` positions and returns the last. Takes the stream lock until the transaction ends,
/// so call it as late in the transaction as possible.
pub async fn advance(conn: &mut PgConnection, count: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "UPDATE stream_head SET position = position + $1 RETURNING position",
        count
    )
    .fetch_one(conn)
    .await
}

/// Sends a NOTIFY to the other processes (delivered at commit when run inside a transaction).
/// `payload` is a JSON object; the message gets an `s` member: the stream position as this
/// transaction sees it (its own last claimed position, once it has claimed some).
pub async fn notify<'e>(db: impl PgExecutor<'e>, channel: &str, payload: &str) -> sqlx::Result<()> {
    sqlx::query!(
        r#"SELECT pg_notify($1, left($2, -1) || ',"s":' || (SELECT position FROM stream_head) || '}')"#,
        channel,
        payload
    )
    .execute(db)
    .await?;
    Ok(())
}

//! e2e_to_device: to-device messages waiting for their device, and the transaction IDs of their sends.

use sqlx::{PgConnection, PgExecutor};

/// The devices of `user_ids`, as (user ID, device ID).
pub async fn devices_of(
    db: impl PgExecutor<'_>,
    user_ids: &[String],
) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query!(
        "SELECT user_id, device_id FROM devices WHERE user_id = ANY($1)",
        user_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.device_id)).collect())
}

/// Records the transaction ID of a send; false when it was already used (the send is a retry).
pub async fn claim_txn(
    conn: &mut PgConnection,
    user_id: &str,
    device_id: &str,
    scope: &str,
    txn_id: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO event_txns (user_id, device_id, scope, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, '', $5)
         ON CONFLICT DO NOTHING",
        user_id,
        device_id,
        scope,
        txn_id,
        now
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub struct NewMessage {
    pub stream_position: i64,
    pub user_id: String,
    pub device_id: String,
    pub content: String,
}

pub async fn insert_messages(
    conn: &mut PgConnection,
    sender: &str,
    event_type: &str,
    messages: &[NewMessage],
) -> sqlx::Result<()> {
    let positions: Vec<i64> = messages.iter().map(|m| m.stream_position).collect();
    let users: Vec<String> = messages.iter().map(|m| m.user_id.clone()).collect();
    let devices: Vec<String> = messages.iter().map(|m| m.device_id.clone()).collect();
    let contents: Vec<String> = messages.iter().map(|m| m.content.clone()).collect();
    sqlx::query!(
        "INSERT INTO e2e_to_device (stream_position, user_id, device_id, sender, event_type, content)
         SELECT p, u, d, $5, $6, c FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[]) AS m(p, u, d, c)",
        &positions,
        &users,
        &devices,
        &contents,
        sender,
        event_type
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub struct MessageRow {
    pub stream_position: i64,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// Deletes the device's messages up to `upto`: the client's token shows it has them.
pub async fn acknowledge(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    upto: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM e2e_to_device WHERE user_id = $1 AND device_id = $2 AND stream_position <= $3",
        user_id,
        device_id,
        upto
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The device's first `limit` messages in (since, upto], in order.
pub async fn pending(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    since: i64,
    upto: i64,
    limit: i64,
) -> sqlx::Result<Vec<MessageRow>> {
    sqlx::query_as!(
        MessageRow,
        "SELECT stream_position, sender, event_type, content FROM e2e_to_device
         WHERE user_id = $1 AND device_id = $2 AND stream_position > $3 AND stream_position <= $4
         ORDER BY stream_position LIMIT $5",
        user_id,
        device_id,
        since,
        upto,
        limit
    )
    .fetch_all(db)
    .await
}

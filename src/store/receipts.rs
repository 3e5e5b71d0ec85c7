//! receipts and notifications: read receipts, and the per-user notifications they mark as read.

use sqlx::{PgConnection, PgExecutor};

pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

pub struct NewReceipt<'a> {
    pub room_id: &'a str,
    pub user_id: &'a str,
    pub receipt_type: &'a str,
    pub thread_id: &'a str,
    pub event_id: &'a str,
    pub event_stream: i64,
    pub ts: i64,
}

/// Stores a receipt unless the stored one is for a later event; true when something changed.
pub async fn upsert(
    conn: &mut PgConnection,
    r: &NewReceipt<'_>,
    position: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, event_stream, ts, stream_position)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE
           SET event_id = EXCLUDED.event_id, event_stream = EXCLUDED.event_stream, ts = EXCLUDED.ts,
               stream_position = EXCLUDED.stream_position
           WHERE receipts.event_stream < EXCLUDED.event_stream",
        r.room_id,
        r.user_id,
        r.receipt_type,
        r.thread_id,
        r.event_id,
        r.event_stream,
        r.ts,
        position
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Receipts in these rooms that changed in (since, upto]; private ones only of `user_id`.
pub async fn changed(
    db: impl PgExecutor<'_>,
    user_id: &str,
    rooms: &[String],
    since: i64,
    upto: i64,
) -> sqlx::Result<Vec<ReceiptRow>> {
    sqlx::query_as!(
        ReceiptRow,
        "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts FROM receipts
         WHERE room_id = ANY($1) AND stream_position > $2 AND stream_position <= $3
           AND (receipt_type <> 'm.read.private' OR user_id = $4)",
        rooms,
        since,
        upto,
        user_id
    )
    .fetch_all(db)
    .await
}

/// The room and stream position of an event.
pub async fn event_position(
    db: impl PgExecutor<'_>,
    event_id: &str,
) -> sqlx::Result<Option<(String, i64)>> {
    let row = sqlx::query!(
        "SELECT room_id, stream_ordering FROM events WHERE event_id = $1",
        event_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.room_id, r.stream_ordering)))
}

pub struct NewNotification {
    pub user_id: String,
    pub room_id: String,
    pub stream_ordering: i64,
    pub event_id: String,
    pub thread_id: String,
    pub actions: String,
    pub highlight: bool,
    pub ts: i64,
}

/// Records notifications; an event already evaluated for a user is left as it was.
pub async fn insert_notifications(
    db: impl PgExecutor<'_>,
    rows: &[NewNotification],
) -> sqlx::Result<Vec<String>> {
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let users: Vec<String> = rows.iter().map(|r| r.user_id.clone()).collect();
    let rooms: Vec<String> = rows.iter().map(|r| r.room_id.clone()).collect();
    let streams: Vec<i64> = rows.iter().map(|r| r.stream_ordering).collect();
    let events: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    let threads: Vec<String> = rows.iter().map(|r| r.thread_id.clone()).collect();
    let actions: Vec<String> = rows.iter().map(|r| r.actions.clone()).collect();
    let highlights: Vec<bool> = rows.iter().map(|r| r.highlight).collect();
    let ts: Vec<i64> = rows.iter().map(|r| r.ts).collect();
    sqlx::query_scalar!(
        "INSERT INTO notifications (user_id, room_id, stream_ordering, event_id, thread_id, actions, highlight, ts)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::bigint[])
         ON CONFLICT (user_id, stream_ordering) DO NOTHING
         RETURNING user_id",
        &users,
        &rooms,
        &streams,
        &events,
        &threads,
        &actions,
        &highlights,
        &ts
    )
    .fetch_all(db)
    .await
}

pub struct UnreadRow {
    pub room_id: String,
    pub thread_id: String,
    pub notifications: i64,
    pub highlights: i64,
}

/// Notifications up to `upto` after the user's read receipts, per room and thread. An unthreaded receipt covers
/// every thread; a threaded one only its thread.
pub async fn unread(
    db: impl PgExecutor<'_>,
    user_id: &str,
    rooms: &[String],
    upto: i64,
) -> sqlx::Result<Vec<UnreadRow>> {
    sqlx::query_as!(
        UnreadRow,
        r#"SELECT n.room_id, n.thread_id,
                  count(*) AS "notifications!", count(*) FILTER (WHERE n.highlight) AS "highlights!"
           FROM notifications n
           WHERE n.user_id = $1 AND n.room_id = ANY($2) AND n.stream_ordering <= $3
             AND n.stream_ordering > COALESCE((
                 SELECT max(r.event_stream) FROM receipts r
                 WHERE r.room_id = n.room_id AND r.user_id = $1
                   AND r.receipt_type IN ('m.read', 'm.read.private')
                   AND (r.thread_id = '' OR r.thread_id = n.thread_id)), 0)
           GROUP BY n.room_id, n.thread_id"#,
        user_id,
        rooms,
        upto
    )
    .fetch_all(db)
    .await
}

pub struct NotificationRow {
    pub room_id: String,
    pub stream_ordering: i64,
    pub actions: String,
    pub ts: i64,
    pub client_json: String,
    pub read: bool,
}

/// GET /notifications: newest first, before `before` (exclusive), optionally highlights only.
pub async fn list(
    db: impl PgExecutor<'_>,
    user_id: &str,
    before: i64,
    limit: i64,
    only_highlight: bool,
) -> sqlx::Result<Vec<NotificationRow>> {
    sqlx::query_as!(
        NotificationRow,
        r#"SELECT n.room_id, n.stream_ordering, n.actions, n.ts, e.client_json,
                  n.stream_ordering <= COALESCE((
                      SELECT max(r.event_stream) FROM receipts r
                      WHERE r.room_id = n.room_id AND r.user_id = $1
                        AND r.receipt_type IN ('m.read', 'm.read.private')
                        AND (r.thread_id = '' OR r.thread_id = n.thread_id)), 0) AS "read!"
           FROM notifications n JOIN events e ON e.stream_ordering = n.stream_ordering
           WHERE n.user_id = $1 AND n.stream_ordering < $2 AND (NOT $4 OR n.highlight)
           ORDER BY n.stream_ordering DESC LIMIT $3"#,
        user_id,
        before,
        limit,
        only_highlight
    )
    .fetch_all(db)
    .await
}

/// Unread notifications of a user over all rooms (the badge count sent to push gateways).
pub async fn total_unread(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM notifications n
           WHERE n.user_id = $1
             AND n.stream_ordering > COALESCE((
                 SELECT max(r.event_stream) FROM receipts r
                 WHERE r.room_id = n.room_id AND r.user_id = $1
                   AND r.receipt_type IN ('m.read', 'm.read.private')
                   AND (r.thread_id = '' OR r.thread_id = n.thread_id)), 0)"#,
        user_id
    )
    .fetch_one(db)
    .await
}

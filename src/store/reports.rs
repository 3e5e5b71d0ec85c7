//! reports: content reports for the server's admins.

use sqlx::PgExecutor;

/// A new report.
pub struct NewReport<'a> {
    /// `event`, `room` or `user`.
    pub kind: &'a str,
    pub reporter: &'a str,
    pub room_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub target_user_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    /// Event reports: the request body, as JSON text.
    pub content: Option<&'a str>,
    pub received_ts: i64,
}

/// A stored report.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub id: i64,
    /// `event`, `room` or `user`.
    pub kind: String,
    pub reporter: String,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub target_user_id: Option<String>,
    pub reason: Option<String>,
    pub received_ts: i64,
}

pub async fn insert(db: impl PgExecutor<'_>, r: &NewReport<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO reports (kind, reporter, room_id, event_id, target_user_id, reason, content, received_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7::TEXT::JSONB, $8) RETURNING id",
        r.kind,
        r.reporter,
        r.room_id,
        r.event_id,
        r.target_user_id,
        r.reason,
        r.content,
        r.received_ts
    )
    .fetch_one(db)
    .await
}

/// The newest `limit` reports, newest first.
pub async fn newest(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<ReportRow>> {
    sqlx::query_as!(
        ReportRow,
        "SELECT id, kind, reporter, room_id, event_id, target_user_id, reason, received_ts
         FROM reports ORDER BY id DESC LIMIT $1",
        limit
    )
    .fetch_all(db)
    .await
}

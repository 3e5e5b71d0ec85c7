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

/// An event report as the admin API shows it, with what is known of the event and its room.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventReportRow {
    pub id: i64,
    pub received_ts: i64,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    /// Who reported.
    pub reporter: String,
    pub reason: Option<String>,
    /// The request's `score`, if it sent one.
    pub score: Option<serde_json::Value>,
    /// The reported event's sender (None once the event is gone).
    pub sender: Option<String>,
    /// The reported event's PDU (None once the event is gone).
    pub event_json: Option<String>,
    /// The room's current name and canonical alias.
    pub room_name: Option<String>,
    pub canonical_alias: Option<String>,
}

const EVENT_REPORT_COLUMNS: &str = "r.id, r.received_ts, r.room_id, r.event_id, r.reporter, r.reason,
    r.content -> 'score' AS score, e.sender, e.pdu AS event_json,
    (SELECT ne.client_json::jsonb -> 'content' ->> 'name' FROM room_state s JOIN events ne USING (event_id)
     WHERE s.room_id = r.room_id AND s.event_type = 'm.room.name' AND s.state_key = '') AS room_name,
    (SELECT ae.client_json::jsonb -> 'content' ->> 'alias' FROM room_state s JOIN events ae USING (event_id)
     WHERE s.room_id = r.room_id AND s.event_type = 'm.room.canonical_alias' AND s.state_key = '') AS canonical_alias";

/// Which event reports a listing shows (LIKE patterns, already escaped).
#[derive(Debug, Default)]
pub struct EventReportFilter {
    /// Matches the reporter.
    pub reporter: Option<String>,
    pub room_id: Option<String>,
    /// The reported event's sender, exactly.
    pub sender: Option<String>,
}

fn push_report_filter<'a>(
    q: &mut sqlx::QueryBuilder<'a, sqlx::Postgres>,
    f: &'a EventReportFilter,
) {
    q.push(" FROM reports r LEFT JOIN events e ON e.event_id = r.event_id WHERE r.kind = 'event'");
    if let Some(p) = &f.reporter {
        q.push(" AND r.reporter LIKE ").push_bind(p);
    }
    if let Some(p) = &f.room_id {
        q.push(" AND r.room_id LIKE ").push_bind(p);
    }
    if let Some(s) = &f.sender {
        q.push(" AND e.sender = ").push_bind(s);
    }
}

/// One page of event reports, newest first when `descending`.
pub async fn event_reports(
    db: impl PgExecutor<'_>,
    filter: &EventReportFilter,
    descending: bool,
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<EventReportRow>> {
    let mut q = sqlx::QueryBuilder::new(format!("SELECT {EVENT_REPORT_COLUMNS}"));
    push_report_filter(&mut q, filter);
    let dir = if descending { "DESC" } else { "ASC" };
    q.push(format!(" ORDER BY r.received_ts {dir}, r.id {dir} LIMIT "))
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    q.build_query_as().fetch_all(db).await
}

pub async fn count_event_reports(
    db: impl PgExecutor<'_>,
    filter: &EventReportFilter,
) -> sqlx::Result<i64> {
    let mut q = sqlx::QueryBuilder::new("SELECT count(*)");
    push_report_filter(&mut q, filter);
    q.build_query_scalar().fetch_one(db).await
}

pub async fn event_report(
    db: impl PgExecutor<'_>,
    id: i64,
) -> sqlx::Result<Option<EventReportRow>> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_REPORT_COLUMNS} FROM reports r LEFT JOIN events e ON e.event_id = r.event_id
         WHERE r.kind = 'event' AND r.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Deletes an event report; false when there is none with this ID.
pub async fn delete_event_report(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query!("DELETE FROM reports WHERE id = $1 AND kind = 'event'", id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

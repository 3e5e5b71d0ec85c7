//! admin_jobs, blocked_rooms and server_notice_rooms: the admin API's background jobs, blocked
//! rooms and server notices rooms.

use serde_json::Value;
use sqlx::PgExecutor;

/// A background job as its status endpoint shows it.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub job_id: String,
    pub kind: String,
    pub room_id: String,
    pub status: String,
    pub error: Option<String>,
    pub result: Option<Value>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    job_id: &str,
    kind: &str,
    room_id: &str,
    status: &str,
) -> sqlx::Result<()> {
    let now = super::now_ms();
    sqlx::query!(
        "INSERT INTO admin_jobs (job_id, kind, room_id, status, created_ts, updated_ts)
         VALUES ($1, $2, $3, $4, $5, $5)",
        job_id,
        kind,
        room_id,
        status,
        now
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Moves the job on: its status, and its error and result when given.
pub async fn update(
    db: impl PgExecutor<'_>,
    job_id: &str,
    status: &str,
    error: Option<&str>,
    result: Option<&Value>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE admin_jobs SET status = $2, error = COALESCE($3, error), result = COALESCE($4, result),
                updated_ts = $5
         WHERE job_id = $1",
        job_id,
        status,
        error,
        result,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get(
    db: impl PgExecutor<'_>,
    job_id: &str,
    kind: &str,
) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        JobRow,
        "SELECT job_id, kind, room_id, status, error, result FROM admin_jobs WHERE job_id = $1 AND kind = $2",
        job_id,
        kind
    )
    .fetch_optional(db)
    .await
}

/// The room's jobs of `kind`, oldest first.
pub async fn of_room(
    db: impl PgExecutor<'_>,
    room_id: &str,
    kind: &str,
) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as!(
        JobRow,
        "SELECT job_id, kind, room_id, status, error, result FROM admin_jobs
         WHERE room_id = $1 AND kind = $2 ORDER BY created_ts, job_id",
        room_id,
        kind
    )
    .fetch_all(db)
    .await
}

/// Whether a job of `kind` is still running for the room.
pub async fn running(db: impl PgExecutor<'_>, room_id: &str, kind: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar!(
        "SELECT 1 AS one FROM admin_jobs WHERE room_id = $1 AND kind = $2 AND status NOT IN ('complete', 'failed')",
        room_id,
        kind
    )
    .fetch_optional(db)
    .await?
    .is_some())
}

/// Forgets jobs that ended before `cutoff_ts`; returns how many.
pub async fn prune(db: impl PgExecutor<'_>, cutoff_ts: i64) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "DELETE FROM admin_jobs WHERE status IN ('complete', 'failed') AND updated_ts < $1",
        cutoff_ts
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Marks jobs a stopped process left unfinished as failed (they do not resume).
pub async fn fail_unfinished(db: impl PgExecutor<'_>, before_ts: i64) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "UPDATE admin_jobs SET status = 'failed', error = 'The server stopped before the job finished'
         WHERE status NOT IN ('complete', 'failed') AND updated_ts < $1",
        before_ts
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

pub async fn block_room(db: impl PgExecutor<'_>, room_id: &str, by: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO blocked_rooms (room_id, blocked_by, blocked_ts) VALUES ($1, $2, $3)
         ON CONFLICT (room_id) DO NOTHING",
        room_id,
        by,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn is_blocked(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar!(
        "SELECT 1 AS one FROM blocked_rooms WHERE room_id = $1",
        room_id
    )
    .fetch_optional(db)
    .await?
    .is_some())
}

/// The user's server notices room, if one was made.
pub async fn notice_room(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT room_id FROM server_notice_rooms WHERE user_id = $1",
        user_id
    )
    .fetch_optional(db)
    .await
}

/// Records the user's server notices room (replacing an older one).
pub async fn set_notice_room(
    db: impl PgExecutor<'_>,
    user_id: &str,
    room_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO server_notice_rooms (user_id, room_id, created_ts) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET room_id = EXCLUDED.room_id, created_ts = EXCLUDED.created_ts",
        user_id,
        room_id,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

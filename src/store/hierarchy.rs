//! hierarchy_sessions: where a paginated walk of a space tree left off.

use serde_json::Value;
use sqlx::PgExecutor;

/// One pagination session of GET /rooms/{roomId}/hierarchy.
pub struct HierarchySessionRow {
    /// The requester the token was handed to.
    pub user_id: String,
    /// The room the walk started from.
    pub room_id: String,
    pub suggested_only: bool,
    /// None: no maximum depth.
    pub max_depth: Option<i64>,
    /// The rooms still to visit, as the service wrote them.
    pub queue: Value,
    /// The rooms already visited.
    pub processed: Vec<String>,
    pub created_ts: i64,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    token: &str,
    row: &HierarchySessionRow,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO hierarchy_sessions
             (token, user_id, room_id, suggested_only, max_depth, queue, processed, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        token,
        row.user_id,
        row.room_id,
        row.suggested_only,
        row.max_depth,
        row.queue,
        &row.processed,
        row.created_ts
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get(
    db: impl PgExecutor<'_>,
    token: &str,
) -> sqlx::Result<Option<HierarchySessionRow>> {
    sqlx::query_as!(
        HierarchySessionRow,
        "SELECT user_id, room_id, suggested_only, max_depth, queue, processed, created_ts
         FROM hierarchy_sessions WHERE token = $1",
        token
    )
    .fetch_optional(db)
    .await
}

/// Deletes the sessions created before `older_than` (ms).
pub async fn prune(db: impl PgExecutor<'_>, older_than: i64) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "DELETE FROM hierarchy_sessions WHERE created_ts < $1",
        older_than
    )
    .execute(db)
    .await?
    .rows_affected())
}

//! uia_sessions.

use serde_json::Value;
use sqlx::PgPool;

pub struct SessionRow {
    pub purpose: String,
    /// The digest of the request the session is bound to (NULL for sessions from before 0007).
    pub operation: Option<String>,
    pub user_id: Option<String>,
    pub completed: Vec<String>,
    pub registration_token: Option<String>,
    pub created_ts: i64,
}

pub async fn get(db: &PgPool, session: &str) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as!(
        SessionRow,
        "SELECT purpose, operation, user_id, completed, registration_token, created_ts FROM uia_sessions WHERE session_id = $1",
        session
    )
    .fetch_optional(db)
    .await
}

/// Creates or updates the session.
pub async fn save(
    db: &PgPool,
    session: &str,
    purpose: &str,
    operation: &str,
    user_id: Option<&str>,
    completed: &[String],
    registration_token: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO uia_sessions (session_id, purpose, user_id, completed, registration_token, created_ts, operation)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (session_id) DO UPDATE
         SET user_id = EXCLUDED.user_id, completed = EXCLUDED.completed, registration_token = EXCLUDED.registration_token",
        session,
        purpose,
        user_id,
        completed,
        registration_token,
        super::now_ms(),
        operation
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn delete(db: &PgPool, session: &str) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM uia_sessions WHERE session_id = $1", session)
        .execute(db)
        .await?;
    Ok(())
}

/// The data an operation keeps with the session (a JSON object; see migration 0007).
pub async fn get_data(db: &PgPool, session: &str) -> sqlx::Result<Option<Value>> {
    sqlx::query_scalar!(
        "SELECT data FROM uia_sessions WHERE session_id = $1",
        session
    )
    .fetch_optional(db)
    .await
}

/// Adds the keys of `data` (a JSON object) to the session's data.
pub async fn merge_data(db: &PgPool, session: &str, data: &Value) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE uia_sessions SET data = data || $2 WHERE session_id = $1",
        session,
        data
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets sessions created before `cutoff_ts`.
pub async fn prune(db: &PgPool, cutoff_ts: i64) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM uia_sessions WHERE created_ts < $1", cutoff_ts)
        .execute(db)
        .await?;
    Ok(())
}

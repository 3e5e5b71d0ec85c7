//! uia_sessions.

use sqlx::PgPool;

pub async fn completed(db: &PgPool, session: &str) -> sqlx::Result<Option<Vec<String>>> {
    sqlx::query_scalar!(
        "SELECT completed FROM uia_sessions WHERE session_id = $1",
        session
    )
    .fetch_optional(db)
    .await
}

pub async fn save(db: &PgPool, session: &str, completed: &[String]) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO uia_sessions (session_id, completed, created_ts) VALUES ($1, $2, $3)
         ON CONFLICT (session_id) DO UPDATE SET completed = EXCLUDED.completed",
        session,
        completed,
        super::now_ms()
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

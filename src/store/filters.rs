//! filters: stored sync filters.

use sqlx::PgExecutor;

pub async fn insert(db: impl PgExecutor<'_>, user_id: &str, json: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO filters (user_id, filter_json) VALUES ($1, $2) RETURNING filter_id",
        user_id,
        json
    )
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    user_id: &str,
    filter_id: i64,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2",
        user_id,
        filter_id
    )
    .fetch_optional(db)
    .await
}

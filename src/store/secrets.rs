//! server_secrets: values generated once per server, such as the signing key.

use sqlx::PgPool;

pub async fn get(db: &PgPool, name: &str) -> sqlx::Result<Option<Vec<u8>>> {
    let row = sqlx::query!("SELECT value FROM server_secrets WHERE name = $1", name)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| r.value))
}

/// Stores `value` unless another process got there first; returns whichever value won.
pub async fn insert_or_get(db: &PgPool, name: &str, value: &[u8]) -> sqlx::Result<Vec<u8>> {
    sqlx::query!(
        "INSERT INTO server_secrets (name, value, created_ts) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        name,
        value,
        super::now_ms()
    )
    .execute(db)
    .await?;
    let row = sqlx::query!("SELECT value FROM server_secrets WHERE name = $1", name)
        .fetch_one(db)
        .await?;
    Ok(row.value)
}

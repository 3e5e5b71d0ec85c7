//! access_tokens and refresh_tokens, keyed by the SHA-256 of the token.

use sqlx::PgExecutor;

pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
    pub expires_ts: Option<i64>,
    pub is_guest: bool,
    pub is_admin: bool,
    pub deactivated: bool,
}

pub async fn insert_access_token(
    db: impl PgExecutor<'_>,
    hash: &[u8],
    user_id: &str,
    device_id: &str,
    expires_ts: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, expires_ts, created_ts) VALUES ($1, $2, $3, $4, $5)",
        hash,
        user_id,
        device_id,
        expires_ts,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find_access_token(
    db: impl PgExecutor<'_>,
    hash: &[u8],
) -> sqlx::Result<Option<TokenOwner>> {
    sqlx::query_as!(
        TokenOwner,
        "SELECT t.user_id, t.device_id, t.expires_ts, u.is_guest, u.is_admin, u.deactivated
         FROM access_tokens t JOIN users u USING (user_id) WHERE t.token_hash = $1",
        hash
    )
    .fetch_optional(db)
    .await
}

pub async fn delete_access_token(db: impl PgExecutor<'_>, hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM access_tokens WHERE token_hash = $1", hash)
        .execute(db)
        .await?;
    Ok(())
}

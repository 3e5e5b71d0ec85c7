//! openid_tokens: OpenID tokens by the SHA-256 of the token.

use sqlx::PgExecutor;

pub async fn insert(
    db: impl PgExecutor<'_>,
    hash: &[u8],
    user_id: &str,
    expires_ts: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
        hash,
        user_id,
        expires_ts
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The owner of a token that has not expired by `now`, if the account is still active.
pub async fn owner(db: impl PgExecutor<'_>, hash: &[u8], now: i64) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT t.user_id FROM openid_tokens t JOIN users u USING (user_id)
         WHERE t.token_hash = $1 AND t.expires_ts > $2 AND NOT u.deactivated",
        hash,
        now
    )
    .fetch_optional(db)
    .await
}

/// Forgets the tokens that expired before `now`; returns how many.
pub async fn prune(db: impl PgExecutor<'_>, now: i64) -> sqlx::Result<u64> {
    let done = sqlx::query!("DELETE FROM openid_tokens WHERE expires_ts <= $1", now)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

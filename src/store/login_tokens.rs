//! login_tokens: single-use `m.login.token` tokens by the SHA-256 of the token.

use sqlx::PgExecutor;

pub async fn insert(
    db: impl PgExecutor<'_>,
    hash: &[u8],
    user_id: &str,
    expires_ts: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
        hash,
        user_id,
        expires_ts
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes the token and returns its owner if it had not expired by `now` and the account is still
/// active. One statement: of two callers racing with the same token, only one gets the row.
pub async fn consume(
    db: impl PgExecutor<'_>,
    hash: &[u8],
    now: i64,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "WITH used AS (DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts)
         SELECT used.user_id FROM used JOIN users u USING (user_id)
         WHERE used.expires_ts > $2 AND NOT u.deactivated",
        hash,
        now
    )
    .fetch_optional(db)
    .await
}

/// Forgets the tokens that expired before `now`; returns how many.
pub async fn prune(db: impl PgExecutor<'_>, now: i64) -> sqlx::Result<u64> {
    let done = sqlx::query!("DELETE FROM login_tokens WHERE expires_ts <= $1", now)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

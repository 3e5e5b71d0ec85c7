//! registration_tokens and registration_nonces.

use sqlx::{PgConnection, PgExecutor};

pub struct RegistrationTokenRow {
    pub token: String,
    pub uses_allowed: Option<i32>,
    pub completed: i32,
    pub expiry_ts: Option<i64>,
    pub created_ts: i64,
}

/// Returns false when the token already exists.
pub async fn insert_token(
    db: impl PgExecutor<'_>,
    token: &str,
    uses_allowed: Option<i32>,
    expiry_ts: Option<i64>,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO registration_tokens (token, uses_allowed, expiry_ts, created_ts) VALUES ($1, $2, $3, $4)
         ON CONFLICT (token) DO NOTHING",
        token,
        uses_allowed,
        expiry_ts,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get_token(
    db: impl PgExecutor<'_>,
    token: &str,
) -> sqlx::Result<Option<RegistrationTokenRow>> {
    sqlx::query_as!(
        RegistrationTokenRow,
        "SELECT token, uses_allowed, completed, expiry_ts, created_ts FROM registration_tokens WHERE token = $1",
        token
    )
    .fetch_optional(db)
    .await
}

pub async fn list_tokens(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<RegistrationTokenRow>> {
    sqlx::query_as!(
        RegistrationTokenRow,
        "SELECT token, uses_allowed, completed, expiry_ts, created_ts FROM registration_tokens ORDER BY created_ts"
    )
    .fetch_all(db)
    .await
}

pub async fn delete_token(db: impl PgExecutor<'_>, token: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!("DELETE FROM registration_tokens WHERE token = $1", token)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Counts one use of the token if it is still usable at `now`; false if it is not (the check and the
/// count are one statement, so concurrent registrations cannot overdraw it).
pub async fn consume_token(conn: &mut PgConnection, token: &str, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE registration_tokens SET completed = completed + 1
         WHERE token = $1 AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2)",
        token,
        now
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn insert_nonce(db: impl PgExecutor<'_>, nonce: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO registration_nonces (nonce, created_ts) VALUES ($1, $2)",
        nonce,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Removes the nonce and returns when it was issued; None if unknown (or already used).
pub async fn take_nonce(db: impl PgExecutor<'_>, nonce: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        "DELETE FROM registration_nonces WHERE nonce = $1 RETURNING created_ts",
        nonce
    )
    .fetch_optional(db)
    .await
}

pub async fn prune_nonces(db: impl PgExecutor<'_>, cutoff_ts: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM registration_nonces WHERE created_ts < $1",
        cutoff_ts
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Changes the token's limits: each `Some` replaces the stored value (`Some(None)` clears it).
/// Returns the updated token, None when it does not exist.
pub async fn update_token(
    db: impl PgExecutor<'_>,
    token: &str,
    uses_allowed: Option<Option<i32>>,
    expiry_ts: Option<Option<i64>>,
) -> sqlx::Result<Option<RegistrationTokenRow>> {
    sqlx::query_as!(
        RegistrationTokenRow,
        "UPDATE registration_tokens
         SET uses_allowed = CASE WHEN $2 THEN $3 ELSE uses_allowed END,
             expiry_ts = CASE WHEN $4 THEN $5 ELSE expiry_ts END
         WHERE token = $1
         RETURNING token, uses_allowed, completed, expiry_ts, created_ts",
        token,
        uses_allowed.is_some(),
        uses_allowed.flatten(),
        expiry_ts.is_some(),
        expiry_ts.flatten()
    )
    .fetch_optional(db)
    .await
}

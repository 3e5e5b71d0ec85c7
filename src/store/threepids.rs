//! threepid_validation_sessions, user_threepids.

use sqlx::PgExecutor;

/// A validation session (see migrations/0016_threepids.sql).
pub struct SessionRow {
    pub sid: String,
    /// `add` or `reset`.
    pub purpose: String,
    pub medium: String,
    pub address: String,
    pub client_secret: String,
    /// SHA-256 of the token mailed last.
    pub token_hash: Vec<u8>,
    pub last_send_attempt: i64,
    pub next_link: Option<String>,
    pub token_expires_ts: i64,
    pub validated_at: Option<i64>,
}

/// A third-party identifier a user holds.
pub struct ThreepidRow {
    pub medium: String,
    pub address: String,
    pub validated_at: i64,
    pub added_at: i64,
}

/// The unvalidated session a requestToken with this client secret and address continues, if any.
pub async fn find_open_session(
    db: impl PgExecutor<'_>,
    purpose: &str,
    client_secret: &str,
    medium: &str,
    address: &str,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as!(
        SessionRow,
        "SELECT sid, purpose, medium, address, client_secret, token_hash, last_send_attempt, next_link,
                token_expires_ts, validated_at
         FROM threepid_validation_sessions
         WHERE client_secret = $1 AND medium = $2 AND address = $3 AND purpose = $4
           AND validated_at IS NULL
         ORDER BY created_ts DESC LIMIT 1",
        client_secret,
        medium,
        address,
        purpose
    )
    .fetch_optional(db)
    .await
}

/// What a requestToken stores once its mail has gone out.
pub struct NewToken<'a> {
    pub sid: &'a str,
    pub purpose: &'a str,
    pub medium: &'a str,
    pub address: &'a str,
    pub client_secret: &'a str,
    pub token_hash: &'a [u8],
    pub send_attempt: i64,
    pub next_link: Option<&'a str>,
    pub token_expires_ts: i64,
}

/// Creates the session, or gives an existing one the new token and send attempt.
pub async fn save_token(db: impl PgExecutor<'_>, t: &NewToken<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO threepid_validation_sessions
             (sid, purpose, medium, address, client_secret, token_hash, last_send_attempt, next_link,
              token_expires_ts, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (sid) DO UPDATE
         SET token_hash = EXCLUDED.token_hash, last_send_attempt = EXCLUDED.last_send_attempt,
             next_link = EXCLUDED.next_link, token_expires_ts = EXCLUDED.token_expires_ts",
        t.sid,
        t.purpose,
        t.medium,
        t.address,
        t.client_secret,
        t.token_hash,
        t.send_attempt,
        t.next_link,
        t.token_expires_ts,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get_session(db: impl PgExecutor<'_>, sid: &str) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as!(
        SessionRow,
        "SELECT sid, purpose, medium, address, client_secret, token_hash, last_send_attempt, next_link,
                token_expires_ts, validated_at
         FROM threepid_validation_sessions WHERE sid = $1",
        sid
    )
    .fetch_optional(db)
    .await
}

/// Marks the session validated (once: a second call keeps the first time).
pub async fn mark_validated(db: impl PgExecutor<'_>, sid: &str, now: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE threepid_validation_sessions SET validated_at = COALESCE(validated_at, $2)
         WHERE sid = $1",
        sid,
        now
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Removes a used session: it proves its address once. Says whether it was still there.
pub async fn delete_session(db: impl PgExecutor<'_>, sid: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM threepid_validation_sessions WHERE sid = $1",
        sid
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Forgets sessions created before `cutoff_ts`.
pub async fn prune_sessions(db: impl PgExecutor<'_>, cutoff_ts: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM threepid_validation_sessions WHERE created_ts < $1",
        cutoff_ts
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The user holding the address, if any.
pub async fn user_of(
    db: impl PgExecutor<'_>,
    medium: &str,
    address: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
        medium,
        address
    )
    .fetch_optional(db)
    .await
}

pub async fn list(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<Vec<ThreepidRow>> {
    sqlx::query_as!(
        ThreepidRow,
        "SELECT medium, address, validated_at, added_at FROM user_threepids
         WHERE user_id = $1 ORDER BY added_at, address",
        user_id
    )
    .fetch_all(db)
    .await
}

/// Adds the address to the user (again: only its validation time changes). False when another user
/// holds it.
pub async fn add(
    db: impl PgExecutor<'_>,
    user_id: &str,
    medium: &str,
    address: &str,
    validated_at: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (medium, address) DO UPDATE SET validated_at = EXCLUDED.validated_at
         WHERE user_threepids.user_id = EXCLUDED.user_id",
        user_id,
        medium,
        address,
        validated_at,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes one of the user's addresses; says whether the user held it.
pub async fn delete(
    db: impl PgExecutor<'_>,
    user_id: &str,
    medium: &str,
    address: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3",
        user_id,
        medium,
        address
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes every address of the user (deactivation).
pub async fn delete_all(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM user_threepids WHERE user_id = $1", user_id)
        .execute(db)
        .await?;
    Ok(())
}

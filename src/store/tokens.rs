//! access_tokens and refresh_tokens, keyed by the SHA-256 of the token.

use sqlx::{PgConnection, PgExecutor};

pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
    pub expires_ts: Option<i64>,
    pub refresh_token_hash: Option<Vec<u8>>,
    pub is_guest: bool,
    pub is_admin: bool,
    pub deactivated: bool,
    pub locked: bool,
    pub shadow_banned: bool,
}

pub async fn insert_access_token(
    db: impl PgExecutor<'_>,
    hash: &[u8],
    user_id: &str,
    device_id: &str,
    expires_ts: Option<i64>,
    refresh_token_hash: Option<&[u8]>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, expires_ts, refresh_token_hash, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6)",
        hash,
        user_id,
        device_id,
        expires_ts,
        refresh_token_hash,
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
        "SELECT t.user_id, t.device_id, t.expires_ts, t.refresh_token_hash, u.is_guest, u.is_admin, u.deactivated, u.locked, u.shadow_banned
         FROM access_tokens t JOIN users u USING (user_id) WHERE t.token_hash = $1",
        hash
    )
    .fetch_optional(db)
    .await
}

/// The device ID of a puppet token's requests (they have none, as in Synapse): no device row has it.
pub const PUPPET_DEVICE: &str = "";

/// A token from the admin API's "login as", acting as `user_id` for the admin `admin_id`.
pub async fn insert_puppet_token(
    db: impl PgExecutor<'_>,
    hash: &[u8],
    user_id: &str,
    admin_id: &str,
    expires_ts: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO puppet_tokens (token_hash, user_id, admin_id, expires_ts, created_ts)
         VALUES ($1, $2, $3, $4, $5)",
        hash,
        user_id,
        admin_id,
        expires_ts,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The user a puppet token acts as (its device: `PUPPET_DEVICE`), with that user's flags.
pub async fn find_puppet_token(
    db: impl PgExecutor<'_>,
    hash: &[u8],
) -> sqlx::Result<Option<TokenOwner>> {
    sqlx::query_as!(
        TokenOwner,
        r#"SELECT p.user_id, '' AS "device_id!", p.expires_ts, NULL::bytea AS refresh_token_hash,
                  u.is_guest, u.is_admin, u.deactivated, u.locked, u.shadow_banned
         FROM puppet_tokens p JOIN users u USING (user_id) WHERE p.token_hash = $1"#,
        hash
    )
    .fetch_optional(db)
    .await
}

/// Ends a puppet token (its logout); whether there was one.
pub async fn delete_puppet_token(db: impl PgExecutor<'_>, hash: &[u8]) -> sqlx::Result<bool> {
    Ok(
        sqlx::query!("DELETE FROM puppet_tokens WHERE token_hash = $1", hash)
            .execute(db)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Revokes every access and refresh token of one device (a login that reuses the device ID).
/// Returns how many access tokens went.
pub async fn delete_device_tokens(
    conn: &mut PgConnection,
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<u64> {
    sqlx::query!(
        "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id
    )
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query!(
        "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

pub async fn insert_refresh_token(
    db: impl PgExecutor<'_>,
    hash: &[u8],
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)",
        hash,
        user_id,
        device_id,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

pub struct RefreshRow {
    pub user_id: String,
    pub device_id: String,
    pub next_token_hash: Option<Vec<u8>>,
}

/// The refresh token, locked until the transaction ends so two exchanges of it cannot interleave.
pub async fn lock_refresh_token(
    conn: &mut PgConnection,
    hash: &[u8],
) -> sqlx::Result<Option<RefreshRow>> {
    sqlx::query_as!(
        RefreshRow,
        "SELECT user_id, device_id, next_token_hash FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        hash
    )
    .fetch_optional(conn)
    .await
}

/// Deletes a refresh token and the access tokens minted with it.
pub async fn delete_refresh_token(conn: &mut PgConnection, hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM access_tokens WHERE refresh_token_hash = $1",
        hash
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("DELETE FROM refresh_tokens WHERE token_hash = $1", hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes the access tokens minted with a refresh token, keeping the refresh token.
pub async fn delete_access_tokens_of_refresh(
    conn: &mut PgConnection,
    hash: &[u8],
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM access_tokens WHERE refresh_token_hash = $1",
        hash
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_next_refresh_token(
    conn: &mut PgConnection,
    hash: &[u8],
    next: &[u8],
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE refresh_tokens SET next_token_hash = $2 WHERE token_hash = $1",
        hash,
        next
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes the refresh token that `successor` replaced: its successor has now been used.
pub async fn revoke_predecessor(db: impl PgExecutor<'_>, successor: &[u8]) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM refresh_tokens WHERE next_token_hash = $1",
        successor
    )
    .execute(db)
    .await?;
    Ok(())
}

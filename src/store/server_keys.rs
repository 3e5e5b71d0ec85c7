//! signing_keys (this server's), remote_server_keys and remote_server_key_responses (other servers').

use sqlx::PgPool;

/// One of this server's signing keys.
#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    pub key_version: String,
    /// PKCS#8 DER.
    pub secret: Vec<u8>,
    /// Unpadded base64.
    pub public_key: String,
    pub expired_ts: Option<i64>,
}

/// Every signing key, the current one (no `expired_ts`) included.
pub async fn own_keys(db: &PgPool) -> sqlx::Result<Vec<SigningKeyRow>> {
    sqlx::query_as!(
        SigningKeyRow,
        "SELECT key_version, secret, public_key, expired_ts FROM signing_keys ORDER BY created_ts"
    )
    .fetch_all(db)
    .await
}

/// Adds `key` as the current key unless there is one; returns whether it was added.
pub async fn insert_current(db: &PgPool, key: &SigningKeyRow) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO signing_keys (key_version, secret, public_key, created_ts)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        key.key_version,
        key.secret,
        key.public_key,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the current key expired at `now` and makes `key` current, in one transaction.
pub async fn rotate(db: &PgPool, key: &SigningKeyRow, now: i64) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        "UPDATE signing_keys SET expired_ts = $1 WHERE expired_ts IS NULL",
        now
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO signing_keys (key_version, secret, public_key, created_ts) VALUES ($1, $2, $3, $4)",
        key.key_version,
        key.secret,
        key.public_key,
        now
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A remote server's verify key as cached.
#[derive(Debug, Clone)]
pub struct RemoteKeyRow {
    pub key_id: String,
    pub public_key: String,
    pub valid_until_ts: i64,
    pub expired_ts: Option<i64>,
}

pub async fn remote_keys(db: &PgPool, server_name: &str) -> sqlx::Result<Vec<RemoteKeyRow>> {
    sqlx::query_as!(
        RemoteKeyRow,
        "SELECT key_id, public_key, valid_until_ts, expired_ts FROM remote_server_keys
         WHERE server_name = $1",
        server_name
    )
    .fetch_all(db)
    .await
}

/// Stores verified keys, and the server's signed response they came from, in one transaction. A
/// key already known keeps the later validity.
pub async fn store_remote(
    db: &PgPool,
    server_name: &str,
    keys: &[RemoteKeyRow],
    key_json: &str,
    valid_until_ts: i64,
) -> sqlx::Result<()> {
    let now = super::now_ms();
    let mut tx = db.begin().await?;
    for key in keys {
        sqlx::query!(
            "INSERT INTO remote_server_keys
                 (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (server_name, key_id) DO UPDATE SET
                 public_key = EXCLUDED.public_key,
                 valid_until_ts = GREATEST(remote_server_keys.valid_until_ts, EXCLUDED.valid_until_ts),
                 expired_ts = EXCLUDED.expired_ts,
                 fetched_ts = EXCLUDED.fetched_ts",
            server_name,
            key.key_id,
            key.public_key,
            key.valid_until_ts,
            key.expired_ts,
            now
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!(
        "INSERT INTO remote_server_key_responses (server_name, key_json, valid_until_ts, fetched_ts)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (server_name) DO UPDATE SET key_json = EXCLUDED.key_json,
             valid_until_ts = EXCLUDED.valid_until_ts, fetched_ts = EXCLUDED.fetched_ts
         WHERE remote_server_key_responses.valid_until_ts <= EXCLUDED.valid_until_ts",
        server_name,
        key_json,
        valid_until_ts,
        now
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The server's latest signed key response and its validity.
pub async fn remote_response(
    db: &PgPool,
    server_name: &str,
) -> sqlx::Result<Option<(String, i64)>> {
    let row = sqlx::query!(
        "SELECT key_json, valid_until_ts FROM remote_server_key_responses WHERE server_name = $1",
        server_name
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.key_json, r.valid_until_ts)))
}

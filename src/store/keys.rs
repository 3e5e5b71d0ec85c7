//! End-to-end encryption keys: e2e_device_keys, e2e_one_time_keys, e2e_fallback_keys,
//! e2e_cross_signing_keys, e2e_signatures and e2e_device_list_changes.

use sqlx::{PgConnection, PgExecutor};

pub struct DeviceKeysRow {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    pub key_json: String,
}

/// The uploaded keys of the existing devices of `user_ids`.
pub async fn device_keys_of(
    db: impl PgExecutor<'_>,
    user_ids: &[String],
) -> sqlx::Result<Vec<DeviceKeysRow>> {
    sqlx::query_as!(
        DeviceKeysRow,
        "SELECT d.user_id, d.device_id, d.display_name, k.key_json
         FROM devices d JOIN e2e_device_keys k ON k.user_id = d.user_id AND k.device_id = d.device_id
         WHERE d.user_id = ANY($1)",
        user_ids
    )
    .fetch_all(db)
    .await
}

pub async fn device_keys(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<Option<(String, Option<String>)>> {
    let row = sqlx::query!(
        "SELECT key_json, ed25519_key FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.key_json, r.ed25519_key)))
}

pub async fn upsert_device_keys(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    key_json: &str,
    ed25519_key: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO e2e_device_keys (user_id, device_id, key_json, ed25519_key) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = EXCLUDED.key_json, ed25519_key = EXCLUDED.ed25519_key",
        user_id,
        device_id,
        key_json,
        ed25519_key
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets everything about a device's encryption: keys, signatures on them, queued messages.
pub async fn delete_device_crypto(
    conn: &mut PgConnection,
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id = $2",
        user_id,
        device_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM e2e_to_device WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether the user has a device with this ID (keys or not).
pub async fn device_exists(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar!(
        "SELECT 1 AS one FROM devices WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id
    )
    .fetch_optional(db)
    .await?
    .is_some())
}

/// One-time keys among `key_ids` (full "algorithm:id") the device already has, with their JSON.
pub async fn existing_one_time_keys(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    algorithms: &[String],
    key_ids: &[String],
) -> sqlx::Result<Vec<(String, String, String)>> {
    let rows = sqlx::query!(
        "SELECT o.algorithm, o.key_id, o.key_json FROM e2e_one_time_keys o
         JOIN UNNEST($3::text[], $4::text[]) AS k(algorithm, key_id) ON o.algorithm = k.algorithm AND o.key_id = k.key_id
         WHERE o.user_id = $1 AND o.device_id = $2",
        user_id,
        device_id,
        algorithms,
        key_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.algorithm, r.key_id, r.key_json))
        .collect())
}

/// Adds one-time keys; keys the device already has are left as they are.
pub async fn insert_one_time_keys(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    algorithms: &[String],
    key_ids: &[String],
    key_jsons: &[String],
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)
         SELECT $1, $2, * FROM UNNEST($3::text[], $4::text[], $5::text[])
         ON CONFLICT DO NOTHING",
        user_id,
        device_id,
        algorithms,
        key_ids,
        key_jsons
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Takes one one-time key of `algorithm` away from the device. Concurrent claims skip each other's
/// locked rows, so no key is ever handed out twice.
pub async fn claim_one_time_key(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query!(
        "DELETE FROM e2e_one_time_keys
         WHERE (user_id, device_id, algorithm, key_id) = (
             SELECT user_id, device_id, algorithm, key_id FROM e2e_one_time_keys
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
             ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING key_id, key_json",
        user_id,
        device_id,
        algorithm
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.key_id, r.key_json)))
}

/// Sets the device's fallback key for an algorithm. Re-uploading the same key keeps its `used` mark.
pub async fn upsert_fallback_key(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    key_json: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
         SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json,
             used = e2e_fallback_keys.used AND e2e_fallback_keys.key_id = EXCLUDED.key_id
                    AND e2e_fallback_keys.key_json = EXCLUDED.key_json",
        user_id,
        device_id,
        algorithm,
        key_id,
        key_json
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Hands out the fallback key of `algorithm` (it may be handed out again) and marks it used.
pub async fn claim_fallback_key(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query!(
        "UPDATE e2e_fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
         RETURNING key_id, key_json",
        user_id,
        device_id,
        algorithm
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.key_id, r.key_json)))
}

/// In one query: the count of one-time keys per algorithm (`is_fallback` false) and the algorithms of
/// unused fallback keys (`is_fallback` true, count 0).
pub async fn key_counts(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<Vec<(bool, String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT FALSE AS "is_fallback!", algorithm AS "algorithm!", COUNT(*) AS "count!"
           FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
           UNION ALL
           SELECT TRUE, algorithm, 0 FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used"#,
        user_id,
        device_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.is_fallback, r.algorithm, r.count))
        .collect())
}

pub struct CrossSigningKeyRow {
    pub user_id: String,
    pub key_type: String,
    pub public_key: String,
    pub key_json: String,
}

pub async fn cross_signing_keys_of(
    db: impl PgExecutor<'_>,
    user_ids: &[String],
) -> sqlx::Result<Vec<CrossSigningKeyRow>> {
    sqlx::query_as!(
        CrossSigningKeyRow,
        "SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys WHERE user_id = ANY($1)",
        user_ids
    )
    .fetch_all(db)
    .await
}

pub async fn upsert_cross_signing_key(
    db: impl PgExecutor<'_>,
    user_id: &str,
    key_type: &str,
    public_key: &str,
    key_json: &str,
    stream_position: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json, stream_position)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, key_type) DO UPDATE
         SET public_key = EXCLUDED.public_key, key_json = EXCLUDED.key_json, stream_position = EXCLUDED.stream_position",
        user_id,
        key_type,
        public_key,
        key_json,
        stream_position
    )
    .execute(db)
    .await?;
    Ok(())
}

pub struct SignatureRow {
    pub target_user_id: String,
    pub target_key_id: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

/// Uploaded signatures on the keys of `user_ids` that `viewer` may see: the owners' own, and the
/// viewer's (a user's signature on someone else's master key is for the signer only).
pub async fn signatures_on(
    db: impl PgExecutor<'_>,
    user_ids: &[String],
    viewer: &str,
) -> sqlx::Result<Vec<SignatureRow>> {
    sqlx::query_as!(
        SignatureRow,
        "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature FROM e2e_signatures
         WHERE target_user_id = ANY($1) AND (signer_user_id = target_user_id OR signer_user_id = $2)",
        user_ids,
        viewer
    )
    .fetch_all(db)
    .await
}

pub async fn insert_signatures(conn: &mut PgConnection, rows: &[SignatureRow]) -> sqlx::Result<()> {
    let column =
        |f: fn(&SignatureRow) -> &String| rows.iter().map(|r| f(r).clone()).collect::<Vec<_>>();
    sqlx::query!(
        "INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
         ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = EXCLUDED.signature",
        &column(|r| &r.target_user_id),
        &column(|r| &r.target_key_id),
        &column(|r| &r.signer_user_id),
        &column(|r| &r.signer_key_id),
        &column(|r| &r.signature),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Drops the signatures on one of a user's keys (a device ID or a cross-signing public key) that is
/// being replaced.
pub async fn delete_signatures_on(
    conn: &mut PgConnection,
    user_id: &str,
    key_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id = $2",
        user_id,
        key_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_device_list_change(
    conn: &mut PgConnection,
    user_id: &str,
    stream_position: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO e2e_device_list_changes (stream_position, user_id) VALUES ($1, $2)",
        stream_position,
        user_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Who sees `user_id`'s device list: users joined to a room where `user_id` is joined or invited
/// (invited members are encrypted for too), and `user_id`.
pub async fn device_list_watchers(
    db: impl PgExecutor<'_>,
    user_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT DISTINCT b.user_id AS "user_id!" FROM memberships a JOIN memberships b ON b.room_id = a.room_id
           WHERE a.user_id = $1 AND a.membership IN ('join', 'invite') AND b.membership = 'join'
           UNION SELECT $1"#,
        user_id
    )
    .fetch_all(db)
    .await
}

/// For `user_id` between stream positions `since` (excluded) and `upto` (included): users to re-query
/// (`left` false) and users no longer sharing a room (`left` true). See `service::e2ee::device_list_changes`.
pub async fn device_list_changes(
    db: impl PgExecutor<'_>,
    user_id: &str,
    since: i64,
    upto: i64,
) -> sqlx::Result<Vec<(String, bool)>> {
    let rows = sqlx::query!(
        r#"WITH mine AS (
               SELECT room_id, membership, stream_ordering FROM memberships WHERE user_id = $1
           ),
           changed AS (
               SELECT c.user_id FROM e2e_device_list_changes c
               WHERE c.stream_position > $2 AND c.stream_position <= $3
                 AND (c.user_id = $1 OR EXISTS (
                     SELECT 1 FROM memberships s
                     JOIN mine ON mine.room_id = s.room_id AND mine.membership = 'join'
                     WHERE s.user_id = c.user_id AND s.membership IN ('join', 'invite')))
               UNION
               -- Someone joined a room of ours (the members that moved: an index range)...
               SELECT m.user_id FROM mine JOIN memberships m ON m.room_id = mine.room_id
               WHERE mine.membership = 'join' AND m.membership = 'join' AND m.user_id <> $1
                 AND m.stream_ordering > $2 AND m.stream_ordering <= $3
               UNION
               -- ... or we joined theirs: their devices are new to us.
               SELECT m.user_id FROM mine JOIN memberships m ON m.room_id = mine.room_id
               WHERE mine.membership = 'join' AND mine.stream_ordering > $2 AND mine.stream_ordering <= $3
                 AND m.membership = 'join' AND m.user_id <> $1
           ),
           parted AS (
               -- They left a room we are in (or joined since).
               SELECT m.user_id FROM mine JOIN memberships m ON m.room_id = mine.room_id
               WHERE m.user_id <> $1 AND m.membership IN ('leave', 'ban')
                 AND m.stream_ordering > $2 AND m.stream_ordering <= $3
                 AND (mine.membership = 'join' OR (mine.stream_ordering > $2 AND mine.stream_ordering <= $3))
               UNION
               -- We left a room they are in.
               SELECT m.user_id FROM mine JOIN memberships m ON m.room_id = mine.room_id
               WHERE m.user_id <> $1 AND mine.membership IN ('leave', 'ban')
                 AND mine.stream_ordering > $2 AND mine.stream_ordering <= $3
                 AND m.membership IN ('join', 'invite')
           ),
           gone AS (
               SELECT p.user_id FROM parted p
               -- Still sharing another room with us.
               WHERE NOT EXISTS (
                   SELECT 1 FROM memberships s
                   JOIN mine ON mine.room_id = s.room_id AND mine.membership = 'join'
                   WHERE s.user_id = p.user_id AND s.membership IN ('join', 'invite'))
           )
           SELECT user_id AS "user_id!", FALSE AS "left!" FROM changed
           UNION
           SELECT user_id, TRUE FROM gone"#,
        user_id,
        since,
        upto
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.left)).collect())
}

//! users and devices.

use sqlx::{PgConnection, PgExecutor, PgPool};

pub struct UserRow {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub deactivated: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// Inserts a user; fails with the `users_pkey` constraint when the name is taken.
pub async fn insert_user(
    db: impl PgExecutor<'_>,
    user_id: &str,
    password_hash: Option<&str>,
    is_admin: bool,
    displayname: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO users (user_id, password_hash, is_admin, displayname, created_ts) VALUES ($1, $2, $3, $4, $5)",
        user_id,
        password_hash,
        is_admin,
        displayname,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The next number for a guest's localpart.
pub async fn next_guest_number(db: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT nextval('guest_localparts') AS "n!""#)
        .fetch_one(db)
        .await
}

/// Inserts a guest account (no password); fails with `users_pkey` when the name is taken.
pub async fn insert_guest(db: &PgPool, user_id: &str, displayname: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO users (user_id, is_guest, displayname, created_ts) VALUES ($1, TRUE, $2, $3)",
        user_id,
        displayname,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Makes an active guest a full account with a password. False when `user_id` is no active guest
/// (anymore).
pub async fn upgrade_guest(
    db: impl PgExecutor<'_>,
    user_id: &str,
    password_hash: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE users SET is_guest = FALSE, password_hash = $2
         WHERE user_id = $1 AND is_guest AND NOT deactivated",
        user_id,
        password_hash
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get_user(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        "SELECT user_id, password_hash, is_admin, is_guest, deactivated, displayname, avatar_url
         FROM users WHERE user_id = $1",
        user_id
    )
    .fetch_optional(db)
    .await
}

/// Whether the name was ever issued (deactivated users count: names are never reissued).
pub async fn user_exists(db: &PgPool, user_id: &str) -> sqlx::Result<bool> {
    Ok(
        sqlx::query_scalar!("SELECT 1 AS one FROM users WHERE user_id = $1", user_id)
            .fetch_optional(db)
            .await?
            .is_some(),
    )
}

pub async fn set_password_hash(
    db: impl PgExecutor<'_>,
    user_id: &str,
    hash: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE users SET password_hash = $2 WHERE user_id = $1 AND NOT deactivated",
        user_id,
        hash
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the user deactivated and forgets its password; the row stays so the name is never reissued.
/// Returns false when the user does not exist or was already deactivated.
pub async fn deactivate(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE users SET deactivated = TRUE, password_hash = NULL WHERE user_id = $1 AND NOT deactivated",
        user_id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that the user asked for erasure (once; a second request changes nothing).
pub async fn mark_erased(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO erased_users (user_id, erased_ts) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
        user_id,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Every erased user.
pub async fn erased_users(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!("SELECT user_id FROM erased_users")
        .fetch_all(db)
        .await
}

pub async fn set_displayname(
    db: impl PgExecutor<'_>,
    user_id: &str,
    name: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET displayname = $2 WHERE user_id = $1",
        user_id,
        name
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn set_avatar_url(
    db: impl PgExecutor<'_>,
    user_id: &str,
    url: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET avatar_url = $2 WHERE user_id = $1",
        user_id,
        url
    )
    .execute(db)
    .await?;
    Ok(())
}

pub struct DeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
    /// The User-Agent of the most recently recorded request.
    pub last_seen_user_agent: Option<String>,
}

/// Creates the device, or keeps it when the client reuses a device ID (the spec ignores
/// `initial_device_display_name` for a known device). Returns true when the device is new.
pub async fn upsert_device(
    conn: &mut PgConnection,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
    ip: Option<&str>,
) -> sqlx::Result<bool> {
    let now = super::now_ms();
    // `xmax = 0` holds exactly for a freshly inserted row.
    sqlx::query_scalar!(
        r#"INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_ts)
           VALUES ($1, $2, $3, $4, $5, $4)
           ON CONFLICT (user_id, device_id) DO UPDATE
           SET last_seen_ts = EXCLUDED.last_seen_ts, last_seen_ip = COALESCE(EXCLUDED.last_seen_ip, devices.last_seen_ip)
           RETURNING (xmax = 0) AS "inserted!""#,
        user_id,
        device_id,
        display_name,
        now,
        ip
    )
    .fetch_one(conn)
    .await
}

pub async fn list_devices(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<Vec<DeviceRow>> {
    sqlx::query_as!(
        DeviceRow,
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent FROM devices WHERE user_id = $1 ORDER BY device_id",
        user_id
    )
    .fetch_all(db)
    .await
}

pub async fn get_device(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<Option<DeviceRow>> {
    sqlx::query_as!(
        DeviceRow,
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent FROM devices WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id
    )
    .fetch_optional(db)
    .await
}

/// Returns false when the user has no such device.
pub async fn set_device_display_name(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    name: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id,
        name
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the devices (their access and refresh tokens go with them, by cascade); returns those deleted.
pub async fn delete_devices(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_ids: &[String],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "DELETE FROM devices WHERE user_id = $1 AND device_id = ANY($2) RETURNING device_id",
        user_id,
        device_ids
    )
    .fetch_all(db)
    .await
}

/// Deletes every device of the user but `keep`; returns those deleted.
pub async fn delete_devices_except(
    db: impl PgExecutor<'_>,
    user_id: &str,
    keep: Option<&str>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "DELETE FROM devices WHERE user_id = $1 AND device_id IS DISTINCT FROM $2 RETURNING device_id",
        user_id,
        keep
    )
    .fetch_all(db)
    .await
}

/// One device's activity.
pub struct Seen {
    pub user_id: String,
    pub device_id: String,
    pub ts: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Records devices' activity (`seen` in (user, device) order, the order their rows are locked
/// in); an address or User-Agent not given keeps the stored one.
pub async fn touch_devices(db: &PgPool, seen: &[Seen]) -> sqlx::Result<()> {
    let users: Vec<&str> = seen.iter().map(|s| s.user_id.as_str()).collect();
    let devices: Vec<&str> = seen.iter().map(|s| s.device_id.as_str()).collect();
    let times: Vec<i64> = seen.iter().map(|s| s.ts).collect();
    let ips: Vec<Option<&str>> = seen.iter().map(|s| s.ip.as_deref()).collect();
    let agents: Vec<Option<&str>> = seen.iter().map(|s| s.user_agent.as_deref()).collect();
    sqlx::query!(
        "UPDATE devices d SET last_seen_ts = w.ts, last_seen_ip = COALESCE(w.ip, d.last_seen_ip),
                last_seen_user_agent = COALESCE(w.ua, d.last_seen_user_agent)
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) AS w(u, dev, ts, ip, ua)
         WHERE d.user_id = w.u AND d.device_id = w.dev",
        &users as &[&str],
        &devices as &[&str],
        &times,
        &ips as &[Option<&str>],
        &agents as &[Option<&str>]
    )
    .execute(db)
    .await?;
    Ok(())
}

pub struct DirectoryUser {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// Local users matching `pattern` (an ILIKE pattern) on user ID or display name, who share a room
/// with `searcher` or sit in a public room (join rule `public` or history `world_readable`, as in
/// Synapse's user directory) — or all users when `everyone`. Sharing a room with oneself does not
/// count, and `everyone` leaves the searcher out, as Synapse's search_user_dir does.
pub async fn search_directory(
    db: &PgPool,
    searcher: &str,
    pattern: &str,
    everyone: bool,
    limit: i64,
) -> sqlx::Result<Vec<DirectoryUser>> {
    sqlx::query_as!(
        DirectoryUser,
        r#"SELECT u.user_id, u.displayname, u.avatar_url FROM users u
           WHERE NOT u.deactivated
             AND (u.user_id ILIKE $2 OR u.displayname ILIKE $2)
             AND (($3 AND u.user_id <> $1)
                  OR (NOT $3 AND (EXISTS (SELECT 1 FROM memberships mine JOIN memberships theirs ON theirs.room_id = mine.room_id
                             WHERE mine.user_id = $1 AND mine.membership = 'join'
                               AND theirs.user_id = u.user_id AND theirs.user_id <> $1
                               AND theirs.membership = 'join')
                  OR EXISTS (SELECT 1 FROM memberships m
                             JOIN room_state s ON s.room_id = m.room_id AND s.state_key = ''
                               AND s.event_type IN ('m.room.join_rules', 'm.room.history_visibility')
                             JOIN events e ON e.event_id = s.event_id
                             WHERE m.user_id = u.user_id AND m.membership = 'join'
                               AND (e.client_json::jsonb -> 'content' ->> 'join_rule' = 'public'
                                    OR e.client_json::jsonb -> 'content' ->> 'history_visibility' = 'world_readable')))))
           ORDER BY (u.displayname IS NULL), u.displayname, u.user_id
           LIMIT $4"#,
        searcher,
        pattern,
        everyone,
        limit
    )
    .fetch_all(db)
    .await
}

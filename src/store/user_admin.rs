//! users, as the admin API sees them: listing with filters and ordering, and the admin-only flags.

use sqlx::{PgExecutor, Postgres, QueryBuilder};

/// A user as the admin API lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminUserRow {
    pub user_id: String,
    pub is_guest: bool,
    pub is_admin: bool,
    pub deactivated: bool,
    pub locked: bool,
    pub shadow_banned: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub created_ts: i64,
    /// Whether the user asked for erasure on deactivation.
    pub erased: bool,
    /// The newest activity of any of the user's devices.
    pub last_seen_ts: Option<i64>,
}

/// The one column list of `AdminUserRow`.
const COLUMNS: &str =
    "u.user_id, u.is_guest, u.is_admin, u.deactivated, u.locked, u.shadow_banned, u.displayname,
    u.avatar_url, u.created_ts,
    EXISTS (SELECT 1 FROM erased_users x WHERE x.user_id = u.user_id) AS erased,
    (SELECT max(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id) AS last_seen_ts";

/// Which users a listing shows. Patterns are SQL LIKE patterns (already escaped).
#[derive(Debug, Default)]
pub struct UserFilter {
    /// Matches the user ID.
    pub user_id: Option<String>,
    /// Matches the user ID or the display name.
    pub name: Option<String>,
    pub guests: bool,
    pub deactivated: bool,
    /// Whether locked users are listed.
    pub locked: bool,
    /// Only admins (true) or only non-admins (false).
    pub admins: Option<bool>,
}

/// The orderings the listing supports, each a column expression (never client text in SQL).
pub fn order_column(order_by: &str) -> Option<&'static str> {
    Some(match order_by {
        "name" => "u.user_id",
        "is_guest" => "u.is_guest",
        "admin" => "u.is_admin",
        "deactivated" => "u.deactivated",
        "displayname" => "u.displayname",
        "avatar_url" => "u.avatar_url",
        "creation_ts" => "u.created_ts",
        "locked" => "u.locked",
        "last_seen_ts" => "last_seen_ts",
        "shadow_banned" => "u.shadow_banned",
        // No user types here: every user ties, ordered by name.
        "user_type" => "u.user_id",
        _ => return None,
    })
}

fn push_filter<'a>(q: &mut QueryBuilder<'a, Postgres>, f: &'a UserFilter) {
    q.push(" WHERE TRUE");
    if let Some(pattern) = &f.user_id {
        q.push(" AND u.user_id ILIKE ").push_bind(pattern);
    }
    if let Some(pattern) = &f.name {
        q.push(" AND (u.user_id ILIKE ")
            .push_bind(pattern)
            .push(" OR u.displayname ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
    if !f.guests {
        q.push(" AND NOT u.is_guest");
    }
    if !f.deactivated {
        q.push(" AND NOT u.deactivated");
    }
    if !f.locked {
        q.push(" AND NOT u.locked");
    }
    if let Some(admins) = f.admins {
        q.push(" AND u.is_admin = ").push_bind(admins);
    }
}

/// One page of the users matching `filter`, ordered by `order` (from `order_column`) then by ID.
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &UserFilter,
    order: &'static str,
    descending: bool,
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<AdminUserRow>> {
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM users u"));
    push_filter(&mut q, filter);
    let dir = if descending { "DESC" } else { "ASC" };
    q.push(format!(
        " ORDER BY {order} {dir} NULLS LAST, u.user_id {dir} LIMIT "
    ))
    .push_bind(limit)
    .push(" OFFSET ")
    .push_bind(offset);
    q.build_query_as().fetch_all(db).await
}

/// How many users match `filter`.
pub async fn count(db: impl PgExecutor<'_>, filter: &UserFilter) -> sqlx::Result<i64> {
    let mut q = QueryBuilder::new("SELECT count(*) FROM users u");
    push_filter(&mut q, filter);
    q.build_query_scalar().fetch_one(db).await
}

pub async fn get(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<Option<AdminUserRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users u WHERE u.user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(db)
    .await
}

/// Sets the admin flag; false when the user does not exist.
pub async fn set_admin(db: impl PgExecutor<'_>, user_id: &str, admin: bool) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE users SET is_admin = $2 WHERE user_id = $1",
        user_id,
        admin
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Locks or unlocks the account; false when the user does not exist.
pub async fn set_locked(
    db: impl PgExecutor<'_>,
    user_id: &str,
    locked: bool,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE users SET locked = $2 WHERE user_id = $1",
        user_id,
        locked
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Makes a deactivated account usable again (Synapse: an admin may reactivate with a password).
pub async fn reactivate(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE users SET deactivated = FALSE WHERE user_id = $1 AND deactivated",
        user_id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether the account is locked (false for unknown users).
pub async fn is_locked(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<bool> {
    Ok(
        sqlx::query_scalar!("SELECT locked FROM users WHERE user_id = $1", user_id)
            .fetch_optional(db)
            .await?
            .unwrap_or(false),
    )
}

/// Shadow-bans or lifts the ban; false when the user does not exist.
pub async fn set_shadow_banned(
    db: impl PgExecutor<'_>,
    user_id: &str,
    banned: bool,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE users SET shadow_banned = $2 WHERE user_id = $1",
        user_id,
        banned
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

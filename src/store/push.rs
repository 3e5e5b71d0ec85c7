//! pushers: where each user's notifications are pushed.

use sqlx::{PgConnection, PgExecutor};

#[derive(Debug, Clone)]
pub struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    pub data: String,
    pub created_ts: i64,
}

pub async fn of_user(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<Vec<PusherRow>> {
    sqlx::query_as!(
        PusherRow,
        "SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, created_ts
         FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey",
        user_id
    )
    .fetch_all(db)
    .await
}

/// The pushers of several users (the members a new event notifies).
pub async fn of_users(
    db: impl PgExecutor<'_>,
    user_ids: &[String],
) -> sqlx::Result<Vec<PusherRow>> {
    sqlx::query_as!(
        PusherRow,
        "SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, created_ts
         FROM pushers WHERE user_id = ANY($1)",
        user_ids
    )
    .fetch_all(db)
    .await
}

pub async fn upsert(conn: &mut PgConnection, p: &PusherRow, device_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang,
             data, device_id, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = EXCLUDED.kind,
             app_display_name = EXCLUDED.app_display_name, device_display_name = EXCLUDED.device_display_name,
             profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang, data = EXCLUDED.data, device_id = EXCLUDED.device_id",
        p.user_id,
        p.app_id,
        p.pushkey,
        p.kind,
        p.app_display_name,
        p.device_display_name,
        p.profile_tag,
        p.lang,
        p.data,
        device_id,
        p.created_ts
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete(
    db: impl PgExecutor<'_>,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
        user_id,
        app_id,
        pushkey
    )
    .execute(db)
    .await?;
    Ok(())
}

/// append=false: the (app_id, pushkey) now belongs to this user only.
pub async fn delete_others(
    db: impl PgExecutor<'_>,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM pushers WHERE app_id = $2 AND pushkey = $3 AND user_id <> $1",
        user_id,
        app_id,
        pushkey
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The pushers a device set (when the device is logged out or deleted).
pub async fn delete_for_device(
    db: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2",
        user_id,
        device_id
    )
    .execute(db)
    .await?;
    Ok(())
}

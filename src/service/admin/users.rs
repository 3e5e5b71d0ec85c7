//! Users: listing, details, create-or-modify, password resets, locking, devices, joined rooms.

use serde_json::{Value, json};

use super::{Page, acting_as, contains_pattern, descending, local_user};
use crate::service::accounts;
use crate::service::auth::{self, Requester};
use crate::service::profile::{self, Field};
use crate::store::user_admin::{self, AdminUserRow, UserFilter};
use crate::{AppState, Error, Result, store};

/// The listing's query (Synapse's GET /_synapse/admin/v2/users parameters).
#[derive(Debug, Default)]
pub struct UserQuery {
    pub from: Option<i64>,
    pub limit: Option<i64>,
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub guests: Option<bool>,
    pub deactivated: Option<bool>,
    pub admins: Option<bool>,
    pub locked: Option<bool>,
    pub order_by: Option<String>,
    pub dir: Option<String>,
}

/// One page of users: the users, how many match, and the offset of the next page.
pub struct UserPage {
    pub users: Vec<AdminUserRow>,
    pub total: i64,
    pub next: Option<i64>,
}

pub async fn list(state: &AppState, q: UserQuery) -> Result<UserPage> {
    let page = Page::new(q.from, q.limit, 100)?;
    let order = user_admin::order_column(q.order_by.as_deref().unwrap_or("name"))
        .ok_or_else(|| Error::invalid_param("Unknown value for order_by"))?;
    let desc = descending(q.dir.as_deref())?;
    let filter = UserFilter {
        user_id: q.user_id.as_deref().map(contains_pattern),
        name: q.name.as_deref().map(contains_pattern),
        guests: q.guests.unwrap_or(true),
        deactivated: q.deactivated.unwrap_or(false),
        admins: q.admins,
        locked: q.locked.unwrap_or(false),
    };
    let users = user_admin::list(&state.db, &filter, order, desc, page.from, page.limit).await?;
    let total = user_admin::count(&state.db, &filter).await?;
    let next = page.next(users.len(), total);
    Ok(UserPage { users, total, next })
}

/// A user and the addresses it holds; 404 when the user does not exist.
pub async fn get(state: &AppState, user_id: &str) -> Result<(AdminUserRow, Vec<Value>)> {
    let user_id = local_user(state, user_id)?;
    let user = user_admin::get(&state.db, &user_id)
        .await?
        .ok_or_else(|| Error::not_found("User not found"))?;
    let threepids = store::threepids::list(&state.db, &user_id)
        .await?
        .into_iter()
        .map(|t| {
            json!({"medium": t.medium, "address": t.address,
                   "validated_at": t.validated_at, "added_at": t.added_at})
        })
        .collect();
    Ok((user, threepids))
}

/// Creates a user; 400 `M_USER_IN_USE` when the name was ever issued, `M_INVALID_USERNAME` when
/// the localpart is not allowed.
pub async fn create(
    state: &AppState,
    user_id: &str,
    password: Option<String>,
    admin: bool,
) -> Result<()> {
    let user_id = local_user(state, user_id)?;
    let localpart = user_id[1..].split(':').next().unwrap_or_default();
    accounts::validate_localpart(state, localpart)?;
    accounts::create_user(state, &user_id, password, admin, None).await
}

/// What PUT /_synapse/admin/v2/users/{userId} may set; absent fields stay as they are.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub password: Option<String>,
    /// Whether a new password logs the user's devices out (Synapse's default: true).
    pub logout_devices: bool,
    pub displayname: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
    pub admin: Option<bool>,
    pub deactivated: Option<bool>,
    pub locked: Option<bool>,
}

/// Creates the user if it does not exist, then applies `changes`. Returns whether it was created.
pub async fn create_or_modify(
    state: &AppState,
    user_id: &str,
    changes: UserChanges,
) -> Result<bool> {
    let user_id = local_user(state, user_id)?;
    let existing = store::users::get_user(&state.db, &user_id).await?;
    let created = existing.is_none();
    if created {
        let admin = changes.admin.unwrap_or(false);
        create(state, &user_id, changes.password.clone(), admin).await?;
    } else if let Some(password) = changes.password.clone() {
        let deactivated = existing.as_ref().is_some_and(|u| u.deactivated);
        if deactivated && changes.deactivated != Some(false) {
            return Err(Error::forbidden(
                "The user is deactivated; reactivate it to set a password",
            ));
        }
        if deactivated {
            user_admin::reactivate(&state.db, &user_id).await?;
        }
        accounts::change_password(state, &user_id, password, None, changes.logout_devices).await?;
    }
    apply_flags(state, &user_id, &changes, existing.as_ref()).await?;
    apply_profile(state, &user_id, &changes).await?;
    Ok(created)
}

/// Admin, locked and deactivated flags.
async fn apply_flags(
    state: &AppState,
    user_id: &str,
    changes: &UserChanges,
    existing: Option<&store::users::UserRow>,
) -> Result<()> {
    let mut sessions_changed = false;
    if let Some(admin) = changes.admin
        && existing.is_some_and(|u| u.is_admin != admin)
    {
        user_admin::set_admin(&state.db, user_id, admin).await?;
        sessions_changed = true;
    }
    if let Some(locked) = changes.locked {
        user_admin::set_locked(&state.db, user_id, locked).await?;
        sessions_changed = true;
    }
    match (changes.deactivated, existing) {
        (Some(true), Some(u)) if !u.deactivated => {
            accounts::deactivate(state, user_id, false).await?
        }
        (Some(false), Some(u)) if u.deactivated && changes.password.is_none() => {
            return Err(Error::bad_json(
                "Must provide a password to re-activate an account.",
            ));
        }
        _ => {}
    }
    if sessions_changed {
        // Cached tokens carry the admin flag and miss the lock: every process looks again.
        auth::invalidate_tokens(state).await?;
    }
    Ok(())
}

/// Display name and avatar, through the profile rules so the user's member events follow.
async fn apply_profile(state: &AppState, user_id: &str, changes: &UserChanges) -> Result<()> {
    let acting = acting_as(user_id)?;
    if let Some(name) = &changes.displayname {
        profile::set_field(state, &acting, user_id, Field::DisplayName, name.clone()).await?;
    }
    if let Some(url) = &changes.avatar_url {
        profile::set_field(state, &acting, user_id, Field::AvatarUrl, url.clone()).await?;
    }
    Ok(())
}

/// POST /_synapse/admin/v1/reset_password/{userId}.
pub async fn reset_password(
    state: &AppState,
    user_id: &str,
    password: String,
    logout_devices: bool,
) -> Result<()> {
    let user_id = local_user(state, user_id)?;
    accounts::change_password(state, &user_id, password, None, logout_devices).await
}

/// Deactivates the user (with `erase`, as the client API's erase).
pub async fn deactivate(state: &AppState, user_id: &str, erase: bool) -> Result<()> {
    let user_id = local_user(state, user_id)?;
    accounts::deactivate(state, &user_id, erase).await
}

/// The rooms the user is joined to (none for an unknown user, as Synapse answers).
pub async fn joined_rooms(state: &AppState, user_id: &str) -> Result<Vec<String>> {
    let user_id = local_user(state, user_id)?;
    Ok(store::rooms::joined_rooms(&state.db, &user_id).await?)
}

/// The user's devices; 404 for an unknown user.
pub async fn devices(state: &AppState, user_id: &str) -> Result<Vec<accounts::Device>> {
    let user_id = existing_user(state, user_id).await?;
    accounts::devices(state, &user_id).await
}

/// One device of the user; 404 for an unknown user or device.
pub async fn device(state: &AppState, user_id: &str, device_id: &str) -> Result<accounts::Device> {
    let user_id = existing_user(state, user_id).await?;
    accounts::device(state, &user_id, device_id).await
}

/// Renames one of the user's devices.
pub async fn rename_device(
    state: &AppState,
    user_id: &str,
    device_id: &str,
    name: Option<&str>,
) -> Result<()> {
    let user_id = existing_user(state, user_id).await?;
    accounts::rename_device(state, &user_id, device_id, name).await
}

/// Deletes the user's devices (unknown ones are ignored, as Synapse) and their sessions.
pub async fn delete_devices(state: &AppState, user_id: &str, device_ids: &[String]) -> Result<()> {
    let user_id = existing_user(state, user_id).await?;
    accounts::remove_devices(state, &user_id, device_ids).await?;
    Ok(())
}

/// The local user `user_id` if it exists; 404 otherwise.
async fn existing_user(state: &AppState, user_id: &str) -> Result<String> {
    let user_id = local_user(state, user_id)?;
    if store::users::get_user(&state.db, &user_id).await?.is_none() {
        return Err(Error::not_found("User not found"));
    }
    Ok(user_id)
}

/// Shadow-bans the user (or lifts it): its messages and state events are answered with made-up
/// event IDs and stored nowhere. Every process looks at the user's tokens again.
pub async fn set_shadow_banned(state: &AppState, user_id: &str, banned: bool) -> Result<()> {
    let user_id = local_user(state, user_id)?;
    if !user_admin::set_shadow_banned(&state.db, &user_id, banned).await? {
        return Err(Error::not_found("User not found"));
    }
    auth::invalidate_tokens(state).await
}

/// An access token acting as `user_id`, for an admin (config `admin.allow_login_as`). As Synapse's
/// puppet token it belongs to the admin and has no device: the user does not see it among its
/// devices, its logouts leave it alone, and its requests record no activity of the user's. It
/// lasts until `valid_until_ms` if given, else until logged out.
pub async fn login_as(
    state: &AppState,
    admin: &Requester,
    user_id: &str,
    valid_until_ms: Option<i64>,
) -> Result<String> {
    if !state.config.admin.allow_login_as {
        return Err(Error::forbidden(
            "Logging in as another user is disabled on this server",
        ));
    }
    let user_id = local_user(state, user_id)?;
    let user = user_admin::get(&state.db, &user_id)
        .await?
        .ok_or_else(|| Error::not_found("User not found"))?;
    if admin.user_id.as_str() == user_id {
        return Err(Error::invalid_param(
            "Cannot use admin API to login as self",
        ));
    }
    if user.deactivated {
        return Err(Error::forbidden("The user is deactivated"));
    }
    let token = auth::new_access_token();
    let hash = auth::hash_token(&token);
    store::tokens::insert_puppet_token(
        &state.db,
        &hash,
        &user_id,
        admin.user_id.as_str(),
        valid_until_ms,
    )
    .await?;
    tracing::info!(admin = %admin.user_id, user = %user_id, "admin logged in as a user");
    Ok(token)
}

//! Accounts: users, passwords, sessions (device + tokens), devices, deactivation.
//!
//! Every removal of devices goes through `remove_devices`/`remove_other_devices`: their tokens go
//! with them (by cascade) and every process's token cache is told.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use ruma::UserId;
use unicode_normalization::UnicodeNormalization;

use crate::error::OnConstraint;
use crate::service::auth::{self, hash_token, new_access_token, new_refresh_token, random_string};
use crate::{AppState, Error, Result, store};

/// The longest device ID we accept from a client.
const MAX_DEVICE_ID_LEN: usize = 255;

/// What a client gets after registering, logging in or refreshing.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    pub access_token: String,
    /// Only when the client asked for refresh tokens; then the access token expires.
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

/// How a client wants its session.
#[derive(Debug, Clone, Default)]
pub struct SessionRequest {
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
    pub ip: Option<String>,
    /// The client supports refresh tokens (`refresh_token: true`).
    pub refreshable: bool,
}

/// Passwords are hashed and checked in Unicode NFKC form, as Synapse does (handlers/auth.py), so
/// that the same password typed on another keyboard (composed or decomposed accents, say) matches.
fn normalized(password: &str) -> String {
    password.nfkc().collect()
}

/// Hashes off the async runtime: argon2 is deliberately slow.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let password = normalized(&password);
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(Error::internal)?
    .map_err(|e| Error::internal(format!("hashing: {e}")))
}

/// Verifies off the async runtime. With no stored hash a dummy one is checked, so unknown users take
/// as long as wrong passwords (no user enumeration by timing).
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool> {
    // A real hash of a random password: verifying against it costs the same as a real check.
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    tokio::task::spawn_blocking(move || {
        let real = stored.is_some();
        let text = stored.unwrap_or_else(|| {
            DUMMY
                .get_or_init(|| {
                    let salt = SaltString::generate(&mut rand::rngs::OsRng);
                    Argon2::default()
                        .hash_password(random_string(16).as_bytes(), &salt)
                        .map(|h| h.to_string())
                        .unwrap_or_default()
                })
                .clone()
        });
        let Ok(parsed) = PasswordHash::new(&text) else {
            return false;
        };
        let matches = |candidate: &str| {
            Argon2::default()
                .verify_password(candidate.as_bytes(), &parsed)
                .is_ok()
        };
        // Hashes made before passwords were normalised hold the password as it was typed.
        let nfkc = normalized(&password);
        (matches(&nfkc) || (nfkc != password && matches(&password))) && real
    })
    .await
    .map_err(Error::internal)
}

/// Whether `password` is the password of the active user `user_id`. Unknown and deactivated users
/// cost the same hashing work and answer false.
///
/// Failed attempts are limited per account (`rate_limits.failed_login`, whatever the address): while
/// the account's failures are used up, every password is refused with `M_LIMIT_EXCEEDED` before it is
/// checked, the right one too, as Synapse does; the refusal lasts until the bucket refills.
pub async fn check_password(state: &AppState, user_id: &str, password: &str) -> Result<bool> {
    state.rate_limiter.check_failed_logins(user_id)?;
    let row = store::users::get_user(&state.db, user_id).await?;
    let stored = row.filter(|u| !u.deactivated).and_then(|u| u.password_hash);
    let right = verify_password(password.to_owned(), stored).await?;
    if !right {
        state.rate_limiter.note_failed_login(user_id);
    }
    Ok(right)
}

/// The spec's localpart rules (lowercase historical grammar) and the 255-byte user ID limit.
pub fn validate_localpart(state: &AppState, localpart: &str) -> Result<String> {
    if localpart.is_empty()
        || !localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        )
    {
        return Err(Error::invalid_username(
            "User ID can only contain characters a-z, 0-9, or '=_-./+'",
        ));
    }
    // As Synapse: numeric localparts are for guests (`service::guests`).
    if localpart.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid_username(
            "Numeric user IDs are reserved for guest users",
        ));
    }
    let user_id = format!("@{localpart}:{}", state.server_name);
    if user_id.len() > 255 || UserId::parse(&user_id).is_err() {
        return Err(Error::invalid_username("User ID is too long"));
    }
    Ok(user_id)
}

/// The user ID a login names: a localpart or a full user ID, matched case-insensitively.
/// No validation: a name that cannot exist simply fails the password check.
pub fn user_id_from_login(state: &AppState, name: &str) -> String {
    let name = name.to_lowercase();
    if name.starts_with('@') {
        name
    } else {
        format!("@{name}:{}", state.server_name)
    }
}

/// `M_USER_IN_USE` when the name was ever issued (deactivated accounts keep theirs).
pub async fn ensure_available(state: &AppState, user_id: &str) -> Result<()> {
    if store::users::user_exists(&state.db, user_id).await? {
        return Err(Error::user_in_use("User ID already taken"));
    }
    Ok(())
}

/// A free localpart for a registration without a username.
pub async fn generate_user_id(state: &AppState) -> Result<String> {
    loop {
        let user_id = validate_localpart(state, &format!("u{}", random_string(10).to_lowercase()))?;
        if !store::users::user_exists(&state.db, &user_id).await? {
            return Ok(user_id);
        }
    }
}

/// Creates the account. `registration_token`, if given, is consumed in the same transaction: a token
/// that ran out or expired meanwhile fails the registration.
pub async fn create_user(
    state: &AppState,
    user_id: &str,
    password: Option<String>,
    is_admin: bool,
    registration_token: Option<&str>,
) -> Result<()> {
    let hash = match password {
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };
    create_user_hashed(state, user_id, hash, is_admin, registration_token).await
}

/// As `create_user`, with the password already hashed (`hash_password`).
pub async fn create_user_hashed(
    state: &AppState,
    user_id: &str,
    hash: Option<String>,
    is_admin: bool,
    registration_token: Option<&str>,
) -> Result<()> {
    let localpart = user_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default();
    let mut tx = state.db.begin().await?;
    store::users::insert_user(
        &mut *tx,
        user_id,
        hash.as_deref(),
        is_admin,
        Some(localpart),
    )
    .await
    .on_constraint("users_pkey", || Error::user_in_use("User ID already taken"))?;
    if let Some(token) = registration_token
        && !store::registration::consume_token(&mut tx, token, store::now_ms()).await?
    {
        return Err(Error::unauthorized(
            "The registration token is no longer valid",
        ));
    }
    tx.commit().await?;
    Ok(())
}

/// Makes the guest `user_id` a full account with the password `hash`, consuming
/// `registration_token` in the same transaction; every process forgets the guest's cached tokens,
/// which now belong to a full account. 403 when `user_id` is no longer an active guest.
pub async fn upgrade_guest(
    state: &AppState,
    user_id: &str,
    hash: &str,
    registration_token: Option<&str>,
) -> Result<()> {
    let mut tx = state.db.begin().await?;
    if !store::users::upgrade_guest(&mut *tx, user_id, hash).await? {
        return Err(Error::forbidden("This account is not a guest account"));
    }
    if let Some(token) = registration_token
        && !store::registration::consume_token(&mut tx, token, store::now_ms()).await?
    {
        return Err(Error::unauthorized(
            "The registration token is no longer valid",
        ));
    }
    tx.commit().await?;
    auth::invalidate_tokens(state).await
}

/// Opens a session: creates the device (or takes over the given one of this user, revoking the
/// tokens it had) and mints an access token, plus a refresh token if the client asked for one.
pub async fn open_session(
    state: &AppState,
    user_id: &str,
    request: SessionRequest,
) -> Result<Session> {
    let device_id = match request.device_id {
        Some(id) if id.is_empty() || id.len() > MAX_DEVICE_ID_LEN => {
            return Err(Error::invalid_param(
                "device_id must be 1 to 255 bytes long",
            ));
        }
        Some(id) => id,
        None => random_string(10).to_uppercase(),
    };
    let mut tx = state.db.begin().await?;
    let created = store::users::upsert_device(
        &mut tx,
        user_id,
        &device_id,
        request.initial_device_display_name.as_deref(),
        request.ip.as_deref(),
    )
    .await?;
    let revoked = if created {
        0
    } else {
        store::tokens::delete_device_tokens(&mut tx, user_id, &device_id).await?
    };
    let session = mint_tokens(state, &mut tx, user_id, &device_id, request.refreshable).await?;
    tx.commit().await?;
    if revoked > 0 {
        auth::invalidate_tokens(state).await?;
    }
    if created {
        // Other users' clients learn of the new device through /sync device_lists.
        crate::service::e2ee::device_changed(state, user_id).await?;
    }
    Ok(session)
}

async fn mint_tokens(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    user_id: &str,
    device_id: &str,
    refreshable: bool,
) -> Result<Session> {
    let access_token = new_access_token();
    let (refresh_token, expires_in_ms) = if refreshable {
        let refresh = new_refresh_token();
        store::tokens::insert_refresh_token(&mut *conn, &hash_token(&refresh), user_id, device_id)
            .await?;
        (
            Some(refresh),
            Some(state.config.sessions.refreshable_access_token_lifetime_ms),
        )
    } else {
        (None, None)
    };
    let expires_ts = expires_in_ms.map(|ms| store::now_ms() + ms as i64);
    let refresh_hash = refresh_token.as_deref().map(hash_token);
    store::tokens::insert_access_token(
        &mut *conn,
        &hash_token(&access_token),
        user_id,
        device_id,
        expires_ts,
        refresh_hash.as_ref().map(|h| h.as_slice()),
    )
    .await?;
    Ok(Session {
        user_id: user_id.to_owned(),
        device_id: device_id.to_owned(),
        access_token,
        refresh_token,
        expires_in_ms,
    })
}

/// Password login. Unknown user and wrong password are the same refusal after the same work.
pub async fn login(
    state: &AppState,
    name: &str,
    password: &str,
    request: SessionRequest,
) -> Result<Session> {
    let user_id = user_id_from_login(state, name);
    if !check_password(state, &user_id, password).await? {
        return Err(Error::forbidden("Invalid username or password"));
    }
    // As Synapse: the right password of a locked account is refused as the account's requests are.
    if store::user_admin::is_locked(&state.db, &user_id).await? {
        return Err(Error::user_locked());
    }
    open_session(state, &user_id, request).await
}

/// Exchanges a refresh token for a new access token and refresh token. The old refresh token stays
/// usable (a client that lost the answer may retry) until the new access or refresh token is used.
pub async fn refresh(state: &AppState, refresh_token: &str) -> Result<Session> {
    let hash = hash_token(refresh_token);
    let mut tx = state.db.begin().await?;
    let row = store::tokens::lock_refresh_token(&mut tx, &hash)
        .await?
        .ok_or_else(|| Error::unknown_token("Unknown or already used refresh token"))?;
    if let Some(unused_successor) = &row.next_token_hash {
        // A retry: the tokens handed out last time were never used; they are replaced.
        store::tokens::delete_refresh_token(&mut tx, unused_successor).await?;
    }
    // Using this token proves its predecessor's answer arrived.
    store::tokens::revoke_predecessor(&mut *tx, &hash).await?;
    // The access token it was paired with is superseded. Processes that cached it may honour it until
    // it expires, which the spec allows.
    store::tokens::delete_access_tokens_of_refresh(&mut tx, &hash).await?;
    let session = mint_tokens(state, &mut tx, &row.user_id, &row.device_id, true).await?;
    let new_hash = hash_token(session.refresh_token.as_deref().unwrap_or_default());
    store::tokens::set_next_refresh_token(&mut tx, &hash, &new_hash).await?;
    tx.commit().await?;
    Ok(session)
}

/// Logs out the session of `token` (expired or not): its device goes, with all its tokens.
pub async fn logout(state: &AppState, token: &str) -> Result<()> {
    let hash = hash_token(token);
    let Some(owner) = store::tokens::find_access_token(&state.db, &hash).await? else {
        // A puppet token (the admin API's "login as") has no device: only the token goes.
        if store::tokens::delete_puppet_token(&state.db, &hash).await? {
            return auth::invalidate_tokens(state).await;
        }
        return Err(Error::unknown_token("Unknown access token"));
    };
    remove_devices(state, &owner.user_id, &[owner.device_id]).await?;
    Ok(())
}

/// Deletes the user's devices in `device_ids` (unknown ones are ignored) and revokes their tokens
/// everywhere. Returns the devices that were deleted.
pub async fn remove_devices(
    state: &AppState,
    user_id: &str,
    device_ids: &[String],
) -> Result<Vec<String>> {
    let deleted = store::users::delete_devices(&state.db, user_id, device_ids).await?;
    forget_devices(state, user_id, &deleted).await?;
    Ok(deleted)
}

/// What goes with a deleted device: its tokens on every process, its keys, its pushers.
async fn forget_devices(state: &AppState, user_id: &str, deleted: &[String]) -> Result<()> {
    if deleted.is_empty() {
        return Ok(());
    }
    auth::invalidate_tokens(state).await?;
    for device_id in deleted {
        crate::service::e2ee::device_removed(state, user_id, device_id).await?;
        crate::service::push::remove_device_pushers(state, user_id, device_id).await?;
    }
    Ok(())
}

/// Deletes every device of the user except `keep` (all of them when None).
pub async fn remove_other_devices(
    state: &AppState,
    user_id: &str,
    keep: Option<&str>,
) -> Result<Vec<String>> {
    let deleted = store::users::delete_devices_except(&state.db, user_id, keep).await?;
    forget_devices(state, user_id, &deleted).await?;
    Ok(deleted)
}

/// Sets a new password; unless `logout_devices` is false, every other device is logged out.
pub async fn change_password(
    state: &AppState,
    user_id: &str,
    new_password: String,
    keep_device: Option<&str>,
    logout_devices: bool,
) -> Result<()> {
    let hash = hash_password(new_password).await?;
    if !store::users::set_password_hash(&state.db, user_id, &hash).await? {
        return Err(Error::not_found("No such active user"));
    }
    if logout_devices {
        remove_other_devices(state, user_id, keep_device).await?;
    }
    Ok(())
}

/// Deactivates the account for good: it can no longer log in, every device and token goes, the user
/// leaves every room, and the name is never issued again. With `erase`, the user's events are from
/// now on served redacted to users who were not in the room when they were sent (`service::erasure`;
/// marked before the leaves, as Synapse's deactivate_account.py marks before parting the rooms).
pub async fn deactivate(state: &AppState, user_id: &str, erase: bool) -> Result<()> {
    if !store::users::deactivate(&state.db, user_id).await? {
        return Err(Error::not_found("No such active user"));
    }
    if erase {
        crate::service::erasure::mark(state, user_id).await?;
    }
    // As Synapse: the account's addresses are freed for others.
    store::threepids::delete_all(&state.db, user_id).await?;
    remove_other_devices(state, user_id, None).await?;
    crate::service::rooms::leave_all_rooms(state, user_id).await
}

pub use store::users::DeviceRow as Device;

pub async fn devices(state: &AppState, user_id: &str) -> Result<Vec<Device>> {
    Ok(store::users::list_devices(&state.db, user_id).await?)
}

/// The devices of a user that exists; `M_NOT_FOUND` otherwise.
pub async fn devices_of_existing_user(state: &AppState, user_id: &str) -> Result<Vec<Device>> {
    if store::users::get_user(&state.db, user_id).await?.is_none() {
        return Err(Error::not_found("No such user"));
    }
    devices(state, user_id).await
}

pub async fn device(state: &AppState, user_id: &str, device_id: &str) -> Result<Device> {
    store::users::get_device(&state.db, user_id, device_id)
        .await?
        .ok_or_else(|| Error::not_found("No such device"))
}

pub async fn rename_device(
    state: &AppState,
    user_id: &str,
    device_id: &str,
    name: Option<&str>,
) -> Result<()> {
    let exists = match name {
        Some(name) => {
            let renamed =
                store::users::set_device_display_name(&state.db, user_id, device_id, name).await?;
            if renamed {
                crate::service::e2ee::device_changed(state, user_id).await?;
            }
            renamed
        }
        None => store::users::get_device(&state.db, user_id, device_id)
            .await?
            .is_some(),
    };
    if exists {
        Ok(())
    } else {
        Err(Error::not_found("No such device"))
    }
}

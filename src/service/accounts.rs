//! Accounts: creating users, passwords, sessions (device + access token).

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use ruma::UserId;

use crate::service::auth::{self, hash_token, new_access_token, random_string};
use crate::{AppState, Error, Result, store};

/// What a client gets after registering or logging in.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    pub access_token: Option<String>,
}

/// Hashes off the async runtime: argon2 is deliberately slow.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
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
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
            && real
    })
    .await
    .map_err(Error::internal)
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
    let user_id = format!("@{localpart}:{}", state.server_name);
    if user_id.len() > 255 || UserId::parse(&user_id).is_err() {
        return Err(Error::invalid_username("User ID is too long"));
    }
    Ok(user_id)
}

/// Opens a session: creates (or reuses) the device and mints an access token.
pub async fn open_session(
    state: &AppState,
    user_id: &str,
    device_id: Option<String>,
    display_name: Option<&str>,
    ip: Option<&str>,
) -> Result<Session> {
    let device_id = device_id.unwrap_or_else(|| random_string(10).to_uppercase());
    let token = new_access_token();
    let mut tx = state.db.begin().await?;
    store::users::upsert_device(&mut *tx, user_id, &device_id, display_name, ip).await?;
    store::tokens::insert_access_token(&mut *tx, &hash_token(&token), user_id, &device_id, None)
        .await?;
    tx.commit().await?;
    Ok(Session {
        user_id: user_id.to_owned(),
        device_id,
        access_token: Some(token),
    })
}

/// Creates the user; `M_USER_IN_USE` if the name was ever taken.
pub async fn create_user(
    state: &AppState,
    user_id: &str,
    password: Option<String>,
    is_admin: bool,
) -> Result<()> {
    let hash = match password {
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };
    let localpart = user_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default();
    use crate::error::OnConstraint;
    store::users::insert_user(
        &state.db,
        user_id,
        hash.as_deref(),
        is_admin,
        Some(localpart),
    )
    .await
    .on_constraint("users_pkey", || Error::user_in_use("User ID already taken"))
}

pub async fn logout(state: &AppState, token: &str) -> Result<()> {
    store::tokens::delete_access_token(&state.db, &hash_token(token)).await?;
    auth::invalidate_tokens(state).await
}

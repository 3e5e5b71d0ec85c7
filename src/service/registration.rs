//! Registration tokens (the `m.login.registration_token` stage) and the Synapse-compatible
//! shared-secret registration of `/_synapse/admin/v1/register`.

use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::service::accounts::{self, Session, SessionRequest};
use crate::service::auth::random_string;
use crate::{AppState, Error, Result, store};

/// Synapse forgets its nonces after a minute.
const NONCE_LIFETIME_MS: i64 = 60 * 1000;

/// The spec's grammar for registration tokens: `[A-Za-z0-9._~-]{1,64}`.
pub fn token_is_well_formed(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

/// Whether the token exists, has uses left and has not expired.
pub async fn token_is_valid(state: &AppState, token: &str) -> Result<bool> {
    if !token_is_well_formed(token) {
        return Ok(false);
    }
    let Some(row) = store::registration::get_token(&state.db, token).await? else {
        return Ok(false);
    };
    let uses_left = row
        .uses_allowed
        .is_none_or(|allowed| row.completed < allowed);
    let unexpired = row.expiry_ts.is_none_or(|ts| ts > store::now_ms());
    Ok(uses_left && unexpired)
}

fn shared_secret(state: &AppState) -> Result<&str> {
    state
        .config
        .registration
        .shared_secret
        .as_deref()
        .ok_or_else(|| Error::unknown("Shared secret registration is not enabled"))
}

/// A single-use nonce for one shared-secret registration.
pub async fn new_nonce(state: &AppState) -> Result<String> {
    shared_secret(state)?;
    store::registration::prune_nonces(&state.db, store::now_ms() - NONCE_LIFETIME_MS).await?;
    let nonce = random_string(32);
    store::registration::insert_nonce(&state.db, &nonce).await?;
    Ok(nonce)
}

/// A request of `/_synapse/admin/v1/register`.
pub struct SharedSecretRegistration {
    pub nonce: String,
    pub username: String,
    pub password: String,
    pub admin: bool,
    pub user_type: Option<String>,
    pub displayname: Option<String>,
    /// Hex HMAC-SHA1 of nonce NUL username NUL password NUL admin|notadmin [NUL user_type].
    pub mac: String,
}

/// Registers (and logs in) a user whose request is signed with the shared secret. The nonce is
/// spent whether or not the MAC is right, as in Synapse.
pub async fn register_with_shared_secret(
    state: &AppState,
    request: SharedSecretRegistration,
    ip: Option<String>,
) -> Result<Session> {
    let secret = shared_secret(state)?;
    let issued = store::registration::take_nonce(&state.db, &request.nonce).await?;
    if issued.is_none_or(|ts| ts <= store::now_ms() - NONCE_LIFETIME_MS) {
        return Err(Error::unknown("Unrecognised nonce"));
    }
    if request.username.contains('\0') || request.password.contains('\0') {
        return Err(Error::invalid_param("Invalid username or password"));
    }
    let given = hex::decode(request.mac.trim()).map_err(|_| Error::forbidden("HMAC incorrect"))?;
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).map_err(Error::internal)?;
    mac.update(&signed_bytes(&request));
    // Constant-time comparison.
    mac.verify_slice(&given)
        .map_err(|_| Error::forbidden("HMAC incorrect"))?;

    let user_id = accounts::validate_localpart(state, &request.username.to_lowercase())?;
    accounts::create_user(state, &user_id, Some(request.password), request.admin, None).await?;
    if let Some(name) = request.displayname.as_deref() {
        store::users::set_displayname(&state.db, &user_id, Some(name)).await?;
    }
    accounts::open_session(
        state,
        &user_id,
        SessionRequest {
            ip,
            ..SessionRequest::default()
        },
    )
    .await
}

fn signed_bytes(request: &SharedSecretRegistration) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (i, part) in [request.nonce.as_str(), &request.username, &request.password]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            bytes.push(0);
        }
        bytes.extend_from_slice(part.as_bytes());
    }
    bytes.push(0);
    bytes.extend_from_slice(if request.admin { b"admin" } else { b"notadmin" });
    if let Some(user_type) = &request.user_type {
        bytes.push(0);
        bytes.extend_from_slice(user_type.as_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_grammar() {
        assert!(token_is_well_formed("abc-DEF_123.~"));
        assert!(!token_is_well_formed(""));
        assert!(!token_is_well_formed("has space"));
        assert!(!token_is_well_formed(&"a".repeat(65)));
    }

    #[test]
    fn signed_bytes_follow_synapse() {
        let request = SharedSecretRegistration {
            nonce: "n".into(),
            username: "u".into(),
            password: "p".into(),
            admin: true,
            user_type: None,
            displayname: None,
            mac: String::new(),
        };
        assert_eq!(signed_bytes(&request), b"n\0u\0p\0admin");
        let typed = SharedSecretRegistration {
            admin: false,
            user_type: Some("bot".into()),
            ..request
        };
        assert_eq!(signed_bytes(&typed), b"n\0u\0p\0notadmin\0bot");
    }
}

//! Access tokens: minting, hashing, and the lookup every authenticated request makes.

use std::collections::HashMap;
use std::sync::Mutex;

use rand::Rng;
use rand::distributions::Alphanumeric;
use ruma::{OwnedDeviceId, OwnedUserId};
use sha2::{Digest, Sha256};

use crate::store;
use crate::{AppState, Error, Result};

/// Who is making a request.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_guest: bool,
    pub is_admin: bool,
    /// Shadow-banned by an admin: the user's sends seem to succeed but reach no one.
    pub is_shadow_banned: bool,
}

#[derive(Clone)]
struct CachedToken {
    requester: Requester,
    expires_ts: Option<i64>,
}

/// Token hash → owner. Logouts clear entries here and, through the notifier, on every other process.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], CachedToken>>,
    /// Updates of devices.last_seen_ts are throttled to one per device per interval.
    last_seen: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), i64>>,
}

const CACHE_LIMIT: usize = 100_000;
/// Activity (time, address, User-Agent) is recorded at most once a minute per device.
const LAST_SEEN_INTERVAL_MS: i64 = 60 * 1000;
/// Longer User-Agents are cut to this many characters before they are stored.
const MAX_USER_AGENT: usize = 512;

/// Where a request comes from, recorded as the device's last activity (shown by /admin/whois).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl TokenCache {
    pub fn clear(&self) {
        self.entries.lock().unwrap().clear();
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A random opaque string of `len` alphanumerics (access tokens use 43: over 256 bits).
pub fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn new_access_token() -> String {
    format!("axo_{}", random_string(43))
}

pub fn new_refresh_token() -> String {
    format!("axr_{}", random_string(43))
}

/// Resolves a bearer token to its owner.
pub async fn authenticate(state: &AppState, token: &str, client: ClientInfo) -> Result<Requester> {
    let hash = hash_token(token);
    let cached = state.tokens.entries.lock().unwrap().get(&hash).cloned();
    let entry = match cached {
        Some(entry) => entry,
        None => {
            let owner = match store::tokens::find_access_token(&state.db, &hash).await? {
                Some(owner) => owner,
                None => store::tokens::find_puppet_token(&state.db, &hash)
                    .await?
                    .ok_or_else(|| Error::unknown_token("Unknown access token"))?,
            };
            if owner.deactivated {
                return Err(Error::unknown_token("This account has been deactivated"));
            }
            if owner.locked {
                return Err(Error::user_locked());
            }
            let expired = owner.expires_ts.is_some_and(|ts| ts <= store::now_ms());
            if let (Some(refresh), false) = (&owner.refresh_token_hash, expired) {
                // The first use of a refreshed access token retires the refresh token it replaced
                // (spec: the old refresh token stays valid until the new tokens are used). Only a
                // cache miss gets here, so this costs one statement per token per process.
                store::tokens::revoke_predecessor(&state.db, refresh).await?;
            }
            let requester = Requester {
                user_id: OwnedUserId::try_from(owner.user_id).map_err(Error::internal)?,
                device_id: owner.device_id.into(),
                is_guest: owner.is_guest,
                is_admin: owner.is_admin,
                is_shadow_banned: owner.shadow_banned,
            };
            let entry = CachedToken {
                requester,
                expires_ts: owner.expires_ts,
            };
            let mut entries = state.tokens.entries.lock().unwrap();
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
            entries.insert(hash, entry.clone());
            entry
        }
    };
    let now = store::now_ms();
    if entry.expires_ts.is_some_and(|ts| ts <= now) {
        return Err(expired_token());
    }
    note_last_seen(state, &entry.requester, now, client);
    Ok(entry.requester)
}

/// An expired access token: the client may refresh it or log in again on the same device.
pub fn expired_token() -> Error {
    Error::unknown_token("Access token has expired").with_extra("soft_logout", true.into())
}

/// Records activity at most once per interval per device, off the request path.
fn note_last_seen(state: &AppState, requester: &Requester, now: i64, client: ClientInfo) {
    if requester.device_id.as_str() == store::tokens::PUPPET_DEVICE {
        // An admin acting as the user: not the user's activity (Synapse's default too).
        return;
    }
    let key = (requester.user_id.clone(), requester.device_id.clone());
    {
        let mut seen = state.tokens.last_seen.lock().unwrap();
        match seen.get(&key) {
            Some(ts) if now - ts < LAST_SEEN_INTERVAL_MS => return,
            _ => {
                seen.insert(key, now);
            }
        }
    }
    state.last_seen.note(crate::service::last_seen::Seen {
        user_id: requester.user_id.to_string(),
        device_id: requester.device_id.to_string(),
        ts: now,
        ip: client.ip,
        user_agent: client
            .user_agent
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect()),
    });
}

/// What a shadow-banned user is told its event got: an event ID that looks real and names nothing
/// (Synapse's shadow ban answers the same way).
pub fn fake_event_id() -> String {
    format!("${}", random_string(43))
}

/// Forgets cached tokens after a logout, here and on every other process.
pub async fn invalidate_tokens(state: &AppState) -> Result<()> {
    state.tokens.clear();
    crate::service::notifier::broadcast_invalidation(state, "tokens").await
}

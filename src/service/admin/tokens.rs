//! Registration tokens: create, list, read, update, delete (Synapse's registration_tokens admin
//! API and `axon registration-token`).

use crate::service::auth::random_string;
use crate::service::registration::token_is_well_formed;
pub use crate::store::registration::RegistrationTokenRow as RegistrationToken;
use crate::{AppState, Error, Result, store};

/// A token to create; everything optional as in Synapse.
#[derive(Debug, Default)]
pub struct NewToken {
    /// The token itself (random when absent).
    pub token: Option<String>,
    /// The length of a random token: 1 to 64, 16 by default.
    pub length: Option<i64>,
    pub uses_allowed: Option<i64>,
    pub expiry_ts: Option<i64>,
}

/// Creates a token and returns it.
pub async fn create(state: &AppState, new: NewToken) -> Result<RegistrationToken> {
    let token = match new.token {
        Some(token) => token,
        None => {
            let length = new.length.unwrap_or(16);
            if !(1..=64).contains(&length) {
                return Err(Error::invalid_param(
                    "length must be an integer between 1 and 64",
                ));
            }
            random_string(length as usize)
        }
    };
    if !token_is_well_formed(&token) {
        return Err(Error::invalid_param(
            "A token is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '~', '-'",
        ));
    }
    let uses_allowed = check_uses(new.uses_allowed)?;
    check_expiry(new.expiry_ts)?;
    if !store::registration::insert_token(&state.db, &token, uses_allowed, new.expiry_ts).await? {
        return Err(Error::invalid_param(format!(
            "Token already exists: {token}"
        )));
    }
    get(state, &token).await
}

fn check_uses(uses_allowed: Option<i64>) -> Result<Option<i32>> {
    uses_allowed
        .map(|n| {
            i32::try_from(n).ok().filter(|n| *n >= 0).ok_or_else(|| {
                Error::invalid_param("uses_allowed must be a non-negative integer or null")
            })
        })
        .transpose()
}

fn check_expiry(expiry_ts: Option<i64>) -> Result<()> {
    if expiry_ts.is_some_and(|ts| ts < store::now_ms()) {
        return Err(Error::invalid_param("expiry_time must not be in the past"));
    }
    Ok(())
}

/// Whether the token can still be used at `now`.
pub fn is_valid(token: &RegistrationToken, now: i64) -> bool {
    token
        .uses_allowed
        .is_none_or(|allowed| token.completed < allowed)
        && token.expiry_ts.is_none_or(|ts| ts > now)
}

/// Every token, or only the valid (`Some(true)`) or invalid (`Some(false)`) ones.
pub async fn list(state: &AppState, valid: Option<bool>) -> Result<Vec<RegistrationToken>> {
    let now = store::now_ms();
    let all = store::registration::list_tokens(&state.db).await?;
    Ok(all
        .into_iter()
        .filter(|t| valid.is_none_or(|want| is_valid(t, now) == want))
        .collect())
}

pub async fn get(state: &AppState, token: &str) -> Result<RegistrationToken> {
    store::registration::get_token(&state.db, token)
        .await?
        .ok_or_else(|| Error::not_found(format!("No such registration token: {token}")))
}

/// Changes the token's limits: each `Some` replaces the value (`Some(None)` removes the limit).
pub async fn update(
    state: &AppState,
    token: &str,
    uses_allowed: Option<Option<i64>>,
    expiry_ts: Option<Option<i64>>,
) -> Result<RegistrationToken> {
    let uses_allowed = uses_allowed.map(check_uses).transpose()?;
    if let Some(expiry) = expiry_ts {
        check_expiry(expiry)?;
    }
    store::registration::update_token(&state.db, token, uses_allowed, expiry_ts)
        .await?
        .ok_or_else(|| Error::not_found(format!("No such registration token: {token}")))
}

pub async fn delete(state: &AppState, token: &str) -> Result<()> {
    if store::registration::delete_token(&state.db, token).await? {
        Ok(())
    } else {
        Err(Error::not_found(format!(
            "No such registration token: {token}"
        )))
    }
}

/// `create` with the common arguments; returns the token's text.
pub async fn create_simple(
    state: &AppState,
    token: Option<String>,
    uses_allowed: Option<i32>,
    expiry_ts: Option<i64>,
) -> Result<String> {
    let new = NewToken {
        token,
        length: None,
        uses_allowed: uses_allowed.map(i64::from),
        expiry_ts,
    };
    Ok(create(state, new).await?.token)
}

//! POST /register with User-Interactive Authentication.
//!
//! As in Synapse (rest/client/register.py), the UIA session remembers the parameters of its first
//! request (the password only as its hash), so that the request completing the last stage may leave
//! them out, and, once the account exists, the user ID it registered: retrying the completed
//! registration with the same session answers for the same account instead of `M_USER_IN_USE`.
//! These live in the session's stored data (`uia_sessions.data`), beside the UIA bookkeeping.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::service::accounts::{self, Session, SessionRequest};
use crate::service::guests;
use crate::service::uia::{self, AuthData, Flow, Purpose};
use crate::{AppState, Error, Result, store};

/// The parameters of a registration request that a session remembers.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Params {
    pub username: Option<String>,
    /// Never stored: the session keeps `password_hash` instead.
    #[serde(skip)]
    pub password: Option<String>,
    pub password_hash: Option<String>,
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
    pub inhibit_login: Option<bool>,
    /// A guest's access token: registration then upgrades that guest, keeping its user ID. Never
    /// stored (a secret): the request completing the last stage must give it again.
    #[serde(skip)]
    pub guest_access_token: Option<String>,
}

impl Params {
    /// Each parameter this request gave, else the one remembered.
    fn or(self, stored: Params) -> Params {
        Params {
            username: self.username.or(stored.username),
            password: self.password,
            password_hash: stored.password_hash,
            device_id: self.device_id.or(stored.device_id),
            initial_device_display_name: self
                .initial_device_display_name
                .or(stored.initial_device_display_name),
            inhibit_login: self.inhibit_login.or(stored.inhibit_login),
            guest_access_token: self.guest_access_token,
        }
    }
}

/// What registration keeps in its UIA session's data.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    /// The first request's parameters.
    params: Option<Params>,
    /// The account this session registered.
    registered_user_id: Option<String>,
}

/// One POST /register.
pub struct Request<'a> {
    pub params: Params,
    /// The client supports refresh tokens.
    pub refresh_token: bool,
    pub auth: Option<&'a AuthData>,
    /// What the UIA session is bound to.
    pub operation: &'a uia::Operation,
    pub flows: &'a [Flow],
    pub ip: Option<IpAddr>,
}

/// The outcome: the account, logged in unless `inhibit_login` asked otherwise.
pub enum Registered {
    LoggedIn(Session),
    NotLoggedIn { user_id: String },
}

pub async fn register(state: &AppState, request: Request<'_>) -> Result<Registered> {
    let session_id = request.auth.and_then(|a| a.session.as_deref());
    let stored = match session_id {
        Some(id) => load(state, id).await?,
        None => Stored::default(),
    };
    let first_request = stored.params.is_none();
    let given = request.params.clone();
    let params = request.params.or(stored.params.unwrap_or_default());
    // The name is checked before any authentication, so the client learns early.
    let guest = match &params.guest_access_token {
        Some(token) if stored.registered_user_id.is_none() => {
            Some(guests::upgrading(state, token, params.username.as_deref()).await?)
        }
        _ => None,
    };
    if stored.registered_user_id.is_none() {
        if let (None, Some(name)) = (&guest, &params.username) {
            let user_id = accounts::validate_localpart(state, &name.to_lowercase())?;
            accounts::ensure_available(state, &user_id).await?;
        }
        let no_password = params.password.is_none() && params.password_hash.is_none();
        if request.auth.is_some() && no_password {
            return Err(Error::missing_param("Missing password"));
        }
    }
    let uia_request = uia::Request {
        purpose: Purpose::Register,
        operation: request.operation,
        user_id: None,
        flows: request.flows,
        ip: request.ip,
    };
    let passed = match uia::check(state, uia_request, request.auth).await {
        Err(Error::Uia(body)) => {
            if first_request {
                remember(state, &body, given).await?;
            }
            return Err(Error::Uia(body));
        }
        passed => passed?,
    };
    let user_id = match stored.registered_user_id {
        Some(user_id) => user_id,
        None => {
            let token = passed.registration_token.as_deref();
            let user_id = match guest {
                Some(guest) => upgrade_guest(state, guest, &params, token).await?,
                None => create_account(state, &params, token).await?,
            };
            if let Some(session) = passed.session() {
                let data = json!({ "registered_user_id": user_id });
                store::uia::merge_data(&state.db, session, &data).await?;
            }
            user_id
        }
    };
    if params.inhibit_login == Some(true) {
        return Ok(Registered::NotLoggedIn { user_id });
    }
    let session_request = SessionRequest {
        device_id: params.device_id,
        initial_device_display_name: params.initial_device_display_name,
        ip: request.ip.map(|ip| ip.to_string()),
        refreshable: request.refresh_token,
    };
    let session = accounts::open_session(state, &user_id, session_request).await?;
    Ok(Registered::LoggedIn(session))
}

async fn load(state: &AppState, session: &str) -> Result<Stored> {
    let data = store::uia::get_data(&state.db, session).await?;
    Ok(data
        .and_then(|d| serde_json::from_value(d).ok())
        .unwrap_or_default())
}

/// Keeps the first request's parameters with the session the 401 `body` names.
async fn remember(state: &AppState, body: &Value, mut params: Params) -> Result<()> {
    let Some(session) = body["session"].as_str() else {
        return Ok(());
    };
    if let Some(password) = params.password.take() {
        params.password_hash = Some(accounts::hash_password(password).await?);
    }
    let data = json!({ "params": params });
    store::uia::merge_data(&state.db, session, &data).await?;
    Ok(())
}

/// Makes the guest a full account with the parameters' password; its user ID stays.
async fn upgrade_guest(
    state: &AppState,
    user_id: String,
    params: &Params,
    registration_token: Option<&str>,
) -> Result<String> {
    let hash = password_hash(params).await?;
    accounts::upgrade_guest(state, &user_id, &hash, registration_token).await?;
    Ok(user_id)
}

async fn password_hash(params: &Params) -> Result<String> {
    match (&params.password, &params.password_hash) {
        (Some(password), _) => accounts::hash_password(password.clone()).await,
        (None, Some(hash)) => Ok(hash.clone()),
        (None, None) => Err(Error::missing_param("Missing password")),
    }
}

/// Creates the account the parameters ask for (a generated name when none was given).
async fn create_account(
    state: &AppState,
    params: &Params,
    registration_token: Option<&str>,
) -> Result<String> {
    let hash = password_hash(params).await?;
    let user_id = match &params.username {
        Some(name) => accounts::validate_localpart(state, &name.to_lowercase())?,
        None => accounts::generate_user_id(state).await?,
    };
    accounts::create_user_hashed(state, &user_id, Some(hash), false, registration_token).await?;
    Ok(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_parameters_win_and_the_rest_are_remembered() {
        let stored = Params {
            username: Some("first".into()),
            password_hash: Some("hash".into()),
            device_id: Some("DEV".into()),
            inhibit_login: Some(true),
            ..Params::default()
        };
        let given = Params {
            device_id: Some("OTHER".into()),
            ..Params::default()
        };
        let merged = given.or(stored);
        assert_eq!(merged.username.as_deref(), Some("first"));
        assert_eq!(merged.device_id.as_deref(), Some("OTHER"));
        assert_eq!(merged.password_hash.as_deref(), Some("hash"));
        assert_eq!(merged.inhibit_login, Some(true));
    }

    #[test]
    fn the_password_is_never_serialised() {
        let params = Params {
            password: Some("secret".into()),
            ..Params::default()
        };
        assert!(!serde_json::to_string(&params).unwrap().contains("secret"));
    }
}

//! Registration: POST /register (with User-Interactive Authentication), GET /register/available,
//! the registration-token validity check, and Synapse's shared-secret registration.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{ClientIp, UiaJson};
use crate::api::extract::{Json, Query};
use crate::api::login::session_body;
use crate::config::RegistrationPolicy;
use crate::service::register::{self, Registered};
use crate::service::registration::{self, SharedSecretRegistration};
use crate::service::uia::{self, Flow};
use crate::service::{accounts, guests};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/register/available", get(available))
}

/// Endpoints outside the v3 prefix.
pub fn other_routes() -> Router<AppState> {
    Router::new().route(
        "/_matrix/client/v1/register/m.login.registration_token/validity",
        get(token_validity),
    )
}

/// Synapse's admin API lives outside the client prefix.
pub fn admin_routes() -> Router<AppState> {
    Router::new().route(
        "/_synapse/admin/v1/register",
        get(nonce).post(shared_secret_register),
    )
}

#[derive(Deserialize)]
struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    inhibit_login: Option<bool>,
    #[serde(default)]
    refresh_token: bool,
    /// A guest upgrading to a full account (keeping its user ID) gives its access token here.
    guest_access_token: Option<String>,
    auth: Option<uia::AuthData>,
}

#[derive(Deserialize)]
struct RegisterQuery {
    kind: Option<String>,
}

/// The flows the registration policy asks for; 403 when registration is closed.
fn registration_flows(state: &AppState) -> Result<&'static [Flow]> {
    match state.config.registration_policy() {
        RegistrationPolicy::Disabled => Err(Error::forbidden("Registration has been disabled")),
        RegistrationPolicy::Open => Ok(&[&[uia::DUMMY]]),
        RegistrationPolicy::Token => Ok(&[&[uia::REGISTRATION_TOKEN]]),
    }
}

async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<RegisterQuery>,
    request: UiaJson<Value>,
) -> Result<JsonResponse<Value>> {
    // A registration session is bound to the endpoint, not the body: its last stage may leave out
    // the first request's parameters, which the session remembers (Synapse only logs a changed
    // body here).
    let UiaJson {
        body,
        mut operation,
    } = request;
    operation.params = Value::Null;
    match query.kind.as_deref() {
        None | Some("user") => {}
        Some("guest") => return register_guest(&state, ip, &body).await,
        Some(_) => return Err(Error::invalid_param("kind must be user or guest")),
    }
    let body: RegisterBody =
        serde_json::from_value(body).map_err(|e| Error::bad_json(format!("Invalid JSON: {e}")))?;
    let flows = registration_flows(&state)?;
    state.rate_limiter.check("register", ip)?;
    let request = register::Request {
        params: register::Params {
            username: body.username,
            password: body.password,
            password_hash: None,
            device_id: body.device_id,
            initial_device_display_name: body.initial_device_display_name,
            inhibit_login: body.inhibit_login,
            guest_access_token: body.guest_access_token,
        },
        refresh_token: body.refresh_token,
        auth: body.auth.as_ref(),
        operation: &operation,
        flows,
        ip,
    };
    match register::register(&state, request).await? {
        Registered::LoggedIn(session) => Ok(JsonResponse(session_body(&state, &session))),
        Registered::NotLoggedIn { user_id } => Ok(JsonResponse(
            json!({ "user_id": user_id, "home_server": state.server_name.as_str() }),
        )),
    }
}

/// `kind=guest`: no UIA, whatever the registration policy (as Synapse); off unless
/// `registration.allow_guest_access`. The spec: every body parameter but
/// `initial_device_display_name` is ignored (the server picks the device ID; no refresh token).
async fn register_guest(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    body: &Value,
) -> Result<JsonResponse<Value>> {
    if state.config.registration.allow_guest_access {
        state.rate_limiter.check("register", ip)?;
    }
    let request = guests::GuestRequest {
        initial_device_display_name: body["initial_device_display_name"]
            .as_str()
            .map(str::to_owned),
        ip,
    };
    let session = guests::register(state, request).await?;
    Ok(JsonResponse(session_body(state, &session)))
}

#[derive(Deserialize)]
struct AvailableQuery {
    username: Option<String>,
}

async fn available(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<AvailableQuery>,
) -> Result<JsonResponse<Value>> {
    registration_flows(&state)?;
    state.rate_limiter.check("available", ip)?;
    let name = query
        .username
        .ok_or_else(|| Error::missing_param("Missing username"))?;
    let user_id = accounts::validate_localpart(&state, &name.to_lowercase())?;
    accounts::ensure_available(&state, &user_id).await?;
    Ok(JsonResponse(json!({ "available": true })))
}

#[derive(Deserialize)]
struct ValidityQuery {
    token: Option<String>,
}

async fn token_validity(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<ValidityQuery>,
) -> Result<JsonResponse<Value>> {
    registration_flows(&state)?;
    state.rate_limiter.check("register", ip)?;
    let token = query
        .token
        .ok_or_else(|| Error::missing_param("Missing token"))?;
    let valid = registration::token_is_valid(&state, &token).await?;
    Ok(JsonResponse(json!({ "valid": valid })))
}

async fn nonce(State(state): State<AppState>) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        json!({ "nonce": registration::new_nonce(&state).await? }),
    ))
}

#[derive(Deserialize)]
struct SharedSecretBody {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    user_type: Option<String>,
    displayname: Option<String>,
    mac: String,
}

async fn shared_secret_register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<SharedSecretBody>,
) -> Result<JsonResponse<Value>> {
    state.rate_limiter.check("register", ip)?;
    let request = SharedSecretRegistration {
        nonce: body.nonce,
        username: body.username,
        password: body.password,
        admin: body.admin,
        user_type: body.user_type,
        displayname: body.displayname,
        mac: body.mac,
    };
    let session =
        registration::register_with_shared_secret(&state, request, ip.map(|ip| ip.to_string()))
            .await?;
    Ok(JsonResponse(json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": state.server_name.as_str(),
    })))
}

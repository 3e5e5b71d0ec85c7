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
use crate::service::accounts::{self, SessionRequest};
use crate::service::registration::{self, SharedSecretRegistration};
use crate::service::uia::{self, Flow, Purpose};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/register/available", get(available))
        .route("/register/email/requestToken", post(threepid_denied))
        .route("/register/msisdn/requestToken", post(threepid_denied))
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
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
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
    request: UiaJson<RegisterBody>,
) -> Result<JsonResponse<Value>> {
    // As in Synapse's register servlet, the password is not part of what the session is bound to.
    let UiaJson { body, operation } = request.without("password");
    match query.kind.as_deref() {
        None | Some("user") => {}
        Some("guest") => return Err(Error::guest_access_forbidden("Guest access is not enabled")),
        Some(_) => return Err(Error::invalid_param("kind must be user or guest")),
    }
    let flows = registration_flows(&state)?;
    state.rate_limiter.check("register", ip)?;
    // The name is checked before any authentication, so the client learns early.
    let user_id = match &body.username {
        Some(name) => {
            let user_id = accounts::validate_localpart(&state, &name.to_lowercase())?;
            accounts::ensure_available(&state, &user_id).await?;
            Some(user_id)
        }
        None => None,
    };
    if body.auth.is_some() && body.password.is_none() {
        return Err(Error::missing_param("Missing password"));
    }
    let request = uia::Request {
        purpose: Purpose::Register,
        operation: &operation,
        user_id: None,
        flows,
        ip,
    };
    let passed = uia::check(&state, request, body.auth.as_ref()).await?;
    let password = body
        .password
        .ok_or_else(|| Error::missing_param("Missing password"))?;
    let user_id = match user_id {
        Some(user_id) => user_id,
        None => accounts::generate_user_id(&state).await?,
    };
    accounts::create_user(
        &state,
        &user_id,
        Some(password),
        false,
        passed.registration_token.as_deref(),
    )
    .await?;
    uia::finish(&state, &passed).await?;
    if body.inhibit_login {
        return Ok(JsonResponse(
            json!({ "user_id": user_id, "home_server": state.server_name.as_str() }),
        ));
    }
    let session_request = SessionRequest {
        device_id: body.device_id,
        initial_device_display_name: body.initial_device_display_name,
        ip: ip.map(|ip| ip.to_string()),
        refreshable: body.refresh_token,
    };
    let session = accounts::open_session(&state, &user_id, session_request).await?;
    Ok(JsonResponse(session_body(&state, &session)))
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

/// Axon has no third-party identifiers to register with.
async fn threepid_denied() -> Error {
    Error::threepid_denied("Third-party identifiers are not supported by this server")
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

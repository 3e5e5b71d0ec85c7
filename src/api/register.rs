//! Registration: POST /register (with User-Interactive Authentication), GET /register/available.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::ClientIp;
use crate::api::extract::{Json, Query};
use crate::config::RegistrationPolicy;
use crate::service::{accounts, uia};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/register/available", get(available))
}

/// Synapse's admin API lives outside the client prefix.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
}

#[derive(Deserialize)]
struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    auth: Option<uia::AuthData>,
}

#[derive(Deserialize)]
struct RegisterQuery {
    kind: Option<String>,
}

async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<RegisterQuery>,
    Json(body): Json<RegisterBody>,
) -> Result<JsonResponse<Value>> {
    if query.kind.as_deref() == Some("guest") {
        return Err(Error::guest_access_forbidden("Guest access is not enabled"));
    }
    if state.config.registration_policy() == RegistrationPolicy::Disabled {
        return Err(Error::forbidden("Registration has been disabled"));
    }
    state.rate_limiter.check("register", ip)?;
    let localpart = match &body.username {
        Some(name) => name.to_lowercase(),
        None => format!(
            "u{}",
            crate::service::auth::random_string(12).to_lowercase()
        ),
    };
    let user_id = accounts::validate_localpart(&state, &localpart)?;
    if crate::store::users::user_exists(&state.db, &user_id).await? {
        return Err(Error::user_in_use("User ID already taken"));
    }
    uia::check(
        &state,
        body.auth.as_ref(),
        &[&["m.login.dummy"]],
        json!({}),
        async |_, _| Ok(true),
    )
    .await?;
    accounts::create_user(&state, &user_id, body.password, false).await?;
    if body.inhibit_login {
        return Ok(JsonResponse(json!({ "user_id": user_id })));
    }
    let ip = ip.map(|ip| ip.to_string());
    let session = accounts::open_session(
        &state,
        &user_id,
        body.device_id,
        body.initial_device_display_name.as_deref(),
        ip.as_deref(),
    )
    .await?;
    Ok(JsonResponse(json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": state.server_name.as_str(),
    })))
}

#[derive(Deserialize)]
struct AvailableQuery {
    username: String,
}

async fn available(
    State(state): State<AppState>,
    Query(q): Query<AvailableQuery>,
) -> Result<JsonResponse<Value>> {
    let user_id = accounts::validate_localpart(&state, &q.username)?;
    if crate::store::users::user_exists(&state.db, &user_id).await? {
        return Err(Error::user_in_use("User ID already taken"));
    }
    Ok(JsonResponse(json!({ "available": true })))
}

//! Login and token refresh: GET/POST /login (`m.login.password`, and `m.login.token` when
//! `login_token.enabled`), POST /refresh.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::ClientIp;
use crate::api::extract::Json;
use crate::service::accounts::{self, Session, SessionRequest};
use crate::service::login_tokens;
use crate::service::threepids;
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(flows).post(login))
        .route("/refresh", post(refresh))
}

/// The answer to a registration or login.
pub fn session_body(state: &AppState, session: &Session) -> Value {
    let mut body = json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": state.server_name.as_str(),
        "well_known": { "m.homeserver": { "base_url": state.config.public_baseurl() } },
    });
    if let (Some(refresh), Some(expires)) = (&session.refresh_token, session.expires_in_ms) {
        body["refresh_token"] = json!(refresh);
        body["expires_in_ms"] = json!(expires);
    }
    body
}

/// `m.login.token` is offered only when tokens can be had (`POST /v1/login/get_token`), with
/// `get_login_token: true` so that clients without a session know, as Synapse does.
async fn flows(State(state): State<AppState>) -> JsonResponse<Value> {
    let mut flows = vec![json!({ "type": "m.login.password" })];
    if state.config.login_token.enabled {
        flows.push(json!({ "type": "m.login.token", "get_login_token": true }));
    }
    JsonResponse(json!({ "flows": flows }))
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Identifier>,
    /// Deprecated top-level user, still sent by older clients.
    user: Option<String>,
    password: Option<String>,
    /// `m.login.token`'s token.
    token: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    refresh_token: bool,
}

#[derive(Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
    /// `m.id.thirdparty`: the medium and address of an identifier the account holds.
    medium: Option<String>,
    address: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<LoginBody>,
) -> Result<JsonResponse<Value>> {
    state.rate_limiter.check("login", ip)?;
    let request = SessionRequest {
        device_id: body.device_id.clone(),
        initial_device_display_name: body.initial_device_display_name.clone(),
        ip: ip.map(|ip| ip.to_string()),
        refreshable: body.refresh_token,
    };
    let session = match body.kind.as_str() {
        "m.login.password" => password_login(&state, body, request).await?,
        "m.login.token" if state.config.login_token.enabled => {
            let token = body
                .token
                .ok_or_else(|| Error::missing_param("Missing token"))?;
            let user_id = login_tokens::consume(&state.db, &token).await?;
            accounts::open_session(&state, &user_id, request).await?
        }
        other => return Err(Error::unknown(format!("Unknown login type {other}"))),
    };
    Ok(JsonResponse(session_body(&state, &session)))
}

async fn password_login(
    state: &AppState,
    body: LoginBody,
    request: SessionRequest,
) -> Result<Session> {
    let user = match (&body.identifier, &body.user) {
        (Some(id), _) if id.kind == "m.id.user" => id.user.clone(),
        (Some(id), _) if id.kind == "m.id.thirdparty" => {
            let (Some(medium), Some(address)) = (&id.medium, &id.address) else {
                return Err(Error::missing_param(
                    "m.id.thirdparty needs a medium and an address",
                ));
            };
            // An address no account holds fails the password check like an unknown user: a name
            // with a space, which no account can have, stands for the user then.
            Some(
                threepids::user_for_login(&state.db, medium, address)
                    .await?
                    .unwrap_or_else(|| format!("@ {medium} {address}")),
            )
        }
        // Axon keeps no phone numbers, so no such login can succeed.
        (Some(id), _) if id.kind == "m.id.phone" => {
            return Err(Error::forbidden("Invalid username or password"));
        }
        (Some(id), _) => {
            return Err(Error::unknown(format!(
                "Unknown identifier type {}",
                id.kind
            )));
        }
        (None, user) => user.clone(),
    }
    .ok_or_else(|| Error::missing_param("Missing user identifier"))?;
    let password = body
        .password
        .ok_or_else(|| Error::missing_param("Missing password"))?;
    accounts::login(state, &user, &password, request).await
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<RefreshBody>,
) -> Result<JsonResponse<Value>> {
    state.rate_limiter.check("refresh", ip)?;
    let session = accounts::refresh(&state, &body.refresh_token).await?;
    Ok(JsonResponse(json!({
        "access_token": session.access_token,
        "refresh_token": session.refresh_token,
        "expires_in_ms": session.expires_in_ms,
    })))
}

//! Login: GET/POST /login.

use axum::extract::State;
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::ClientIp;
use crate::api::extract::Json;
use crate::service::accounts;
use crate::{AppState, Error, Result, store};

pub fn routes() -> Router<AppState> {
    Router::new().route("/login", get(flows).post(login))
}

async fn flows() -> JsonResponse<Value> {
    JsonResponse(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Identifier>,
    /// Deprecated top-level user, still sent by older clients.
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

#[derive(Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<LoginBody>,
) -> Result<JsonResponse<Value>> {
    state.rate_limiter.check("login", ip)?;
    if body.kind != "m.login.password" {
        return Err(Error::unknown(format!("Unknown login type {}", body.kind)));
    }
    let user = match (&body.identifier, &body.user) {
        (Some(id), _) if id.kind == "m.id.user" => id.user.clone(),
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
    let user_id = if user.starts_with('@') {
        user.to_lowercase()
    } else {
        format!("@{}:{}", user.to_lowercase(), state.server_name)
    };
    let row = store::users::get_user(&state.db, &user_id).await?;
    let stored = row
        .as_ref()
        .filter(|u| !u.deactivated)
        .and_then(|u| u.password_hash.clone());
    if !accounts::verify_password(password, stored).await? {
        return Err(Error::forbidden("Invalid username or password"));
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
        "well_known": { "m.homeserver": { "base_url": state.config.public_baseurl() } },
    })))
}

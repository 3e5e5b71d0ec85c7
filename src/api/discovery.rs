//! Discovery: versions, well-known, capabilities, health.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::auth::Requester;
use crate::service::room_versions;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/versions", get(versions))
        .route("/.well-known/matrix/client", get(well_known))
        .route("/_matrix/client/v3/capabilities", get(capabilities))
        .route("/_matrix/client/r0/capabilities", get(capabilities))
        .route("/health", get(health))
}

/// Only the versions whose required endpoints Axon serves.
async fn versions() -> Json<Value> {
    Json(json!({
        "versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11"],
        "unstable_features": {},
    }))
}

async fn well_known(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "m.homeserver": { "base_url": state.config.public_baseurl() } }))
}

async fn capabilities(State(state): State<AppState>, _requester: Requester) -> Json<Value> {
    let available: serde_json::Map<String, Value> = room_versions::SUPPORTED
        .iter()
        .map(|v| (v.to_string(), json!("stable")))
        .collect();
    Json(json!({
        "capabilities": {
            "m.room_versions": { "default": state.config.default_room_version, "available": available },
            "m.change_password": { "enabled": true },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false },
        }
    }))
}

/// For load balancers: answers once the database does.
async fn health(State(state): State<AppState>) -> Result<&'static str, crate::Error> {
    crate::service::maintenance::database_ready(&state).await?;
    Ok("OK")
}

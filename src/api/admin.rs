//! Server administration: GET /admin/whois/{userId}.

use axum::extract::State;
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use serde_json::{Map, Value, json};

use crate::api::auth::Requester;
use crate::api::extract::Path;
use crate::service::accounts;
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/whois/{user_id}", get(whois))
}

/// Users may look themselves up; server admins anyone. The permission check comes before any
/// lookup, so non-admins learn nothing about other accounts.
async fn whois(
    State(state): State<AppState>,
    requester: Requester,
    Path(user_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    if !requester.is_admin && requester.user_id.as_str() != user_id {
        return Err(Error::forbidden("You are not a server admin"));
    }
    let mut devices = Map::new();
    for device in accounts::devices_of_existing_user(&state, &user_id).await? {
        let mut connection = Map::new();
        if let Some(ip) = device.last_seen_ip {
            connection.insert("ip".into(), json!(ip));
        }
        if let Some(ts) = device.last_seen_ts {
            connection.insert("last_seen".into(), json!(ts));
        }
        if let Some(user_agent) = device.last_seen_user_agent {
            connection.insert("user_agent".into(), json!(user_agent));
        }
        devices.insert(
            device.device_id,
            json!({ "sessions": [{ "connections": [connection] }] }),
        );
    }
    Ok(JsonResponse(
        json!({ "user_id": user_id, "devices": devices }),
    ))
}

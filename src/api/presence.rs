//! Presence.

use axum::extract::State;
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::Requester;
use crate::api::extract::{Json, Path};
use crate::service::presence;
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/presence/{user_id}/status",
        get(get_status).put(put_status),
    )
}

#[derive(Deserialize)]
struct StatusBody {
    presence: String,
    status_msg: Option<String>,
}

async fn get_status(
    State(state): State<AppState>,
    requester: Requester,
    Path(user_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        presence::get_status(&state, requester.user_id.as_str(), &user_id).await?,
    ))
}

async fn put_status(
    State(state): State<AppState>,
    requester: Requester,
    Path(user_id): Path<String>,
    Json(body): Json<StatusBody>,
) -> Result<JsonResponse<Value>> {
    presence::set_status(
        &state,
        requester.user_id.as_str(),
        &user_id,
        &body.presence,
        body.status_msg.as_deref(),
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

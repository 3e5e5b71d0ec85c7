//! Reporting content: events, rooms and users.

use axum::extract::State;
use axum::routing::post;
use axum::{Json as JsonResponse, Router};
use serde_json::{Map, Value, json};

use crate::api::auth::Requester;
use crate::api::extract::{Json, Path};
use crate::service::reports;
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room_id}/report/{event_id}", post(report_event))
        .route("/rooms/{room_id}/report", post(report_room))
        .route("/users/{user_id}/report", post(report_user))
}

async fn report_event(
    State(state): State<AppState>,
    requester: Requester,
    Path((room_id, event_id)): Path<(String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> Result<JsonResponse<Value>> {
    reports::report_event(&state, &requester, &room_id, &event_id, body).await?;
    Ok(JsonResponse(json!({})))
}

async fn report_room(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> Result<JsonResponse<Value>> {
    reports::report_room(&state, &requester, &room_id, body).await?;
    Ok(JsonResponse(json!({})))
}

async fn report_user(
    State(state): State<AppState>,
    requester: Requester,
    Path(user_id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> Result<JsonResponse<Value>> {
    reports::report_user(&state, &requester, &user_id, body).await?;
    Ok(JsonResponse(json!({})))
}

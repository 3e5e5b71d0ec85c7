//! Read receipts and read markers.

use axum::extract::State;
use axum::routing::post;
use axum::{Json as JsonResponse, Router};
use serde_json::{Map, Value, json};

use crate::api::auth::Requester;
use crate::api::extract::{Json, Path};
use crate::service::receipts;
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/rooms/{room_id}/receipt/{receipt_type}/{event_id}",
            post(post_receipt),
        )
        .route("/rooms/{room_id}/read_markers", post(read_markers))
}

async fn post_receipt(
    State(state): State<AppState>,
    requester: Requester,
    Path((room_id, receipt_type, event_id)): Path<(String, String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> Result<JsonResponse<Value>> {
    receipts::post(
        &state,
        requester.user_id.as_str(),
        &room_id,
        &receipt_type,
        &event_id,
        body.get("thread_id"),
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

async fn read_markers(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> Result<JsonResponse<Value>> {
    receipts::read_markers(&state, requester.user_id.as_str(), &room_id, &body).await?;
    Ok(JsonResponse(json!({})))
}

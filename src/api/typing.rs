//! Typing notifications.

use axum::extract::State;
use axum::routing::put;
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::Requester;
use crate::api::extract::{Json, Path};
use crate::service::typing;
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new().route("/rooms/{room_id}/typing/{user_id}", put(set_typing))
}

#[derive(Deserialize)]
struct TypingBody {
    typing: bool,
    timeout: Option<i64>,
}

async fn set_typing(
    State(state): State<AppState>,
    requester: Requester,
    Path((room_id, user_id)): Path<(String, String)>,
    Json(body): Json<TypingBody>,
) -> Result<JsonResponse<Value>> {
    typing::set_typing(
        &state,
        requester.user_id.as_str(),
        &user_id,
        &room_id,
        body.typing,
        body.timeout,
        requester.is_shadow_banned,
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

//! The account: whoami, logout.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde_json::{Value, json};

use crate::api::auth::{AccessToken, Requester};
use crate::service::accounts;
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account/whoami", get(whoami))
        .route("/logout", post(logout))
}

async fn whoami(requester: Requester) -> JsonResponse<Value> {
    JsonResponse(json!({
        "user_id": requester.user_id,
        "device_id": requester.device_id,
        "is_guest": requester.is_guest,
    }))
}

async fn logout(
    State(state): State<AppState>,
    _requester: Requester,
    AccessToken(token): AccessToken,
) -> Result<JsonResponse<Value>> {
    accounts::logout(&state, &token).await?;
    Ok(JsonResponse(json!({})))
}

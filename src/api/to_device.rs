//! PUT /sendToDevice/{eventType}/{txnId}: relays (usually encrypted) messages to devices.

use axum::extract::State;
use axum::routing::put;
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::GuestAllowed;
use crate::api::extract::Path;
use crate::api::keys::RawJson;
use crate::service::e2ee::{self, ToDeviceMessages};
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new().route("/sendToDevice/{event_type}/{txn_id}", put(send))
}

#[derive(Deserialize)]
struct SendBody {
    messages: ToDeviceMessages,
}

async fn send(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((event_type, txn_id)): Path<(String, String)>,
    RawJson(body): RawJson<SendBody>,
) -> Result<JsonResponse<Value>> {
    e2ee::send_to_device(
        &state,
        requester.user_id.as_str(),
        requester.device_id.as_str(),
        &event_type,
        &txn_id,
        &body.messages,
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

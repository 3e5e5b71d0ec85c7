//! Sending: PUT /rooms/{roomId}/send/{eventType}/{txnId}, the legacy POST
//! /rooms/{roomId}/send/{eventType} (no transaction ID), and /redact/{eventId}/{txnId}.

use axum::extract::{Request, State};
use axum::routing::{post, put};
use axum::{Json as JsonResponse, Router};
use serde_json::{Value, json};

use crate::api::auth::{GuestAllowed, Requester};
use crate::api::extract::{Path, body_bytes};
use crate::service::messages;
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room_id}/send/{event_type}/{txn_id}", put(send))
        .route("/rooms/{room_id}/send/{event_type}", post(send_without_txn))
        .route("/rooms/{room_id}/redact/{event_id}/{txn_id}", put(redact))
}

async fn send(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((room_id, event_type, txn_id)): Path<(String, String, String)>,
    request: Request,
) -> Result<JsonResponse<Value>> {
    let content = messages::parse_content(&body_bytes(request, &state).await?)?;
    let event_id = messages::send(
        &state,
        &requester,
        &room_id,
        &event_type,
        Some(&txn_id),
        content,
    )
    .await?;
    Ok(JsonResponse(json!({ "event_id": event_id })))
}

/// The legacy form without a transaction ID (Synapse still accepts it): a new event every time.
async fn send_without_txn(
    State(state): State<AppState>,
    requester: Requester,
    Path((room_id, event_type)): Path<(String, String)>,
    request: Request,
) -> Result<JsonResponse<Value>> {
    let content = messages::parse_content(&body_bytes(request, &state).await?)?;
    let event_id = messages::send(&state, &requester, &room_id, &event_type, None, content).await?;
    Ok(JsonResponse(json!({ "event_id": event_id })))
}

async fn redact(
    State(state): State<AppState>,
    requester: Requester,
    Path((room_id, event_id, txn_id)): Path<(String, String, String)>,
    request: Request,
) -> Result<JsonResponse<Value>> {
    let content = messages::parse_content(&body_bytes(request, &state).await?)?;
    let event_id =
        messages::redact(&state, &requester, &room_id, &event_id, &txn_id, content).await?;
    Ok(JsonResponse(json!({ "event_id": event_id })))
}

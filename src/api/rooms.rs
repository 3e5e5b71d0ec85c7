//! Rooms: createRoom, joined rooms, members, state, single events, aliases of a room.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{GuestAllowed, Requester};
use crate::api::extract::{Json, Path, Query, body_bytes};
use crate::service::{messages, rooms, upgrade};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/createRoom", post(create_room))
        .route("/joined_rooms", get(joined_rooms))
        .route("/rooms/{room_id}/members", get(members))
        .route("/rooms/{room_id}/joined_members", get(joined_members))
        .route("/rooms/{room_id}/state", get(full_state))
        .route(
            "/rooms/{room_id}/state/{event_type}",
            get(get_state_empty_key).put(put_state_empty_key),
        )
        .route(
            "/rooms/{room_id}/state/{event_type}/",
            get(get_state_empty_key).put(put_state_empty_key),
        )
        .route(
            "/rooms/{room_id}/state/{event_type}/{state_key}",
            get(get_state).put(put_state),
        )
        .route("/rooms/{room_id}/event/{event_id}", get(get_event))
        .route("/rooms/{room_id}/aliases", get(aliases))
        .route("/rooms/{room_id}/upgrade", post(upgrade))
}

async fn create_room(
    State(state): State<AppState>,
    requester: Requester,
    Json(body): Json<rooms::CreateRoomRequest>,
) -> Result<JsonResponse<Value>> {
    let room_id = rooms::create_room(&state, &requester, body).await?;
    Ok(JsonResponse(json!({ "room_id": room_id })))
}

async fn joined_rooms(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
) -> Result<JsonResponse<Value>> {
    let rooms = rooms::joined_rooms(&state, &requester).await?;
    Ok(JsonResponse(json!({ "joined_rooms": rooms })))
}

#[derive(Deserialize)]
struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

async fn members(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path(room_id): Path<String>,
    Query(q): Query<MembersQuery>,
) -> Result<JsonResponse<Value>> {
    let chunk = rooms::members(
        &state,
        &requester,
        &room_id,
        q.at.as_deref(),
        q.membership.as_deref(),
        q.not_membership.as_deref(),
    )
    .await?;
    Ok(JsonResponse(json!({ "chunk": chunk })))
}

async fn joined_members(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        rooms::joined_members(&state, &requester, &room_id).await?,
    ))
}

async fn full_state(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path(room_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let events = rooms::full_state(&state, &requester, &room_id).await?;
    Ok(JsonResponse(
        serde_json::to_value(events).map_err(crate::Error::internal)?,
    ))
}

#[derive(Deserialize)]
struct StateQuery {
    format: Option<String>,
}

async fn get_state(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((room_id, event_type, state_key)): Path<(String, String, String)>,
    Query(q): Query<StateQuery>,
) -> Result<JsonResponse<Value>> {
    let whole = q.format.as_deref() == Some("event");
    Ok(JsonResponse(
        rooms::state_event(&state, &requester, &room_id, &event_type, &state_key, whole).await?,
    ))
}

async fn get_state_empty_key(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((room_id, event_type)): Path<(String, String)>,
    Query(q): Query<StateQuery>,
) -> Result<JsonResponse<Value>> {
    let whole = q.format.as_deref() == Some("event");
    Ok(JsonResponse(
        rooms::state_event(&state, &requester, &room_id, &event_type, "", whole).await?,
    ))
}

async fn put_state(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((room_id, event_type, state_key)): Path<(String, String, String)>,
    request: axum::extract::Request,
) -> Result<JsonResponse<Value>> {
    put_state_inner(state, requester, room_id, event_type, state_key, request).await
}

async fn put_state_empty_key(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((room_id, event_type)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<JsonResponse<Value>> {
    put_state_inner(
        state,
        requester,
        room_id,
        event_type,
        String::new(),
        request,
    )
    .await
}

async fn put_state_inner(
    state: AppState,
    requester: Requester,
    room_id: String,
    event_type: String,
    state_key: String,
    request: axum::extract::Request,
) -> Result<JsonResponse<Value>> {
    let bytes = body_bytes(request, &state).await?;
    let content = messages::parse_content(&bytes)?;
    let event_id = rooms::set_state(
        &state,
        &requester,
        &room_id,
        &event_type,
        &state_key,
        content,
    )
    .await?;
    Ok(JsonResponse(json!({ "event_id": event_id })))
}

async fn get_event(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((room_id, event_id)): Path<(String, String)>,
) -> Result<JsonResponse<Box<serde_json::value::RawValue>>> {
    Ok(JsonResponse(
        messages::get_event(&state, &requester, &room_id, &event_id).await?,
    ))
}

async fn aliases(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let aliases = rooms::local_aliases(&state, &requester, &room_id).await?;
    Ok(JsonResponse(json!({ "aliases": aliases })))
}

/// The body of POST /rooms/{roomId}/upgrade.
#[derive(Deserialize)]
struct UpgradeBody {
    new_version: Option<String>,
    additional_creators: Option<Vec<String>>,
}

async fn upgrade(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Json(body): Json<UpgradeBody>,
) -> Result<JsonResponse<Value>> {
    let version = body
        .new_version
        .ok_or_else(|| Error::missing_param("new_version is required"))?;
    let new_room = upgrade::upgrade_room(
        &state,
        &requester,
        &room_id,
        &version,
        body.additional_creators,
    )
    .await?;
    Ok(JsonResponse(json!({ "replacement_room": new_room })))
}

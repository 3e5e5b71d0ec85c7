//! The deprecated endpoints still in the spec: GET /events (and its peeking form with `room_id`),
//! GET /events/{eventId}, GET /initialSync and GET /rooms/{roomId}/initialSync.

use axum::extract::State;
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::auth::{GuestAllowed, Requester};
use ruma::api::client::peeking::get_current_state::v3 as room_initial;
use ruma::api::client::room::Visibility;
use ruma::events::room::member::MembershipState;
use ruma::serde::Raw;

use crate::api::extract::{Path, Query};
use crate::api::ruma::{Ruma, RumaResponse};
use crate::service::messages;
use crate::service::sync::initial::{self, InitialSync};
use crate::service::sync::stream::{self, EventsChunk, EventsRequest};
use crate::{AppState, Error, Result};

/// Synapse's wait when `/events` is called without `timeout`: it is a long poll.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/events", get(events))
        .route("/events/{event_id}", get(event))
        .route("/initialSync", get(initial_sync))
        .route("/rooms/{room_id}/initialSync", get(room_initial_sync))
}

#[derive(Deserialize)]
struct EventsParams {
    from: Option<String>,
    timeout: Option<String>,
    room_id: Option<String>,
    limit: Option<String>,
}

fn parse_number<T: std::str::FromStr>(value: Option<&str>, name: &str) -> Result<Option<T>> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| Error::invalid_param(format!("{name} must be a non-negative integer")))
        })
        .transpose()
}

/// Guests may call it to preview a room (the spec's guest module; `room_id` then required).
async fn events(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Query(p): Query<EventsParams>,
) -> Result<JsonResponse<EventsChunk>> {
    let request = EventsRequest {
        from: p.from,
        timeout_ms: parse_number(p.timeout.as_deref(), "timeout")?.unwrap_or(DEFAULT_TIMEOUT_MS),
        room_id: p.room_id.filter(|r| !r.is_empty()),
        limit: parse_number::<u32>(p.limit.as_deref(), "limit")?.map(i64::from),
    };
    Ok(JsonResponse(
        stream::events(&state, &requester, request).await?,
    ))
}

async fn event(
    State(state): State<AppState>,
    requester: Requester,
    Path(event_id): Path<String>,
) -> Result<JsonResponse<Box<RawValue>>> {
    Ok(JsonResponse(
        messages::get_event_by_id(&state, &requester, &event_id).await?,
    ))
}

#[derive(Deserialize)]
struct InitialSyncParams {
    limit: Option<String>,
    archived: Option<String>,
}

async fn initial_sync(
    State(state): State<AppState>,
    requester: Requester,
    Query(p): Query<InitialSyncParams>,
) -> Result<JsonResponse<InitialSync>> {
    let archived = match p.archived.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Error::invalid_param("archived must be true or false")),
    };
    let limit = parse_number::<u32>(p.limit.as_deref(), "limit")?.map(i64::from);
    Ok(JsonResponse(
        initial::initial_sync(&state, &requester, limit, archived).await?,
    ))
}

#[derive(Deserialize)]
struct RoomInitialSyncParams {
    limit: Option<String>,
}

/// GET /rooms/{roomId}/initialSync: ruma's typed request and response (the spec's RoomInfo).
/// Guests may call it (the spec's guest module lists it for room previews).
async fn room_initial_sync(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Query(p): Query<RoomInitialSyncParams>,
    Ruma(request): Ruma<room_initial::Request>,
) -> Result<RumaResponse<room_initial::Response>> {
    // Not in the spec for this endpoint, but Synapse takes it (messages to return).
    let limit = parse_number::<u32>(p.limit.as_deref(), "limit")?.map(i64::from);
    let info =
        initial::room_initial_sync(&state, &requester, request.room_id.as_str(), limit).await?;
    let mut response = room_initial::Response::new(request.room_id);
    response.membership = info.membership.as_deref().map(MembershipState::from);
    response.messages = info.messages.map(|m| {
        let mut chunk = room_initial::PaginationChunk::new(raw(m.chunk), m.end);
        chunk.start = Some(m.start);
        chunk
    });
    response.state = raw(info.state.unwrap_or_default());
    response.account_data = raw(info.account_data.unwrap_or_default());
    response.visibility = Some(match info.visibility {
        "public" => Visibility::Public,
        _ => Visibility::Private,
    });
    Ok(RumaResponse(response))
}

/// Rendered events as ruma's `Raw` (the JSON as it is, not re-parsed).
fn raw<T>(events: Vec<Box<RawValue>>) -> Vec<Raw<T>> {
    events.into_iter().map(Raw::from_json).collect()
}

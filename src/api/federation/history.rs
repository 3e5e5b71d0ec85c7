//! Other servers reading a room's history: `backfill`, `get_missing_events`, `event_auth`.

use axum::extract::State;
use ruma::MilliSecondsSinceUnixEpoch;
use ruma::api::federation::authorization::get_event_authorization::v1 as event_auth_api;
use ruma::api::federation::backfill::get_backfill::v1 as backfill_api;
use ruma::api::federation::event::get_missing_events::v1 as missing_api;

use super::{Origin, Ruma, RumaResponse};
use crate::service::federation::{acl, history};
use crate::{AppState, Result};

/// `GET /_matrix/federation/v1/backfill/{roomId}`.
pub async fn backfill(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<backfill_api::Request>,
) -> Result<RumaResponse<backfill_api::Response>> {
    let room_id = request.room_id.as_str();
    acl::ensure_allowed(&state, room_id, &origin).await?;
    let from: Vec<String> = request.v.iter().map(ToString::to_string).collect();
    let limit = usize::try_from(u64::from(request.limit)).unwrap_or(history::MAX_EVENTS);
    let pdus = history::backfill(&state, &origin, room_id, &from, limit).await?;
    Ok(RumaResponse(backfill_api::Response::new(
        state.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdus,
    )))
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`.
pub async fn get_missing_events(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<missing_api::Request>,
) -> Result<RumaResponse<missing_api::Response>> {
    let room_id = request.room_id.as_str();
    acl::ensure_allowed(&state, room_id, &origin).await?;
    let ids =
        |list: &[ruma::OwnedEventId]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    let limit = usize::try_from(u64::from(request.limit)).unwrap_or(history::MAX_EVENTS);
    let min_depth = i64::try_from(u64::from(request.min_depth)).unwrap_or(i64::MAX);
    let events = history::missing_events(
        &state,
        &origin,
        room_id,
        &ids(&request.earliest_events),
        &ids(&request.latest_events),
        limit,
        min_depth,
    )
    .await?;
    Ok(RumaResponse(missing_api::Response::new(events)))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`.
pub async fn event_auth(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<event_auth_api::Request>,
) -> Result<RumaResponse<event_auth_api::Response>> {
    let room_id = request.room_id.as_str();
    acl::ensure_allowed(&state, room_id, &origin).await?;
    let chain = history::event_auth(&state, &origin, room_id, request.event_id.as_str()).await?;
    Ok(RumaResponse(event_auth_api::Response::new(chain)))
}

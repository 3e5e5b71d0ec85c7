//! Other servers' users joining and leaving local rooms, inviting local users, and other servers
//! reading a room's events and state: `make_join`, `send_join` v2, `make_leave`, `send_leave` v2,
//! `invite` v2, `event`, `state`, `state_ids`.

use axum::extract::State;
use ruma::api::federation::event::{
    get_event::v1 as get_event, get_room_state::v1 as get_state, get_room_state_ids::v1 as get_ids,
};
use ruma::api::federation::membership::{
    create_invite::v2 as invite, create_join_event::v2 as send_join,
    create_leave_event::v2 as send_leave, prepare_join_event::v1 as make_join,
    prepare_leave_event::v1 as make_leave,
};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, RoomVersionId};
use serde_json::value::RawValue;

use super::{Origin, Ruma, RumaResponse};
use crate::service::federation::invite::ReceivedInvite;
use crate::service::federation::{acl, membership};
use crate::{AppState, Error, Result};

fn template(
    version: crate::service::room_versions::RoomVersion,
    event: serde_json::Value,
) -> Result<(Option<RoomVersionId>, Box<RawValue>)> {
    let version = RoomVersionId::try_from(version.as_str()).map_err(Error::internal)?;
    let raw = serde_json::value::to_raw_value(&event).map_err(Error::internal)?;
    Ok((Some(version), raw))
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`.
pub async fn make_join(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<make_join::Request>,
) -> Result<RumaResponse<make_join::Response>> {
    acl::ensure_allowed(&state, request.room_id.as_str(), &origin).await?;
    let ver: Vec<String> = request.ver.iter().map(|v| v.to_string()).collect();
    let (version, event) = membership::make(
        &state,
        &origin,
        request.room_id.as_str(),
        request.user_id.as_str(),
        "join",
        Some(&ver),
    )
    .await?;
    let (version, raw) = template(version, event)?;
    let mut response = make_join::Response::new(raw);
    response.room_version = version;
    Ok(RumaResponse(response))
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`.
pub async fn send_join(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<send_join::Request>,
) -> Result<RumaResponse<send_join::Response>> {
    acl::ensure_allowed(&state, request.room_id.as_str(), &origin).await?;
    let answer = membership::send(
        &state,
        &origin,
        request.room_id.as_str(),
        request.event_id.as_str(),
        "join",
        &request.pdu,
    )
    .await?
    .ok_or_else(|| Error::internal("a join without an answer"))?;
    let mut room_state = send_join::RoomState::new();
    room_state.state = answer.state;
    room_state.auth_chain = answer.auth_chain;
    room_state.event = Some(answer.event);
    room_state.servers_in_room = Some(answer.servers);
    Ok(RumaResponse(send_join::Response::new(room_state)))
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`.
pub async fn make_leave(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<make_leave::Request>,
) -> Result<RumaResponse<make_leave::Response>> {
    let (version, event) = membership::make(
        &state,
        &origin,
        request.room_id.as_str(),
        request.user_id.as_str(),
        "leave",
        None,
    )
    .await?;
    let (version, raw) = template(version, event)?;
    Ok(RumaResponse(make_leave::Response::new(version, raw)))
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`.
pub async fn send_leave(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<send_leave::Request>,
) -> Result<RumaResponse<send_leave::Response>> {
    membership::send(
        &state,
        &origin,
        request.room_id.as_str(),
        request.event_id.as_str(),
        "leave",
        &request.pdu,
    )
    .await?;
    Ok(RumaResponse(send_leave::Response::new()))
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: a local user invited by `origin`'s.
pub async fn invite_v2(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<invite::Request>,
) -> Result<RumaResponse<invite::Response>> {
    let received = ReceivedInvite {
        room_id: request.room_id.as_str(),
        event_id: request.event_id.as_str(),
        room_version: request.room_version.as_str(),
        event: &request.event,
        invite_room_state: &request.invite_room_state,
    };
    let event = crate::service::federation::invite::receive(&state, &origin, received).await?;
    Ok(RumaResponse(invite::Response::new(event)))
}

/// `GET /_matrix/federation/v1/event/{eventId}`.
pub async fn event(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<get_event::Request>,
) -> Result<RumaResponse<get_event::Response>> {
    let pdu = membership::event(&state, &origin, request.event_id.as_str()).await?;
    Ok(RumaResponse(get_event::Response::new(
        state.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdu,
    )))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`.
pub async fn state_ids(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<get_ids::Request>,
) -> Result<RumaResponse<get_ids::Response>> {
    let room_id = request.room_id.as_str();
    let (ids, chain) =
        membership::state_at(&state, &origin, room_id, request.event_id.as_str()).await?;
    let version = membership::version_of(&state, room_id).await?;
    let chain_ids = chain
        .iter()
        .filter_map(|pdu| membership::id_of(version, pdu))
        .filter_map(|id| OwnedEventId::try_from(id).ok())
        .collect();
    let ids = ids
        .into_iter()
        .filter_map(|id| OwnedEventId::try_from(id).ok())
        .collect();
    Ok(RumaResponse(get_ids::Response::new(chain_ids, ids)))
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`.
pub async fn state(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<get_state::Request>,
) -> Result<RumaResponse<get_state::Response>> {
    let (ids, chain) = membership::state_at(
        &state,
        &origin,
        request.room_id.as_str(),
        request.event_id.as_str(),
    )
    .await?;
    let pdus = membership::pdus(&state, &ids).await?;
    Ok(RumaResponse(get_state::Response::new(chain, pdus)))
}

//! A local user joining a room on another server: `make_join` to a resident server, the template
//! completed and signed here, `send_join` v2, the returned state and auth chain checked
//! (signatures, hashes, authorization by their auth events), then the room stored with the join as
//! its head — and only then is the join reported to the client.

use std::collections::HashMap;

use ruma::api::federation::membership::{
    create_join_event::v2 as send_join, prepare_join_event::v1 as make_join,
};
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::inbound::{self, Receiver};
use crate::service::events::BuiltEvent;
use crate::service::room_versions::{self, RoomVersion};
use crate::service::writer::Target;
use crate::{AppState, Error, Result};

/// Joins `user_id` to the remote `room_id` through the first of `servers` that answers.
pub async fn join_remote(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    servers: &[OwnedServerName],
    content: Map<String, Value>,
) -> Result<()> {
    let mut last = Error::not_found("No server could be asked to join the room");
    for server in servers.iter().filter(|s| **s != state.server_name) {
        match join_through(state, server, user_id, room_id, content.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::info!(%server, room_id, error = %e, "remote join failed");
                last = e;
            }
        }
    }
    Err(last)
}

async fn join_through(
    state: &AppState,
    server: &OwnedServerName,
    user_id: &str,
    room_id: &str,
    content: Map<String, Value>,
) -> Result<()> {
    let room = OwnedRoomId::try_from(room_id).map_err(|_| Error::invalid_param("Bad room ID"))?;
    let user = OwnedUserId::try_from(user_id).map_err(Error::internal)?;
    let mut request = make_join::Request::new(room.clone(), user);
    request.ver = room_versions::ALL
        .iter()
        .filter_map(|v| RoomVersionId::try_from(v.as_str()).ok())
        .collect();
    let template = state.federation.send(server, request).await?;
    let version = template
        .room_version
        .as_ref()
        .and_then(|v| room_versions::parse(v.as_str()))
        .ok_or_else(|| Error::unsupported_room_version("The room's version is not supported"))?;
    let (event_id, pdu) = complete(
        state,
        version,
        (room_id, user_id, "join"),
        &template.event,
        content,
    )?;
    let raw = RawValue::from_string(pdu.clone()).map_err(Error::internal)?;
    let event = OwnedEventId::try_from(event_id.as_str()).map_err(Error::internal)?;
    let answer = state
        .federation
        .send(server, send_join::Request::new(room, event, raw))
        .await?;
    let events = checked_state(state, version, room_id, &answer.room_state).await?;
    let join_raw = RawValue::from_string(pdu).map_err(Error::internal)?;
    let mut join = events_of(version, room_id, std::slice::from_ref(&join_raw))?;
    let mut all = events;
    all.append(&mut join);
    state
        .writer
        .submit(
            Target::Joined {
                version,
                events: all,
            },
            Vec::new(),
            None,
        )
        .await?;
    Ok(())
}

/// A `make_join`/`make_leave` template for `user_id`'s `membership` of `room_id`, completed with our
/// content and time and signed: (event ID, PDU).
pub(super) fn complete(
    state: &AppState,
    version: RoomVersion,
    (room_id, user_id, membership): (&str, &str, &str),
    template: &RawValue,
    mut content: Map<String, Value>,
) -> Result<(String, String)> {
    let mut event: CanonicalJsonObject = serde_json::from_str(template.get())
        .map_err(|e| Error::remote(format!("make_{membership} answered a bad template: {e}")))?;
    let field = |e: &CanonicalJsonObject, k: &str| match e.get(k) {
        Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if field(&event, "room_id").as_deref() != Some(room_id)
        || field(&event, "sender").as_deref() != Some(user_id)
        || field(&event, "state_key").as_deref() != Some(user_id)
        || field(&event, "type").as_deref() != Some("m.room.member")
    {
        return Err(Error::remote(format!(
            "make_{membership} answered a template for another user or room"
        )));
    }
    content.insert("membership".into(), Value::String(membership.into()));
    let content = crate::service::events::canonical_content(&content)?;
    event.insert("content".into(), CanonicalJsonValue::Object(content));
    event.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(crate::store::now_ms().try_into().map_err(Error::internal)?),
    );
    if version.has_origin() {
        event.insert(
            "origin".into(),
            CanonicalJsonValue::String(state.server_name.to_string()),
        );
    }
    if version.server_chosen_event_ids() {
        let id = format!(
            "${}:{}",
            crate::service::auth::random_string(18),
            state.server_name
        );
        event.insert("event_id".into(), CanonicalJsonValue::String(id));
    }
    event.remove("signatures");
    event.remove("hashes");
    ruma::signatures::hash_and_sign_event(
        state.server_name.as_str(),
        &state.signing_key,
        &mut event,
        &version.rules().redaction,
    )
    .map_err(|e| Error::internal(format!("signing the join: {e}")))?;
    let id = inbound::event_id_of(version, &event)?;
    Ok((id, CanonicalJsonValue::Object(event).to_string()))
}

/// The room's state from `send_join`, each event's signatures and hashes checked, and its
/// authorization by its auth events (found among the state and the auth chain): in depth order.
async fn checked_state(
    state: &AppState,
    version: RoomVersion,
    room_id: &str,
    answer: &send_join::RoomState,
) -> Result<Vec<BuiltEvent>> {
    let receiver = Receiver::of(state);
    let mut known: HashMap<String, Value> = HashMap::new();
    for raw in answer.auth_chain.iter().chain(&answer.state) {
        let object: CanonicalJsonObject = serde_json::from_str(raw.get())
            .map_err(|e| Error::remote(format!("send_join answered a bad event: {e}")))?;
        let id = inbound::event_id_of(version, &object)?;
        let object = receiver
            .verify(version, object)
            .await
            .map_err(|e| Error::remote(format!("send_join answered event {id}: {e}")))?;
        known.insert(id, serde_json::to_value(object).map_err(Error::internal)?);
    }
    let mut events = Vec::new();
    for raw in &answer.state {
        let object: CanonicalJsonObject =
            serde_json::from_str(raw.get()).map_err(|e| Error::remote(e.to_string()))?;
        let id = inbound::event_id_of(version, &object)?;
        let pdu = &known[&id];
        // A v12 create event names no room: its ID is the room's.
        let in_room = pdu["room_id"] == room_id
            || (pdu["room_id"].is_null()
                && id.trim_start_matches('$') == room_id.trim_start_matches('!'));
        if !in_room || pdu["state_key"].as_str().is_none() {
            return Err(Error::remote("send_join answered an event of another room"));
        }
        inbound::authorized_by(version, &id, room_id, pdu, &known)
            .map_err(|e| Error::remote(format!("send_join answered event {id}: {e}")))?;
        events.push(inbound::to_built(version, &id, room_id, pdu)?);
    }
    if !events.iter().any(|e| e.event_type == "m.room.create") {
        return Err(Error::remote(
            "send_join answered a state without a create event",
        ));
    }
    events.sort_by_key(|e| (e.event_type != "m.room.create", e.depth));
    Ok(events)
}

/// The stored forms of PDUs (already checked).
fn events_of(
    version: RoomVersion,
    room_id: &str,
    pdus: &[Box<RawValue>],
) -> Result<Vec<BuiltEvent>> {
    pdus.iter()
        .map(|raw| {
            let object: CanonicalJsonObject =
                serde_json::from_str(raw.get()).map_err(Error::internal)?;
            let id = inbound::event_id_of(version, &object)?;
            let pdu = serde_json::to_value(object).map_err(Error::internal)?;
            inbound::to_built(version, &id, room_id, &pdu)
        })
        .collect()
}

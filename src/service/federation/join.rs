//! A local user joining a room on another server: `make_join` to a resident server, the template
//! completed and signed here, `send_join` v2, the returned state and auth chain checked
//! (signatures, hashes, authorization by their auth events), the room's recent history fetched
//! (`/backfill`) and checked alike, then the room stored with the join as its head — and only then
//! is the join reported to the client.

use std::collections::{HashMap, HashSet};

use ruma::api::federation::backfill::get_backfill::v1 as backfill;
use ruma::api::federation::membership::{
    create_join_event::v2 as send_join, prepare_join_event::v1 as make_join,
};
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId, UInt};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::inbound::{self, Receiver};
use crate::service::events::BuiltEvent;
use crate::service::room_versions::{self, RoomVersion};
use crate::service::writer::Target;
use crate::{AppState, Error, Result};

/// How many of the room's events before the join are fetched with it (its recent history).
const HISTORY_WITH_JOIN: u32 = 50;
/// How long the join waits for that history.
const HISTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    let (events, mut known) = checked_state(state, version, room_id, &answer.room_state).await?;
    let join_raw = RawValue::from_string(pdu).map_err(Error::internal)?;
    let mut join = events_of(version, room_id, std::slice::from_ref(&join_raw))?;
    let join_pdu: Value = serde_json::from_str(join_raw.get()).map_err(Error::internal)?;
    let before = inbound::refs(version, &join_pdu["prev_events"]);
    let in_state: HashSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let history = recent_history(
        state, server, version, room_id, before, &in_state, &mut known,
    )
    .await
    .unwrap_or_else(|e| {
        tracing::info!(%server, room_id, error = %e, "no history with the join");
        Vec::new()
    });
    let mut all = events;
    all.append(&mut join);
    state
        .writer
        .submit(
            Target::Joined {
                version,
                events: all,
                history,
            },
            Vec::new(),
            None,
        )
        .await?;
    Ok(())
}

/// The room's recent events before the join (`/backfill` from the server that let us in, from the
/// join's `prev_events`), each checked as the state was: signatures and hashes, then authorization
/// by its auth events among the state, the auth chain and the history (oldest first). Events that
/// fail the checks, and those already in the state, are left out.
async fn recent_history(
    state: &AppState,
    server: &OwnedServerName,
    version: RoomVersion,
    room_id: &str,
    before: Vec<String>,
    in_state: &HashSet<String>,
    known: &mut HashMap<String, Value>,
) -> Result<Vec<BuiltEvent>> {
    let room = OwnedRoomId::try_from(room_id).map_err(Error::internal)?;
    let from = before
        .iter()
        .filter_map(|id| OwnedEventId::try_from(id.as_str()).ok())
        .collect();
    let request = backfill::Request::new(room, from, UInt::from(HISTORY_WITH_JOIN));
    // The join waits for it: a server slow to answer costs the history, not the join.
    let answer = tokio::time::timeout(HISTORY_TIMEOUT, state.federation.send(server, request))
        .await
        .map_err(|_| Error::remote(format!("{server} did not answer /backfill in time")))??;
    let receiver = Receiver::of(state);
    let mut candidates: Vec<(String, Value)> = Vec::new();
    for raw in answer.pdus.iter().take(HISTORY_WITH_JOIN as usize) {
        let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
            continue;
        };
        let Ok(id) = inbound::event_id_of(version, &object) else {
            continue;
        };
        if in_state.contains(&id) {
            continue;
        }
        let Ok(object) = receiver.verify(version, object).await else {
            continue;
        };
        let pdu = serde_json::to_value(object).map_err(Error::internal)?;
        if pdu["room_id"] == room_id {
            candidates.push((id, pdu));
        }
    }
    candidates.sort_by_key(|(_, pdu)| pdu["depth"].as_i64());
    let mut history = Vec::with_capacity(candidates.len());
    for (id, pdu) in candidates {
        if inbound::authorized_by(version, &id, room_id, &pdu, known).is_err() {
            continue;
        }
        if let Ok(event) = inbound::to_built(version, &id, room_id, &pdu) {
            history.push(event);
            known.insert(id, pdu);
        }
    }
    Ok(history)
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
/// authorization by its auth events (found among the state and the auth chain): in depth order,
/// with every checked event (state and auth chain) by ID.
async fn checked_state(
    state: &AppState,
    version: RoomVersion,
    room_id: &str,
    answer: &send_join::RoomState,
) -> Result<(Vec<BuiltEvent>, HashMap<String, Value>)> {
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
    Ok((events, known))
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

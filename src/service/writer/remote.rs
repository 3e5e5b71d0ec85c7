//! The writer's side of federation: events received from other servers appended to a room (checked
//! against the room's current state under its lock), join templates for other servers, and the
//! other servers each local event goes to (queued with its commit).
//!
//! Rooms stay linear: a received event becomes the room's head whether it names the head among its
//! `prev_events` or an older event (a fork), provided the current state authorizes it; otherwise it
//! is refused (not stored: Axon does not keep soft-failed events).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{OwnedServerName, UserId};
use serde_json::{Value, json};

use super::{WorkingRoom, select_auth_events};
use crate::service::auth_check::{self, EventFields, PduView};
use crate::service::events::{self, BuiltEvent, EventDraft, EventRef};
use crate::service::room_cache::{RoomSnapshot, StateEntry};
use crate::service::room_versions::RoomVersion;
use crate::{AppState, Error, Result};

/// An event from another server whose signatures, hashes and authorization by its own auth events
/// were checked (see `service::federation::inbound`), ready for the writer.
pub struct IncomingPdu {
    pub event: BuiltEvent,
    /// The authorization rules' view of it, under its event ID.
    pub view: PduView,
}

/// Appends `pdu` to `room` if the room's current state authorizes it (the spec's soft-fail check).
pub(super) fn build(room: &mut WorkingRoom, pdu: &IncomingPdu) -> Result<BuiltEvent> {
    let version = room.base.version;
    let event = &pdu.event;
    auth_check::check(version, &pdu.view, |t, k| room.entry(t, k).map(|e| &e.view)).map_err(
        |e| Error::forbidden(format!("not allowed by the room's current state: {}", e.0)),
    )?;
    let mut built = event.clone();
    room.head_event_id = event.event_id.clone();
    room.head_hash = event.reference_hash.clone();
    room.head_depth = room.head_depth.max(event.depth);
    if let Some(state_key) = &event.state_key {
        if let Some(previous) = room.entry(&event.event_type, state_key) {
            built.state_unsigned = Some(
                json!({
                    "prev_content": previous.content,
                    "prev_sender": previous.sender,
                    "replaces_state": previous.event_id,
                })
                .to_string(),
            );
        }
        let mut entry = StateEntry::new(
            event.event_id.clone(),
            &event.event_type,
            state_key,
            event.sender.clone(),
            event.content.clone(),
        )
        .map_err(|e| Error::bad_json(e.0))?;
        entry.reference_hash = event.reference_hash.clone();
        room.changes.insert(
            (event.event_type.clone(), state_key.clone()),
            Arc::new(entry),
        );
    }
    Ok(built)
}

/// The working room of a remote room just joined: its state from `events` (state events, the
/// join last), whose last event is the head. The events are stored as they are.
pub(super) fn joined_room(version: RoomVersion, events: &[BuiltEvent]) -> Result<WorkingRoom> {
    let join = events
        .last()
        .ok_or_else(|| Error::internal("a joined room needs its join event"))?;
    let mut snapshot = RoomSnapshot {
        room_id: join.room_id.clone(),
        version,
        head_event_id: join.event_id.clone(),
        head_hash: join.reference_hash.clone(),
        head_depth: join.depth,
        state: Default::default(),
        members: Default::default(),
        member_rows: Default::default(),
    };
    let state = Arc::make_mut(&mut snapshot.state);
    for event in events {
        let Some(key) = &event.state_key else {
            continue;
        };
        let mut entry = StateEntry::new(
            event.event_id.clone(),
            &event.event_type,
            key,
            event.sender.clone(),
            event.content.clone(),
        )
        .map_err(|e| Error::bad_json(e.0))?;
        entry.reference_hash = event.reference_hash.clone();
        state
            .entry(event.event_type.clone())
            .or_default()
            .insert(key.clone(), Arc::new(entry));
    }
    Ok(WorkingRoom::new(Arc::new(snapshot)))
}

/// An unsigned event of `draft`'s kind on the room's current head, in the room version's format,
/// for another server to complete and sign (`make_join`, `make_leave`). Refused when the current
/// state would not authorize it.
pub fn join_template(
    server_name: &str,
    snapshot: Arc<RoomSnapshot>,
    draft: &EventDraft,
    now: i64,
) -> Result<Value> {
    let version = snapshot.version;
    let room = WorkingRoom::new(snapshot);
    let prev = [room.head_event_id.clone()];
    let view = PduView::new(
        EventFields {
            event_id: None,
            room_id: Some(&room.base.room_id),
            sender: &draft.sender,
            event_type: &draft.event_type,
            state_key: draft.state_key.as_deref(),
            prev_events: &prev,
            redacts: None,
        },
        &draft.content,
        server_name,
    )
    .map_err(|e| Error::bad_json(e.0))?;
    auth_check::check(version, &view, |t, k| room.entry(t, k).map(|e| &e.view))
        .map_err(|e| Error::forbidden(e.0))?;
    let auth_events = select_auth_events(version, &room, &view);
    let prev_events = [EventRef {
        id: room.head_event_id.clone(),
        hash: room.head_hash.clone(),
    }];
    let mut template = CanonicalJsonObject::new();
    let string = |s: &str| CanonicalJsonValue::String(s.to_owned());
    template.insert(
        "auth_events".into(),
        events::event_refs(version, &auth_events),
    );
    template.insert(
        "prev_events".into(),
        events::event_refs(version, &prev_events),
    );
    template.insert(
        "content".into(),
        CanonicalJsonValue::Object(events::canonical_content(&draft.content)?),
    );
    template.insert(
        "depth".into(),
        CanonicalJsonValue::Integer((room.head_depth + 1).try_into().map_err(Error::internal)?),
    );
    template.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(now.try_into().map_err(Error::internal)?),
    );
    template.insert("room_id".into(), string(&room.base.room_id));
    template.insert("sender".into(), string(&draft.sender));
    if let Some(key) = &draft.state_key {
        template.insert("state_key".into(), string(key));
    }
    template.insert("type".into(), string(&draft.event_type));
    if version.has_origin() {
        let origin = UserId::parse(draft.sender.as_str())
            .map_err(|_| Error::invalid_param("Invalid user ID"))?;
        template.insert("origin".into(), string(origin.server_name().as_str()));
    }
    serde_json::to_value(template).map_err(Error::internal)
}

/// The other servers with joined members in `room` (as of the batch's changes).
fn servers_in(room: &WorkingRoom, own: &str) -> BTreeSet<OwnedServerName> {
    if !room.changes.keys().any(|(t, _)| t == "m.room.member") {
        // Worked out once per membership change, not per batch (a room of thousands).
        return room
            .base
            .member_lists()
            .join_servers
            .iter()
            .filter(|s| s.as_str() != own)
            .filter_map(|s| OwnedServerName::try_from(s.as_str()).ok())
            .collect();
    }
    let mut members: HashMap<&str, &Arc<StateEntry>> = room
        .base
        .state
        .get("m.room.member")
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default();
    for ((t, k), entry) in &room.changes {
        if t == "m.room.member" {
            members.insert(k.as_str(), entry);
        }
    }
    members
        .into_iter()
        .filter(|(_, e)| e.content.get("membership").and_then(Value::as_str) == Some("join"))
        .filter_map(|(user, _)| Some(UserId::parse(user).ok()?.server_name().to_owned()))
        .filter(|s| s.as_str() != own)
        .collect()
}

/// The batch's local events in rooms shared with other servers, each with the servers it goes to
/// (event ID, destination): every server with joined members, and the server of a membership
/// event's target (an invite, a kick or a ban of a remote user). They are queued in the statement
/// that stores them: committed means queued, and rooms with no other server cost nothing.
pub(super) fn outbound(
    state: &AppState,
    built: &[BuiltEvent],
    working: &HashMap<String, WorkingRoom>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !state.config.federation_enabled() {
        return out;
    }
    let own = state.server_name.as_str();
    let is_local = |user: &str| UserId::parse(user).is_ok_and(|u| u.server_name() == own);
    let mut servers: HashMap<&str, BTreeSet<OwnedServerName>> = HashMap::new();
    for event in built.iter().filter(|e| is_local(&e.sender)) {
        let Some(room) = working.get(&event.room_id) else {
            continue;
        };
        let in_room = servers
            .entry(event.room_id.as_str())
            .or_insert_with(|| servers_in(room, own));
        let target = (event.event_type == "m.room.member")
            .then(|| {
                event
                    .state_key
                    .as_deref()
                    .and_then(|k| UserId::parse(k).ok())
            })
            .flatten()
            .map(|t| t.server_name().to_owned())
            .filter(|t| t.as_str() != own && !in_room.contains(t));
        for destination in in_room.iter().chain(&target) {
            out.push((event.event_id.clone(), destination.to_string()));
        }
    }
    out
}

//! The writer's side of federation: events received from other servers appended to a room (checked
//! against the room's current state under its lock), join templates for other servers, and local
//! events handed to the outbound queue once committed.
//!
//! Rooms stay linear: a received event becomes the room's head whether it names the head among its
//! `prev_events` or an older event (a fork), provided the current state authorizes it; otherwise it
//! is refused (not stored: Axon does not keep soft-failed events).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{OwnedServerName, UserId};
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::fork::Resolution;
use super::{WorkingRoom, select_auth_events};
use crate::service::auth_check::{self, EventFields, PduView};
use crate::service::events::{self, BuiltEvent, EventDraft, EventRef};
use crate::service::federation::inbound;
use crate::service::room_cache::{RoomSnapshot, StateEntry};
use crate::service::room_versions::RoomVersion;
use crate::{AppState, Error, Result, store};

/// The most forward extremities a room keeps besides its head.
const MAX_TIPS: usize = 9;

/// An event from another server whose signatures, hashes and authorization by its own auth events
/// were checked (see `service::federation::inbound`), ready for the writer.
pub struct IncomingPdu {
    pub event: BuiltEvent,
    /// The authorization rules' view of it, under its event ID.
    pub view: PduView,
}

/// Appends `pdu` to `room` if the room's current state authorizes it (the spec's soft-fail check);
/// with a fork's `resolution`, the room's state then becomes the resolved one.
pub(super) fn build(
    room: &mut WorkingRoom,
    pdu: &IncomingPdu,
    resolution: Option<Resolution>,
) -> Result<BuiltEvent> {
    let version = room.base.version;
    let event = &pdu.event;
    auth_check::check(version, &pdu.view, |t, k| room.entry(t, k).map(|e| &e.view)).map_err(
        |e| Error::forbidden(format!("not allowed by the room's current state: {}", e.0)),
    )?;
    let mut built = event.clone();
    // The old head stays a forward extremity unless the event cites it; the tips it cites are
    // merged.
    let pdu_json: Value = serde_json::from_str(&event.pdu).map_err(Error::internal)?;
    let cited = inbound::refs(version, &pdu_json["prev_events"]);
    let old_head = EventRef {
        id: std::mem::take(&mut room.head_event_id),
        hash: room.head_hash.take(),
    };
    room.tips.push(old_head);
    room.tips.retain(|t| !cited.contains(&t.id));
    // Synapse cites at most ten prev events; the oldest tips go first.
    let excess = room.tips.len().saturating_sub(MAX_TIPS);
    room.tips.drain(..excess);
    room.head_event_id = event.event_id.clone();
    room.head_hash = event.reference_hash.clone();
    room.head_depth = room.head_depth.max(event.depth);
    let left_out = resolution.as_ref().is_some_and(|r| r.incoming_left_out);
    if left_out {
        built.state_key = None;
    }
    if let Some(state_key) = event.state_key.as_ref().filter(|_| !left_out) {
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
    for (key, entry) in resolution.into_iter().flat_map(|r| r.changes) {
        room.changes.insert(key, entry);
    }
    Ok(built)
}

/// A remote room just joined, as the writer commits it.
pub(super) struct Joined {
    /// Its state from the join's answer, the join last as the head.
    pub room: WorkingRoom,
    /// The events to store, in depth order with the join last: those not stored yet (a room
    /// joined again keeps what it had).
    pub events: Vec<BuiltEvent>,
    /// The state after the join (event IDs), which the current state is set to once stored.
    pub state: Vec<String>,
    /// The events stored without notifying anyone: all but the join.
    pub quiet: Vec<String>,
    /// The room is new here (not joined again after every local member had left).
    pub is_new: bool,
}

/// Works out how to commit a remote room just joined through `events` (its state, the join
/// last) with its recent `history`; an existing room is locked first. The outer error is the
/// database's, the inner one the join's.
pub(super) async fn joined(
    conn: &mut PgConnection,
    version: RoomVersion,
    events: &[BuiltEvent],
    history: &[BuiltEvent],
) -> Result<Result<Joined>> {
    let room = match joined_room(version, events) {
        Ok(room) => room,
        Err(e) => return Ok(Err(e)),
    };
    let Some((join, state)) = events.split_last() else {
        return Ok(Err(Error::internal("a joined room needs its join event")));
    };
    let room_id = room.base.room_id.as_str();
    let is_new = store::rooms::lock_rooms(&mut *conn, &[room_id])
        .await?
        .is_empty();
    let mut earlier: Vec<&BuiltEvent> = Vec::with_capacity(state.len() + history.len());
    let mut seen: HashSet<&str> = HashSet::new();
    for event in state.iter().chain(history) {
        if seen.insert(&event.event_id) {
            earlier.push(event);
        }
    }
    let stored: HashSet<String> = if is_new {
        HashSet::new()
    } else {
        let ids: Vec<String> = earlier.iter().map(|e| e.event_id.clone()).collect();
        store::events::stored_ids(&mut *conn, &ids)
            .await?
            .into_iter()
            .collect()
    };
    earlier.retain(|e| !stored.contains(&e.event_id));
    earlier.sort_by_key(|e| (e.event_type != "m.room.create", e.depth));
    let quiet = earlier.iter().map(|e| e.event_id.clone()).collect();
    let mut to_store: Vec<BuiltEvent> = earlier.into_iter().cloned().collect();
    to_store.push(join.clone());
    // One event per key: the join replaces the joining user's earlier membership.
    let mut after: HashMap<(&str, &str), &str> = HashMap::new();
    for event in events {
        if let Some(key) = &event.state_key {
            after.insert((&event.event_type, key), &event.event_id);
        }
    }
    Ok(Ok(Joined {
        room,
        events: to_store,
        state: after.into_values().map(str::to_owned).collect(),
        quiet,
        is_new,
    }))
}

/// The working room of a remote room just joined: its state from `events` (state events, the
/// join last), whose last event is the head.
fn joined_room(version: RoomVersion, events: &[BuiltEvent]) -> Result<WorkingRoom> {
    let join = events
        .last()
        .ok_or_else(|| Error::internal("a joined room needs its join event"))?;
    let mut snapshot = RoomSnapshot {
        room_id: join.room_id.clone(),
        version,
        head_event_id: join.event_id.clone(),
        head_hash: join.reference_hash.clone(),
        head_depth: join.depth,
        tips: Vec::new(),
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
    let mut cited = vec![EventRef {
        id: room.head_event_id.clone(),
        hash: room.head_hash.clone(),
    }];
    cited.extend(room.tips.iter().cloned());
    let prev: Vec<String> = cited.iter().map(|r| r.id.clone()).collect();
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
    let prev_events = cited;
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

/// Hands the batch's local events in rooms shared with other servers to the outbound queue: to
/// every server with joined members, and to the server of a membership event's target (an invite,
/// a kick or a ban of a remote user). Queued in the background: a local send does not wait for it.
pub(super) fn send_out(
    state: &AppState,
    built: &[BuiltEvent],
    working: &HashMap<String, WorkingRoom>,
) {
    if !state.config.federation_enabled() {
        return;
    }
    let own = state.server_name.as_str();
    let is_local = |user: &str| UserId::parse(user).is_ok_and(|u| u.server_name() == own);
    let mut servers: HashMap<&str, BTreeSet<OwnedServerName>> = HashMap::new();
    for event in built.iter().filter(|e| is_local(&e.sender)) {
        let Some(room) = working.get(&event.room_id) else {
            continue;
        };
        let mut destinations = servers
            .entry(event.room_id.as_str())
            .or_insert_with(|| servers_in(room, own))
            .clone();
        if event.event_type == "m.room.member"
            && let Some(target) = event
                .state_key
                .as_deref()
                .and_then(|k| UserId::parse(k).ok())
            && target.server_name() != own
        {
            destinations.insert(target.server_name().to_owned());
        }
        if destinations.is_empty() {
            continue;
        }
        let Ok(pdu) = serde_json::from_str::<Value>(&event.pdu) else {
            continue;
        };
        state
            .outbox
            .pdu_committed(destinations.into_iter().collect(), pdu);
    }
}

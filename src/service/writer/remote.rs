//! The writer's side of federation: events received from other servers appended to a room (checked
//! against the room's current state under its lock, soft-failed when only that refuses them),
//! remote rooms joined, out-of-band memberships, join templates for other servers, and the other
//! servers each local event goes to (queued with its commit).
//!
//! Rooms stay linear: a received event becomes the room's head whether it names the head among its
//! `prev_events` or an older event (a fork), provided the current state authorizes it; the room's
//! state is then the state resolution of the two branches (see `fork`), and the old head stays a
//! forward extremity (a tip) that the next local event cites. One the current state refuses but
//! the state before it (as of its newest known prev event) allows is soft-failed: kept in
//! `soft_failed_events`, never shown to clients nor cited by local events.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{OwnedServerName, UserId};
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::fork::{self, Resolution};
use super::{WorkingRoom, load_snapshot, select_auth_events};
use crate::service::auth_check::{self, EventFields, PduView};
use crate::service::events::{self, BuiltEvent, EventDraft, EventRef};
use crate::service::federation::inbound;
use crate::service::room_cache::{RoomSnapshot, StateEntry};
use crate::service::room_versions::RoomVersion;
use crate::store::federation_rooms;
use crate::{AppState, Error, Result, store};

/// The most forward extremities a room keeps besides its head (Synapse cites at most ten prev
/// events).
const MAX_TIPS: usize = 9;

/// An event checked and signed before it reaches the writer: from another server, its signatures,
/// hashes and authorization by its own auth events checked (see `service::federation::inbound`);
/// or a local invite of another server's user, built here and signed there too.
pub struct IncomingPdu {
    pub event: BuiltEvent,
    /// The authorization rules' view of it, under its event ID.
    pub view: PduView,
    /// Received from another server: soft-failed rather than refused when the current state alone
    /// refuses it. (A local event the current state refuses is refused.)
    pub may_soft_fail: bool,
}

/// What a batch does besides storing its events, for federation: received events soft-failed,
/// rooms joined again (their state replaced), out-of-band memberships.
#[derive(Default)]
pub(super) struct Aside {
    soft_failed: Vec<BuiltEvent>,
    /// (room, the already stored events of the state it now has).
    rejoined: Vec<(String, Vec<String>)>,
    /// Out-of-band membership events: (room, user, event ID, an invite's stripped state).
    out_of_band: Vec<(String, String, String, Option<String>)>,
    /// State events the current state is set to once the batch's events are applied, whatever
    /// their order says: a joined room's state (the join included, its history stored in depth
    /// order before it), a resolved fork's winners.
    restored: Vec<String>,
    /// Rooms whose push rules read another snapshot than the cached one: `None` (a room just
    /// joined: its old state is no news) or the new room of an out-of-band invite.
    push_rooms: HashMap<String, Option<Arc<RoomSnapshot>>>,
}

impl Aside {
    /// Nothing to commit besides the batch's events.
    pub(super) fn is_empty(&self) -> bool {
        self.soft_failed.is_empty()
    }

    /// The current state is set aside events after the batch's are applied (locked path only).
    pub(super) fn restores(&self) -> bool {
        !self.restored.is_empty()
    }

    pub(super) fn is_out_of_band(&self, event_id: &str) -> bool {
        self.out_of_band.iter().any(|(_, _, id, _)| id == event_id)
    }

    pub(super) fn push_rooms(&self) -> HashMap<String, Option<Arc<RoomSnapshot>>> {
        self.push_rooms.clone()
    }

    /// Stores the soft-failed events (in the batch's transaction).
    pub(super) async fn keep_soft_failed(&self, conn: &mut PgConnection, now: i64) -> Result<()> {
        for e in &self.soft_failed {
            federation_rooms::insert_soft_failed(conn, &e.event_id, &e.room_id, &e.pdu, now)
                .await?;
        }
        Ok(())
    }

    /// Before the batch's state is applied: a room joined again drops its old state for the
    /// already stored events of its new one.
    pub(super) async fn before_state(&self, conn: &mut PgConnection) -> Result<()> {
        for (room_id, stored) in &self.rejoined {
            federation_rooms::reset_state(conn, room_id, stored).await?;
        }
        Ok(())
    }

    /// After it: the state set aside for restoring; an invite's stripped state kept, or dropped
    /// once the membership moves on.
    pub(super) async fn after_state(&self, conn: &mut PgConnection) -> Result<()> {
        if !self.restored.is_empty() {
            store::rooms::restore_state(conn, &self.restored).await?;
        }
        for (room_id, user, event_id, invite_state) in &self.out_of_band {
            match invite_state {
                Some(stripped) => {
                    federation_rooms::put_remote_invite(conn, room_id, user, event_id, stripped)
                        .await?
                }
                None => federation_rooms::delete_remote_invite(conn, room_id, user).await?,
            }
        }
        Ok(())
    }
}

/// Appends a received event to `room` if the room's current state authorizes it; sets it aside
/// as soft-failed if only the current state refuses it (see [`allowed_before`]).
pub(super) async fn build_or_set_aside(
    conn: &mut PgConnection,
    room: &mut WorkingRoom,
    pdu: &IncomingPdu,
    aside: &mut Aside,
) -> Result<Vec<BuiltEvent>> {
    let version = room.base.version;
    let allowed = auth_check::check(version, &pdu.view, |t, k| room.entry(t, k).map(|e| &e.view));
    match allowed {
        Ok(()) => {
            let resolution = fork::resolve(conn, room, pdu).await?;
            if let Some(r) = &resolution {
                let winners = r.changes.iter().map(|(_, e)| e.event_id.clone());
                aside.restored.extend(winners);
            }
            Ok(vec![build(room, pdu, resolution)?])
        }
        Err(refused) if pdu.may_soft_fail => {
            if !allowed_before(conn, room.base.version, &room.base.room_id, &pdu.view).await? {
                return Err(Error::forbidden(
                    "not allowed by the state before it (rejected)",
                ));
            }
            tracing::info!(event_id = %pdu.event.event_id, reason = %refused.0, "soft-failed a PDU");
            aside.soft_failed.push(pdu.event.clone());
            Ok(Vec::new())
        }
        Err(refused) => Err(Error::forbidden(format!(
            "not allowed by the room's current state: {}",
            refused.0
        ))),
    }
}

/// Whether `view` passes the authorization rules against the state before it: the room's state
/// as of the newest of its prev events stored here. With none stored (a gap Axon does not fill),
/// its authorization by its own auth events stands.
async fn allowed_before(
    conn: &mut PgConnection,
    version: RoomVersion,
    room_id: &str,
    view: &PduView,
) -> Result<bool> {
    use ruma::state_res::Event as _;
    let prev: Vec<String> = view.prev_events().map(|id| id.to_string()).collect();
    let Some(at) = federation_rooms::positions_of(conn, &prev)
        .await?
        .into_iter()
        .map(|(_, position)| position)
        .max()
    else {
        return Ok(true);
    };
    let mut keys: Vec<(String, String)> = ruma::state_res::auth_types_for_event(
        view.event_type(),
        view.sender(),
        view.state_key(),
        view.content(),
        &version.rules().authorization,
    )
    .unwrap_or_default()
    .into_iter()
    .map(|(t, k)| (t.to_string(), k))
    .collect();
    keys.push(("m.room.create".into(), String::new()));
    let mut before: HashMap<(String, String), StateEntry> = HashMap::new();
    for row in federation_rooms::state_entries_at(conn, room_id, at, &keys).await? {
        let event: Value = serde_json::from_str(&row.client_json).map_err(Error::internal)?;
        let content = event.get("content").cloned().unwrap_or_else(|| json!({}));
        let entry = StateEntry::new(
            row.event_id,
            &row.event_type,
            &row.state_key,
            row.sender,
            content,
        )
        .map_err(|e| Error::internal(e.0))?;
        before.insert((row.event_type, row.state_key), entry);
    }
    Ok(auth_check::check(version, view, |t, k| {
        before.get(&(t.to_owned(), k.to_owned())).map(|e| &e.view)
    })
    .is_ok())
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
    let excess = room.tips.len().saturating_sub(MAX_TIPS);
    room.tips.drain(..excess);
    room.head_event_id = event.event_id.clone();
    room.head_hash = event.reference_hash.clone();
    room.head_depth = room.head_depth.max(event.depth);
    let built = match &resolution {
        // A state event that lost its key to another: stored without it in the state column.
        Some(r) if r.incoming_left_out => {
            let mut built = event.clone();
            built.state_key = None;
            built
        }
        _ => with_state_of(room, event)?,
    };
    for (key, entry) in resolution.into_iter().flat_map(|r| r.changes) {
        room.changes.insert(key, entry);
    }
    Ok(built)
}

/// `event` as stored once applied to `room`'s state: a state event replaces the entry of its key
/// (and says in its `unsigned` what it replaced).
fn with_state_of(room: &mut WorkingRoom, event: &BuiltEvent) -> Result<BuiltEvent> {
    let mut built = event.clone();
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

/// A remote room just joined (`Target::Joined`): its working room, the events to store (those not
/// stored here yet: its state and `history` in depth order, the join last), and whether the room
/// was known here before — then it is locked, and its state becomes the joined one (the already
/// stored events of it included). The state is restored after the batch's events are applied,
/// whatever the depth order of the history says.
pub(super) async fn joining(
    conn: &mut PgConnection,
    version: RoomVersion,
    events: &[BuiltEvent],
    history: &[BuiltEvent],
    aside: &mut Aside,
) -> Result<(WorkingRoom, Vec<BuiltEvent>, bool)> {
    let room = joined_room(version, events)?;
    let room_id = room.base.room_id.clone();
    let Some((join, state)) = events.split_last() else {
        return Err(Error::internal("a joined room needs its join event"));
    };
    aside.push_rooms.insert(room_id.clone(), None);
    // One event per key: the join replaces the joining user's earlier membership.
    let mut after: HashMap<(&str, &str), &str> = HashMap::new();
    for event in events {
        if let Some(key) = &event.state_key {
            after.insert((&event.event_type, key), &event.event_id);
        }
    }
    aside
        .restored
        .extend(after.into_values().map(str::to_owned));
    let mut earlier: Vec<&BuiltEvent> = Vec::with_capacity(state.len() + history.len());
    let mut seen: HashSet<&str> = HashSet::new();
    for event in state.iter().chain(history) {
        if seen.insert(&event.event_id) {
            earlier.push(event);
        }
    }
    let existed = !store::rooms::lock_rooms(conn, &[&room_id])
        .await?
        .is_empty();
    let stored: HashSet<String> = if existed {
        let ids: Vec<String> = earlier.iter().map(|e| e.event_id.clone()).collect();
        federation_rooms::positions_of(conn, &ids)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    } else {
        HashSet::new()
    };
    earlier.retain(|e| !stored.contains(&e.event_id));
    earlier.sort_by_key(|e| (e.event_type != "m.room.create", e.depth));
    let mut fresh: Vec<BuiltEvent> = earlier.into_iter().cloned().collect();
    fresh.push(join.clone());
    if existed {
        if let Some(joiner) = join.state_key.clone() {
            // Their invite's stripped state is no longer shown.
            aside
                .out_of_band
                .push((room_id.clone(), joiner, String::new(), None));
        }
        let stored_state = state
            .iter()
            .filter(|e| stored.contains(&e.event_id))
            .map(|e| e.event_id.clone())
            .collect();
        aside.rejoined.push((room_id, stored_state));
    }
    Ok((room, fresh, existed))
}

/// An out-of-band membership event (`Target::OutOfBand`) as stored, with its room's working state
/// and whether the room was known here: a known room (locked) takes it into its state, its head
/// unmoved; an unknown one is new here, the event its only state and its head.
pub(super) async fn out_of_band(
    state: &AppState,
    conn: &mut PgConnection,
    version: RoomVersion,
    event: &BuiltEvent,
    invite_state: &Option<String>,
    aside: &mut Aside,
) -> Result<(WorkingRoom, BuiltEvent, bool)> {
    let user = event
        .state_key
        .clone()
        .filter(|_| event.event_type == "m.room.member")
        .ok_or_else(|| Error::internal("an out-of-band event must be a member event"))?;
    aside.out_of_band.push((
        event.room_id.clone(),
        user,
        event.event_id.clone(),
        invite_state.clone(),
    ));
    if let Some(head) = store::rooms::lock_rooms(conn, &[&event.room_id])
        .await?
        .into_iter()
        .next()
    {
        let snapshot = match state.rooms.get(&event.room_id) {
            Some(s) if s.head_event_id == head.head_event_id => s,
            _ => load_snapshot(conn, &head).await?,
        };
        let mut room = WorkingRoom::new(snapshot);
        let built = with_state_of(&mut room, event)?;
        return Ok((room, built, true));
    }
    let room = joined_room(version, std::slice::from_ref(event))?;
    let snapshot = room.base.clone();
    aside
        .push_rooms
        .insert(event.room_id.clone(), Some(snapshot));
    Ok((room, event.clone(), false))
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

/// The batch's local events in rooms shared with other servers, each with the servers it goes to
/// (event ID, destination): every server with joined members, and the server of a membership
/// event's target (an invite, a kick or a ban of a remote user). They are queued in the statement
/// that stores them: committed means queued, and rooms with no other server cost nothing.
pub(super) fn outbound<'a>(
    state: &AppState,
    built: impl Iterator<Item = &'a BuiltEvent>,
    working: &HashMap<String, WorkingRoom>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !state.config.federation_enabled() {
        return out;
    }
    let own = state.server_name.as_str();
    let is_local = |user: &str| UserId::parse(user).is_ok_and(|u| u.server_name() == own);
    let mut servers: HashMap<&str, BTreeSet<OwnedServerName>> = HashMap::new();
    for event in built.filter(|e| is_local(&e.sender)) {
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

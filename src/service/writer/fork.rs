//! State resolution for received events that do not follow the room's head alone: an event sent on
//! another server while this one sent its own (a fork), or one that merges such forks. Rooms stay
//! linear here (the event becomes the head), but their state becomes what every server in the room
//! works out: the room version's state resolution (v2, through ruma's `state-res`) of the current
//! state and the state after the event on its branch, as Synapse does with its state groups.
//!
//! The state after an earlier event is read as the state at its stream position, which is exact
//! for events that followed the head when they came; the states, the events in them and their auth
//! chains are read from the store (at most `MAX_EVENTS`: beyond that the event is appended as
//! before, without resolution). The current state (`room_state`, the room cache) becomes the
//! resolved one; the state "at a position" that reads of past states use follows it for the
//! received event's key (a received state event that lost is stored without its state key in the
//! `state_key` column), not for other keys a resolution may change (power events in conflict).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::StateResolutionVersion;
use ruma::state_res::{self, Event, StateMap};

/// A set of event IDs, as ruma's state resolution takes them.
type EventIdSet = state_res::utils::event_id_set::EventIdSet<OwnedEventId>;
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId};
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::PgConnection;

use super::WorkingRoom;
use super::remote::IncomingPdu;
use crate::service::federation::inbound;
use crate::service::room_cache::StateEntry;
use crate::service::room_versions::RoomVersion;
use crate::store::events::Members;
use crate::{Error, Result, store};

/// The most events (states, their auth chains) one resolution reads.
const MAX_EVENTS: usize = 50_000;

/// A state entry of the room cache under its (type, state key).
pub type KeyedEntry = ((String, String), Arc<StateEntry>);

/// The state after a received event, where it differs from appending the event alone.
pub struct Resolution {
    /// The keys whose event is not the one appending the event alone would leave there, with the
    /// event the resolution put there instead.
    pub changes: Vec<KeyedEntry>,
    /// The received state event lost its key to another event: it is stored without a state key
    /// in the store's `state_key` column (its client and federation forms keep theirs), so that
    /// the room's state at any later position skips it.
    pub incoming_left_out: bool,
}

/// The state after `pdu` when it does not follow the head alone (`None` when it does, or when the
/// states it needs are not all here). Rooms of versions 1 and 2 (state resolution v1, event IDs
/// of the server's choosing) are left linear.
pub(super) async fn resolve(
    conn: &mut PgConnection,
    room: &WorkingRoom,
    pdu: &IncomingPdu,
) -> Result<Option<Resolution>> {
    let version = room.base.version;
    let StateResolutionVersion::V2(res_rules) = version.rules().state_res else {
        return Ok(None);
    };
    if version.server_chosen_event_ids() {
        return Ok(None);
    }
    let event: Value = serde_json::from_str(&pdu.event.pdu).map_err(Error::internal)?;
    let prevs = inbound::refs(version, &event["prev_events"]);
    if prevs.is_empty() || (prevs.len() == 1 && prevs[0] == room.head_event_id) {
        return Ok(None);
    }
    let current = current_state(room)?;
    let Some(branches) = branch_states(conn, room, &prevs, &current).await? else {
        return Ok(None);
    };
    // A message on branches with the current state (the common case: messages sent at once)
    // changes no state.
    if pdu.event.state_key.is_none() && branches.iter().all(|b| *b == current) {
        return Ok(None);
    }
    let mut graph = Graph::new(version);
    let incoming = StoredPdu::parse(version, &pdu.event.event_id, &event)?;
    let own_key = pdu.event.state_key.as_ref().map(|k| {
        (
            StateEventType::from(pdu.event.event_type.as_str()),
            k.clone(),
        )
    });
    let own_id = incoming.id.clone();
    graph.events.insert(own_id.clone(), incoming);
    let follows_head = prevs.contains(&room.head_event_id);
    let mut maps = branches;
    if !follows_head {
        maps.push(current.clone());
    }
    if !graph.load(conn, &maps).await? {
        tracing::warn!(room_id = %room.base.room_id, "a fork too large to resolve; appended as it is");
        return Ok(None);
    }
    let rules = &version.rules().authorization;
    // The state before the event on its branch, then after it; resolved with the current state
    // unless the branch holds it already (the event cites the head).
    let mut before = match prevs.len() {
        1 => maps[0].clone(),
        n => match graph.resolve(rules, &res_rules, &maps[..n]) {
            Some(state) => state,
            None => return Ok(None),
        },
    };
    if let Some(key) = &own_key {
        before.insert(key.clone(), own_id.clone());
    }
    let after = if follows_head {
        before
    } else {
        match graph.resolve(rules, &res_rules, &[current.clone(), before]) {
            Some(state) => state,
            None => return Ok(None),
        }
    };
    // Against what appending the event alone would make the state.
    let mut linear = current;
    if let Some(key) = &own_key {
        linear.insert(key.clone(), own_id.clone());
    }
    let changes = graph.changes(&after, &linear)?;
    if changes.iter().any(|(key, _)| {
        own_key
            .as_ref()
            .is_none_or(|own| (own.0.to_string(), own.1.clone()) != *key)
    }) {
        // Positions before this event keep their events: reads of the state "at a position"
        // (/state, /members, syncs) see the resolution for the received event's key only.
        tracing::info!(room_id = %room.base.room_id, "state resolution changed other keys than the received event's");
    }
    Ok(Some(Resolution {
        changes,
        incoming_left_out: own_key.is_some_and(|key| after.get(&key) != Some(&own_id)),
    }))
}

/// The state after each of `prevs` (`None` when one is not stored here).
async fn branch_states(
    conn: &mut PgConnection,
    room: &WorkingRoom,
    prevs: &[String],
    current: &StateMap<OwnedEventId>,
) -> Result<Option<Vec<StateMap<OwnedEventId>>>> {
    let mut branches = Vec::with_capacity(prevs.len());
    for prev in prevs {
        if *prev == room.head_event_id {
            branches.push(current.clone());
            continue;
        }
        match state_after(conn, &room.base.room_id, prev).await? {
            Some(state) => branches.push(state),
            None => return Ok(None),
        }
    }
    Ok(Some(branches))
}

/// The room's current state (the batch's changes included), as event IDs.
fn current_state(room: &WorkingRoom) -> Result<StateMap<OwnedEventId>> {
    let mut map = StateMap::new();
    for (event_type, by_key) in room.base.state.iter() {
        for (key, entry) in by_key {
            map.insert(
                (StateEventType::from(event_type.as_str()), key.clone()),
                parse_id(&entry.event_id)?,
            );
        }
    }
    for ((event_type, key), entry) in &room.changes {
        map.insert(
            (StateEventType::from(event_type.as_str()), key.clone()),
            parse_id(&entry.event_id)?,
        );
    }
    Ok(map)
}

/// The state after `event_id` of `room_id`: the state at its stream position.
async fn state_after(
    conn: &mut PgConnection,
    room_id: &str,
    event_id: &str,
) -> Result<Option<StateMap<OwnedEventId>>> {
    let Some(row) = store::events::event_by_id(&mut *conn, event_id).await? else {
        return Ok(None);
    };
    if row.room_id != room_id {
        return Ok(None);
    }
    let rows = store::events::state_at(&mut *conn, room_id, row.stream_ordering, Members::Included)
        .await?;
    let mut map = StateMap::new();
    for row in rows {
        let Some(key) = row.state_key else { continue };
        map.insert(
            (StateEventType::from(row.event_type.as_str()), key),
            parse_id(&row.event_id)?,
        );
    }
    Ok(Some(map))
}

fn parse_id(id: &str) -> Result<OwnedEventId> {
    OwnedEventId::try_from(id).map_err(|_| Error::internal(format!("bad event ID {id}")))
}

/// The events a resolution reads: the states' events and their auth chains.
struct Graph {
    version: RoomVersion,
    events: HashMap<OwnedEventId, StoredPdu>,
}

impl Graph {
    fn new(version: RoomVersion) -> Self {
        Self {
            version,
            events: HashMap::new(),
        }
    }

    /// Reads the events of `maps` and their auth chains; false when there are too many.
    async fn load(
        &mut self,
        conn: &mut PgConnection,
        maps: &[StateMap<OwnedEventId>],
    ) -> Result<bool> {
        let mut wanted: Vec<OwnedEventId> = maps.iter().flat_map(|m| m.values().cloned()).collect();
        while !wanted.is_empty() {
            if self.events.len() > MAX_EVENTS {
                return Ok(false);
            }
            let missing: Vec<String> = wanted
                .iter()
                .filter(|id| !self.events.contains_key(*id))
                .map(ToString::to_string)
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let mut next = Vec::new();
            for (id, text) in store::events::pdus_of(&mut *conn, &missing).await? {
                let pdu: Value = serde_json::from_str(&text).map_err(Error::internal)?;
                let stored = StoredPdu::parse(self.version, &id, &pdu)?;
                next.extend(stored.auth_events.iter().cloned());
                self.events.insert(stored.id.clone(), stored);
            }
            // Auth events already read are walked already.
            next.retain(|id| !self.events.contains_key(id));
            wanted = next;
        }
        Ok(true)
    }

    /// The entries of `after` that differ from `linear`, as the room cache holds them.
    fn changes(
        &self,
        after: &StateMap<OwnedEventId>,
        linear: &StateMap<OwnedEventId>,
    ) -> Result<Vec<KeyedEntry>> {
        let mut changes = Vec::new();
        for (key, id) in after {
            if linear.get(key) == Some(id) {
                continue;
            }
            let stored = self
                .events
                .get(id)
                .ok_or_else(|| Error::internal(format!("state resolution chose unread {id}")))?;
            let content: Value =
                serde_json::from_str(stored.content.get()).map_err(Error::internal)?;
            let entry = StateEntry::new(
                id.to_string(),
                &key.0.to_string(),
                &key.1,
                stored.sender.to_string(),
                content,
            )
            .map_err(|e| Error::bad_json(e.0))?;
            changes.push(((key.0.to_string(), key.1.clone()), Arc::new(entry)));
        }
        Ok(changes)
    }

    /// Every event reachable from `ids` through `auth_events` (the ids themselves excluded).
    fn chain_of<'a>(&self, ids: impl Iterator<Item = &'a OwnedEventId>) -> HashSet<OwnedEventId> {
        let mut chain = HashSet::new();
        let mut stack: Vec<&OwnedEventId> = ids
            .filter_map(|id| self.events.get(id))
            .flat_map(|e| e.auth_events.iter())
            .collect();
        while let Some(id) = stack.pop() {
            if chain.insert(id.clone())
                && let Some(event) = self.events.get(id)
            {
                stack.extend(event.auth_events.iter());
            }
        }
        chain
    }

    /// State resolution of `maps`, whose events and auth chains `load` read (`None`, logged,
    /// when it fails).
    fn resolve(
        &self,
        rules: &ruma::room_version_rules::AuthorizationRules,
        res_rules: &ruma::room_version_rules::StateResolutionV2Rules,
        maps: &[StateMap<OwnedEventId>],
    ) -> Option<StateMap<OwnedEventId>> {
        let chains: Vec<EventIdSet> = maps
            .iter()
            .map(|m| self.chain_of(m.values()).into_iter().collect())
            .collect();
        state_res::resolve(
            rules,
            res_rules,
            maps,
            chains,
            |id: &EventId| self.events.get(id),
            |conflicted| Some(self.conflicted_subgraph(conflicted)),
        )
        .map_err(|e| tracing::warn!(error = %e, "state resolution failed; the event is appended as it is"))
        .ok()
    }

    /// The conflicted state subgraph (room version 12): the events on an auth path from one
    /// conflicted event to another, both ends included.
    fn conflicted_subgraph(&self, conflicted: &StateMap<Vec<OwnedEventId>>) -> EventIdSet {
        let targets: HashSet<&OwnedEventId> = conflicted.values().flatten().collect();
        // The events with a conflicted event among their auth ancestors, or conflicted themselves.
        let mut children: HashMap<&OwnedEventId, Vec<&OwnedEventId>> = HashMap::new();
        for event in self.events.values() {
            for auth in &event.auth_events {
                children.entry(auth).or_default().push(&event.id);
            }
        }
        let mut leads_to: HashSet<&OwnedEventId> = targets.clone();
        let mut stack: Vec<&OwnedEventId> = targets.iter().copied().collect();
        while let Some(id) = stack.pop() {
            for child in children.get(id).into_iter().flatten() {
                if leads_to.insert(child) {
                    stack.push(child);
                }
            }
        }
        let mut subgraph: HashSet<OwnedEventId> = HashSet::new();
        for start in &targets {
            let on_paths: Vec<OwnedEventId> = self
                .chain_of(std::iter::once(*start))
                .into_iter()
                .filter(|id| leads_to.contains(id))
                .collect();
            if !on_paths.is_empty() {
                subgraph.insert((*start).clone());
                subgraph.extend(on_paths);
            }
        }
        subgraph.into_iter().collect()
    }
}

/// A stored event as ruma's state resolution reads it.
#[derive(Debug, Clone)]
struct StoredPdu {
    id: OwnedEventId,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
}

impl StoredPdu {
    fn parse(version: RoomVersion, id: &str, pdu: &Value) -> Result<Self> {
        let bad = |what: &str| Error::internal(format!("stored event {id}: bad {what}"));
        let ids = |key: &str| -> Vec<OwnedEventId> {
            inbound::refs(version, &pdu[key])
                .iter()
                .filter_map(|id| OwnedEventId::try_from(id.as_str()).ok())
                .collect()
        };
        let redacts = pdu["redacts"]
            .as_str()
            .or_else(|| pdu["content"]["redacts"].as_str())
            .and_then(|r| OwnedEventId::try_from(r).ok());
        Ok(Self {
            id: parse_id(id)?,
            room_id: pdu["room_id"]
                .as_str()
                .and_then(|r| OwnedRoomId::try_from(r).ok()),
            sender: pdu["sender"]
                .as_str()
                .and_then(|s| OwnedUserId::try_from(s).ok())
                .ok_or_else(|| bad("sender"))?,
            origin_server_ts: MilliSecondsSinceUnixEpoch(
                pdu["origin_server_ts"]
                    .as_u64()
                    .and_then(|t| ruma::UInt::try_from(t).ok())
                    .ok_or_else(|| bad("origin_server_ts"))?,
            ),
            kind: TimelineEventType::from(pdu["type"].as_str().ok_or_else(|| bad("type"))?),
            content: serde_json::value::to_raw_value(&pdu["content"]).map_err(Error::internal)?,
            state_key: pdu["state_key"].as_str().map(str::to_owned),
            prev_events: ids("prev_events"),
            auth_events: ids("auth_events"),
            redacts,
        })
    }
}

impl Event for StoredPdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.id
    }
    fn room_id(&self) -> Option<&ruma::RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &ruma::UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

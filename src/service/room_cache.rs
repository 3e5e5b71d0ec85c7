//! The current state of rooms, in memory. The writer keeps it up to date for its own commits and
//! checks each room's head under the room lock, so a stale entry (another process wrote) is
//! noticed and reloaded before it can be used to authorise anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use crate::service::auth_check::{AuthError, EventFields, PduView};
use crate::service::auth_rules;
use crate::service::room_versions::RoomVersion;
use crate::store::events::EventRow;

/// One event of a room's current state.
#[derive(Debug)]
pub struct StateEntry {
    pub event_id: String,
    pub sender: String,
    pub content: Value,
    /// The event as the authorization rules read it (IDs parsed, content as raw JSON).
    pub view: PduView,
    /// The PDU's reference hash, which v1/v2 events cite next to each event ID they reference
    /// (the spec's "Event IDs and reference hashes"); `None` in later versions, which cite IDs
    /// alone.
    pub reference_hash: Option<String>,
}

impl StateEntry {
    /// A state event read back from the store or just built.
    pub fn new(
        event_id: String,
        event_type: &str,
        state_key: &str,
        sender: String,
        content: Value,
    ) -> Result<Self, AuthError> {
        let view = PduView::new(
            EventFields {
                event_id: Some(&event_id),
                room_id: None,
                sender: &sender,
                event_type,
                state_key: Some(state_key),
                prev_events: &[],
                redacts: None,
            },
            &content,
            "",
        )?;
        Ok(Self {
            event_id,
            sender,
            content,
            view,
            reference_hash: None,
        })
    }
}

/// A room's state: type → state_key → entry.
pub type StateMap = HashMap<String, HashMap<String, Arc<StateEntry>>>;

#[derive(Debug, Clone)]
pub struct RoomSnapshot {
    pub room_id: String,
    pub version: RoomVersion,
    pub head_event_id: String,
    /// The head's reference hash, cited by the next event in v1/v2 rooms (see
    /// [`StateEntry::reference_hash`]).
    pub head_hash: Option<String>,
    pub head_depth: i64,
    /// The room's other forward extremities: events of branches another server sent that no event
    /// here cites yet (see `writer::fork`). The next local event cites them besides the head,
    /// merging the branches, as Synapse cites its forward extremities. In memory only: a restart
    /// or another process cites the head alone.
    pub tips: Vec<crate::service::events::EventRef>,
    /// The current state, shared between the snapshots of successive heads until it changes (a
    /// message into a room of thousands then copies nothing).
    pub state: Arc<StateMap>,
    /// The members by membership, worked out from `state` on first use (a big room has thousands,
    /// and every sync's summary and every message's push rules ask). Whoever changes the member
    /// events of `state` resets it (`OnceLock::new()`).
    pub members: OnceLock<Arc<MemberLists>>,
    /// The current member events as stored rows, read once per event on demand (lazy-loading
    /// syncs woken by a message need its sender's). Reset with `members`.
    pub member_rows: Arc<MemberRows>,
}

/// One member's current member event row, once read (`None`: the user has no member event).
pub type MemberRowCell = tokio::sync::OnceCell<Option<Arc<EventRow>>>;

/// Stored rows of current member events by user, each read at most once however many syncs ask
/// at the same time (a message into a big room wakes them all at once).
#[derive(Debug, Default)]
pub struct MemberRows {
    rows: Mutex<HashMap<String, Arc<MemberRowCell>>>,
}

impl MemberRows {
    /// The cell for `user`'s current member event row.
    pub fn cell(&self, user: &str) -> Arc<MemberRowCell> {
        let mut rows = self.rows.lock().unwrap();
        if let Some(cell) = rows.get(user) {
            return cell.clone();
        }
        let cell = Arc::new(tokio::sync::OnceCell::new());
        rows.insert(user.to_owned(), cell.clone());
        cell
    }
}

/// A room's members by membership, each list sorted.
#[derive(Debug, Default)]
pub struct MemberLists {
    /// The servers of the joined members (federation sends the room's events to them).
    pub join_servers: std::collections::BTreeSet<String>,
    pub join: Vec<String>,
    pub invite: Vec<String>,
    pub leave: Vec<String>,
    pub ban: Vec<String>,
    pub knock: Vec<String>,
}

impl MemberLists {
    fn of(state: &StateMap) -> Self {
        let mut lists = Self::default();
        for (user, entry) in state.get("m.room.member").into_iter().flatten() {
            let list = match entry.content.get("membership").and_then(Value::as_str) {
                Some("join") => &mut lists.join,
                Some("invite") => &mut lists.invite,
                Some("leave") => &mut lists.leave,
                Some("ban") => &mut lists.ban,
                Some("knock") => &mut lists.knock,
                _ => continue,
            };
            list.push(user.clone());
        }
        for list in [
            &mut lists.join,
            &mut lists.invite,
            &mut lists.leave,
            &mut lists.ban,
            &mut lists.knock,
        ] {
            list.sort_unstable();
        }
        lists.join_servers = lists
            .join
            .iter()
            .filter_map(|user| user.split_once(':').map(|(_, server)| server.to_owned()))
            .collect();
        lists
    }

    /// The users with `membership`.
    pub fn with(&self, membership: &str) -> &[String] {
        match membership {
            "join" => &self.join,
            "invite" => &self.invite,
            "leave" => &self.leave,
            "ban" => &self.ban,
            "knock" => &self.knock,
            _ => &[],
        }
    }
}

impl RoomSnapshot {
    pub fn entry(&self, event_type: &str, state_key: &str) -> Option<&Arc<StateEntry>> {
        self.state.get(event_type)?.get(state_key)
    }

    pub fn membership(&self, user_id: &str) -> Option<&str> {
        self.entry("m.room.member", user_id)?
            .content
            .get("membership")?
            .as_str()
    }

    /// The users with `membership`, in order.
    pub fn members_with(&self, membership: &str) -> impl Iterator<Item = &str> {
        self.member_lists()
            .with(membership)
            .iter()
            .map(String::as_str)
    }

    pub fn member_lists(&self) -> &MemberLists {
        self.members
            .get_or_init(|| Arc::new(MemberLists::of(&self.state)))
    }
}

impl auth_rules::RoomState for RoomSnapshot {
    fn get(&self, event_type: &str, state_key: &str) -> Option<auth_rules::StateEvent<'_>> {
        self.entry(event_type, state_key)
            .map(|e| auth_rules::StateEvent {
                sender: &e.sender,
                content: &e.content,
            })
    }
}

/// Snapshots kept in memory at most; a miss costs two indexed queries.
const MAX_CACHED_ROOMS: usize = 20_000;

#[derive(Default)]
pub struct RoomCache {
    rooms: Mutex<HashMap<String, Arc<RoomSnapshot>>>,
}

impl RoomCache {
    pub fn get(&self, room_id: &str) -> Option<Arc<RoomSnapshot>> {
        self.rooms.lock().unwrap().get(room_id).cloned()
    }

    pub fn put(&self, snapshot: Arc<RoomSnapshot>) {
        let mut rooms = self.rooms.lock().unwrap();
        if rooms.len() >= MAX_CACHED_ROOMS && !rooms.contains_key(&snapshot.room_id) {
            // Crude but bounded: start over rather than grow with every room ever touched.
            rooms.clear();
        }
        rooms.insert(snapshot.room_id.clone(), snapshot);
    }

    pub fn invalidate(&self, room_id: &str) {
        self.rooms.lock().unwrap().remove(room_id);
    }

    pub fn clear(&self) {
        self.rooms.lock().unwrap().clear();
    }
}

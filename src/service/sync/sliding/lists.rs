//! Which rooms a response is about: the user's rooms ordered by recency (the latest "bump" event),
//! each list's filters and ranges, and the room subscriptions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use ruma::UInt;
use ruma::api::client::sync::sync_events::v5;
use sqlx::PgConnection;

use super::conn::Position;
use super::filters::{self, ExtraFilters};
use super::required_state::RequiredState;
use crate::service::room_cache::RoomSnapshot;
use crate::service::writer::room_snapshot_on;
use crate::{AppState, Result, store};

/// The event types that move a room up the list (MSC4186, as Synapse's
/// `DEFAULT_BUMP_EVENT_TYPES`). The partial index `events_room_bump` (migration 0027) lists the
/// same types: change both together.
pub const BUMP_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// A room the user may see in a list.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub room_id: String,
    pub membership: String,
    /// Stream position of the user's membership event.
    pub membership_pos: i64,
    /// The latest bump event's stream position (for a room not joined: the membership's).
    pub stamp: i64,
}

impl Candidate {
    /// Invited or knocking: the room goes as stripped state (`invite_state`), without timeline.
    pub fn stripped(&self) -> bool {
        matches!(self.membership.as_str(), "invite" | "knock")
    }
}

/// How one room is to be sent: the merged config of the lists and subscriptions that hold it.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    pub timeline_limit: u64,
    pub required_state: RequiredState,
}

/// What the lists and subscriptions select.
pub struct Selection {
    /// List name → its count.
    pub counts: BTreeMap<String, v5::response::List>,
    /// List name → the rooms in its ranges.
    pub list_rooms: HashMap<String, Vec<String>>,
    /// The subscribed rooms the user may see.
    pub subscribed: Vec<String>,
    /// Every room to consider sending, with its config.
    pub rooms: BTreeMap<String, (Candidate, RoomConfig)>,
    /// Rooms `m.direct` names.
    pub direct: HashSet<String>,
    /// Rooms a list's filters pass that are outside its ranges (a new event may bring them in).
    pub outside: RoomHashes,
    /// Every list's ranges cover a prefix of it (`[0, n]`): a room in a range that moves up stays
    /// in, and pushes no other room out (what an answer from memory relies on).
    pub memorable: bool,
}

/// A set of room IDs kept as 64-bit hashes: a waiting connection of an account in 1,000 rooms
/// holds 8 bytes for each room outside its ranges rather than its ID. A collision can only make a
/// wake-up look in the database.
#[derive(Default)]
pub struct RoomHashes(HashSet<u64>);

impl RoomHashes {
    fn hash(room_id: &str) -> u64 {
        let mut hasher = DefaultHasher::new();
        room_id.hash(&mut hasher);
        hasher.finish()
    }

    pub fn insert(&mut self, room_id: &str) {
        self.0.insert(Self::hash(room_id));
    }

    pub fn contains(&self, room_id: &str) -> bool {
        self.0.contains(&Self::hash(room_id))
    }
}

/// The user's rooms, newest first: joined, invited and knocked on; those kicked or banned from
/// after joining (as the MSC lists them: a ban without a join is not); and those left since the client was last sent them, whose leave it
/// has yet to see.
pub async fn candidates(
    tx: &mut PgConnection,
    user: &str,
    previous: Option<&Position>,
    upto: i64,
) -> Result<Vec<Candidate>> {
    let memberships = store::sliding_sync::memberships(&mut *tx, user).await?;
    let mut out: Vec<Candidate> = memberships
        .into_iter()
        .filter(|m| m.stream_ordering <= upto)
        .filter(|m| match m.membership.as_str() {
            "join" | "invite" | "knock" => true,
            "leave" | "ban" => {
                m.removed
                    || previous
                        .and_then(|p| p.rooms.get(&m.room_id))
                        .is_some_and(|sent| sent.m != m.membership && sent.at < m.stream_ordering)
            }
            _ => false,
        })
        .map(|m| Candidate {
            stamp: m.stream_ordering,
            room_id: m.room_id,
            membership: m.membership,
            membership_pos: m.stream_ordering,
        })
        .collect();
    let joined: Vec<String> = out
        .iter()
        .filter(|c| c.membership == "join")
        .map(|c| c.room_id.clone())
        .collect();
    let types: Vec<String> = BUMP_TYPES.iter().map(|t| (*t).to_owned()).collect();
    let stamps: HashMap<String, i64> =
        store::sliding_sync::bump_stamps(&mut *tx, &joined, &types, upto)
            .await?
            .into_iter()
            .collect();
    for c in out.iter_mut().filter(|c| c.membership == "join") {
        if let Some(stamp) = stamps.get(&c.room_id) {
            c.stamp = *stamp;
        }
    }
    sort_by_recency(&mut out);
    Ok(out)
}

/// Newest first; ties by room ID, so the order is stable.
fn sort_by_recency(rooms: &mut [Candidate]) {
    rooms.sort_by(|a, b| {
        b.stamp
            .cmp(&a.stamp)
            .then_with(|| a.room_id.cmp(&b.room_id))
    });
}

/// The room IDs `m.direct` lists.
pub fn direct_rooms(m_direct: Option<&str>) -> HashSet<String> {
    let Some(content) = m_direct.and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
    else {
        return HashSet::new();
    };
    content
        .as_object()
        .into_iter()
        .flat_map(|users| users.values())
        .filter_map(|rooms| rooms.as_array())
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

/// What the lists filter: the user's rooms, newest first, and what the filters look at.
pub struct Rooms {
    pub candidates: Vec<Candidate>,
    /// Rooms `m.direct` names.
    pub direct: HashSet<String>,
    /// The user's tags by room (read only when some list filters by tag).
    pub tags: HashMap<String, HashSet<String>>,
}

/// Applies each list's filters and ranges, and the subscriptions. Room snapshots (for the
/// encryption, room type and space filters) are read through `conn`, outside any snapshot
/// transaction.
pub async fn select(
    state: &AppState,
    conn: &mut PgConnection,
    user: &str,
    req: &v5::Request,
    extra: &ExtraFilters,
    rooms: Rooms,
) -> Result<Selection> {
    let Rooms {
        candidates,
        direct,
        tags,
    } = rooms;
    let mut selection = Selection {
        counts: BTreeMap::new(),
        list_rooms: HashMap::new(),
        subscribed: Vec::new(),
        rooms: BTreeMap::new(),
        direct,
        outside: RoomHashes::default(),
        memorable: true,
    };
    let needs_snapshots = req.lists.values().any(|l| {
        l.filters.as_ref().is_some_and(|f| {
            f.is_encrypted.is_some() || !f.room_types.is_empty() || !f.not_room_types.is_empty()
        })
    });
    let mut snapshots: HashMap<String, Arc<RoomSnapshot>> = HashMap::new();
    if needs_snapshots {
        for c in &candidates {
            if let Some(snapshot) = room_snapshot_on(state, conn, &c.room_id).await? {
                snapshots.insert(c.room_id.clone(), snapshot);
            }
        }
    }
    let spaces = space_children(state, conn, extra, &candidates).await?;
    let cx = filters::Context {
        direct: &selection.direct,
        snapshots: &snapshots,
        tags: &tags,
        spaces: &spaces,
    };
    for (name, list) in &req.lists {
        let filtered: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| filters::passes(list.filters.as_ref(), extra.of(name), c, &cx))
            .collect();
        let mut counted = v5::response::List::default();
        counted.count = UInt::try_from(filtered.len() as u64).unwrap_or(UInt::MAX);
        selection.counts.insert(name.clone(), counted);
        let config = RoomConfig {
            timeline_limit: u64::from(list.room_details.timeline_limit),
            required_state: required_state(user, &list.room_details.required_state),
        };
        let mut in_ranges = Vec::new();
        let mut seen = HashSet::new();
        for (start, end) in &list.ranges {
            let (start, end) = (u64::from(*start) as usize, u64::from(*end) as usize);
            for c in filtered
                .iter()
                .skip(start)
                .take(end.saturating_sub(start) + 1)
            {
                if seen.insert(c.room_id.as_str()) {
                    in_ranges.push(c.room_id.clone());
                }
                add(&mut selection.rooms, c, &config);
            }
        }
        for c in filtered
            .iter()
            .filter(|c| !seen.contains(c.room_id.as_str()))
        {
            selection.outside.insert(&c.room_id);
        }
        selection.memorable &= covers_a_prefix(&list.ranges);
        selection.list_rooms.insert(name.clone(), in_ranges);
    }
    for (room_id, sub) in &req.room_subscriptions {
        let Some(c) = candidates.iter().find(|c| c.room_id == room_id.as_str()) else {
            continue;
        };
        let config = RoomConfig {
            timeline_limit: u64::from(sub.timeline_limit),
            required_state: required_state(user, &sub.required_state),
        };
        add(&mut selection.rooms, c, &config);
        selection.subscribed.push(c.room_id.clone());
    }
    Ok(selection)
}

/// Whether the ranges together cover `[0, n]` for some n, without gaps.
fn covers_a_prefix(ranges: &[(UInt, UInt)]) -> bool {
    let mut ranges: Vec<(u64, u64)> = ranges
        .iter()
        .map(|(s, e)| (u64::from(*s), u64::from(*e)))
        .collect();
    ranges.sort_unstable();
    let mut next = 0;
    for (start, end) in ranges {
        if start > next {
            return false;
        }
        next = next.max(end.saturating_add(1));
    }
    true
}

/// Space ID → the rooms it names, for each space a list's `spaces` filter names that the user
/// has joined.
async fn space_children(
    state: &AppState,
    conn: &mut PgConnection,
    extra: &ExtraFilters,
    candidates: &[Candidate],
) -> Result<HashMap<String, HashSet<String>>> {
    let mut out = HashMap::new();
    for space in extra.spaces() {
        let joined = candidates
            .iter()
            .any(|c| c.room_id == space && c.membership == "join");
        if !joined || out.contains_key(space) {
            continue;
        }
        if let Some(snapshot) = room_snapshot_on(state, conn, space).await? {
            let children = filters::space_children(&snapshot)
                .map(str::to_owned)
                .collect();
            out.insert(space.to_owned(), children);
        }
    }
    Ok(out)
}

fn required_state(user: &str, pairs: &[(ruma::events::StateEventType, String)]) -> RequiredState {
    let pairs: Vec<(String, &str)> = pairs
        .iter()
        .map(|(t, k)| (t.to_string(), k.as_str()))
        .collect();
    RequiredState::new(user, pairs.iter().map(|(t, k)| (t.as_str(), *k)))
}

/// A room in several lists (or a list and a subscription) gets the largest timeline and every
/// state asked for, as in Synapse's `combine_room_sync_config`.
fn add(rooms: &mut BTreeMap<String, (Candidate, RoomConfig)>, c: &Candidate, config: &RoomConfig) {
    match rooms.get_mut(&c.room_id) {
        Some((_, existing)) => {
            existing.timeline_limit = existing.timeline_limit.max(config.timeline_limit);
            existing.required_state.merge(&config.required_state);
        }
        None => {
            rooms.insert(c.room_id.clone(), (c.clone(), config.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(room: &str, stamp: i64) -> Candidate {
        Candidate {
            room_id: room.into(),
            membership: "join".into(),
            membership_pos: 1,
            stamp,
        }
    }

    #[test]
    fn newest_first_ties_by_id() {
        let mut rooms = vec![c("!b", 5), c("!a", 5), c("!c", 9), c("!d", 1)];
        sort_by_recency(&mut rooms);
        let ids: Vec<&str> = rooms.iter().map(|c| c.room_id.as_str()).collect();
        assert_eq!(ids, ["!c", "!a", "!b", "!d"]);
    }

    #[test]
    fn prefix_ranges() {
        let r = |ranges: &[(u32, u32)]| -> Vec<(UInt, UInt)> {
            ranges
                .iter()
                .map(|(s, e)| (UInt::from(*s), UInt::from(*e)))
                .collect()
        };
        assert!(covers_a_prefix(&r(&[(0, 19)])));
        assert!(covers_a_prefix(&r(&[(10, 30), (0, 10)])));
        assert!(covers_a_prefix(&r(&[(0, 9), (10, 19)])));
        assert!(covers_a_prefix(&r(&[])));
        assert!(!covers_a_prefix(&r(&[(0, 9), (20, 29)])));
        assert!(!covers_a_prefix(&r(&[(5, 9)])));
    }

    #[test]
    fn the_bump_index_lists_the_bump_types() {
        let migration = include_str!("../../../../migrations/0027_bump_index.sql");
        for event_type in BUMP_TYPES {
            assert!(
                migration.contains(&format!("'{event_type}'")),
                "{event_type}"
            );
        }
    }

    #[test]
    fn room_hashes_hold_what_was_put_in() {
        let mut set = RoomHashes::default();
        set.insert("!a:x");
        assert!(set.contains("!a:x"));
        assert!(!set.contains("!b:x"));
    }

    #[test]
    fn direct_rooms_from_m_direct() {
        let rooms = direct_rooms(Some(
            r#"{"@a:x": ["!1:x", "!2:x"], "@b:x": ["!3:x"], "@c:x": 5}"#,
        ));
        assert_eq!(rooms.len(), 3);
        assert!(rooms.contains("!3:x"));
        assert!(direct_rooms(Some("not json")).is_empty());
        assert!(direct_rooms(None).is_empty());
    }
}

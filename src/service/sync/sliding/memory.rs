//! Woken long polls answered from memory, as /sync answers them (`from_memory`): the common case
//! of new messages in rooms the connection already has, and nothing else changed. The look that
//! found nothing new leaves a [`Memo`] (its position, its selection, the unread counts of the
//! selected rooms, its extensions' answer); a wake-up then reads the events this process just
//! wrote (`service::recent`) and the cached room state, and answers with no read of the database
//! (the new position is still stored, as every response's is).
//!
//! Anything it cannot vouch for is [`Memory::Unknown`], and the caller looks in the database: a
//! gap in the run (another process's write, account data, receipts, to-device messages, device
//! list changes, key uploads and claims all take stream positions that are not in it), a state
//! event or redaction in one of the user's rooms (or about the user), an event that could move a
//! room into a list's range, typing news, lists whose ranges do not start at 0 without gaps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ruma::api::client::sync::sync_events::v5;
use ruma::serde::Raw;
use sqlx::PgConnection;

use super::conn::Position;
use super::lists::{BUMP_TYPES, Selection};
use super::render::{describe, room_id, uint};
use crate::service::auth::Requester;
use crate::service::push::{self, UnreadCounts};
use crate::service::recent::{RecentEntry, RecentEvent};
use crate::service::room_cache::RoomSnapshot;
use crate::service::timeline::{self, Aggregations, Viewer};
use crate::service::{ignore, typing};
use crate::store::events::EventRow;
use crate::{AppState, Result, store};

/// What a look that found nothing new leaves for the wake-ups after it.
pub struct Memo {
    /// The position the request came with.
    pub previous: Position,
    /// Nothing new for the connection up to here.
    pub checked: i64,
    /// The typing clock the look covered.
    pub typing: i64,
    pub selection: Selection,
    /// The look's (empty) response: lists' counts, and the extensions' answer (key counts,
    /// `to_device.next_batch`), which only a write with a stream position of its own changes.
    pub base: v5::Response,
    /// Unread counts of the selected joined rooms as of `checked` (absent: none unread).
    pub unread: HashMap<String, UnreadCounts>,
}

impl Memo {
    /// Reads the unread counts of the selected joined rooms, bounded by `checked`.
    pub async fn new(
        conn: &mut PgConnection,
        user: &str,
        previous: Position,
        checked: i64,
        typing: i64,
        selection: Selection,
        base: v5::Response,
    ) -> Result<Self> {
        let joined: Vec<String> = selection
            .rooms
            .iter()
            .filter(|(_, (c, _))| c.membership == "join")
            .map(|(room, _)| room.clone())
            .collect();
        let unread = if joined.is_empty() || !selection.memorable {
            HashMap::new()
        } else {
            push::unread_counts(conn, user, &joined, checked).await?
        };
        Ok(Self {
            previous,
            checked,
            typing,
            selection,
            base,
            unread,
        })
    }
}

/// What memory says after a wake-up.
pub enum Memory {
    /// Nothing new for this connection: wait again.
    Nothing,
    /// The answer, and the rooms' new stream position.
    Answer(Box<v5::Response>, i64),
    /// Ask the database.
    Unknown,
}

/// Looks at what the stream gained since the memo, for a user joined to `joined`.
pub async fn serve(
    state: &AppState,
    requester: &Requester,
    req: &v5::Request,
    memo: &mut Memo,
    joined: &[String],
) -> Memory {
    if !memo.selection.memorable {
        return Memory::Unknown;
    }
    let user = requester.user_id.as_str();
    let run = state.recent.run_after(memo.checked);
    if run.is_empty() {
        return Memory::Unknown;
    }
    let upto = memo.checked + run.len() as i64;
    if req.extensions.typing.enabled == Some(true) {
        let rooms: Vec<String> = memo.selection.rooms.keys().cloned().collect();
        if typing::changed_in(state, &rooms, memo.typing) {
            return Memory::Unknown;
        }
    }
    let events: Vec<&RecentEvent> = run
        .iter()
        .filter_map(|e| match &**e {
            RecentEntry::Event(event) => Some(&**event),
            RecentEntry::Presence(_) => None,
        })
        .collect();
    let Some(by_room) = news_by_room(&events, user, joined, &memo.selection) else {
        return Memory::Unknown;
    };
    if by_room.is_empty() {
        // Nothing for us up to `upto`; past what this process has seen, the database answers.
        if upto < state.notifier.seen() {
            return Memory::Unknown;
        }
        memo.checked = upto;
        return Memory::Nothing;
    }
    match answer(state, requester, memo, by_room, upto).await {
        Ok(Some(response)) => Memory::Answer(Box::new(response), upto),
        // A failed read of a member row: the database path will say what is wrong.
        Ok(None) | Err(_) => Memory::Unknown,
    }
}

/// The run's events by selected room, oldest first; `None` when the run holds anything memory
/// does not vouch for.
fn news_by_room<'a>(
    events: &[&'a RecentEvent],
    user: &str,
    joined: &[String],
    selection: &Selection,
) -> Option<BTreeMap<&'a str, Vec<&'a RecentEvent>>> {
    let ids: HashSet<&str> = events.iter().map(|e| e.row.event_id.as_str()).collect();
    let mut by_room: BTreeMap<&str, Vec<&RecentEvent>> = BTreeMap::new();
    for event in events {
        let room = event.row.room_id.as_str();
        let ours = joined.iter().any(|r| r == room);
        let special = event.row.state_key.is_some() || event.is_redaction();
        if special && (ours || event.row.state_key.as_deref() == Some(user)) {
            // Membership, names, encryption, space children…: lists and filters may change.
            return None;
        }
        if !ours || special {
            continue;
        }
        // Relations among the run's own events change bundled aggregations.
        if event
            .relates_to
            .as_deref()
            .is_some_and(|target| ids.contains(target))
        {
            return None;
        }
        // A room a list's filters pass but whose range it is outside: a bump moves it in.
        if selection.outside.contains(room) && BUMP_TYPES.contains(&event.row.event_type.as_str()) {
            return None;
        }
        match selection.rooms.get(room) {
            Some((c, _)) if c.membership == "join" => by_room.entry(room).or_default().push(*event),
            Some(_) => return None,
            // In no list's range nor subscribed: not news here.
            None => {}
        }
    }
    Some(by_room)
}

/// The response for the rooms with news, from the cached room state; `None` if a room's cached
/// state is not the state after its news.
async fn answer(
    state: &AppState,
    requester: &Requester,
    memo: &Memo,
    by_room: BTreeMap<&str, Vec<&RecentEvent>>,
    upto: i64,
) -> Result<Option<v5::Response>> {
    let user = requester.user_id.as_str();
    let viewer = Viewer {
        user_id: user,
        device_id: Some(requester.device_id.as_str()),
    };
    let Some(ignored) = ignore::cached(state, user) else {
        return Ok(None);
    };
    let now = store::now_ms();
    let none = Aggregations::new();
    let mut response = memo.base.clone();
    if let Some(to_device) = response.extensions.to_device.as_mut() {
        let since: i64 = to_device.next_batch.parse().unwrap_or(0);
        to_device.next_batch = since.max(upto).to_string();
    }
    for (room, events) in by_room {
        let (Some(snapshot), Some((candidate, config))) =
            (state.rooms.get(room), memo.selection.rooms.get(room))
        else {
            return Ok(None);
        };
        if events.last().map(|e| &e.row.event_id) != Some(&snapshot.head_event_id) {
            return Ok(None);
        }
        let stamp = events
            .iter()
            .filter(|e| BUMP_TYPES.contains(&e.row.event_type.as_str()))
            .map(|e| e.row.stream_ordering)
            .max()
            .unwrap_or(candidate.stamp);
        let mut counts = memo.unread.get(room).cloned().unwrap_or_default();
        for n in events.iter().flat_map(|e| e.notified_for(user)) {
            counts.add(&n.thread_id, n.highlight);
        }
        let limit = config.timeline_limit as usize;
        let limited = events.len() > limit;
        let mut rows: Vec<&EventRow> = events[events.len().saturating_sub(limit)..]
            .iter()
            .map(|e| &e.row)
            .collect();
        rows.retain(|r| !ignore::hides(&ignored, &r.sender, r.state_key.is_some()));
        let first = rows.first().map_or(upto + 1, |r| r.stream_ordering);
        let mut out = v5::response::Room::new();
        out.bump_stamp = Some(uint(stamp));
        out.prev_batch = Some(crate::service::messages::position_token(first - 1));
        out.limited = limited;
        out.num_live = Some(uint(rows.len() as i64));
        out.timeline = rows
            .iter()
            .map(|r| Raw::from_json(timeline::render(r, viewer, now, &none)))
            .collect();
        if config.required_state.lazy_members() {
            let members = lazy_members(state, &snapshot, &rows, upto).await?;
            out.required_state = timeline::render_plain(&members, viewer)
                .into_iter()
                .map(Raw::from_json)
                .collect();
        }
        out.unread_notifications.notification_count = Some(uint(counts.notification_count));
        out.unread_notifications.highlight_count = Some(uint(counts.highlight_count));
        describe(&mut out, &snapshot, user, false);
        response.rooms.insert(room_id(room)?, out);
    }
    Ok(Some(response))
}

/// The current member events of the timeline's senders, from the events this process wrote or the
/// rows the room snapshot keeps (each read once, by the first who needs it).
async fn lazy_members(
    state: &AppState,
    snapshot: &RoomSnapshot,
    rows: &[&EventRow],
    upto: i64,
) -> Result<Vec<EventRow>> {
    let mut senders: Vec<&str> = rows.iter().map(|r| r.sender.as_str()).collect();
    senders.sort_unstable();
    senders.dedup();
    let mut members = Vec::with_capacity(senders.len());
    for sender in senders {
        let Some(entry) = snapshot.entry("m.room.member", sender) else {
            continue;
        };
        if let Some(recent) = state.recent.event(&entry.event_id)
            && let RecentEntry::Event(event) = &*recent
        {
            members.push(event.row.clone());
            continue;
        }
        let cell = snapshot.member_rows.cell(sender);
        let row = cell
            .get_or_try_init(|| async {
                let users = [sender.to_owned()];
                let mut rows =
                    store::events::members_at(&state.db, &snapshot.room_id, &users, upto).await?;
                Ok::<_, crate::Error>(rows.pop().map(Arc::new))
            })
            .await?;
        members.extend(row.as_deref().cloned());
    }
    members.sort_by_key(|r| r.stream_ordering);
    Ok(members)
}

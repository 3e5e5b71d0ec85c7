//! Incremental syncs answered from memory: the common case of a long poll woken because messages
//! arrived in a room, served from the events this process just wrote (`service::recent`), the cached
//! room state and the counts remembered per device (`counts`), with no read of the database.
//!
//! It applies only when the stream from the token on holds nothing but this process's plain events
//! and presence changes (served from what the change recorded). Anything else (state changes, redactions, receipts,
//! account data, typing, to-device, another process's writes, a timeline over the limit) returns
//! `None`, and the caller takes the database path, which handles everything. The few reads it may
//! need (the stream head on a first look, counts not remembered, lazy-loaded members) go side by
//! side, in one round trip.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::json;

use super::counts::{DeviceCounts, KeyCounts};
use super::{
    Events, JoinedRoom, SyncResponse, SyncToken, Timeline, fill_unread_counts, summary_of,
    timeline_limit,
};
use crate::service::auth::Requester;
use crate::service::filter::Filter;
use crate::service::push::UnreadCounts;
use crate::service::recent::{RecentEntry, RecentEvent};
use crate::service::room_cache::MemberRowCell;
use crate::service::timeline::{self, Aggregations, Viewer};
use crate::service::{e2ee, ignore, presence, push, retention, typing};
use crate::store::events::EventRow;
use crate::{AppState, Result, store};

/// How sure the caller needs to be that an answer reaches the stream's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The first look of a long poll: a run of news is checked against the stream head (a sync
    /// returns everything up to now); an empty run is trusted up to what this process has seen
    /// committed, and the caller looks further before it waits.
    FirstLook,
    /// A wake-up brought us here: the run is the news that woke us, answered at once; anything
    /// after it comes with the next sync.
    Woken,
    /// Always checked against the stream head: a look that will not wait (no timeout, or the
    /// deadline passed).
    Verify,
}

/// The incremental sync from `since` for a user joined to `rooms`, if memory can answer it.
pub async fn serve(
    state: &AppState,
    requester: &Requester,
    since: SyncToken,
    rooms: &[String],
    filter: &Filter,
    freshness: Freshness,
) -> Result<Option<SyncResponse>> {
    // The database path serves the PDU format, and a state limit over lazy-loaded members.
    if filter.event_format.as_deref() == Some("federation") || filter.room.state.limit.is_some() {
        return Ok(None);
    }
    let user = requester.user_id.as_str();
    let device = requester.device_id.as_str();
    // Typing news in the user's rooms is for the database path (typing elsewhere is not news).
    if typing::changed_in(state, rooms, since.typing) {
        return Ok(None);
    }
    // The to-device messages the token's response delivered are acknowledged by it (the database
    // path does that as it reads the next ones).
    if state
        .sync_counts
        .acknowledge_to_device(user, device, since.position)
    {
        Box::pin(store::to_device::acknowledge(
            &state.db,
            user,
            device,
            since.position,
        ))
        .await?;
    }
    let run = state.recent.run_after(since.position);
    if run.is_empty() {
        // Nothing new here; with nothing new anywhere either, the answer is an empty response.
        // A token past what this process has seen (another process's, or one from the future)
        // is checked.
        let trusted = freshness == Freshness::FirstLook && since.position <= state.notifier.seen();
        let reads = SideReads {
            upto: since.position,
            check_head: !trusted,
            members: Vec::new(),
            unread: Vec::new(),
            keys: state.sync_counts.keys(user, device, since.position),
        };
        let (position, _, _, keys) = match reads.known() {
            Ok(known) => known,
            Err(reads) => Box::pin(reads.read(state, user, device)).await?,
        };
        if position != since.position {
            return Ok(None);
        }
        let mut response = SyncResponse::empty(since);
        response.device_one_time_keys_count = keys.one_time;
        response.device_unused_fallback_key_types = keys.unused_fallback;
        return Ok(Some(response));
    }
    let upto = since.position + run.len() as i64;
    let mut events: Vec<&RecentEvent> = Vec::with_capacity(run.len());
    let mut presence_news = Vec::new();
    for entry in &run {
        match &**entry {
            RecentEntry::Event(event) => events.push(event),
            RecentEntry::Presence(news) => presence_news.push(&**news),
        }
    }
    let presence_events = if filter.presence.excludes_everything() {
        Vec::new()
    } else {
        filter
            .presence
            .select(presence::visible_news(presence_news, user, rooms))
    };
    let Some(by_room) = plan_rooms(&events) else {
        return Ok(None);
    };

    // Not cached (just changed): the database path reads it.
    let Some(ignored) = ignore::cached(state, user) else {
        return Ok(None);
    };
    let viewer = Viewer {
        user_id: user,
        device_id: Some(device),
    };
    let room_filter = &filter.room;
    let timeline_filter = &room_filter.timeline;
    let state_filter = &room_filter.state;
    let limit = timeline_limit(timeline_filter) as usize;
    let now = store::now_ms();
    let none = Aggregations::new();
    let mut join: BTreeMap<String, Box<JoinedRoom>> = BTreeMap::new();
    let mut members_wanted: Vec<MembersWanted> = Vec::new();
    for (room_id, events) in by_room {
        if !room_filter.allows_room(room_id) {
            continue;
        }
        // The cached state must be the state at the end of the run: the room's head is the run's
        // last event in it (no later change is folded in).
        let Some(snapshot) = state.rooms.get(room_id) else {
            return Ok(None);
        };
        let last = events.last().expect("a room in the plan has events");
        if snapshot.head_event_id != last.row.event_id {
            return Ok(None);
        }
        let membership = snapshot
            .entry("m.room.member", user)
            .and_then(|e| e.content["membership"].as_str().map(str::to_owned));
        if membership.as_deref() != Some("join") {
            continue;
        }
        let rows: Vec<&RecentEvent> = events
            .into_iter()
            .filter(|e| {
                timeline_filter.allows_event(&e.row.event_type, &e.row.sender, e.contains_url)
                    && !ignore::hides(&ignored, &e.row.sender, e.row.state_key.is_some())
                    && !retention::expired(state, &e.row)
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        if rows.len() > limit {
            // A limited timeline needs the state delta: the database path.
            return Ok(None);
        }
        let first = rows[0].row.stream_ordering;
        if state_filter.lazy_load_members && state_filter.allows_type("m.room.member") {
            let mut senders: Vec<String> = rows.iter().map(|e| e.row.sender.clone()).collect();
            senders.sort_unstable();
            senders.dedup();
            let missing = if state_filter.include_redundant_members {
                senders
            } else {
                state.sync_members.unsent(user, device, room_id, senders)
            };
            if !missing.is_empty() {
                // The member events are usually recent enough to be in memory too.
                let mut wanted = MembersWanted {
                    room_id: room_id.to_owned(),
                    order: missing.clone(),
                    at: first - 1,
                    from_memory: Vec::new(),
                    to_read: Vec::new(),
                };
                for member in missing {
                    let recent = snapshot
                        .entry("m.room.member", &member)
                        .and_then(|e| state.recent.event(&e.event_id));
                    match recent.as_deref() {
                        Some(RecentEntry::Event(event)) => {
                            wanted.from_memory.push(event.row.clone())
                        }
                        // The state at the timeline's start is the snapshot's (checked above):
                        // its member rows are read once for every sync that wants them.
                        _ => {
                            let cell = snapshot.member_rows.cell(&member);
                            wanted.to_read.push((member, cell));
                        }
                    }
                }
                members_wanted.push(wanted);
            }
        }
        let events = timeline::with_fields(
            rows.iter()
                .map(|e| timeline::render(&e.row, viewer, now, &none))
                .collect(),
            filter.event_fields.as_deref(),
        );
        join.insert(
            room_id.to_owned(),
            Box::new(JoinedRoom {
                timeline: Timeline {
                    events,
                    limited: false,
                    prev_batch: crate::service::messages::position_token(first - 1),
                },
                state: Events::default(),
                ephemeral: Events::default(),
                account_data: Events::default(),
                summary: summary_of(&snapshot, user),
                unread_notifications: json!({"notification_count": 0, "highlight_count": 0}),
                unread_thread_notifications: json!({}),
            }),
        );
    }

    // The counts: those of the device's last response brought forward with the run's
    // notifications; what is not known from it is read (bounded by the run's end).
    let cached = state.sync_counts.take(user, device, since.position);
    let mut unread = HashMap::new();
    let mut keys = None;
    if let Some(cached) = cached {
        unread = cached.unread;
        keys = Some(cached.keys);
        for event in &events {
            for n in event.notified_for(user) {
                if let Some(counts) = unread.get_mut(&event.row.room_id) {
                    counts.add(&n.thread_id, n.highlight);
                }
            }
        }
    }
    let unknown: Vec<String> = join
        .keys()
        .filter(|room| !unread.contains_key(*room))
        .cloned()
        .collect();
    // Usually a woken poll knows everything already; what it does not is read, side by side (one
    // round trip at most), in a future boxed on its own so that every sync does not carry its
    // state.
    let reads = SideReads {
        upto,
        check_head: freshness != Freshness::Woken,
        members: members_wanted,
        unread: unknown,
        keys,
    };
    let (position, members, fetched, keys) = match reads.known() {
        Ok(known) => known,
        Err(reads) => Box::pin(reads.read(state, user, device)).await?,
    };
    if position != upto {
        return Ok(None);
    }
    for (room_id, rows) in members {
        let sent: Vec<String> = rows.iter().filter_map(|r| r.state_key.clone()).collect();
        state.sync_members.record(user, device, &room_id, sent);
        let events = timeline::with_fields(
            timeline::render_plain(&rows, viewer),
            filter.event_fields.as_deref(),
        );
        if let Some(room) = join.get_mut(&room_id) {
            room.state = Events { events };
        }
    }
    for (room, counts) in fetched {
        unread.insert(room, counts);
    }
    fill_unread_counts(
        &mut join,
        &unread,
        timeline_filter.unread_thread_notifications,
    );
    let mut response = SyncResponse::empty(SyncToken {
        position: upto,
        typing: since.typing,
    });
    response.rooms.join = join;
    response.presence = Events {
        events: super::to_raw(presence_events)?,
    };
    response.device_one_time_keys_count = keys.one_time.clone();
    response.device_unused_fallback_key_types = keys.unused_fallback.clone();
    state.sync_counts.put(
        user,
        device,
        DeviceCounts {
            as_of: upto,
            unread,
            keys,
            to_device_delivered: false,
        },
    );
    Ok(Some(response))
}

/// Lazy loading: the member events a device lacks for one room's timeline.
struct MembersWanted {
    room_id: String,
    /// The senders, in the order the database path lists their member events.
    order: Vec<String>,
    /// The position before the timeline (what the database read is bounded by).
    at: i64,
    from_memory: Vec<EventRow>,
    /// The members whose rows come from the snapshot's cells (read by the first who asks).
    to_read: Vec<(String, Arc<MemberRowCell>)>,
}

/// What a sync from memory may still need to read: the stream head (when the run must be checked
/// against it), lazy-loaded member events, unread counts of rooms not remembered (as of `upto`,
/// the run's end), and the key counts when not cached.
struct SideReads {
    upto: i64,
    check_head: bool,
    members: Vec<MembersWanted>,
    unread: Vec<String>,
    keys: Option<KeyCounts>,
}

/// The stream position, each room's member events, unread counts by room, key counts.
type SideAnswers = (
    i64,
    Vec<(String, Vec<EventRow>)>,
    HashMap<String, UnreadCounts>,
    KeyCounts,
);

impl SideReads {
    /// The answers when nothing needs reading.
    fn known(self) -> std::result::Result<SideAnswers, Self> {
        match self {
            SideReads {
                upto,
                check_head: false,
                members,
                unread,
                keys: Some(keys),
            } if members.is_empty() && unread.is_empty() => {
                Ok((upto, Vec::new(), HashMap::new(), keys))
            }
            reads => Err(reads),
        }
    }

    async fn read(self, state: &AppState, user: &str, device: &str) -> Result<SideAnswers> {
        let SideReads {
            upto,
            check_head,
            members,
            unread,
            keys,
        } = self;
        let (position, members, counts, keys) = tokio::try_join!(
            async {
                if check_head {
                    Ok(store::stream::current(&state.db).await?)
                } else {
                    Ok(upto)
                }
            },
            lazy_members(state, members),
            async {
                if unread.is_empty() {
                    return Ok(HashMap::new());
                }
                let mut conn = state.db.acquire().await?;
                let mut counts = push::unread_counts(&mut conn, user, &unread, upto).await?;
                // A room without notifications has zero counts.
                for room in unread {
                    counts.entry(room).or_default();
                }
                Ok(counts)
            },
            key_counts(state, user, device, keys)
        )?;
        Ok((position, members, counts, keys))
    }
}

/// The member events each room's timeline needs, from memory or (once for every sync that
/// wants them) the database, in the order the database path gives them.
async fn lazy_members(
    state: &AppState,
    wanted: Vec<MembersWanted>,
) -> Result<Vec<(String, Vec<EventRow>)>> {
    let mut found = Vec::with_capacity(wanted.len());
    for wanted in wanted {
        let mut rows = wanted.from_memory;
        for (member, cell) in &wanted.to_read {
            let row = cell
                .get_or_try_init(|| async {
                    let users = std::slice::from_ref(member);
                    let mut rows =
                        store::events::members_at(&state.db, &wanted.room_id, users, wanted.at)
                            .await?;
                    Ok::<_, crate::Error>(rows.pop().map(Arc::new))
                })
                .await?;
            rows.extend(row.as_deref().cloned());
        }
        rows.sort_by_key(|r| {
            wanted
                .order
                .iter()
                .position(|u| Some(u) == r.state_key.as_ref())
        });
        found.push((wanted.room_id, rows));
    }
    Ok(found)
}

/// The cached key counts, or a read of them.
async fn key_counts(
    state: &AppState,
    user: &str,
    device: &str,
    cached: Option<KeyCounts>,
) -> Result<KeyCounts> {
    if let Some(keys) = cached {
        return Ok(keys);
    }
    let mut conn = state.db.acquire().await?;
    let (one_time, unused_fallback) = e2ee::key_counts(&mut conn, user, device).await?;
    Ok(KeyCounts {
        one_time: Arc::new(one_time),
        unused_fallback,
    })
}

/// The run's events by room, oldest first; `None` when the run holds anything this path does not
/// handle: state events (membership, names, …), redactions, and relations among the run's own
/// events (their bundled aggregations would change).
fn plan_rooms<'a>(run: &[&'a RecentEvent]) -> Option<BTreeMap<&'a str, Vec<&'a RecentEvent>>> {
    let ids: HashSet<&str> = run.iter().map(|e| e.row.event_id.as_str()).collect();
    let mut by_room: BTreeMap<&str, Vec<&RecentEvent>> = BTreeMap::new();
    for event in run {
        if event.row.state_key.is_some() || event.is_redaction() {
            return None;
        }
        if event
            .relates_to
            .as_deref()
            .is_some_and(|target| ids.contains(target))
        {
            return None;
        }
        by_room.entry(&event.row.room_id).or_default().push(*event);
    }
    Some(by_room)
}

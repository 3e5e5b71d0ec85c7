//! /sync: assembles a response from one consistent read of the database.
//!
//! Every read of one response happens in a single REPEATABLE READ transaction that starts by reading
//! the stream watermark. Because writers commit in stream order (see store::stream), that snapshot is
//! exactly "everything up to the watermark": the state and the timelines agree with `next_batch`, and
//! the next incremental sync continues from there with nothing skipped and nothing repeated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::PgConnection;

mod counts;
mod from_memory;
mod gate;
pub mod initial;
mod joined;
pub mod sliding;
pub mod stream;

pub use counts::SyncCounts;
use from_memory::Freshness;
pub use gate::SyncGate;
pub use joined::JoinedRoomsCache;

use crate::service::auth::Requester;
use crate::service::erasure::Erasure;
use crate::service::filter::{Filter, RoomEventFilter};
use crate::service::notifier::{self, Subscription};
use crate::service::presence::Until;
use crate::service::room_cache::RoomSnapshot;
use crate::service::timeline::{self, Viewer};
use crate::service::visibility::Visibility;
use crate::service::{
    account_data, e2ee, ignore, metrics, presence, push, receipts, retention, typing,
};
use crate::store::events::EventRow;
use crate::{AppState, Error, Result, store};

/// The longest a client may ask us to hold a request.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_TIMELINE_LIMIT: i64 = 10;
/// Event types whose current state goes into an invite's stripped state (here, and in the
/// `invite_room_state` sent with an invite to another server).
pub(crate) const STRIPPED_STATE: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// A position in every stream a sync reports: the global stream, and the typing clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncToken {
    pub position: i64,
    pub typing: i64,
}

impl SyncToken {
    pub fn parse(token: &str) -> Option<Self> {
        let rest = token.strip_prefix('s')?;
        let mut parts = rest.split('_');
        let position = parts.next()?.parse().ok().filter(|p: &i64| *p >= 0)?;
        let typing = match parts.next() {
            Some(t) => t.parse().ok()?,
            None => 0,
        };
        Some(Self { position, typing })
    }

    pub fn encode(&self) -> String {
        format!("s{}_{}", self.position, self.typing)
    }
}

pub struct SyncRequest {
    pub since: Option<String>,
    pub timeout_ms: u64,
    pub full_state: bool,
    pub set_presence: Option<String>,
    /// Shared (`filter::FilterCache`): a filter is about a kilobyte, and every waiting long poll
    /// holds one.
    pub filter: Arc<Filter>,
}

/// Member events already sent to a device, per room: lazy loading without redundant members.
/// In memory and best effort: after a restart, or on another process, members are simply sent again.
/// IDs are kept as 64-bit hashes under this process's random key (8 bytes a member instead of a
/// string's ~60, with a set per room for each of thousands of clients): a member goes unsent only
/// if two IDs of one device's rooms collide, odds of about 2^-64 a pair.
#[derive(Default)]
pub struct LazyMemberCache {
    /// (user, device) → room → members sent, every ID hashed by `keys`.
    sent: Mutex<HashMap<u64, HashMap<u64, HashSet<u64>>>>,
    keys: std::hash::RandomState,
}

#[derive(Serialize, Default)]
pub struct Events {
    pub events: Vec<Box<RawValue>>,
}

impl Events {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[derive(Serialize)]
pub struct Timeline {
    pub events: Vec<Box<RawValue>>,
    pub limited: bool,
    pub prev_batch: String,
}

#[derive(Serialize)]
pub struct JoinedRoom {
    pub timeline: Timeline,
    pub state: Events,
    pub ephemeral: Events,
    pub account_data: Events,
    pub summary: Value,
    pub unread_notifications: Value,
    pub unread_thread_notifications: Value,
}

#[derive(Serialize)]
pub struct InvitedRoom {
    pub invite_state: Events,
}

#[derive(Serialize)]
pub struct KnockedRoom {
    pub knock_state: Events,
}

#[derive(Serialize)]
pub struct LeftRoom {
    pub timeline: Timeline,
    pub state: Events,
    pub account_data: Events,
}

#[derive(Serialize, Default)]
pub struct Rooms {
    /// Boxed: a map node holds eleven entries, so one joined room inline made every response
    /// allocate about 3 KB (past the allocator's fast sizes) for it.
    pub join: BTreeMap<String, Box<JoinedRoom>>,
    pub invite: BTreeMap<String, InvitedRoom>,
    pub leave: BTreeMap<String, LeftRoom>,
    pub knock: BTreeMap<String, KnockedRoom>,
}

#[derive(Serialize, Default)]
pub struct DeviceLists {
    pub changed: Vec<String>,
    pub left: Vec<String>,
}

#[derive(Serialize)]
pub struct SyncResponse {
    pub next_batch: String,
    pub rooms: Rooms,
    pub presence: Events,
    pub account_data: Events,
    pub to_device: Events,
    pub device_lists: DeviceLists,
    /// Shared with the device's cached counts (`counts::KeyCounts`): every waiting long poll
    /// holds its empty response, and a map is a few hundred bytes.
    pub device_one_time_keys_count: Arc<BTreeMap<String, i64>>,
    pub device_unused_fallback_key_types: Vec<String>,
}

impl SyncResponse {
    /// Nothing a client would act on: a long poll keeps waiting.
    fn is_empty(&self) -> bool {
        self.rooms.join.is_empty()
            && self.rooms.invite.is_empty()
            && self.rooms.leave.is_empty()
            && self.rooms.knock.is_empty()
            && self.presence.is_empty()
            && self.account_data.is_empty()
            && self.to_device.is_empty()
            && self.device_lists.changed.is_empty()
            && self.device_lists.left.is_empty()
    }
}

pub async fn sync(
    state: &AppState,
    requester: &Requester,
    req: SyncRequest,
) -> Result<SyncResponse> {
    let federation_format = req.filter.event_format.as_deref() == Some("federation");
    let event_fields = req.filter.event_fields.clone();
    let mut response = sync_in_client_format(state, requester, req).await?;
    if federation_format {
        Box::pin(to_federation_format(
            state,
            &mut response,
            event_fields.as_deref(),
        ))
        .await?;
    }
    Ok(response)
}

/// `event_format: federation`: room events as the federation sees them (the PDU with its
/// `auth_events`, `prev_events`, `depth`, `hashes` and `signatures`), still with the event ID and
/// the viewer's `unsigned`. Stripped invite state has no other form.
async fn to_federation_format(
    state: &AppState,
    response: &mut SyncResponse,
    event_fields: Option<&[String]>,
) -> Result<()> {
    // With `event_fields`, only the fields asked for.
    let wanted = |key: &str| {
        event_fields.is_none_or(|fields| {
            fields.iter().any(|f| {
                f == key
                    || f.strip_prefix(key)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        })
    };
    let mut lists: Vec<&mut Vec<Box<RawValue>>> = Vec::new();
    for room in response.rooms.join.values_mut() {
        lists.push(&mut room.timeline.events);
        lists.push(&mut room.state.events);
    }
    for room in response.rooms.leave.values_mut() {
        lists.push(&mut room.timeline.events);
        lists.push(&mut room.state.events);
    }
    let mut parsed: Vec<Vec<serde_json::Map<String, Value>>> = Vec::with_capacity(lists.len());
    let mut ids = Vec::new();
    for list in &lists {
        let events: Vec<serde_json::Map<String, Value>> = list
            .iter()
            .map(|e| serde_json::from_str(e.get()).map_err(Error::internal))
            .collect::<Result<_>>()?;
        ids.extend(
            events
                .iter()
                .filter_map(|e| e.get("event_id").and_then(Value::as_str).map(str::to_owned)),
        );
        parsed.push(events);
    }
    if ids.is_empty() {
        return Ok(());
    }
    let pdus: HashMap<String, serde_json::Map<String, Value>> =
        store::events::pdus_of(&state.db, &ids)
            .await?
            .into_iter()
            .filter_map(|(id, pdu)| serde_json::from_str(&pdu).ok().map(|pdu| (id, pdu)))
            .collect();
    for (list, events) in lists.into_iter().zip(parsed) {
        *list = events
            .into_iter()
            .map(|mut event| {
                let pdu = event
                    .get("event_id")
                    .and_then(Value::as_str)
                    .and_then(|id| pdus.get(id));
                // The client form already has what both share (redacted content included).
                for (key, value) in pdu.into_iter().flatten() {
                    if key != "unsigned" && !event.contains_key(key) && wanted(key) {
                        event.insert(key.clone(), value.clone());
                    }
                }
                serde_json::value::to_raw_value(&event).map_err(Error::internal)
            })
            .collect::<Result<_>>()?;
    }
    Ok(())
}

async fn sync_in_client_format(
    state: &AppState,
    requester: &Requester,
    req: SyncRequest,
) -> Result<SyncResponse> {
    let since = match req.since.as_deref() {
        None | Some("") => None,
        Some(token) => Some(
            SyncToken::parse(token).ok_or_else(|| Error::invalid_param("Invalid since token"))?,
        ),
    };
    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms).min(MAX_TIMEOUT);
    let user = requester.user_id.as_str();
    // A response that shows presence waits for the user's own change, so that it is in this
    // response and not news that wakes their next long poll at once. One that shows none (its
    // long polls are not woken by presence either) only queues it: a crowd's initial syncs
    // otherwise wait on presence commits one batch after another.
    let until = if req.filter.presence.excludes_everything() {
        Until::Queued
    } else {
        Until::Committed
    };
    let set_presence = req.set_presence.as_deref();
    Box::pin(presence::on_sync(state, user, set_presence, until)).await?;
    Box::pin(answer(state, requester, &req, since, deadline)).await
}

/// The response from `since` (none: an initial sync), waiting until `deadline` when there is
/// nothing to say.
async fn answer(
    state: &AppState,
    requester: &Requester,
    req: &SyncRequest,
    mut since: Option<SyncToken>,
    deadline: Instant,
) -> Result<SyncResponse> {
    let user = requester.user_id.as_str();
    let device_key = format!("device:{user}:{}", requester.device_id);
    // Room mates' presence wakes only the long polls that would show it.
    let wants_presence =
        state.config.presence.enabled && !req.filter.presence.excludes_everything();
    // Set once a wait ends in a wake-up: what woke us is then answered at once.
    let mut woken = false;
    loop {
        let started = Instant::now();
        // A long poll subscribes before it looks: a commit its reads miss then wakes it, and one
        // that woke nobody before it subscribed is in what it reads (every commit is visible, and
        // counted in `seen`, before its wake-up).
        let (subscription, rooms) = match since {
            Some(_) if started < deadline => {
                let (subscription, rooms) =
                    subscribe(state, user, &device_key, wants_presence).await?;
                (Some(subscription), Some(rooms))
            }
            _ => (None, None),
        };
        let freshness = match (&subscription, woken) {
            (None, _) => Freshness::Verify,
            (Some(_), true) => Freshness::Woken,
            (Some(_), false) => Freshness::FirstLook,
        };
        // Most incremental syncs (a long poll woken by a message) are answered from memory.
        // Both computations are boxed: a waiting long poll then holds only this loop's state, not
        // the largest of theirs (kilobytes per idle connection).
        let from_memory = match since {
            Some(token) if !req.full_state => {
                let rooms = match rooms {
                    Some(rooms) => rooms,
                    None => Box::pin(joined::joined_rooms(state, user)).await?,
                };
                Box::pin(from_memory::serve(
                    state,
                    requester,
                    token,
                    &rooms,
                    &req.filter,
                    freshness,
                ))
                .await?
            }
            _ => None,
        };
        // An empty answer from memory covers what this process has seen committed; past that,
        // the database answers (its snapshot is taken after subscribing).
        let from_memory = from_memory.filter(|response| {
            !response.is_empty()
                || SyncToken::parse(&response.next_batch)
                    .is_some_and(|at| at.position >= state.notifier.seen())
        });
        let answered_from_memory = from_memory.is_some();
        ::metrics::counter!(
            metrics::names::SYNC_ANSWERS,
            "source" => if answered_from_memory { "memory" } else { "database" }
        )
        .increment(1);
        let response = match from_memory {
            Some(response) => response,
            None => {
                Box::pin(compute(
                    state,
                    requester,
                    since,
                    req.full_state,
                    &req.filter,
                ))
                .await?
            }
        };
        tracing::debug!(
            from_memory = answered_from_memory,
            compute_us = started.elapsed().as_micros() as u64,
            empty = response.is_empty(),
            "sync computed"
        );
        let Some(subscription) = subscription.filter(|_| response.is_empty()) else {
            return Ok(response);
        };
        // Nothing for this user up to the empty response's position: go on from there, where its
        // counts are remembered (the next look then starts after what it already passed over).
        since = SyncToken::parse(&response.next_batch).or(since);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let waiting = metrics::Waiting::start();
        if !subscription.wait(remaining).await {
            return Ok(response);
        }
        drop(waiting);
        ::metrics::counter!(metrics::names::SYNC_WAKEUPS).increment(1);
        woken = true;
    }
}

/// Subscribes a long poll under its user, its device and its joined rooms (with their presence
/// keys when it wants presence), and returns the rooms. The user's key comes first: a membership
/// change wakes it after forgetting the cached rooms, so rooms read after it are either current or
/// followed by that wake-up.
async fn subscribe(
    state: &AppState,
    user: &str,
    device_key: &str,
    wants_presence: bool,
) -> Result<(Subscription, Arc<[String]>)> {
    let subscription = state.notifier.subscribe([user, device_key]);
    let rooms = Box::pin(joined::joined_rooms(state, user)).await?;
    state
        .notifier
        .extend(&subscription, rooms.iter().map(String::as_str));
    if wants_presence {
        let keys: Vec<String> = rooms.iter().map(|r| notifier::presence_key(r)).collect();
        state
            .notifier
            .extend(&subscription, keys.iter().map(String::as_str));
    }
    Ok((subscription, rooms))
}

/// The snapshot every read of a database-path response goes through.
async fn begin_snapshot(conn: &mut PgConnection) -> Result<sqlx::Transaction<'_, sqlx::Postgres>> {
    Ok(
        sqlx::Connection::begin_with(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?,
    )
}

/// The snapshot of a `/sync` response, whose statements run on the plans PostgreSQL cached for
/// the connection rather than one made per execution. Its statements are small and run for every
/// sync (a crowd starting up spent twice as long planning them as running them); none takes a
/// parameter a cached plan would need to know (a flag choosing an index, say), so the cached plan
/// is as good. Set in the same round trip as the BEGIN, for this transaction only.
async fn begin_sync_snapshot(
    conn: &mut PgConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>> {
    Ok(sqlx::Connection::begin_with(
        conn,
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
         SET LOCAL plan_cache_mode = force_generic_plan",
    )
    .await?)
}

struct RoomPlan {
    room_id: String,
    /// Send the whole state (initial sync, new join, full_state) rather than a delta.
    full: bool,
    /// The timeline is the room's latest events (initial sync, new join), not those since the
    /// token (which `full_state` alone does not change).
    from_start: bool,
    /// Joined since the token (or left and joined again): the client knows nothing of the room.
    newly_joined: bool,
}

/// A room the user left (or was kicked or banned from) that goes into `rooms.leave`.
struct LeftPlan<'a> {
    membership: &'a store::rooms::MembershipRow,
    /// Joined since the token too: the client never had the room, so it comes whole.
    newly_joined: bool,
}

/// Which rooms go into which section of a response, and how.
#[derive(Default)]
struct Plans<'a> {
    joined: Vec<RoomPlan>,
    invited: Vec<String>,
    knocked: Vec<String>,
    left: Vec<LeftPlan<'a>>,
}

/// Sorts the user's memberships into the response's sections. A membership that moved since the
/// token is a new join only when the user was not joined at the token or left and came back in
/// between (a display name or avatar change is a join after a join: just an event in the
/// timeline), as Synapse's `_get_room_changes_for_incremental_sync` decides.
#[allow(clippy::too_many_arguments)]
async fn plan_rooms<'a>(
    tx: &mut PgConnection,
    user: &str,
    memberships: &'a [store::rooms::MembershipRow],
    since: Option<SyncToken>,
    upto: i64,
    full_state: bool,
    room_filter: &crate::service::filter::RoomFilter,
) -> Result<Plans<'a>> {
    let initial = since.is_none();
    let from = since.map_or(0, |s| s.position);
    let moved: Vec<String> = memberships
        .iter()
        .filter(|m| !initial && m.stream_ordering > from)
        .filter(|m| matches!(m.membership.as_str(), "join" | "leave" | "ban"))
        .filter(|m| room_filter.allows_room(&m.room_id))
        .map(|m| m.room_id.clone())
        .collect();
    let moves: HashMap<String, store::rooms::MembershipMove> = if moved.is_empty() {
        HashMap::new()
    } else {
        store::rooms::membership_moves(&mut *tx, user, &moved, from, upto)
            .await?
            .into_iter()
            .map(|m| (m.room_id.clone(), m))
            .collect()
    };
    let joined_at_token = |room: &str| {
        moves
            .get(room)
            .is_some_and(|m| m.before.as_deref() == Some("join"))
    };
    let mut plans = Plans::default();
    for m in memberships {
        if !room_filter.allows_room(&m.room_id) {
            continue;
        }
        let changed = m.stream_ordering > from;
        match m.membership.as_str() {
            "join" => {
                let newly_joined = changed
                    && !initial
                    && (!joined_at_token(&m.room_id)
                        || moves.get(&m.room_id).is_some_and(|mv| mv.not_joined));
                plans.joined.push(RoomPlan {
                    room_id: m.room_id.clone(),
                    full: initial || full_state || newly_joined,
                    from_start: initial || newly_joined,
                    newly_joined,
                });
            }
            "invite" if initial || changed => plans.invited.push(m.room_id.clone()),
            "knock" if initial || changed => plans.knocked.push(m.room_id.clone()),
            "leave" | "ban"
                if (changed && !initial)
                    || (room_filter.include_leave && (initial || full_state || changed)) =>
            {
                let newly_joined = changed
                    && !initial
                    && !joined_at_token(&m.room_id)
                    && moves.get(&m.room_id).is_some_and(|mv| mv.joined);
                plans.left.push(LeftPlan {
                    membership: m,
                    newly_joined,
                });
            }
            _ => {}
        }
    }
    Ok(plans)
}

/// A sync answered from the database. It waits its turn (`SyncGate`), then takes exactly one
/// connection and does every read through it: a response never waits for a second connection
/// while holding one, so any number of concurrent syncs cannot starve the pool.
async fn compute(
    state: &AppState,
    requester: &Requester,
    since: Option<SyncToken>,
    full_state: bool,
    filter: &Filter,
) -> Result<SyncResponse> {
    let user = requester.user_id.as_str();
    let _turn = state.sync_gate.enter(user).await?;
    let mut conn = metrics::timed_acquire("requests", state.db.acquire()).await?;
    let ignored = ignore::ignored_through(state, &mut *conn, user).await?;
    let read = Read {
        since,
        full_state,
        filter,
        ignored: &ignored,
    };
    let response = compute_on(state, &mut conn, requester, read).await?;
    // The token acknowledges the to-device messages it was given (read past them above).
    if let Some(acknowledged) = since.filter(|s| s.position > 0)
        && SyncToken::parse(&response.next_batch)
            .is_some_and(|next| next.position >= acknowledged.position)
    {
        store::to_device::acknowledge(
            &mut *conn,
            user,
            requester.device_id.as_str(),
            acknowledged.position,
        )
        .await?;
    }
    Ok(response)
}

/// What one database-path sync reads.
struct Read<'a> {
    since: Option<SyncToken>,
    full_state: bool,
    filter: &'a Filter,
    /// The users the requester ignores.
    ignored: &'a HashSet<String>,
}

/// The reads of `compute`: one repeatable-read snapshot, then (outside it, so what they load may be
/// cached) the rooms' summaries and stripped state.
async fn compute_on(
    state: &AppState,
    conn: &mut PgConnection,
    requester: &Requester,
    read: Read<'_>,
) -> Result<SyncResponse> {
    let Read {
        since,
        full_state,
        filter,
        ignored,
    } = read;
    let user = requester.user_id.as_str();
    let viewer = Viewer {
        user_id: user,
        device_id: Some(requester.device_id.as_str()),
    };
    // Taken before the snapshot: a membership change it misses moves the generation.
    let joined_generation = state.joined_rooms.generation_if_missing(user);
    let mut tx = begin_sync_snapshot(conn).await?;
    let upto = store::stream::current_in(&mut tx).await?;
    // A token from the future (say, a restored database) gets a safe full resync.
    let since = since.filter(|s| s.position <= upto);
    let from = since.map_or(0, |s| s.position);
    let initial = since.is_none();
    let room_filter = &filter.room;
    let device = requester.device_id.as_str();
    // To-device first: when more are waiting than one response carries, this response carries only
    // them and ends at the last one delivered, so nothing is acknowledged unseen.
    let (to_device, cut) =
        e2ee::to_device_batch(&mut tx, user, device, from, upto, TO_DEVICE_LIMIT).await?;
    let to_device = Events {
        events: to_raw(to_device)?,
    };
    if let Some(cut) = cut {
        tx.commit().await?;
        let mut response = SyncResponse::empty(SyncToken {
            position: cut,
            typing: since.map_or(0, |s| s.typing),
        });
        response.to_device = to_device;
        return Ok(response);
    }
    let memberships = store::rooms::memberships_of(&mut *tx, user).await?;
    if let Some(generation) = joined_generation {
        // The rooms the next long poll subscribes under, known without another read.
        let joined = memberships
            .iter()
            .filter(|m| m.membership == "join")
            .map(|m| m.room_id.clone());
        state.joined_rooms.put(user, joined.collect(), generation);
    }
    let Plans {
        joined,
        invited,
        knocked,
        left,
    } = plan_rooms(
        &mut tx,
        user,
        &memberships,
        since,
        upto,
        full_state,
        room_filter,
    )
    .await?;
    if initial {
        state
            .sync_members
            .forget_device(user, requester.device_id.as_str());
    }

    let timeline_filter = &room_filter.timeline;
    let limit = timeline_limit(timeline_filter);
    let store_filter = timeline_filter.to_store();
    let ids_where = |wanted: fn(&RoomPlan) -> bool| -> Vec<String> {
        joined
            .iter()
            .filter(|p| wanted(p))
            .map(|p| p.room_id.clone())
            .collect()
    };
    let full_ids = ids_where(|p| p.full);
    let from_start_ids = ids_where(|p| p.from_start);
    let delta_ids = ids_where(|p| !p.from_start);
    let mut timelines: HashMap<String, Vec<EventRow>> = HashMap::new();
    if !from_start_ids.is_empty() {
        for row in store::events::latest_events_per_room(
            &mut *tx,
            &from_start_ids,
            0,
            upto,
            limit + 1,
            &store_filter,
        )
        .await?
        {
            timelines.entry(row.room_id.clone()).or_default().push(row);
        }
    }
    if !delta_ids.is_empty() {
        for row in store::events::latest_events_per_room(
            &mut *tx,
            &delta_ids,
            from,
            upto,
            limit + 1,
            &store_filter,
        )
        .await?
        {
            timelines.entry(row.room_id.clone()).or_default().push(row);
        }
    }
    let current_state: HashMap<String, Vec<EventRow>> = {
        let mut by_room: HashMap<String, Vec<EventRow>> = HashMap::new();
        if !full_ids.is_empty() {
            let members = if room_filter.state.lazy_load_members {
                store::events::Members::Excluded
            } else {
                store::events::Members::Included
            };
            for row in store::events::current_state_of_rooms(&mut *tx, &full_ids, members).await? {
                by_room.entry(row.room_id.clone()).or_default().push(row);
            }
        }
        by_room
    };

    // Erased senders' events pruned, then bundled aggregations for every timeline at once: one
    // query, not one per room.
    let mut erasure = Erasure::for_viewer(state, &mut tx, user).await?;
    for rows in timelines.values_mut() {
        erasure.prune(&mut tx, rows).await?;
    }
    let all_rows: Vec<&EventRow> = timelines.values().flatten().collect();
    let aggregations = timeline::aggregations_for(&mut tx, &mut erasure, &all_rows, viewer).await?;
    let mut rooms = Rooms::default();
    // Users who joined (or were invited to, or knocked on) rooms in this response: their presence
    // comes with them, as in Synapse's `calculate_user_changes`.
    let mut new_room_mates: Vec<String> = Vec::new();
    for plan in &joined {
        let mut rows = timelines.remove(&plan.room_id).unwrap_or_default();
        let limited = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        rows.reverse();
        // Only non-state events go: the state the timeline leaves out is not in question.
        rows.retain(|r| {
            !ignore::hides(ignored, &r.sender, r.state_key.is_some())
                && !retention::expired(state, r)
        });
        if !plan.full && rows.is_empty() && !limited {
            continue;
        }
        new_room_mates.extend(arriving_members(&rows));
        let current = current_state.get(&plan.room_id);
        let room = joined_room(
            state,
            &mut tx,
            requester,
            viewer,
            plan,
            rows,
            limited,
            current,
            from,
            upto,
            filter,
            &aggregations,
        )
        .await?;
        // Nothing to say (a zero limit over a quiet gap): the room stays out.
        if plan.full || !room.timeline.events.is_empty() || !room.state.is_empty() {
            rooms.join.insert(plan.room_id.clone(), Box::new(room));
        }
    }
    // Stripped state comes from the rooms' current state, after the snapshot.
    for plan in left {
        let m = plan.membership;
        let full = initial || full_state || plan.newly_joined;
        // Joined since the token: the timeline is the room's latest events up to the leave.
        let after = if plan.newly_joined { 0 } else { from };
        let room = left_room(
            state,
            &mut tx,
            &mut erasure,
            requester,
            viewer,
            m,
            full,
            after,
            limit,
            filter,
            ignored,
        )
        .await?;
        rooms.leave.insert(m.room_id.clone(), room);
    }

    // The per-user streams, bounded by the same positions.
    let joined_ids: Vec<String> = joined.iter().map(|p| p.room_id.clone()).collect();
    let typing_since = since.map_or(0, |s| s.typing);
    // What the filter leaves out entirely is not read (a client without presence in a room of
    // thousands would otherwise read every member's presence on its initial sync).
    let (global_data, mut room_data) = if filter.account_data.excludes_everything()
        && room_filter.account_data.excludes_everything()
    {
        Default::default()
    } else {
        account_data::for_sync(&mut tx, user, from, upto).await?
    };
    let mut receipts = if room_filter.ephemeral.excludes_everything() {
        Default::default()
    } else {
        receipts::for_sync(&mut tx, user, &joined_ids, from, upto).await?
    };
    let mut presence_events = if filter.presence.excludes_everything() {
        Vec::new()
    } else {
        presence::for_sync(state, &mut tx, user, from, upto).await?
    };
    if !initial && !filter.presence.excludes_everything() {
        // The presence of those the user newly shares a room with, whenever it last changed.
        let newly_joined: Vec<String> = joined
            .iter()
            .filter(|p| p.newly_joined)
            .map(|p| p.room_id.clone())
            .collect();
        new_room_mates.retain(|u| u != user);
        let extra = presence::of_new_room_mates(state, &mut tx, &new_room_mates, &newly_joined)
            .await?
            .into_iter()
            .filter(|e| e["sender"] != user);
        merge_presence(&mut presence_events, extra);
    }
    let (mut typing, typing_token) = typing::for_sync(state, &joined_ids, typing_since);
    for room_id in &joined_ids {
        let data = room_filter
            .account_data
            .select(room_data.remove(room_id).unwrap_or_default());
        let ephemeral = room_filter.ephemeral.select(
            [receipts.remove(room_id), typing.remove(room_id)]
                .into_iter()
                .flatten()
                .collect(),
        );
        if data.is_empty() && ephemeral.is_empty() {
            continue;
        }
        if !rooms.join.contains_key(room_id) {
            rooms
                .join
                .insert(room_id.clone(), Box::new(quiet_room(upto)));
        }
        let room = rooms.join.get_mut(room_id).expect("inserted above");
        room.account_data = Events {
            events: to_raw(data)?,
        };
        room.ephemeral = Events {
            events: to_raw(ephemeral)?,
        };
    }
    let in_response: Vec<String> = rooms.join.keys().cloned().collect();
    let mut counts = push::unread_counts(&mut tx, user, &in_response, upto).await?;
    let (changed, left) = if initial {
        (Vec::new(), Vec::new())
    } else {
        e2ee::device_list_changes(&mut tx, user, from, upto).await?
    };
    let (key_counts, fallback) = e2ee::key_counts(&mut tx, user, device).await?;
    let key_counts = Arc::new(key_counts);
    tx.commit().await?;

    for (room_id, room) in rooms.join.iter_mut() {
        room.summary = summary(state, conn, room_id, user).await?;
    }
    for room_id in knocked {
        let knock_state = stripped_state(state, conn, user, &room_id).await?;
        rooms.knock.insert(room_id, KnockedRoom { knock_state });
    }
    for room_id in invited {
        // Invites from ignored users are not shown (spec: Ignoring Users).
        if inviter(state, conn, user, &room_id)
            .await?
            .is_some_and(|sender| ignored.contains(&sender))
        {
            continue;
        }
        let invite_state = stripped_state(state, conn, user, &room_id).await?;
        rooms.invite.insert(room_id, InvitedRoom { invite_state });
    }
    fill_unread_counts(
        &mut rooms.join,
        &counts,
        room_filter.timeline.unread_thread_notifications,
    );

    let mut response = SyncResponse::empty(SyncToken {
        position: upto,
        typing: typing_token,
    });
    response.rooms = rooms;
    let to_device_delivered = !to_device.events.is_empty();
    response.to_device = to_device;
    response.account_data = Events {
        events: to_raw(filter.account_data.select(global_data))?,
    };
    response.presence = Events {
        events: to_raw(filter.presence.select(presence_events))?,
    };
    response.device_lists = DeviceLists { changed, left };
    response.device_one_time_keys_count = key_counts.clone();
    response.device_unused_fallback_key_types = fallback.clone();
    // What the next sync, if answered from memory, counts on.
    for room_id in in_response {
        counts.entry(room_id).or_default();
    }
    state.sync_counts.put(
        user,
        device,
        counts::DeviceCounts {
            as_of: upto,
            unread: counts,
            keys: counts::KeyCounts {
                one_time: key_counts,
                unused_fallback: fallback,
            },
            to_device_delivered,
        },
    );
    Ok(response)
}

/// `unread_notifications` (and per thread when asked) for every joined room in a response.
fn fill_unread_counts(
    rooms: &mut BTreeMap<String, Box<JoinedRoom>>,
    counts: &HashMap<String, push::UnreadCounts>,
    per_thread: bool,
) {
    for (room_id, room) in rooms.iter_mut() {
        let c = counts.get(room_id);
        let (mut notes, mut highlights) =
            c.map_or((0, 0), |c| (c.notification_count, c.highlight_count));
        if per_thread {
            let mut threads = serde_json::Map::new();
            for (root, (n, h)) in c.map(|c| c.threads.clone()).unwrap_or_default() {
                notes -= n;
                highlights -= h;
                threads.insert(root, json!({"notification_count": n, "highlight_count": h}));
            }
            room.unread_thread_notifications = Value::Object(threads);
        }
        room.unread_notifications =
            json!({"notification_count": notes, "highlight_count": highlights});
    }
}

/// The users whose member events in `rows` (oldest first) bring them into the room (join, invite,
/// knock) and who did not leave again after.
fn arriving_members(rows: &[EventRow]) -> Vec<String> {
    let mut arriving: Vec<String> = Vec::new();
    for row in rows.iter().filter(|r| r.event_type == "m.room.member") {
        let Some(member) = row.state_key.clone() else {
            continue;
        };
        let membership = serde_json::from_str::<Value>(&row.client_json)
            .ok()
            .and_then(|e| e["content"]["membership"].as_str().map(str::to_owned));
        arriving.retain(|u| *u != member);
        if matches!(membership.as_deref(), Some("join" | "invite" | "knock")) {
            arriving.push(member);
        }
    }
    arriving
}

/// Adds presence events of users not already in `events` (one per user).
fn merge_presence(events: &mut Vec<Value>, extra: impl IntoIterator<Item = Value>) {
    let mut seen: HashSet<String> = events
        .iter()
        .filter_map(|e| e["sender"].as_str().map(str::to_owned))
        .collect();
    for event in extra {
        if let Some(sender) = event["sender"].as_str()
            && seen.insert(sender.to_owned())
        {
            events.push(event);
        }
    }
}

/// A state filter's `limit`: the latest changes are kept, in their order.
fn keep_latest(state_rows: &mut Vec<EventRow>, limit: Option<i64>) {
    let Some(limit) = limit.filter(|l| *l > 0).map(|l| l as usize) else {
        return;
    };
    if state_rows.len() > limit {
        state_rows.sort_by_key(|r| r.stream_ordering);
        state_rows.drain(..state_rows.len() - limit);
    }
}

/// The timeline limit a filter asks for, within bounds.
fn timeline_limit(filter: &RoomEventFilter) -> i64 {
    filter
        .limit
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .clamp(0, 1000)
}

/// A joined room with no new timeline events but other news (account data, receipts, typing).
/// Its summary is filled in with the others'.
fn quiet_room(upto: i64) -> JoinedRoom {
    JoinedRoom {
        timeline: Timeline {
            events: Vec::new(),
            limited: false,
            prev_batch: crate::service::messages::position_token(upto),
        },
        state: Events::default(),
        ephemeral: Events::default(),
        account_data: Events::default(),
        summary: Value::Null,
        unread_notifications: json!({"notification_count": 0, "highlight_count": 0}),
        unread_thread_notifications: json!({}),
    }
}

/// At most this many to-device messages in one response.
const TO_DEVICE_LIMIT: i64 = 1000;

fn to_raw(values: Vec<Value>) -> Result<Vec<Box<RawValue>>> {
    values
        .into_iter()
        .map(|v| serde_json::value::to_raw_value(&v).map_err(Error::internal))
        .collect()
}

impl SyncResponse {
    fn empty(token: SyncToken) -> Self {
        Self {
            next_batch: token.encode(),
            rooms: Rooms::default(),
            presence: Events::default(),
            account_data: Events::default(),
            to_device: Events::default(),
            device_lists: DeviceLists::default(),
            device_one_time_keys_count: Default::default(),
            device_unused_fallback_key_types: Vec::new(),
        }
    }
}

/// The newest event per (type, state_key) among `rows` (oldest first).
fn latest_per_key(rows: Vec<EventRow>) -> Vec<EventRow> {
    let mut latest: HashMap<(String, String), EventRow> = HashMap::new();
    for row in rows {
        let key = (
            row.event_type.clone(),
            row.state_key.clone().unwrap_or_default(),
        );
        latest.insert(key, row);
    }
    let mut out: Vec<EventRow> = latest.into_values().collect();
    out.sort_by_key(|r| r.stream_ordering);
    out
}

#[allow(clippy::too_many_arguments)]
async fn joined_room(
    state: &AppState,
    tx: &mut PgConnection,
    requester: &Requester,
    viewer: Viewer<'_>,
    plan: &RoomPlan,
    mut rows: Vec<EventRow>,
    limited: bool,
    current: Option<&Vec<EventRow>>,
    from: i64,
    upto: i64,
    filter: &Filter,
    aggregations: &timeline::Aggregations,
) -> Result<JoinedRoom> {
    let user = requester.user_id.as_str();
    let room_id = plan.room_id.as_str();
    let state_filter = &filter.room.state;

    // History visibility: most rooms are "shared", where a joined member sees everything.
    let hv_shared = current.is_none_or(|cur| {
        cur.iter()
            .find(|r| r.event_type == "m.room.history_visibility")
            .and_then(|r| serde_json::from_str::<Value>(&r.client_json).ok())
            .is_none_or(|v| {
                matches!(
                    v["content"]["history_visibility"].as_str(),
                    Some("shared" | "world_readable") | None
                )
            })
    });
    if plan.full && !hv_shared {
        let vis = Visibility::load(&mut *tx, room_id, user).await?;
        rows.retain(|r| vis.can_see_row(r, user));
    }
    let first_pos = rows.first().map_or(upto + 1, |r| r.stream_ordering);
    let prev_batch = crate::service::messages::position_token(first_pos - 1);

    // State before the timeline: the whole of it for a full room, the changes since `from` otherwise.
    let mut state_rows: Vec<EventRow> = if plan.full {
        let has_state_in_timeline = rows.iter().any(|r| r.state_key.is_some());
        match (current, has_state_in_timeline) {
            (Some(cur), false) => cur.clone(),
            _ => {
                let members = if state_filter.lazy_load_members {
                    store::events::Members::Excluded
                } else {
                    store::events::Members::Included
                };
                store::events::state_at(&mut *tx, room_id, first_pos - 1, members).await?
            }
        }
    } else if limited {
        latest_per_key(
            store::events::state_changes(
                &mut *tx,
                std::slice::from_ref(&plan.room_id),
                from,
                first_pos - 1,
            )
            .await?,
        )
    } else {
        Vec::new()
    };
    state_rows.retain(|r| {
        state_filter.allows_type(&r.event_type) && state_filter.allows_sender(&r.sender)
    });
    // Before lazy loading: the members the timeline needs come whatever the limit.
    keep_latest(&mut state_rows, state_filter.limit);

    if state_filter.lazy_load_members {
        apply_lazy_loading(
            state,
            tx,
            requester,
            room_id,
            &rows,
            &mut state_rows,
            state_filter,
            first_pos,
            plan.full,
        )
        .await?;
    }

    let now = store::now_ms();
    let fields = filter.event_fields.as_deref();
    let timeline_events = timeline::with_fields(
        rows.iter()
            .map(|r| timeline::render(r, viewer, now, aggregations))
            .collect(),
        fields,
    );
    let state_events = timeline::with_fields(timeline::render_plain(&state_rows, viewer), fields);
    Ok(JoinedRoom {
        timeline: Timeline {
            events: timeline_events,
            limited,
            prev_batch,
        },
        state: Events {
            events: state_events,
        },
        ephemeral: Events::default(),
        account_data: Events::default(),
        // Filled in after the snapshot, from the room's current state.
        summary: Value::Null,
        unread_notifications: json!({"notification_count": 0, "highlight_count": 0}),
        unread_thread_notifications: json!({}),
    })
}

/// Lazy-loaded members: only the member events the timeline's senders need (and the user's own),
/// minus those this device already has unless redundant members are asked for.
#[allow(clippy::too_many_arguments)]
async fn apply_lazy_loading(
    state: &AppState,
    tx: &mut PgConnection,
    requester: &Requester,
    room_id: &str,
    timeline_rows: &[EventRow],
    state_rows: &mut Vec<EventRow>,
    state_filter: &RoomEventFilter,
    first_pos: i64,
    full: bool,
) -> Result<()> {
    let user = requester.user_id.as_str();
    let in_timeline: HashSet<&str> = timeline_rows
        .iter()
        .filter(|r| r.event_type == "m.room.member")
        .filter_map(|r| r.state_key.as_deref())
        .collect();
    let mut wanted: Vec<String> = timeline_rows.iter().map(|r| r.sender.clone()).collect();
    if full {
        wanted.push(user.to_owned());
    }
    wanted.sort();
    wanted.dedup();
    wanted.retain(|u| !in_timeline.contains(u.as_str()));
    if !state_filter.include_redundant_members {
        wanted = state
            .sync_members
            .unsent(user, requester.device_id.as_str(), room_id, wanted);
    }
    // A gap's member changes (leaves included) all stay, as Synapse does for gapped incremental
    // syncs; the whole state of a full room keeps only the members wanted.
    if full {
        state_rows.retain(|r| r.event_type != "m.room.member");
    } else {
        let present: HashSet<&str> = state_rows
            .iter()
            .filter(|r| r.event_type == "m.room.member")
            .filter_map(|r| r.state_key.as_deref())
            .collect();
        wanted.retain(|u| !present.contains(u.as_str()));
    }
    if !wanted.is_empty() && state_filter.allows_type("m.room.member") {
        let members = store::events::members_at(&mut *tx, room_id, &wanted, first_pos - 1).await?;
        state_rows.extend(members);
    }
    let sent: Vec<String> = state_rows
        .iter()
        .filter(|r| r.event_type == "m.room.member")
        .filter_map(|r| r.state_key.clone())
        .chain(in_timeline.iter().map(|s| s.to_string()))
        .collect();
    state
        .sync_members
        .record(user, requester.device_id.as_str(), room_id, sent);
    Ok(())
}

impl LazyMemberCache {
    fn hash(&self, id: impl std::hash::Hash) -> u64 {
        std::hash::BuildHasher::hash_one(&self.keys, id)
    }

    fn forget_device(&self, user: &str, device: &str) {
        let device = self.hash((user, device));
        self.sent.lock().unwrap().remove(&device);
    }

    fn unsent(&self, user: &str, device: &str, room: &str, wanted: Vec<String>) -> Vec<String> {
        let (device, room) = (self.hash((user, device)), self.hash(room));
        let sent = self.sent.lock().unwrap();
        match sent.get(&device).and_then(|rooms| rooms.get(&room)) {
            Some(members) => wanted
                .into_iter()
                .filter(|u| !members.contains(&self.hash(u.as_str())))
                .collect(),
            None => wanted,
        }
    }

    fn record(&self, user: &str, device: &str, room: &str, members: Vec<String>) {
        let (device, room) = (self.hash((user, device)), self.hash(room));
        let members: Vec<u64> = members.iter().map(|u| self.hash(u.as_str())).collect();
        let mut sent = self.sent.lock().unwrap();
        if sent.len() > 50_000 {
            sent.clear();
        }
        sent.entry(device)
            .or_default()
            .entry(room)
            .or_default()
            .extend(members);
    }
}

/// m.heroes (when the room has no name or alias) and the member counts clients name rooms from.
async fn summary(
    state: &AppState,
    conn: &mut PgConnection,
    room_id: &str,
    user: &str,
) -> Result<Value> {
    Ok(
        match crate::service::writer::room_snapshot_on(state, conn, room_id).await? {
            Some(snapshot) => summary_of(&snapshot, user),
            None => json!({}),
        },
    )
}

fn summary_of(snapshot: &RoomSnapshot, user: &str) -> Value {
    let members = snapshot.member_lists();
    let (joined, invited) = (&members.join, &members.invite);
    let mut summary = json!({
        "m.joined_member_count": joined.len(),
        "m.invited_member_count": invited.len(),
    });
    let named = snapshot
        .entry("m.room.name", "")
        .is_some_and(|e| e.content["name"].as_str().is_some_and(|n| !n.is_empty()))
        || snapshot
            .entry("m.room.canonical_alias", "")
            .is_some_and(|e| e.content["alias"].is_string());
    if !named {
        // Each list is sorted: the first five of each are enough to choose from.
        let mut heroes: Vec<&str> = joined
            .iter()
            .take(6)
            .chain(invited.iter().take(6))
            .map(String::as_str)
            .filter(|u| *u != user)
            .collect();
        if heroes.is_empty() {
            // Everyone left: name the room after those who were there.
            heroes = snapshot
                .members_with("leave")
                .chain(snapshot.members_with("ban"))
                .filter(|u| *u != user)
                .collect();
        }
        heroes.sort_unstable();
        heroes.truncate(5);
        summary["m.heroes"] = json!(heroes);
    }
    summary
}

/// The sender of the user's current member event (the inviter, for an invite).
async fn inviter(
    state: &AppState,
    conn: &mut PgConnection,
    user: &str,
    room_id: &str,
) -> Result<Option<String>> {
    let snapshot = crate::service::writer::room_snapshot_on(state, conn, room_id).await?;
    Ok(snapshot.and_then(|s| s.entry("m.room.member", user).map(|e| e.sender.clone())))
}

/// What an invitee or a knocker sees of a room: the stripped state events the spec lists, the
/// inviter's member event and the user's own (the invite or the knock). For an invite from
/// another server to a room this server is not in, the state is what that server sent with it.
async fn stripped_state(
    state: &AppState,
    conn: &mut PgConnection,
    user: &str,
    room_id: &str,
) -> Result<Events> {
    let Some(snapshot) = crate::service::writer::room_snapshot_on(state, conn, room_id).await?
    else {
        return Ok(Events::default());
    };
    let own = snapshot.entry("m.room.member", user);
    let sent = match own {
        Some(own) => {
            store::federation_rooms::remote_invite_state(&mut *conn, room_id, user, &own.event_id)
                .await?
        }
        None => None,
    };
    if let (Some(sent), Some(own)) = (sent, own) {
        // Kept without the invitee's own member event, which is the invite itself.
        let mut events: Vec<Box<RawValue>> = serde_json::from_str(&sent).unwrap_or_default();
        let stripped = json!({"type": "m.room.member", "state_key": user, "sender": own.sender, "content": own.content});
        events.push(RawValue::from_string(stripped.to_string()).map_err(Error::internal)?);
        return Ok(Events { events });
    }
    let mut events = Vec::new();
    let mut push = |event_type: &str, state_key: &str| {
        if let Some(e) = snapshot.entry(event_type, state_key) {
            let stripped = json!({"type": event_type, "state_key": state_key, "sender": e.sender, "content": e.content});
            if let Ok(raw) = RawValue::from_string(stripped.to_string()) {
                events.push(raw);
            }
        }
    };
    for t in STRIPPED_STATE {
        push(t, "");
    }
    let inviter = snapshot
        .entry("m.room.member", user)
        .map(|e| e.sender.clone());
    if let Some(inviter) = inviter.filter(|i| i != user) {
        push("m.room.member", &inviter);
    }
    push("m.room.member", user);
    Ok(Events { events })
}

#[allow(clippy::too_many_arguments)]
async fn left_room(
    state: &AppState,
    tx: &mut PgConnection,
    erasure: &mut Erasure,
    requester: &Requester,
    viewer: Viewer<'_>,
    m: &store::rooms::MembershipRow,
    full: bool,
    from: i64,
    limit: i64,
    filter: &Filter,
    ignored: &HashSet<String>,
) -> Result<LeftRoom> {
    let user = requester.user_id.as_str();
    let leave_pos = m.stream_ordering;
    let store_filter = filter.room.timeline.to_store();
    // An initial sync starts at 0; otherwise (full_state too) the timeline is what came since.
    let after = from;
    let rooms = [m.room_id.clone()];
    let mut rows = store::events::latest_events_per_room(
        &mut *tx,
        &rooms,
        after,
        leave_pos,
        limit + 1,
        &store_filter,
    )
    .await?;
    let limited = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    rows.reverse();
    let vis = Visibility::load(&mut *tx, &m.room_id, user).await?;
    rows.retain(|r| vis.can_see_row(r, user));
    let first_pos = rows.first().map_or(leave_pos + 1, |r| r.stream_ordering);
    rows.retain(|r| {
        !ignore::hides(ignored, &r.sender, r.state_key.is_some()) && !retention::expired(state, r)
    });
    let mut state_rows = if full {
        store::events::state_at(
            &mut *tx,
            &m.room_id,
            first_pos - 1,
            store::events::Members::Included,
        )
        .await?
    } else if limited {
        latest_per_key(store::events::state_changes(&mut *tx, &rooms, from, first_pos - 1).await?)
    } else {
        Vec::new()
    };
    let state_filter = &filter.room.state;
    state_rows.retain(|r| {
        state_filter.allows_type(&r.event_type) && state_filter.allows_sender(&r.sender)
    });
    keep_latest(&mut state_rows, state_filter.limit);
    Ok(LeftRoom {
        timeline: Timeline {
            events: timeline::render_all(&mut *tx, erasure, rows, viewer).await?,
            limited,
            prev_batch: crate::service::messages::position_token(first_pos - 1),
        },
        state: Events {
            events: timeline::render_plain(&state_rows, viewer),
        },
        account_data: Events::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_row(stream_ordering: i64, event_type: &str) -> EventRow {
        EventRow::example(stream_ordering, event_type, Some(""))
    }

    fn member(stream_ordering: i64, user: &str, membership: &str) -> EventRow {
        let mut row = EventRow::example(stream_ordering, "m.room.member", Some(user));
        row.client_json = json!({"content": {"membership": membership}}).to_string();
        row
    }

    #[test]
    fn arriving_members_are_those_who_came_and_stayed() {
        let rows = vec![
            member(1, "@a:x", "join"),
            member(2, "@b:x", "invite"),
            member(3, "@a:x", "leave"),
            member(4, "@c:x", "leave"),
            member(5, "@d:x", "knock"),
            member(6, "@c:x", "join"),
        ];
        assert_eq!(arriving_members(&rows), ["@b:x", "@d:x", "@c:x"]);
    }

    #[test]
    fn merged_presence_keeps_one_event_per_user_the_first() {
        let mut events = vec![json!({"sender": "@a:x", "n": 1})];
        merge_presence(
            &mut events,
            [
                json!({"sender": "@a:x", "n": 2}),
                json!({"sender": "@b:x", "n": 3}),
            ],
        );
        assert_eq!(
            events,
            [
                json!({"sender": "@a:x", "n": 1}),
                json!({"sender": "@b:x", "n": 3})
            ]
        );
    }

    #[test]
    fn a_state_limit_keeps_the_latest_changes_in_order() {
        let rows = || {
            vec![
                state_row(5, "m.room.topic"),
                state_row(1, "m.room.create"),
                state_row(9, "m.room.name"),
                state_row(3, "m.room.join_rules"),
            ]
        };
        let kept = |limit| {
            let mut rows = rows();
            keep_latest(&mut rows, limit);
            rows.iter()
                .map(|r| r.event_type.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(Some(2)), ["m.room.topic", "m.room.name"]);
        assert_eq!(kept(None).len(), 4);
        assert_eq!(kept(Some(0)).len(), 4);
        assert_eq!(kept(Some(10)).len(), 4);
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = SyncToken {
            position: 42,
            typing: 7,
        };
        assert_eq!(SyncToken::parse(&t.encode()), Some(t));
        assert_eq!(
            SyncToken::parse("s5"),
            Some(SyncToken {
                position: 5,
                typing: 0
            })
        );
        for bad in ["", "5", "s", "sx", "s-1", "s1_x", "garbage"] {
            assert_eq!(SyncToken::parse(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod future_sizes {
    use super::*;

    fn future_size<A, F: std::future::Future>(_: impl Fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A long poll's futures live as long as it waits, one set per waiting client: what they
    /// carry inline (a filter is about a kilobyte; it was carried twice, 4.7 KB in all) counts
    /// thousands of times.
    #[test]
    fn a_waiting_long_poll_carries_little() {
        let sync = future_size(|(s, r, q): (&AppState, &Requester, SyncRequest)| sync(s, r, q));
        let answer = future_size(
            |(s, r, q, d): (&AppState, &Requester, &SyncRequest, Instant)| answer(s, r, q, None, d),
        );
        assert!(sync <= 2048, "sync's future is {sync} bytes");
        assert!(answer <= 2048, "answer's future is {answer} bytes");
    }
}

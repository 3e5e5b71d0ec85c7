//! The event writer: every event a local user creates goes through here.
//!
//! A lane task takes the requests waiting in its queue as a batch and commits them together (group
//! commit): the durable commit is the cost to beat, so concurrent sends share it. Each event is
//! checked against the room's current state, chained to the room's head, built and signed; stream
//! positions are claimed last, holding the stream lock only for the inserts and the commit.
//!
//! Plain messages to rooms whose state is cached take the optimistic path: built on the cached
//! heads, stored by one statement that moves each head only from the head it was built on. When
//! another writer got there first (another process, a retried transaction ID), nothing is stored
//! and the batch is redone under the room locks (`SELECT … FOR UPDATE`), which is also the path for
//! state events, redactions and new rooms.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use sqlx::PgConnection;
use tokio::sync::{mpsc, oneshot};

use crate::service::auth_check::{self, EventFields, PduView};
use crate::service::auth_rules::{self, RoomState};
use crate::service::events::{self, BuiltEvent, EventDraft, EventRef, Placement};
use crate::service::metrics::{self, names};
use crate::service::recent::{Notified, RecentEvent};
use crate::service::room_cache::{RoomSnapshot, StateEntry};
use crate::service::room_versions::RoomVersion;
use crate::service::{notifier, push, room_versions};
use crate::store::{self, events::NewEventRow};
use crate::{AppState, Error, Result};

mod fork;
mod remote;
pub use remote::{IncomingPdu, join_template};

const MAX_BATCH: usize = 256;
/// Requests a lane holds waiting (beyond them, new requests get a 503).
const MAX_QUEUED: usize = 8192;

pub use crate::store::events::TxnKey;

pub enum Target {
    Existing(String),
    /// A room on another server that a local user just joined: its state (checked by the caller)
    /// and the join event last, which becomes the head. A room known here before (an invite from
    /// there, an earlier membership) takes this state instead of its own. `history`, the room's
    /// recent events before the join (checked too), is stored with it in depth order.
    Joined {
        version: RoomVersion,
        events: Vec<BuiltEvent>,
        history: Vec<BuiltEvent>,
    },
    /// A membership event of a room this server is not in (the spec's out-of-band membership): an
    /// invite from another server, its rejection or withdrawal. It changes the user's membership
    /// (so /sync shows it) but is never sent to other servers and, in a room known here, does not
    /// become its head; an unknown room is recorded with the event as its only state.
    OutOfBand {
        version: RoomVersion,
        event: Box<BuiltEvent>,
        /// An invite's stripped room state (a JSON array), shown to the invitee.
        invite_state: Option<String>,
    },
    New {
        version: RoomVersion,
        room_id: Option<String>,
        is_public: bool,
        aliases: Vec<String>,
    },
}

struct Job {
    target: Target,
    drafts: Vec<EventDraft>,
    /// An event from another server, checked and signed there: stored as it is (`drafts` empty).
    remote: Option<Box<IncomingPdu>>,
    txn: Option<TxnKey>,
    reply: oneshot::Sender<Result<Committed>>,
}

#[derive(Debug, Clone)]
pub struct Committed {
    pub room_id: String,
    pub event_ids: Vec<String>,
    /// The transaction ID had been used before: nothing new was created.
    pub deduplicated: bool,
}

/// The optimistic path's connections (the request pool's options: its one statement, inserts and
/// updates by primary key, keeps PostgreSQL's cached generic plan).
pub fn writer_pool(db: &sqlx::PgPool) -> sqlx::PgPool {
    let options = (*db.connect_options()).clone();
    store::pool::autocommit_options(LANES as u32 + 1, db.options().get_acquire_timeout())
        // Opened at start-up, so the first message does not wait for a new backend.
        .min_connections(LANES as u32)
        .connect_lazy_with(options)
}

/// Rooms can be spread over several independent writer lanes (batches of different rooms prepare
/// side by side), but every batch takes the stream lock to its commit: measured with 8 senders over
/// 4 rooms, one lane with batches twice as large beats two (2,100 against 1,700 messages/s).
const LANES: usize = 1;

#[derive(Default)]
pub struct Writer {
    lanes: OnceLock<Vec<mpsc::Sender<Job>>>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn start(&self, state: AppState) {
        let mut senders = Vec::with_capacity(LANES);
        let mut receivers = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            let (tx, rx) = mpsc::channel(MAX_QUEUED);
            senders.push(tx);
            receivers.push(rx);
        }
        if self.lanes.set(senders).is_ok() {
            for rx in receivers {
                tokio::spawn(run(state.clone(), rx));
            }
        }
    }

    /// Appends `drafts` (all or none) to a room, or creates a room from them.
    pub async fn submit(
        &self,
        target: Target,
        drafts: Vec<EventDraft>,
        txn: Option<TxnKey>,
    ) -> Result<Committed> {
        self.enqueue(target, drafts, None, txn).await
    }

    /// Appends an event received from another server, or a local one already built and signed
    /// elsewhere (see [`IncomingPdu`]), to its room.
    pub async fn submit_remote(&self, pdu: IncomingPdu) -> Result<Committed> {
        self.push_remote(pdu)?.await
    }

    /// Queues an event received from another server and answers the wait for its outcome:
    /// events queued one after the other, without waiting, are appended in that order and commit
    /// together (a received transaction's PDUs).
    pub fn push_remote(
        &self,
        pdu: IncomingPdu,
    ) -> Result<impl Future<Output = Result<Committed>> + use<>> {
        let target = Target::Existing(pdu.event.room_id.clone());
        self.push(target, Vec::new(), Some(Box::new(pdu)), None)
    }

    /// Records an out-of-band membership event (see [`Target::OutOfBand`]), checked by the caller.
    pub async fn submit_out_of_band(
        &self,
        version: RoomVersion,
        event: BuiltEvent,
        invite_state: Option<String>,
    ) -> Result<Committed> {
        let target = Target::OutOfBand {
            version,
            event: Box::new(event),
            invite_state,
        };
        self.enqueue(target, Vec::new(), None, None).await
    }

    async fn enqueue(
        &self,
        target: Target,
        drafts: Vec<EventDraft>,
        remote: Option<Box<IncomingPdu>>,
        txn: Option<TxnKey>,
    ) -> Result<Committed> {
        self.push(target, drafts, remote, txn)?.await
    }

    /// Hands a job to its lane; the future answers its outcome.
    fn push(
        &self,
        target: Target,
        drafts: Vec<EventDraft>,
        remote: Option<Box<IncomingPdu>>,
        txn: Option<TxnKey>,
    ) -> Result<impl Future<Output = Result<Committed>> + use<>> {
        let (reply, answer) = oneshot::channel();
        let lanes = self
            .lanes
            .get()
            .ok_or_else(|| Error::internal("writer not started"))?;
        // A room always goes through the same lane: its events stay in submission order.
        let lane = match &target {
            Target::Existing(room_id) => {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                room_id.hash(&mut hasher);
                (hasher.finish() as usize) % lanes.len()
            }
            Target::New { .. } | Target::Joined { .. } | Target::OutOfBand { .. } => 0,
        };
        let queue = &lanes[lane];
        queue
            .try_send(Job {
                target,
                drafts,
                remote,
                txn,
                reply,
            })
            .map_err(|e| match e {
                // More waiting than the writer commits in a second or two: shed load.
                mpsc::error::TrySendError::Full(_) => Error::unavailable(500),
                mpsc::error::TrySendError::Closed(_) => Error::internal("writer stopped"),
            })?;
        Ok(async move {
            answer
                .await
                .map_err(|_| Error::internal("writer dropped a request"))?
        })
    }
}

async fn run(state: AppState, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        ::metrics::gauge!(names::WRITER_QUEUED).set(queue.len() as f64);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        ::metrics::histogram!(names::WRITER_BATCH_SIZE).record(batch.len() as f64);
        let (creates, appends): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|job| !matches!(job.target, Target::Existing(_)));
        // A new room commits on its own: an alias collision must fail that room alone (and a room
        // joined or touched out of band may be new, or not).
        for job in creates {
            process(&state, vec![job]).await;
        }
        if !appends.is_empty() {
            process(&state, appends).await;
        }
    }
}

async fn process(state: &AppState, jobs: Vec<Job>) {
    let rooms: Vec<String> = jobs
        .iter()
        .filter_map(|j| match &j.target {
            Target::Existing(room) => Some(room.clone()),
            Target::OutOfBand { event, .. } => Some(event.room_id.clone()),
            Target::New { .. } | Target::Joined { .. } => None,
        })
        .collect();
    let started = std::time::Instant::now();
    let outcome = commit_either_way(state, &jobs).await;
    ::metrics::histogram!(names::WRITER_COMMIT).record(started.elapsed());
    let e = match outcome {
        Ok(outcomes) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
            return;
        }
        Err(e) => e,
    };
    for room in &rooms {
        state.rooms.invalidate(room);
    }
    if jobs.len() > 1 && !matches!(e, Error::Unavailable { .. }) {
        // One event may have failed the batch (content the database refuses): each job again on
        // its own, so only the bad one fails. (With the database unavailable, all would fail.)
        tracing::warn!(error = %e, jobs = jobs.len(), "event batch failed; retrying its jobs one by one");
        ::metrics::counter!(names::WRITER_REDONE, "reason" => "failure").increment(1);
        for job in jobs {
            Box::pin(process(state, vec![job])).await;
        }
        return;
    }
    if matches!(e, Error::Internal(_)) {
        tracing::error!(error = %e, "event batch failed");
    }
    // Only the database's unavailability reaches here with several jobs: each gets it.
    let again = match &e {
        Error::Unavailable {
            retry_after_ms,
            lost,
        } => Some((*retry_after_ms, *lost)),
        _ => None,
    };
    let mut e = Some(e);
    for job in jobs {
        let err = match (e.take(), again) {
            (Some(e), _) => e,
            (None, Some((retry_after_ms, lost))) => Error::Unavailable {
                retry_after_ms,
                lost,
            },
            (None, None) => Error::internal("event batch failed"),
        };
        let _ = job.reply.send(Err(err));
    }
}

/// Commits a batch on the optimistic path when it fits, else (or when that path met a conflict)
/// under room locks.
async fn commit_either_way(state: &AppState, jobs: &[Job]) -> Result<Vec<Result<Committed>>> {
    if let Some(outcomes) = commit(state, jobs, Path::Optimistic).await? {
        return Ok(outcomes);
    }
    if optimistic_fits(jobs) {
        ::metrics::counter!(names::WRITER_REDONE, "reason" => "conflict").increment(1);
    }
    commit(state, jobs, Path::Locked)
        .await?
        .ok_or_else(|| Error::internal("a locked batch met a conflict"))
}

/// A room's state while a batch is built: the snapshot plus this batch's changes.
struct WorkingRoom {
    base: Arc<RoomSnapshot>,
    head_event_id: String,
    head_hash: Option<String>,
    head_depth: i64,
    /// The other forward extremities (`RoomSnapshot::tips`).
    tips: Vec<EventRef>,
    changes: HashMap<(String, String), Arc<StateEntry>>,
}

impl WorkingRoom {
    fn new(base: Arc<RoomSnapshot>) -> Self {
        Self {
            head_event_id: base.head_event_id.clone(),
            head_hash: base.head_hash.clone(),
            head_depth: base.head_depth,
            tips: base.tips.clone(),
            base,
            changes: HashMap::new(),
        }
    }

    fn entry(&self, event_type: &str, state_key: &str) -> Option<&Arc<StateEntry>> {
        // The batch's changes are few; a linear probe avoids allocating a key.
        self.changes
            .iter()
            .find(|((t, k), _)| t == event_type && k == state_key)
            .map(|(_, e)| e)
            .or_else(|| self.base.entry(event_type, state_key))
    }

    fn finish(self) -> Arc<RoomSnapshot> {
        if self.changes.is_empty() && self.head_event_id == self.base.head_event_id {
            return self.base;
        }
        let mut snapshot = (*self.base).clone();
        snapshot.head_event_id = self.head_event_id;
        snapshot.head_hash = self.head_hash;
        snapshot.head_depth = self.head_depth;
        snapshot.tips = self.tips;
        if self.changes.keys().any(|(t, _)| t == "m.room.member") {
            snapshot.members = Default::default();
            snapshot.member_rows = Default::default();
        }
        if !self.changes.is_empty() {
            let state = Arc::make_mut(&mut snapshot.state);
            for ((t, k), entry) in self.changes {
                state.entry(t).or_default().insert(k, entry);
            }
        }
        Arc::new(snapshot)
    }
}

impl RoomState for WorkingRoom {
    fn get(&self, event_type: &str, state_key: &str) -> Option<auth_rules::StateEvent<'_>> {
        self.entry(event_type, state_key)
            .map(|e| auth_rules::StateEvent {
                sender: &e.sender,
                content: &e.content,
            })
    }
}

/// How a batch is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Messages to rooms whose state is cached: built on the cached heads without locking, stored
    /// by one statement that moves each head only from the head it was built on. One round trip.
    Optimistic,
    /// Under `SELECT … FOR UPDATE` room locks in a transaction: everything else, and any batch the
    /// optimistic path found in conflict (another process wrote to the room, a retried txnId).
    Locked,
}

/// The connection a batch runs on: a transaction on the locked path, a plain connection (each
/// statement its own transaction) on the optimistic one.
enum BatchConn {
    Locked(sqlx::Transaction<'static, sqlx::Postgres>),
    Optimistic(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl std::ops::Deref for BatchConn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            BatchConn::Locked(tx) => tx,
            BatchConn::Optimistic(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for BatchConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            BatchConn::Locked(tx) => &mut *tx,
            BatchConn::Optimistic(conn) => &mut *conn,
        }
    }
}

/// Whether the optimistic path can take the batch: plain events (no state, no redactions), local
/// or received, to existing rooms. (Rooms whose state is not cached are found when the batch looks
/// for it.)
fn optimistic_fits(jobs: &[Job]) -> bool {
    let plain = |event_type: &str, state_key: Option<&String>| {
        state_key.is_none() && event_type != "m.room.redaction"
    };
    jobs.iter().all(|job| match (&job.target, &job.remote) {
        (Target::Existing(_), Some(pdu)) => {
            plain(&pdu.event.event_type, pdu.event.state_key.as_ref())
                && pdu.event.redacts.is_none()
        }
        (Target::Existing(_), None) => job
            .drafts
            .iter()
            .all(|d| plain(&d.event_type, d.state_key.as_ref())),
        (Target::New { .. } | Target::Joined { .. } | Target::OutOfBand { .. }, _) => false,
    })
}

/// Commits a batch; `Ok(None)` when the optimistic path met a conflict and nothing was stored.
async fn commit(
    state: &AppState,
    jobs: &[Job],
    path: Path,
) -> Result<Option<Vec<Result<Committed>>>> {
    if path == Path::Optimistic && !optimistic_fits(jobs) {
        return Ok(None);
    }
    let mut conn = match path {
        Path::Locked => {
            BatchConn::Locked(metrics::timed_acquire("requests", state.db.begin()).await?)
        }
        Path::Optimistic => BatchConn::Optimistic(
            metrics::timed_acquire("writer", state.writer_db.acquire()).await?,
        ),
    };
    let now = store::now_ms();

    let mut room_ids: Vec<&str> = jobs
        .iter()
        .filter_map(|j| match &j.target {
            Target::Existing(room) => Some(room.as_str()),
            Target::New { .. } | Target::Joined { .. } | Target::OutOfBand { .. } => None,
        })
        .collect();
    room_ids.sort_unstable();
    room_ids.dedup();
    let mut working: HashMap<String, WorkingRoom> = HashMap::new();
    match path {
        Path::Locked => {
            // Lock the rooms in a fixed order (no deadlocks between processes), then make sure the
            // cached state is the state at the locked head.
            for head in store::rooms::lock_rooms(&mut conn, &room_ids).await? {
                let snapshot = match state.rooms.get(&head.room_id) {
                    Some(s) if s.head_event_id == head.head_event_id => s,
                    _ => load_snapshot(&mut conn, &head).await?,
                };
                working.insert(head.room_id.clone(), WorkingRoom::new(snapshot));
            }
        }
        Path::Optimistic => {
            for room_id in &room_ids {
                let Some(snapshot) = state.rooms.get(room_id) else {
                    return Ok(None);
                };
                working.insert((*room_id).to_owned(), WorkingRoom::new(snapshot));
            }
        }
    }

    // Transactions already committed (a retry) answer with their first event.
    let txn_keys: Vec<&TxnKey> = jobs.iter().filter_map(|j| j.txn.as_ref()).collect();
    // Unlocked, they are not looked up: the batch statement refuses a used one, and the locked path
    // answers the retry.
    let mut seen_txns: HashMap<TxnKey, (String, String)> = match path {
        Path::Locked => store::events::find_txns(&mut conn, &txn_keys).await?,
        Path::Optimistic => HashMap::new(),
    };

    let mut built: Vec<BuiltEvent> = Vec::new();
    let mut outcomes: Vec<Result<Committed>> = Vec::with_capacity(jobs.len());
    let mut new_rooms: Vec<(String, RoomVersion, bool, Vec<String>)> = Vec::new();
    let mut txn_rows: Vec<(TxnKey, String)> = Vec::new();
    // Federation's cases: received events kept but not shown, rooms joined again, out-of-band
    // memberships (see `remote`).
    let mut aside = remote::Aside::default();
    for job in jobs {
        if let Some(key) = &job.txn
            && let Some((room_id, event_id)) = seen_txns.get(key)
        {
            outcomes.push(Ok(Committed {
                room_id: room_id.clone(),
                event_ids: vec![event_id.clone()],
                deduplicated: true,
            }));
            continue;
        }
        let (room_id, result) = match &job.target {
            Target::Existing(room_id) => match working.get_mut(room_id) {
                Some(room) => match &job.remote {
                    Some(pdu) => {
                        let result = remote::build_or_set_aside(&mut conn, room, pdu, &mut aside);
                        (room_id.clone(), result.await)
                    }
                    None => (room_id.clone(), build_job(state, room, &job.drafts, now)),
                },
                None => (room_id.clone(), Err(Error::not_found("Unknown room"))),
            },
            Target::Joined {
                version,
                events,
                history,
            } => match remote::joining(&mut conn, *version, events, history, &mut aside).await {
                Ok((room, fresh, existed)) => {
                    let room_id = room.base.room_id.clone();
                    if !existed {
                        new_rooms.push((room_id.clone(), *version, false, Vec::new()));
                    }
                    working.insert(room_id.clone(), room);
                    (room_id, Ok(fresh))
                }
                Err(e) => (String::new(), Err(e)),
            },
            Target::OutOfBand {
                version,
                event,
                invite_state,
            } => {
                let room_id = event.room_id.clone();
                let result = remote::out_of_band(
                    state,
                    &mut conn,
                    *version,
                    event,
                    invite_state,
                    &mut aside,
                );
                match result.await {
                    Ok((room, event, existed)) => {
                        if !existed {
                            new_rooms.push((room_id.clone(), *version, false, Vec::new()));
                        }
                        working.insert(room_id.clone(), room);
                        (room_id, Ok(vec![event]))
                    }
                    Err(e) => (room_id, Err(e)),
                }
            }
            Target::New {
                version,
                room_id,
                is_public,
                aliases,
            } => match build_new_room(state, *version, room_id.as_deref(), &job.drafts, now) {
                Ok((room, events)) => {
                    let room_id = room.base.room_id.clone();
                    new_rooms.push((room_id.clone(), *version, *is_public, aliases.clone()));
                    working.insert(room_id.clone(), room);
                    (room_id, Ok(events))
                }
                Err(e) => (String::new(), Err(e)),
            },
        };
        match result {
            Ok(events) => {
                let event_ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
                if let (Some(key), Some(first)) = (&job.txn, event_ids.first()) {
                    seen_txns.insert(key.clone(), (room_id.clone(), first.clone()));
                    txn_rows.push((key.clone(), first.clone()));
                }
                built.extend(events);
                outcomes.push(Ok(Committed {
                    room_id,
                    event_ids,
                    deduplicated: false,
                }));
            }
            Err(e) => outcomes.push(Err(e)),
        }
    }
    // A refusal may come from cached state that is behind another process's write (a join made
    // there a moment ago): only the locked path, which checks the cache against the room's head,
    // may refuse.
    // A resolved fork changes the current state beyond the batch's events: under the lock only.
    if path == Path::Optimistic && (outcomes.iter().any(Result::is_err) || aside.restores()) {
        return Ok(None);
    }
    aside.keep_soft_failed(&mut conn, now).await?;
    if built.is_empty() {
        if let BatchConn::Locked(tx) = conn {
            if aside.is_empty() {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
        }
        return Ok(Some(outcomes));
    }

    // Push rules are evaluated before the commit so that unread counts commit with their events.
    let new_events: Vec<push::NewEvent> = built.iter().map(push_event).collect();
    let evaluation = push::evaluate(state, &new_events, &aside.push_rooms()).await?;

    for (room_id, version, is_public, aliases) in &new_rooms {
        let room = &working[room_id];
        store::rooms::insert_room(
            &mut conn,
            room_id,
            room_versions::name(*version),
            *is_public,
            now,
        )
        .await?;
        for alias in aliases {
            if !store::rooms::insert_alias(&mut conn, alias, room_id, &room.base_sender(), now)
                .await?
            {
                return Err(Error::room_in_use("Room alias already taken"));
            }
        }
    }

    // Everything that needs no stream position comes first, under the room locks only.
    let mut redacted_state = Vec::new();
    for event in &built {
        if let Some(target) = &event.redacts
            && let Some(room) = apply_redaction(&mut conn, event, target).await?
        {
            redacted_state.push(room);
        }
    }
    let heads: Vec<(&str, &str, i64, Option<&str>)> = working
        .values()
        .map(|r| {
            (
                r.base.room_id.as_str(),
                r.head_event_id.as_str(),
                r.head_depth,
                // Unlocked: only from the head the events were built on.
                (path == Path::Optimistic).then_some(r.base.head_event_id.as_str()),
            )
        })
        .collect();
    let mut keys: HashSet<&str> = HashSet::new();
    let mut members: HashSet<&str> = HashSet::new();
    for e in &built {
        keys.insert(&e.room_id);
        if e.event_type == "m.room.member"
            && let Some(target) = &e.state_key
        {
            keys.insert(target);
            members.insert(target);
        }
    }
    let keys: Vec<String> = keys.into_iter().map(str::to_owned).collect();
    let members: Vec<String> = members.into_iter().map(str::to_owned).collect();
    let touched: Vec<String> = working.keys().cloned().collect();
    let payload = state.notifier.events_payload(&keys, &touched, &members);
    let outbound = remote::outbound(
        state,
        built.iter().filter(|e| !aside.is_out_of_band(&e.event_id)),
        &working,
    );

    // Positions, events, notifications, transaction keys, heads and the NOTIFY (delivered at
    // commit) in one statement: it takes the stream lock, held from there to the commit.
    let stored = store::events::insert_batch(
        &mut conn,
        &store::events::BatchWrite {
            events: &built,
            notifications: &evaluation.rows,
            txns: &txn_rows,
            now,
            heads: &heads,
            notify: (notifier::CHANNEL, &payload),
            outbound: &outbound,
        },
    )
    .await;
    let (last, notified) = match stored {
        Ok(stored) => stored,
        // Unlocked, another writer got there first (a head moved, a retried transaction ID was
        // stored meanwhile): nothing was stored; the locked path redoes the batch.
        Err(e) if path == Path::Optimistic && is_conflict(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let notified: HashSet<String> = notified.into_iter().collect();
    let first = last - built.len() as i64 + 1;
    let rows: Vec<NewEventRow<'_>> = built
        .iter()
        .enumerate()
        .map(|(i, e)| NewEventRow {
            stream_ordering: first + i as i64,
            event: e,
        })
        .collect();
    if let BatchConn::Locked(mut tx) = conn {
        aside.before_state(&mut tx).await?;
        store::rooms::apply_state(&mut tx, &rows).await?;
        aside.after_state(&mut tx).await?;
        tx.commit().await?;
    }

    if !outbound.is_empty() {
        state.outbox.wake();
    }
    for (_, room) in working {
        state.rooms.put(room.finish());
    }
    // A redacted state event changes the state's content: reload those rooms when next needed.
    for room in redacted_state {
        state.rooms.invalidate(&room);
    }
    // Before the wake-up: woken long polls answer from it.
    let mut notified_by_event: HashMap<&str, Vec<Notified>> = HashMap::new();
    for n in &evaluation.rows {
        notified_by_event
            .entry(n.event_id.as_str())
            .or_default()
            .push(Notified {
                user_id: n.user_id.clone(),
                thread_id: n.thread_id.clone(),
                highlight: n.highlight,
            });
    }
    state.recent.record(rows.iter().map(|row| {
        let notified = notified_by_event
            .remove(row.event.event_id.as_str())
            .unwrap_or_default();
        RecentEvent::new(row.event, row.stream_ordering, notified)
    }));
    state
        .joined_rooms
        .forget(members.iter().map(String::as_str));
    state
        .notifier
        .committed(last, keys.iter().map(String::as_str));
    if !notified.is_empty() {
        let state = state.clone();
        // `new_events` and `rows` both follow `built`, event for event.
        let new_events: Vec<push::NewEvent> = new_events
            .into_iter()
            .zip(&rows)
            .map(|(mut e, row)| {
                e.stream_ordering = row.stream_ordering;
                e
            })
            .collect();
        tokio::spawn(async move {
            if let Err(e) = push::deliver(&state, &new_events, evaluation, &notified).await {
                tracing::warn!(error = %e, "push delivery failed");
            }
        });
    }
    Ok(Some(outcomes))
}

/// A head that moved (the guard in `insert_batch`) or a key stored meanwhile (unique violation).
fn is_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "AX001" || code == "23505")
}

/// The push rules' view of a new event; positions are filled in once allocated.
fn push_event(e: &BuiltEvent) -> push::NewEvent {
    let thread_id = (e.rel_type.as_deref() == Some("m.thread"))
        .then(|| e.relates_to.clone())
        .flatten();
    push::NewEvent {
        event_id: e.event_id.clone(),
        room_id: e.room_id.clone(),
        sender: e.sender.clone(),
        event_type: e.event_type.clone(),
        state_key: e.state_key.clone(),
        content: e.content.clone(),
        stream_ordering: 0,
        thread_id,
    }
}

impl WorkingRoom {
    fn base_sender(&self) -> String {
        self.entry("m.room.create", "")
            .map(|e| e.sender.clone())
            .unwrap_or_default()
    }
}

/// Replaces the target's served form with its redaction (same room only). Returns the room when the
/// target was a state event, whose cached content is now stale.
async fn apply_redaction(
    conn: &mut PgConnection,
    redaction: &BuiltEvent,
    target_id: &str,
) -> Result<Option<String>> {
    let Some(target) = store::events::event_by_id(&mut *conn, target_id).await? else {
        return Ok(None);
    };
    if target.room_id != redaction.room_id {
        return Ok(None);
    }
    let version = store::rooms::room_version(&mut *conn, &target.room_id)
        .await?
        .and_then(|v| room_versions::parse(&v))
        .ok_or_else(|| Error::internal("redaction in a room of unknown version"))?;
    let json = room_versions::redact_client_json(version, &target.client_json)?;
    // Other servers are given the redacted PDU too (`/event`, `/state`, `/backfill`, joins), as
    // Synapse serves it: its signatures still verify, and its content is gone.
    let pdu = match store::events::pdus_of(&mut *conn, &[target_id.to_owned()])
        .await?
        .pop()
    {
        Some((_, pdu)) => Some(room_versions::redact_client_json(version, &pdu)?),
        None => None,
    };
    store::events::redact(conn, target_id, &redaction.event_id, &json, pdu.as_deref()).await?;
    Ok(target.state_key.is_some().then_some(target.room_id))
}

/// Checks and builds a job's events in order; on any refusal the room is left as it was.
fn build_job(
    state: &AppState,
    room: &mut WorkingRoom,
    drafts: &[EventDraft],
    now: i64,
) -> Result<Vec<BuiltEvent>> {
    let saved = (
        room.head_event_id.clone(),
        room.head_hash.clone(),
        room.head_depth,
        room.changes.clone(),
    );
    let mut out = Vec::with_capacity(drafts.len());
    for draft in drafts {
        match build_one(state, room, draft, now) {
            Ok(event) => out.push(event),
            Err(e) => {
                (
                    room.head_event_id,
                    room.head_hash,
                    room.head_depth,
                    room.changes,
                ) = saved;
                return Err(e);
            }
        }
    }
    Ok(out)
}

fn build_one(
    state: &AppState,
    room: &mut WorkingRoom,
    draft: &EventDraft,
    now: i64,
) -> Result<BuiltEvent> {
    let version = room.base.version;
    // The head, and the other branches' tips: this event merges them.
    let mut cited = vec![EventRef {
        id: room.head_event_id.clone(),
        hash: room.head_hash.clone(),
    }];
    cited.extend(room.tips.iter().cloned());
    let prev_events: Vec<String> = cited.iter().map(|r| r.id.clone()).collect();
    let view = draft_view(state, draft, None, &prev_events)?;
    auth_check::check(version, &view, |t, k| room.entry(t, k).map(|e| &e.view))
        .map_err(|e| Error::forbidden(e.0))?;
    if draft.kick {
        let target = draft.state_key.as_deref().unwrap_or_default();
        if !matches!(
            auth_rules::membership(room, target),
            Some("join" | "invite" | "knock")
        ) {
            return Err(Error::forbidden("The target user is not in the room"));
        }
    }
    if draft.guest_join {
        crate::service::guests::check_may_join(room.entry("m.room.guest_access", ""))?;
    }
    let auth_events = select_auth_events(version, room, &view);
    let place = Placement {
        version,
        room_id: Some(&room.base.room_id),
        prev_events: cited,
        auth_events,
        depth: room.head_depth + 1,
    };
    let mut event = events::build(state, draft, place, now)?;
    room.tips.clear();
    room.head_event_id = event.event_id.clone();
    room.head_hash = event.reference_hash.clone();
    room.head_depth = event.depth;
    if let Some(state_key) = &draft.state_key {
        if let Some(previous) = room.entry(&draft.event_type, state_key) {
            event.state_unsigned = Some(
                json!({
                    "prev_content": previous.content,
                    "prev_sender": previous.sender,
                    "replaces_state": previous.event_id,
                })
                .to_string(),
            );
        }
        let entry = state_entry(draft, &event, view)?;
        room.changes.insert(
            (draft.event_type.clone(), state_key.clone()),
            Arc::new(entry),
        );
    }
    Ok(event)
}

/// A local event built and signed on the room's current state (which must authorize it), not
/// stored: an invite of another server's user, which that server signs too before it is stored
/// with [`Writer::submit_remote`] (checked again then, on the state of that moment).
pub fn prepare(
    state: &AppState,
    snapshot: Arc<RoomSnapshot>,
    draft: &EventDraft,
) -> Result<IncomingPdu> {
    let mut room = WorkingRoom::new(snapshot);
    let prev_events = [room.head_event_id.clone()];
    let event = build_one(state, &mut room, draft, store::now_ms())?;
    let view = draft_view(state, draft, Some(&room.base.room_id), &prev_events)?
        .with_id(&event.event_id)
        .map_err(|e| Error::internal(e.0))?;
    Ok(IncomingPdu {
        event,
        view,
        may_soft_fail: false,
    })
}

/// The authorization rules' view of a draft, before it has an event ID.
fn draft_view(
    state: &AppState,
    draft: &EventDraft,
    room_id: Option<&str>,
    prev_events: &[String],
) -> Result<PduView> {
    PduView::new(
        EventFields {
            event_id: None,
            room_id,
            sender: &draft.sender,
            event_type: &draft.event_type,
            state_key: draft.state_key.as_deref(),
            prev_events,
            redacts: draft.redacts.as_deref(),
        },
        &draft.content,
        state.server_name.as_str(),
    )
    .map_err(|e| Error::bad_json(e.0))
}

/// The cached state entry of a state event just built, reusing its authorization view.
fn state_entry(draft: &EventDraft, event: &BuiltEvent, view: PduView) -> Result<StateEntry> {
    Ok(StateEntry {
        event_id: event.event_id.clone(),
        sender: draft.sender.clone(),
        content: Value::Object(draft.content.clone()),
        view: view
            .with_id(&event.event_id)
            .map_err(|e| Error::internal(e.0))?,
        reference_hash: event.reference_hash.clone(),
    })
}

/// Builds a new room's events: the create event first, which fixes the room ID in v12.
fn build_new_room(
    state: &AppState,
    version: RoomVersion,
    room_id: Option<&str>,
    drafts: &[EventDraft],
    now: i64,
) -> Result<(WorkingRoom, Vec<BuiltEvent>)> {
    let (create, rest) = drafts
        .split_first()
        .ok_or_else(|| Error::internal("a new room needs events"))?;
    let room_id = if version.room_id_from_create() {
        None
    } else {
        room_id
    };
    let view = draft_view(state, create, room_id, &[])?;
    auth_check::check(version, &view, |_, _| None).map_err(|e| Error::bad_json(e.0))?;
    let place = Placement {
        version,
        room_id,
        prev_events: vec![],
        auth_events: vec![],
        depth: 1,
    };
    let create_event = events::build(state, create, place, now)?;
    let mut snapshot = RoomSnapshot {
        room_id: create_event.room_id.clone(),
        version,
        head_event_id: create_event.event_id.clone(),
        head_hash: create_event.reference_hash.clone(),
        head_depth: 1,
        tips: Vec::new(),
        state: Default::default(),
        members: Default::default(),
        member_rows: Default::default(),
    };
    let entry = state_entry(create, &create_event, view)?;
    Arc::make_mut(&mut snapshot.state)
        .entry("m.room.create".into())
        .or_default()
        .insert(String::new(), Arc::new(entry));
    let mut room = WorkingRoom::new(Arc::new(snapshot));
    let mut events = vec![create_event];
    events.extend(build_job(state, &mut room, rest, now)?);
    Ok((room, events))
}

/// The spec's auth events, as ruma selects them (create before v12, power levels, the sender's
/// membership; for membership events the target's, the join rules, and in v8+ the authorising
/// user's membership), from the state before the event.
fn select_auth_events(version: RoomVersion, room: &WorkingRoom, view: &PduView) -> Vec<EventRef> {
    use ruma::state_res::Event as _;
    let types = ruma::state_res::auth_types_for_event(
        view.event_type(),
        view.sender(),
        view.state_key(),
        view.content(),
        &version.rules().authorization,
    )
    .unwrap_or_default();
    let mut refs: Vec<EventRef> = Vec::with_capacity(types.len());
    for (t, k) in types {
        if let Some(e) = room.entry(&t.to_string(), &k)
            && !refs.iter().any(|r| r.id == e.event_id)
        {
            refs.push(EventRef {
                id: e.event_id.clone(),
                hash: e.reference_hash.clone(),
            });
        }
    }
    refs
}

/// Reads a room's current state from the database (inside the locking transaction).
async fn load_snapshot(
    conn: &mut PgConnection,
    head: &store::rooms::RoomHead,
) -> Result<Arc<RoomSnapshot>> {
    let version = room_versions::parse(&head.room_version).ok_or_else(|| {
        Error::internal(format!(
            "room {} has unknown version {}",
            head.room_id, head.room_version
        ))
    })?;
    let mut snapshot = RoomSnapshot {
        room_id: head.room_id.clone(),
        version,
        head_event_id: head.head_event_id.clone(),
        head_hash: None,
        head_depth: head.head_depth,
        tips: Vec::new(),
        state: Default::default(),
        members: Default::default(),
        member_rows: Default::default(),
    };
    let rows = store::rooms::current_state_events(&mut *conn, &head.room_id).await?;
    // v1/v2 events cite the reference hashes of the events they reference: computed from the PDUs.
    let mut hashes = if version.server_chosen_event_ids() {
        let mut ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
        ids.push(head.head_event_id.clone());
        reference_hashes(conn, version, &ids).await?
    } else {
        HashMap::new()
    };
    snapshot.head_hash = hashes.get(&head.head_event_id).cloned();
    for row in rows {
        let event: Value = serde_json::from_str(&row.client_json).map_err(Error::internal)?;
        let content = event
            .get("content")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        let mut entry = StateEntry::new(
            row.event_id,
            &row.event_type,
            &row.state_key,
            row.sender,
            content,
        )
        .map_err(|e| Error::internal(e.0))?;
        entry.reference_hash = hashes.remove(&entry.event_id);
        Arc::make_mut(&mut snapshot.state)
            .entry(row.event_type)
            .or_default()
            .insert(row.state_key, Arc::new(entry));
    }
    Ok(Arc::new(snapshot))
}

/// The reference hashes of the events' PDUs, by event ID (v1/v2 events cite them).
async fn reference_hashes(
    conn: &mut PgConnection,
    version: RoomVersion,
    event_ids: &[String],
) -> Result<HashMap<String, String>> {
    let mut out = HashMap::with_capacity(event_ids.len());
    for (id, pdu) in store::events::pdus_of(conn, event_ids).await? {
        let pdu: ruma::CanonicalJsonObject = serde_json::from_str(&pdu).map_err(Error::internal)?;
        let hash =
            ruma::signatures::reference_hash(&pdu, version.rules()).map_err(Error::internal)?;
        out.insert(id, hash);
    }
    Ok(out)
}

/// The cached snapshot of a room, loaded if needed (outside any lock: for reads and pre-checks only).
pub async fn room_snapshot(state: &AppState, room_id: &str) -> Result<Option<Arc<RoomSnapshot>>> {
    if let Some(snapshot) = state.rooms.get(room_id) {
        return Ok(Some(snapshot));
    }
    room_snapshot_on(state, &mut *state.db.acquire().await?, room_id).await
}

/// As `room_snapshot`, reading through `conn` (outside any transaction: what it reads is cached)
/// on a miss.
pub async fn room_snapshot_on(
    state: &AppState,
    conn: &mut PgConnection,
    room_id: &str,
) -> Result<Option<Arc<RoomSnapshot>>> {
    cached_snapshot(&state.rooms, conn, room_id).await
}

/// As `room_snapshot_on`, for callers that hold the room cache rather than the whole state.
pub async fn cached_snapshot(
    rooms: &crate::service::room_cache::RoomCache,
    conn: &mut PgConnection,
    room_id: &str,
) -> Result<Option<Arc<RoomSnapshot>>> {
    if let Some(snapshot) = rooms.get(room_id) {
        return Ok(Some(snapshot));
    }
    let Some(head) = store::rooms::get_head(&mut *conn, room_id).await? else {
        return Ok(None);
    };
    let snapshot = load_snapshot(conn, &head).await?;
    // Only cache what is still current; a racing writer may have moved on.
    if rooms.get(room_id).is_none() {
        rooms.put(snapshot.clone());
    }
    Ok(Some(snapshot))
}

//! Who waits for what. A long-polling /sync subscribes under keys (its user ID and the rooms it is in);
//! a commit wakes only the subscribers of the keys it touched. Commits on other Axon processes arrive
//! through PostgreSQL LISTEN/NOTIFY on one channel, which also carries cache invalidations.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use crate::{AppState, Result};

pub const CHANNEL: &str = "axon";
/// NOTIFY payloads are capped at 8000 bytes; past this we tell everyone to wake instead.
const MAX_PAYLOAD: usize = 7000;

pub struct Notifier {
    /// Distinguishes our own NOTIFYs from other processes'.
    pub instance: String,
    waiters: Mutex<Waiters>,
    /// The highest stream position this process knows to be committed: its own commits and those
    /// other processes announced. Raised before the wake-up of the commit it stands for, so a
    /// subscriber that reads it after subscribing either sees the commit here or gets its wake-up.
    seen: AtomicI64,
    /// Set when the server shuts down: the LISTEN task then ends quietly when its connection goes.
    stopping: std::sync::atomic::AtomicBool,
    /// Keys whose wake-up waits for the next batch (`wake_soon`); `None` once it grew too large,
    /// which wakes everyone instead.
    deferred: Mutex<Option<HashSet<String>>>,
    /// The pool the LISTEN tasks take their connections from (see `listener_pool`).
    listeners: std::sync::OnceLock<sqlx::PgPool>,
}

/// The key a long poll that wants presence subscribes under for one of its rooms: presence
/// changes of room mates wake only those (a client filtering presence out is not woken for it).
pub fn presence_key(room_id: &str) -> String {
    format!("presence:{room_id}")
}

/// How often deferred wake-ups go out: a subscriber is woken at most this often for changes
/// that are not urgent, however many there are.
pub const DEFERRED_WAKE_INTERVAL: Duration = Duration::from_millis(500);
/// More deferred keys than this wake everyone instead (bounded memory).
const MAX_DEFERRED: usize = 100_000;

pub struct Waiter {
    notify: Notify,
}

/// The subscriptions by key. Keys nobody listens to any more (a device's, a room's after its
/// pollers went) are swept whenever the map has doubled since the last sweep.
#[derive(Default)]
struct Waiters {
    by_key: HashMap<String, WaiterList>,
    /// The number of keys after the last sweep.
    swept_len: usize,
}

impl Waiters {
    fn add(&mut self, key: &str, waiter: &Arc<Waiter>) {
        match self.by_key.get_mut(key) {
            Some(list) => list.push(Arc::downgrade(waiter)),
            None => {
                if self.by_key.len() >= 2 * self.swept_len.max(64) {
                    self.by_key.retain(|_, list| {
                        list.prune();
                        !list.is_empty()
                    });
                    self.swept_len = self.by_key.len();
                }
                let mut list = WaiterList::default();
                list.push(Arc::downgrade(waiter));
                self.by_key.insert(key.to_owned(), list);
            }
        }
    }
}

/// The subscriptions under one key. Entries of dropped subscriptions are pruned lazily, and only
/// once the list has doubled since the last pruning: subscribing stays O(1) amortised even when
/// thousands of long polls share one key (a big room), where pruning on every subscription made a
/// crowd re-subscribing after a wake-up quadratic.
#[derive(Default)]
struct WaiterList {
    entries: Vec<Weak<Waiter>>,
    /// The length after the last pruning.
    pruned_len: usize,
}

impl WaiterList {
    fn push(&mut self, waiter: Weak<Waiter>) {
        if self.entries.len() >= 2 * self.pruned_len.max(8) {
            self.prune();
        }
        self.entries.push(waiter);
    }

    fn prune(&mut self) {
        self.entries.retain(|w| w.strong_count() > 0);
        self.pruned_len = self.entries.len();
    }

    /// Wakes every live subscription, dropping the dead ones.
    fn wake(&mut self) {
        self.entries.retain(|w| match w.upgrade() {
            Some(waiter) => {
                waiter.notify.notify_one();
                true
            }
            None => false,
        });
        self.pruned_len = self.entries.len();
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A registration under some keys; dropping it is enough to unsubscribe (entries are pruned lazily).
pub struct Subscription {
    waiter: Arc<Waiter>,
}

impl Subscription {
    /// Returns when a subscribed key is woken (or was woken since subscribing), or at the deadline.
    pub async fn wait(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.waiter.notify.notified())
            .await
            .is_ok()
    }
}

/// What a commit announces to the other processes.
#[derive(Serialize, Deserialize)]
pub struct Message {
    /// Sending instance.
    pub i: String,
    /// Keys to wake; `None` means everyone.
    pub k: Option<Vec<String>>,
    /// Rooms whose cached state is stale.
    #[serde(default)]
    pub r: Vec<String>,
    /// A cache to clear ("tokens").
    #[serde(default)]
    pub c: Option<String>,
    /// Users whose push rules or ignore list changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub p: Vec<String>,
    /// Users whose memberships changed (their cached joined rooms are stale).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub m: Vec<String>,
    /// Rooms whose presence subscribers wake with the next batch of deferred wake-ups (see
    /// `wake_soon`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub d: Vec<String>,
    /// The stream position the commit reached; added by the statement that sends the message
    /// (`store::stream::notify`), where the position is known.
    #[serde(default, skip_serializing)]
    pub s: Option<i64>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Notifier {
    pub fn new() -> Self {
        Self {
            instance: crate::service::auth::random_string(12),
            waiters: Mutex::new(Waiters::default()),
            seen: AtomicI64::new(0),
            stopping: Default::default(),
            deferred: Mutex::new(Some(HashSet::new())),
            listeners: std::sync::OnceLock::new(),
        }
    }

    /// The pool of the LISTEN tasks (this one's and typing's), apart from the one requests share:
    /// a listener keeps its connection for good. One per process, closed by `stop`.
    pub fn listener_pool(&self, db: &sqlx::PgPool) -> &sqlx::PgPool {
        self.listeners.get_or_init(|| {
            let options = (*db.connect_options())
                .clone()
                .application_name(LISTENER_APPLICATION_NAME);
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(LISTEN_TASKS)
                .connect_lazy_with(options)
        })
    }

    /// Wakes the presence subscribers of `rooms` (`presence_key`) with the next batch of
    /// deferred wake-ups rather than now: presence is not urgent and comes in crowds, so a
    /// subscriber wakes at most once per `DEFERRED_WAKE_INTERVAL` for all of it.
    pub fn wake_soon<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut deferred = self.deferred.lock().unwrap();
        if let Some(set) = deferred.as_mut() {
            for key in keys {
                if !set.contains(key) {
                    set.insert(key.to_owned());
                }
            }
            if set.len() > MAX_DEFERRED {
                *deferred = None;
            }
        }
    }

    /// Sends the deferred wake-ups gathered since the last call: to the subscribers of the
    /// rooms' presence keys (`presence_key`), that is only to long polls that want presence.
    pub fn wake_deferred(&self) {
        let taken = self.deferred.lock().unwrap().replace(HashSet::new());
        match taken {
            Some(rooms) if rooms.is_empty() => {}
            Some(rooms) => {
                let keys: Vec<String> = rooms.iter().map(|room| presence_key(room)).collect();
                self.wake(keys.iter().map(String::as_str))
            }
            None => self.wake_all(),
        }
    }

    /// The server is shutting down: connection losses from here on are expected.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Marked closed now (the listeners keep their connections, so the close is not awaited):
        // a connection they give back while the database goes away is closed, not pinged against
        // it (sqlx would log a warning).
        if let Some(pool) = self.listeners.get() {
            drop(pool.close());
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// See `seen`.
    pub fn seen(&self) -> i64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Records that positions up to `position` are committed (call before the wake-up).
    pub fn raise_seen(&self, position: i64) {
        self.seen.fetch_max(position, Ordering::SeqCst);
    }

    /// After reconnecting to the database: its stream `head`, read when `seen` was `before`, is
    /// what is committed, even below what was seen (a restored database, a failover to a replica
    /// that lagged). Otherwise only raised: our own commits may have moved on since the read.
    fn reset_seen(&self, before: i64, head: i64) {
        let lowered = before > head
            && self
                .seen
                .compare_exchange(before, head, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
        if !lowered {
            self.raise_seen(head);
        }
    }

    /// After a commit that took stream positions up to `position`: wakes the subscribers of `keys`.
    pub fn committed<'a>(&self, position: i64, keys: impl IntoIterator<Item = &'a str>) {
        self.raise_seen(position);
        self.wake(keys);
    }

    pub fn subscribe<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Subscription {
        // notify_one stores a permit when nobody is waiting yet, so a wake between subscribing and
        // waiting is not lost.
        let subscription = Subscription {
            waiter: Arc::new(Waiter {
                notify: Notify::new(),
            }),
        };
        self.extend(&subscription, keys);
        subscription
    }

    /// Registers a subscription under more keys (from now on).
    pub fn extend<'a>(&self, subscription: &Subscription, keys: impl IntoIterator<Item = &'a str>) {
        let mut waiters = self.waiters.lock().unwrap();
        for key in keys {
            waiters.add(key, &subscription.waiter);
        }
    }

    /// How many live subscriptions `key` has (for tests and metrics).
    pub fn subscribers(&self, key: &str) -> usize {
        let waiters = self.waiters.lock().unwrap();
        waiters.by_key.get(key).map_or(0, |list| {
            list.entries.iter().filter(|w| w.strong_count() > 0).count()
        })
    }

    /// Wakes the subscribers of `keys` for a change outside the stream (typing, media); a stream
    /// change goes through `committed`.
    pub fn wake<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut waiters = self.waiters.lock().unwrap();
        for key in keys {
            if let Some(list) = waiters.by_key.get_mut(key) {
                list.wake();
                if list.is_empty() {
                    waiters.by_key.remove(key);
                }
            }
        }
    }

    pub fn wake_all(&self) {
        let mut waiters = self.waiters.lock().unwrap();
        for list in waiters.by_key.values_mut() {
            list.wake();
        }
        waiters.by_key.retain(|_, list| !list.is_empty());
        waiters.swept_len = waiters.by_key.len();
    }

    /// The NOTIFY payload for a commit that wakes `keys`.
    pub fn payload(&self, keys: &[String]) -> String {
        self.encode(Message {
            k: Some(keys.to_vec()),
            ..self.message()
        })
    }

    /// The NOTIFY payload for a batch of events: it wakes `keys`, changes the state of `rooms` and
    /// the memberships of `members`.
    pub fn events_payload(&self, keys: &[String], rooms: &[String], members: &[String]) -> String {
        self.encode(Message {
            k: Some(keys.to_vec()),
            r: rooms.to_vec(),
            m: members.to_vec(),
            ..self.message()
        })
    }

    /// The NOTIFY payload for a change of `user_id`'s push rules (waking `keys`).
    pub fn push_rules_payload(&self, keys: &[String], user_id: &str) -> String {
        self.encode(Message {
            k: Some(keys.to_vec()),
            p: vec![user_id.to_owned()],
            ..self.message()
        })
    }

    /// The NOTIFY payload for a commit that wakes `keys` now and `later` with the next batch of
    /// deferred wake-ups.
    pub fn deferred_payload(&self, keys: &[String], later: &[String]) -> String {
        self.encode(Message {
            k: Some(keys.to_vec()),
            d: later.to_vec(),
            ..self.message()
        })
    }

    /// A message from this process that asks nothing yet.
    fn message(&self) -> Message {
        Message {
            i: self.instance.clone(),
            k: Some(Vec::new()),
            r: Vec::new(),
            c: None,
            p: Vec::new(),
            m: Vec::new(),
            d: Vec::new(),
            s: None,
        }
    }

    fn encode(&self, message: Message) -> String {
        let text = serde_json::to_string(&message).unwrap_or_default();
        if text.len() <= MAX_PAYLOAD {
            return text;
        }
        // Too long to send: everyone wakes and forgets every room and membership.
        let everything = Message {
            k: None,
            c: Some("rooms".into()),
            p: message.p,
            ..self.message()
        };
        serde_json::to_string(&everything).unwrap_or_default()
    }
}

/// Tells every other process to drop a cache ("tokens", "rooms", "erased").
pub async fn broadcast_invalidation(state: &AppState, cache: &str) -> Result<()> {
    let message = Message {
        c: Some(cache.into()),
        ..state.notifier.message()
    };
    crate::store::stream::notify(
        &state.db,
        CHANNEL,
        &serde_json::to_string(&message).unwrap_or_default(),
    )
    .await?;
    Ok(())
}

/// After this long, one of our own commits whose position was never raised here lost its reply (the
/// commit landed, the code after it never ran): its message is applied as another process's.
const OWN_COMMIT_GRACE: Duration = Duration::from_secs(1);

/// Applies a message from another process: drop stale caches, then wake the waiters.
fn apply(state: &AppState, message: Message) {
    if message.i == state.notifier.instance {
        // Normally the committing code has done all this itself, or is about to.
        if let Some(position) = message.s.filter(|s| *s > state.notifier.seen()) {
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(OWN_COMMIT_GRACE).await;
                if state.notifier.seen() < position {
                    tracing::warn!(
                        position,
                        "a commit of ours was not followed up; applying it"
                    );
                    apply_other(&state, message);
                }
            });
        }
        return;
    }
    apply_other(state, message);
}

fn apply_other(state: &AppState, message: Message) {
    for room in &message.r {
        state.rooms.invalidate(room);
    }
    for user in &message.p {
        state.push_rules.forget(user);
        state.ignored.forget(user);
    }
    state
        .joined_rooms
        .forget(message.m.iter().map(String::as_str));
    match message.c.as_deref() {
        Some("tokens") => state.tokens.clear(),
        Some("erased") => state.erased.forget(),
        Some("rooms") => {
            state.rooms.clear();
            state.joined_rooms.clear();
        }
        _ => {}
    }
    if let Some(position) = message.s {
        state.notifier.raise_seen(position);
    }
    state
        .notifier
        .wake_soon(message.d.iter().map(String::as_str));
    match message.k {
        Some(keys) => state.notifier.wake(keys.iter().map(String::as_str)),
        None => state.notifier.wake_all(),
    }
}

/// The `application_name` of the LISTEN connections, for telling them apart in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "axon listener";

/// The LISTEN tasks: the notifier's and typing's.
const LISTEN_TASKS: u32 = 2;

/// Sends the deferred wake-ups every `DEFERRED_WAKE_INTERVAL`.
pub fn start_deferred_waker(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DEFERRED_WAKE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if state.notifier.is_stopping() {
                break;
            }
            state.notifier.wake_deferred();
        }
    });
}

/// Listens for the other processes' commits. Subscribes before returning, so nothing committed after
/// start-up is missed.
pub async fn start_listener(state: AppState) -> Result<()> {
    let mut listener = PgListener::connect_with(state.notifier.listener_pool(&state.db)).await?;
    listener.listen(CHANNEL).await?;
    // Listening first: a commit after this read is announced to us.
    state
        .notifier
        .raise_seen(crate::store::stream::current(&mut listener).await?);
    tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    ::metrics::counter!(crate::service::metrics::names::NOTIFICATIONS).increment(1);
                    match serde_json::from_str::<Message>(notification.payload()) {
                        Ok(message) => apply(&state, message),
                        Err(e) => tracing::warn!(error = %e, "unreadable notification"),
                    }
                }
                // Shutting down: the database goes away on purpose.
                _ if state.notifier.is_stopping() => break,
                // The connection dropped (and sqlx may have failed to reconnect): notifications
                // may be lost.
                Ok(None) => {
                    tracing::warn!("LISTEN connection lost; reconnecting");
                    recover(&state, &mut listener).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    recover(&state, &mut listener).await;
                }
            }
        }
    });
    Ok(())
}

/// After notifications may have been lost: listen again, learn the stream head, and then assume
/// everything changed.
async fn recover(state: &AppState, listener: &mut PgListener) {
    ::metrics::counter!(crate::service::metrics::names::LISTEN_RECONNECTS).increment(1);
    // The database may have restarted: the pools' idle connections are then dead too.
    crate::store::pool::connection_lost();
    // A query through the listener reconnects it and listens again.
    loop {
        if state.notifier.is_stopping() {
            return;
        }
        let before = state.notifier.seen();
        match crate::store::stream::current(&mut *listener).await {
            Ok(head) => break state.notifier.reset_seen(before, head),
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN reconnection failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    state.rooms.clear();
    state.tokens.clear();
    state.push_rules.clear();
    state.ignored.clear();
    state.erased.forget();
    state.joined_rooms.clear();
    // What this process remembers by stream position, in case the database went back in time.
    state.recent.clear();
    state.sync_counts.clear();
    state.notifier.wake_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_subscriptions_do_not_pile_up_under_a_busy_key() {
        let notifier = Notifier::new();
        let keep = notifier.subscribe(["room"]);
        for _ in 0..10_000 {
            drop(notifier.subscribe(["room"]));
        }
        let waiters = notifier.waiters.lock().unwrap();
        assert!(waiters.by_key["room"].entries.len() <= 32);
        drop(waiters);
        notifier.wake(["room"]);
        assert_eq!(
            notifier.waiters.lock().unwrap().by_key["room"]
                .entries
                .len(),
            1
        );
        drop(keep);
    }

    #[test]
    fn keys_nobody_listens_to_are_swept() {
        let notifier = Notifier::new();
        for i in 0..10_000 {
            drop(notifier.subscribe([format!("device:{i}").as_str()]));
        }
        assert!(notifier.waiters.lock().unwrap().by_key.len() <= 256);
    }

    #[tokio::test]
    async fn a_wake_reaches_every_live_subscription() {
        let notifier = Notifier::new();
        let subs: Vec<_> = (0..100).map(|_| notifier.subscribe(["room"])).collect();
        for _ in 0..1_000 {
            drop(notifier.subscribe(["room"]));
        }
        notifier.wake(["room"]);
        for sub in &subs {
            assert!(sub.wait(Duration::from_millis(10)).await);
        }
    }

    #[test]
    fn the_position_the_statement_appends_is_read_back() {
        let notifier = Notifier::new();
        let payload = notifier.events_payload(&["!r:x".into()], &[], &["@a:x".into()]);
        assert!(!payload.contains("\"s\""), "{payload}");
        // What `store::stream::notify` sends: the object with `s` added before its closing brace.
        let sent = format!("{},\"s\":42}}", &payload[..payload.len() - 1]);
        let message: Message = serde_json::from_str(&sent).unwrap();
        assert_eq!(message.s, Some(42));
        assert_eq!(message.m, vec!["@a:x".to_owned()]);
    }

    #[test]
    fn committed_raises_what_was_seen_and_never_lowers_it() {
        let notifier = Notifier::new();
        notifier.committed(7, ["@a:x"]);
        notifier.raise_seen(5);
        assert_eq!(notifier.seen(), 7);
    }

    #[test]
    fn a_reconnection_lowers_what_was_seen_only_below_the_databases_head() {
        let notifier = Notifier::new();
        notifier.raise_seen(10);
        // Our own commit raced the head's read: the head read before it is no reason to lower.
        notifier.reset_seen(9, 9);
        assert_eq!(notifier.seen(), 10);
        // The database's head is behind what was seen before the read: it was restored.
        notifier.reset_seen(10, 4);
        assert_eq!(notifier.seen(), 4);
        notifier.reset_seen(4, 6);
        assert_eq!(notifier.seen(), 6);
    }
}

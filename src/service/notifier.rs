//! Who waits for what. A long-polling /sync subscribes under keys (its user ID and the rooms it is in);
//! a commit wakes only the subscribers of the keys it touched. Commits on other Axon processes arrive
//! through PostgreSQL LISTEN/NOTIFY on one channel, which also carries cache invalidations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    waiters: Mutex<HashMap<String, Vec<Weak<Waiter>>>>,
    /// Counts wake-ups: a subscriber compares it around its subscription to know whether a wake-up
    /// may have gone by before it was listening.
    wakes: AtomicU64,
}

pub struct Waiter {
    notify: Notify,
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
    /// Users whose push rules changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub p: Vec<String>,
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
            waiters: Mutex::new(HashMap::new()),
            wakes: AtomicU64::new(0),
        }
    }

    /// How many wake-ups there have been (see `wakes`).
    pub fn wake_count(&self) -> u64 {
        self.wakes.load(Ordering::SeqCst)
    }

    pub fn subscribe<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Subscription {
        // notify_one stores a permit when nobody is waiting yet, so a wake between subscribing and
        // waiting is not lost.
        let waiter = Arc::new(Waiter {
            notify: Notify::new(),
        });
        let mut waiters = self.waiters.lock().unwrap();
        for key in keys {
            let list = waiters.entry(key.to_owned()).or_default();
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&waiter));
        }
        Subscription { waiter }
    }

    pub fn wake<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        let mut waiters = self.waiters.lock().unwrap();
        for key in keys {
            if let Some(list) = waiters.get_mut(key) {
                list.retain(|w| match w.upgrade() {
                    Some(waiter) => {
                        waiter.notify.notify_one();
                        true
                    }
                    None => false,
                });
                if list.is_empty() {
                    waiters.remove(key);
                }
            }
        }
    }

    pub fn wake_all(&self) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        let mut waiters = self.waiters.lock().unwrap();
        for waiter in waiters.values().flatten().filter_map(Weak::upgrade) {
            waiter.notify.notify_one();
        }
        waiters.retain(|_, list| list.iter().any(|w| w.strong_count() > 0));
    }

    /// The NOTIFY payload for a commit touching `keys` and the cached state of `rooms`.
    pub fn payload(&self, keys: &[String], rooms: &[String]) -> String {
        self.encode(keys, rooms, &[])
    }

    /// The NOTIFY payload for a change of `user_id`'s push rules (waking `keys`).
    pub fn push_rules_payload(&self, keys: &[String], user_id: &str) -> String {
        self.encode(keys, &[], &[user_id.to_owned()])
    }

    fn encode(&self, keys: &[String], rooms: &[String], push_rules: &[String]) -> String {
        let message = Message {
            i: self.instance.clone(),
            k: Some(keys.to_vec()),
            r: rooms.to_vec(),
            c: None,
            p: push_rules.to_vec(),
        };
        let text = serde_json::to_string(&message).unwrap_or_default();
        if text.len() <= MAX_PAYLOAD {
            return text;
        }
        let everything = Message {
            i: self.instance.clone(),
            k: None,
            r: vec![],
            c: Some("rooms".into()),
            p: push_rules.to_vec(),
        };
        serde_json::to_string(&everything).unwrap_or_default()
    }
}

/// Tells every other process to drop a cache ("tokens", "rooms").
pub async fn broadcast_invalidation(state: &AppState, cache: &str) -> Result<()> {
    let message = Message {
        i: state.notifier.instance.clone(),
        k: Some(vec![]),
        r: vec![],
        c: Some(cache.into()),
        p: Vec::new(),
    };
    crate::store::stream::notify(
        &state.db,
        CHANNEL,
        &serde_json::to_string(&message).unwrap_or_default(),
    )
    .await?;
    Ok(())
}

/// Applies a message from another process: drop stale caches, then wake the waiters.
fn apply(state: &AppState, message: Message) {
    if message.i == state.notifier.instance {
        return;
    }
    for room in &message.r {
        state.rooms.invalidate(room);
    }
    for user in &message.p {
        state.push_rules.forget(user);
    }
    match message.c.as_deref() {
        Some("tokens") => state.tokens.clear(),
        Some("rooms") => state.rooms.clear(),
        _ => {}
    }
    match message.k {
        Some(keys) => state.notifier.wake(keys.iter().map(String::as_str)),
        None => state.notifier.wake_all(),
    }
}

/// A one-connection pool of its own for a LISTEN task: a listener keeps its connection for good, and
/// must not take it from the pool the requests share.
pub fn listener_pool(db: &sqlx::PgPool) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with((*db.connect_options()).clone())
}

/// Listens for the other processes' commits. Subscribes before returning, so nothing committed after
/// start-up is missed.
pub async fn start_listener(state: AppState) -> Result<()> {
    let mut listener = PgListener::connect_with(&listener_pool(&state.db)).await?;
    listener.listen(CHANNEL).await?;
    tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    match serde_json::from_str::<Message>(notification.payload()) {
                        Ok(message) => apply(&state, message),
                        Err(e) => tracing::warn!(error = %e, "unreadable notification"),
                    }
                }
                // The connection dropped and notifications may be lost: assume everything changed.
                Ok(None) => {
                    tracing::warn!("LISTEN connection lost; reconnecting");
                    state.rooms.clear();
                    state.tokens.clear();
                    state.push_rules.clear();
                    state.notifier.wake_all();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(())
}

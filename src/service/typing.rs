//! Typing notifications, in memory. Every Axon process keeps the full picture: a change is applied
//! locally and sent to the other processes on a LISTEN/NOTIFY channel of its own; each process
//! expires typers itself (the expiry is an absolute time, so all processes agree).
//!
//! The sync token is a millisecond clock that only moves forward: each change is stamped with a
//! value above every token handed out so far, so "changed after the token" never misses one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::postgres::PgListener;

use crate::service::writer;
use crate::{AppState, Error, Result, store};

pub const CHANNEL: &str = "axon_typing";
const DEFAULT_TIMEOUT_MS: i64 = 30_000;
/// Clients ask for 30 s; a longer timeout is cut to this.
const MAX_TIMEOUT_MS: i64 = 10 * 60 * 1000;

pub struct Typing {
    inner: Mutex<Inner>,
}

struct Inner {
    rooms: HashMap<String, RoomTyping>,
    /// The newest stamp given out (change or token).
    clock: i64,
}

#[derive(Default)]
struct RoomTyping {
    /// user → expiry (ms).
    users: HashMap<String, i64>,
    changed: i64,
}

impl Inner {
    fn stamp(&mut self) -> i64 {
        self.clock = (self.clock + 1).max(store::now_ms());
        self.clock
    }

    /// Drops the room's expired typers; true when some were dropped.
    fn expire(&mut self, room_id: &str, now: i64) -> bool {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return false;
        };
        let before = room.users.len();
        room.users.retain(|_, expiry| *expiry > now);
        if room.users.len() == before {
            return false;
        }
        let stamp = self.stamp();
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.changed = stamp;
        }
        true
    }
}

/// A change as sent between processes.
#[derive(Serialize, Deserialize)]
struct Message {
    /// Sending instance.
    i: String,
    room_id: String,
    user_id: String,
    typing: bool,
    timeout_ms: i64,
    at_ms: i64,
}

impl Default for Typing {
    fn default() -> Self {
        Self::new()
    }
}

impl Typing {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                rooms: HashMap::new(),
                clock: store::now_ms(),
            }),
        }
    }

    /// Applies a change; true when the room's set of typers changed.
    fn apply(
        &self,
        room_id: &str,
        user_id: &str,
        typing: bool,
        expires_at: i64,
        at_ms: i64,
    ) -> bool {
        let mut inner = self.inner.lock().unwrap();
        inner.clock = inner.clock.max(at_ms);
        let now = store::now_ms();
        let mut changed = inner.expire(room_id, now);
        let room = inner.rooms.entry(room_id.to_owned()).or_default();
        if typing && expires_at > now {
            changed |= room.users.insert(user_id.to_owned(), expires_at).is_none();
        } else {
            changed |= room.users.remove(user_id).is_some();
        }
        if changed {
            let stamp = inner.stamp();
            if let Some(room) = inner.rooms.get_mut(room_id) {
                room.changed = stamp;
            }
        }
        changed
    }
}

/// PUT /rooms/{roomId}/typing/{userId}.
/// `shadow_banned`: the requester is, and as in Synapse its typing seems to work and reaches no one.
pub async fn set_typing(
    state: &AppState,
    requester: &str,
    user_id: &str,
    room_id: &str,
    typing: bool,
    timeout_ms: Option<i64>,
    shadow_banned: bool,
) -> Result<()> {
    if requester != user_id {
        return Err(Error::forbidden(
            "You cannot set the typing state of another user",
        ));
    }
    if shadow_banned {
        return Ok(());
    }
    let snapshot = writer::room_snapshot(state, room_id).await?;
    if snapshot.as_ref().and_then(|s| s.membership(user_id)) != Some("join") {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    // As Synapse: a missing timeout means the usual 30 s.
    let timeout_ms = if typing {
        timeout_ms
            .unwrap_or(DEFAULT_TIMEOUT_MS)
            .clamp(0, MAX_TIMEOUT_MS)
    } else {
        0
    };
    let at_ms = store::now_ms();
    let message = Message {
        i: state.notifier.instance.clone(),
        room_id: room_id.to_owned(),
        user_id: user_id.to_owned(),
        typing,
        timeout_ms,
        at_ms,
    };
    apply_and_wake(state, &message);
    crate::service::federation::outbound_edus::typing(state, room_id, user_id, typing);
    let payload = serde_json::to_string(&message).map_err(Error::internal)?;
    store::stream::notify(&state.db, CHANNEL, &payload).await?;
    Ok(())
}

fn apply_and_wake(state: &AppState, m: &Message) {
    let expires_at = m.at_ms + m.timeout_ms;
    if state
        .typing
        .apply(&m.room_id, &m.user_id, m.typing, expires_at, m.at_ms)
    {
        state.notifier.wake([m.room_id.as_str()]);
    }
    if m.typing {
        // Expiry needs no message: every process drops the typer at the same absolute time.
        let state = state.clone();
        let room_id = m.room_id.clone();
        let delay = (expires_at - store::now_ms()).max(0) as u64;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay + 1)).await;
            let expired = state
                .typing
                .inner
                .lock()
                .unwrap()
                .expire(&room_id, store::now_ms());
            if expired {
                state.notifier.wake([room_id.as_str()]);
            }
        });
    }
}

/// Whether the typers of any of `rooms` changed after `since_ms`. A typer due to expire is not a
/// change yet: the expiry timer wakes the room when it drops them.
pub fn changed_in(state: &AppState, rooms: &[String], since_ms: i64) -> bool {
    let inner = state.typing.inner.lock().unwrap();
    rooms
        .iter()
        .filter_map(|r| inner.rooms.get(r))
        .any(|room| room.changed > since_ms)
}

/// The typing clock now: a token made of it reports only changes after this moment.
pub fn clock(state: &AppState) -> i64 {
    state.typing.inner.lock().unwrap().clock
}

/// m.typing events for rooms whose typing set changed after `since_ms` (0 = all rooms with typers), and the new typing token (ms).
pub fn for_sync(
    state: &AppState,
    rooms: &[String],
    since_ms: i64,
) -> (HashMap<String, Value>, i64) {
    let mut inner = state.typing.inner.lock().unwrap();
    // A token from a process whose clock runs ahead: later changes here must still count as newer.
    inner.clock = inner.clock.max(since_ms);
    let now = store::now_ms();
    let mut events = HashMap::new();
    // Expired here, the room's expiry timer finds nothing left to expire: we wake the room.
    let mut expired = Vec::new();
    for room_id in rooms {
        if inner.expire(room_id, now) {
            expired.push(room_id.as_str());
        }
        let Some(room) = inner.rooms.get(room_id) else {
            continue;
        };
        let report = if since_ms == 0 {
            !room.users.is_empty()
        } else {
            room.changed > since_ms
        };
        if report {
            let mut user_ids: Vec<&String> = room.users.keys().collect();
            user_ids.sort();
            events.insert(
                room_id.clone(),
                json!({"type": "m.typing", "content": {"user_ids": user_ids}}),
            );
        }
    }
    let clock = inner.clock;
    drop(inner);
    state.notifier.wake(expired);
    (events, clock)
}

/// Listens for the other processes' typing changes. Subscribes before returning.
pub async fn start_listener(state: AppState) -> Result<()> {
    let mut listener = PgListener::connect_with(state.notifier.listener_pool(&state.db)).await?;
    listener.listen(CHANNEL).await?;
    tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    match serde_json::from_str::<Message>(notification.payload()) {
                        Ok(message) if message.i != state.notifier.instance => {
                            apply_and_wake(&state, &message)
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "unreadable typing notification"),
                    }
                }
                // Shutting down: the database goes away on purpose.
                _ if state.notifier.is_stopping() => break,
                // Typing is transient: a lost change corrects itself at the next change or expiry.
                Ok(None) => tracing::warn!("typing LISTEN connection lost; reconnecting"),
                Err(e) => {
                    tracing::warn!(error = %e, "typing LISTEN failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_stamped_above_every_token() {
        let typing = Typing::new();
        let now = store::now_ms();
        let token = typing.inner.lock().unwrap().clock;
        assert!(typing.apply("!r:x", "@a:x", true, now + 60_000, now));
        let changed = typing.inner.lock().unwrap().rooms["!r:x"].changed;
        assert!(changed > token);
        // Refreshing the timeout is not a change.
        assert!(!typing.apply("!r:x", "@a:x", true, now + 90_000, now));
        assert!(typing.apply("!r:x", "@a:x", false, 0, now));
        assert!(!typing.apply("!r:x", "@a:x", false, 0, now));
    }

    #[test]
    fn expiry_is_a_change() {
        let typing = Typing::new();
        let now = store::now_ms();
        typing.apply("!r:x", "@a:x", true, now + 10, now);
        let mut inner = typing.inner.lock().unwrap();
        let before = inner.rooms["!r:x"].changed;
        assert!(inner.expire("!r:x", now + 11));
        assert!(inner.rooms["!r:x"].users.is_empty());
        assert!(inner.rooms["!r:x"].changed > before);
        assert!(!inner.expire("!r:x", now + 12));
    }
}

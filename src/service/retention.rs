//! Expired events (`m.room.retention`) are hidden from clients as soon as they expire, as Synapse's
//! `filter_events_for_client` does (synapse/visibility.py: a non-state event older than now minus
//! the room's `max_lifetime` is not served), not only once the retention job has deleted them.
//! The room's policy is read from its cached current state; a room not in the cache is looked up
//! in the background and served meanwhile by the default policy.

use crate::AppState;
use crate::service::admin::purge::max_lifetime;
use crate::store::{self, events::EventRow};

/// Whether the event has expired under its room's retention policy (never a state event; never
/// while `[retention]` is off).
pub fn expired(state: &AppState, row: &EventRow) -> bool {
    expired_at(
        state,
        &row.room_id,
        row.state_key.is_some(),
        row.origin_server_ts,
    )
}

/// As `expired`, for an event given by its room, whether it is a state event, and its time.
pub fn expired_at(state: &AppState, room_id: &str, is_state: bool, origin_server_ts: i64) -> bool {
    let config = &state.config.retention;
    if !config.enabled || is_state {
        return false;
    }
    let lifetime = match state.rooms.get(room_id) {
        Some(snapshot) => {
            let policy = snapshot
                .entry("m.room.retention", "")
                .map(|entry| &entry.content);
            max_lifetime(config, policy)
        }
        None => {
            load_in_background(state, room_id);
            max_lifetime(config, None)
        }
    };
    lifetime.is_some_and(|lifetime| origin_server_ts < store::now_ms() - lifetime)
}

/// Brings the room's state into the cache for the next look.
fn load_in_background(state: &AppState, room_id: &str) {
    let state = state.clone();
    let room_id = room_id.to_owned();
    tokio::spawn(async move {
        if let Err(e) = crate::service::writer::room_snapshot(&state, &room_id).await {
            tracing::debug!(%room_id, error = %e, "could not load a room's retention policy");
        }
    });
}

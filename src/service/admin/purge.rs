//! Purging history: the admin API's purge_history (a background job with a status) and the
//! retention job of `m.room.retention` (Synapse's message retention policies). Both delete message
//! events only: state events make the room's state at every position and stay, and so does the
//! room's newest event, so /sync, /messages and the room itself keep working.

use serde_json::Value;

use crate::config::Retention;
use crate::service::auth::random_string;
use crate::store::admin_jobs::{self, JobRow};
use crate::store::purge::{self, PurgeRange};
use crate::{AppState, Error, Result, store};

/// The job kind in `admin_jobs`.
pub const KIND: &str = "purge_history";

/// Up to where purge_history deletes.
#[derive(Debug, Clone)]
pub enum PurgePoint {
    /// Events before this one.
    Event(String),
    /// Events sent before this time (milliseconds).
    Timestamp(i64),
}

/// Starts purging the room's history up to `point` and returns the purge ID.
pub async fn start_purge(
    state: &AppState,
    room_id: &str,
    point: PurgePoint,
    delete_local: bool,
) -> Result<String> {
    if store::rooms::room_version(&state.db, room_id)
        .await?
        .is_none()
    {
        return Err(Error::not_found("Unknown room"));
    }
    let (before_stream, before_ts) = match &point {
        PurgePoint::Event(event_id) => {
            let mut conn = state.db.acquire().await?;
            let position = purge::event_position(&mut conn, room_id, event_id)
                .await?
                .ok_or_else(|| Error::invalid_param("Event is for wrong room."))?;
            (position, i64::MAX)
        }
        PurgePoint::Timestamp(ts) => (i64::MAX, *ts),
    };
    if admin_jobs::running(&state.db, room_id, KIND).await? {
        return Err(Error::unknown(format!(
            "History purge already in progress for {room_id}"
        )));
    }
    let purge_id = random_string(16);
    admin_jobs::insert(&state.db, &purge_id, KIND, room_id, "active").await?;
    let state = state.clone();
    let job = purge_id.clone();
    let room_id = room_id.to_owned();
    tokio::spawn(async move {
        let result = purge_range(&state, &room_id, before_stream, before_ts, delete_local).await;
        let (status, error) = match &result {
            Ok(n) => {
                tracing::info!(%room_id, purged = n, "history purged");
                ("complete", None)
            }
            Err(e) => ("failed", Some(e.to_string())),
        };
        if let Err(e) = admin_jobs::update(&state.db, &job, status, error.as_deref(), None).await {
            tracing::warn!(error = %e, "could not record the purge's outcome");
        }
    });
    Ok(purge_id)
}

/// Deletes the room's message events before the position and time; returns how many.
async fn purge_range(
    state: &AppState,
    room_id: &str,
    before_stream: i64,
    before_ts: i64,
    delete_local: bool,
) -> Result<i64> {
    let local = format!("%:{}", state.server_name);
    let range = PurgeRange {
        room_id,
        before_stream,
        before_ts,
        delete_local,
        local_sender_pattern: &local,
    };
    let mut tx = state.db.begin().await?;
    let purged = purge::purge_events(&mut tx, &range).await?;
    tx.commit().await?;
    if purged > 0 {
        // Recent events are kept in memory for syncs: forget them, the purged ones among them.
        state.recent.clear();
    }
    Ok(purged)
}

/// One purge's status; 404 for an unknown ID.
pub async fn status(state: &AppState, purge_id: &str) -> Result<JobRow> {
    admin_jobs::get(&state.db, purge_id, KIND)
        .await?
        .ok_or_else(|| Error::not_found("Purge not found"))
}

/// The `max_lifetime` that applies to a room: its policy's (the `m.room.retention` content), else
/// the default policy's, clamped into the allowed range. None: its events are kept forever.
pub fn max_lifetime(config: &Retention, policy: Option<&Value>) -> Option<i64> {
    let lifetime = match policy {
        Some(content) => content.get("max_lifetime").and_then(Value::as_i64),
        None => config.default_policy.max_lifetime,
    }?;
    let lifetime = match config.allowed_lifetime_min {
        Some(min) if lifetime < min => min,
        _ => lifetime,
    };
    Some(match config.allowed_lifetime_max {
        Some(max) if lifetime > max => max,
        _ => lifetime,
    })
}

/// One pass of the retention job: in every room, deletes the message events older than the
/// room's max_lifetime. Returns how many events went.
pub async fn run_retention(state: &AppState) -> Result<i64> {
    let config = &state.config.retention;
    let (rooms, policies) = {
        let mut conn = state.db.acquire().await?;
        let rooms = purge::all_rooms(&mut conn).await?;
        let policies: std::collections::HashMap<String, Value> =
            purge::retention_policies(&mut conn)
                .await?
                .into_iter()
                .filter_map(|(room, json)| {
                    let event: Value = serde_json::from_str(&json).ok()?;
                    Some((room, event["content"].clone()))
                })
                .collect();
        (rooms, policies)
    };
    let now = store::now_ms();
    let mut purged = 0;
    for room_id in rooms {
        let Some(lifetime) = max_lifetime(config, policies.get(&room_id)) else {
            continue;
        };
        purged += purge_range(state, &room_id, i64::MAX, now - lifetime, true).await?;
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(default: Option<i64>, min: Option<i64>, max: Option<i64>) -> Retention {
        let mut c = Retention::default();
        c.default_policy.max_lifetime = default;
        c.allowed_lifetime_min = min;
        c.allowed_lifetime_max = max;
        c
    }

    #[test]
    fn a_rooms_policy_wins_over_the_default() {
        let c = config(Some(1000), None, None);
        assert_eq!(max_lifetime(&c, None), Some(1000));
        assert_eq!(
            max_lifetime(&c, Some(&json!({"max_lifetime": 50}))),
            Some(50)
        );
        // A policy without max_lifetime keeps events forever.
        assert_eq!(max_lifetime(&c, Some(&json!({"min_lifetime": 50}))), None);
        assert_eq!(max_lifetime(&config(None, None, None), None), None);
    }

    #[test]
    fn lifetimes_are_clamped_into_the_allowed_range() {
        let c = config(None, Some(100), Some(1000));
        assert_eq!(
            max_lifetime(&c, Some(&json!({"max_lifetime": 5}))),
            Some(100)
        );
        assert_eq!(
            max_lifetime(&c, Some(&json!({"max_lifetime": 5000}))),
            Some(1000)
        );
        assert_eq!(
            max_lifetime(&c, Some(&json!({"max_lifetime": 500}))),
            Some(500)
        );
        assert_eq!(max_lifetime(&c, Some(&json!({"max_lifetime": "x"}))), None);
    }
}

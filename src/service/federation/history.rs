//! Other servers reading a room's history: `/backfill` (the given events and those before them,
//! newest first), `/get_missing_events` (a breadth-first walk back through `prev_events` from what a
//! server was sent to what it has) and `/event_auth` (an event's auth chain). As Synapse, only for
//! a server with a joined member (or a world-readable room), and each event as the server may see
//! it: redacted when the history visibility hides it or its sender is erased, so that the graph
//! has no holes.

use std::collections::HashSet;

use ruma::ServerName;
use serde_json::Value;
use serde_json::value::RawValue;

use super::membership::ensure_in_room;
use crate::service::room_versions::{self, RoomVersion};
use crate::service::visibility::ServerVisibility;
use crate::store::events::PduRow;
use crate::{AppState, Error, Result, store};

/// The most events one request answers (Synapse's cap for `/backfill`).
pub const MAX_EVENTS: usize = 100;

/// `GET /backfill/{roomId}?v=…&limit=`: the events of `from` and those before them, newest first.
pub async fn backfill(
    state: &AppState,
    origin: &ServerName,
    room_id: &str,
    from: &[String],
    limit: usize,
) -> Result<Vec<Box<RawValue>>> {
    let version = ensure_in_room(state, origin, room_id).await?;
    let starts = store::events::room_pdus_of(&state.db, room_id, from).await?;
    let Some(newest) = starts.iter().map(|r| r.stream_ordering).max() else {
        return Ok(Vec::new());
    };
    let limit = limit.clamp(1, MAX_EVENTS) as i64;
    let rows = store::events::pdus_backward(&state.db, room_id, newest, limit).await?;
    as_seen_by(state, origin, room_id, version, rows).await
}

/// `POST /get_missing_events/{roomId}`: the events before `latest` that are not `earliest` (nor
/// before them), found by a breadth-first walk of `prev_events`, oldest first.
pub async fn missing_events(
    state: &AppState,
    origin: &ServerName,
    room_id: &str,
    earliest: &[String],
    latest: &[String],
    limit: usize,
    min_depth: i64,
) -> Result<Vec<Box<RawValue>>> {
    let version = ensure_in_room(state, origin, room_id).await?;
    let limit = limit.min(MAX_EVENTS);
    let mut seen: HashSet<String> = earliest.iter().cloned().collect();
    let mut front: Vec<String> = latest
        .iter()
        .filter(|id| !seen.contains(*id))
        .cloned()
        .collect();
    let mut found: Vec<PduRow> = Vec::new();
    while !front.is_empty() && found.len() < limit {
        let mut next = Vec::new();
        for row in store::events::room_pdus_of(&state.db, room_id, &front).await? {
            for prev in prev_events(version, &row.pdu)? {
                if seen.insert(prev.clone()) {
                    next.push(prev);
                }
            }
        }
        let mut rows = store::events::room_pdus_of(&state.db, room_id, &next).await?;
        rows.retain(|r| r.depth >= min_depth);
        rows.sort_by_key(|r| std::cmp::Reverse(r.stream_ordering));
        rows.truncate(limit - found.len());
        found.extend(rows);
        front = next;
    }
    found.sort_by_key(|r| r.stream_ordering);
    as_seen_by(state, origin, room_id, version, found).await
}

/// `GET /event_auth/{roomId}/{eventId}`: the auth chain of one event of the room.
pub async fn event_auth(
    state: &AppState,
    origin: &ServerName,
    room_id: &str,
    event_id: &str,
) -> Result<Vec<Box<RawValue>>> {
    ensure_in_room(state, origin, room_id).await?;
    if store::events::room_pdus_of(&state.db, room_id, &[event_id.to_owned()])
        .await?
        .is_empty()
    {
        return Err(Error::not_found("Unknown event"));
    }
    super::membership::auth_chain(state, &[event_id.to_owned()]).await
}

/// The PDUs of `rows` as `origin` may see them.
async fn as_seen_by(
    state: &AppState,
    origin: &ServerName,
    room_id: &str,
    version: RoomVersion,
    rows: Vec<PduRow>,
) -> Result<Vec<Box<RawValue>>> {
    let visibility = server_visibility(state, origin, room_id).await?;
    let erased = state.erased.get(&state.db).await?;
    rows.into_iter()
        .map(|row| {
            let pdu = if visibility.can_see(row.stream_ordering) && !erased.contains(&row.sender) {
                row.pdu
            } else {
                room_versions::redact_client_json(version, &row.pdu)?
            };
            RawValue::from_string(pdu).map_err(Error::internal)
        })
        .collect()
}

async fn server_visibility(
    state: &AppState,
    origin: &ServerName,
    room_id: &str,
) -> Result<ServerVisibility> {
    let settings = store::events::state_key_history(
        &state.db,
        room_id,
        "m.room.history_visibility",
        "",
        "history_visibility",
    )
    .await?
    .into_iter()
    .map(|(pos, v)| (pos, v.unwrap_or_else(|| "shared".into())))
    .collect();
    let changes = store::events::server_member_history(&state.db, room_id, origin.as_str())
        .await?
        .into_iter()
        .map(|(pos, user, m)| (pos, user, m.unwrap_or_else(|| "leave".into())))
        .collect();
    Ok(ServerVisibility::new(settings, changes))
}

/// The `prev_events` of a stored PDU (`[id, hashes]` pairs in v1/v2).
fn prev_events(version: RoomVersion, pdu: &str) -> Result<Vec<String>> {
    let pdu: Value = serde_json::from_str(pdu).map_err(Error::internal)?;
    let items = pdu["prev_events"].as_array().cloned().unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(|item| {
            if version.server_chosen_event_ids() {
                item.get(0)?.as_str().map(str::to_owned)
            } else {
                item.as_str().map(str::to_owned)
            }
        })
        .collect())
}

//! The legacy event stream, `GET /events` (deprecated since r0, still called by bots and scripts),
//! and its peeking form `GET /events?room_id=` for a world-readable room.
//!
//! Built on /sync's machinery: its tokens (`from` and `end` are sync tokens, interchangeable with
//! /sync's), its long poll (subscribe under the user and its rooms before looking, then wait on the
//! notifier, so a commit wakes `/events` as fast as `/sync`), its admission gate and its one
//! snapshot on one connection per look, and the same visibility, ignore and erasure rules. Events
//! come in the legacy client format (`timeline::to_v1_format`), followed by presence, typing,
//! receipts and account data as Synapse's `get_events_for` returns them.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::{MAX_TIMEOUT, SyncToken, begin_snapshot, joined, to_raw};
use crate::service::auth::Requester;
use crate::service::erasure::Erasure;
use crate::service::notifier::{self, Subscription};
use crate::service::presence::Until;
use crate::service::timeline::{self, Viewer};
use crate::service::visibility::Visibility;
use crate::service::{account_data, ignore, presence, receipts, retention, typing};
use crate::store::events::EventRow;
use crate::{AppState, Error, Result, store};

/// Room events per response when `limit` is not given (Synapse's default).
pub const DEFAULT_LIMIT: i64 = 10;
/// The most room events one response carries.
const MAX_LIMIT: i64 = 1000;

/// The parameters of `GET /events`.
pub struct EventsRequest {
    /// Where to start; `None` starts now (only what happens from here on comes).
    pub from: Option<String>,
    /// How long to wait for something to arrive, in milliseconds (capped as /sync's).
    pub timeout_ms: u64,
    /// The peeking form: only this room's events (the user must be joined or it world-readable).
    pub room_id: Option<String>,
    /// The most room events in one response (`None` or 0: `DEFAULT_LIMIT`).
    pub limit: Option<i64>,
}

/// The answer: `chunk` holds the events after `start`, `end` is where the next request goes on.
#[derive(Serialize)]
pub struct EventsChunk {
    pub chunk: Vec<Box<RawValue>>,
    pub start: String,
    pub end: String,
}

/// What a look covers.
struct Scope {
    /// One room only (`room_id`); otherwise the user's rooms and every change of their membership.
    room: Option<String>,
    /// The user is not joined to `room`, which is world-readable: only the room's events, typing
    /// and receipts, not the user's presence or account data.
    peeking: bool,
}

/// GET /events.
pub async fn events(
    state: &AppState,
    requester: &Requester,
    req: EventsRequest,
) -> Result<EventsChunk> {
    let user = requester.user_id.as_str();
    // A guest's stream is a room preview (as Synapse: "Guest users must specify room_id param").
    if requester.is_guest && req.room_id.is_none() {
        return Err(Error::missing_param(
            "Guest users must specify room_id param",
        ));
    }
    let limit = match req.limit {
        None | Some(0) => DEFAULT_LIMIT,
        Some(l) if l < 0 => return Err(Error::invalid_param("limit must not be negative")),
        Some(l) => l.min(MAX_LIMIT),
    };
    let scope = scope_of(state, user, req.room_id).await?;
    // Like a sync, the stream marks the user online (Synapse's `user_syncing`), before a start
    // taken now: that change is not news to the user. A guest's preview does not (as Synapse).
    if !scope.peeking && !requester.is_guest {
        Box::pin(presence::on_sync(state, user, None, Until::Committed)).await?;
    }
    let start = match req.from.as_deref() {
        None | Some("") => SyncToken {
            position: store::stream::current(&state.db).await?,
            typing: typing::clock(state),
        },
        Some(token) => {
            SyncToken::parse(token).ok_or_else(|| Error::invalid_param("Invalid from token"))?
        }
    };
    let ignored = ignore::ignored_by(state, user).await?;
    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms).min(MAX_TIMEOUT);
    let mut at = start;
    loop {
        let subscription = if Instant::now() < deadline {
            Some(subscribe(state, user, &scope).await?)
        } else {
            None
        };
        let found = Box::pin(look(state, requester, at, &scope, limit, &ignored)).await?;
        if !found.chunk.is_empty() {
            return Ok(EventsChunk {
                chunk: found.chunk,
                start: start.encode(),
                end: found.end.encode(),
            });
        }
        at = found.end;
        // A look cut short by hidden events goes on at once: what lies beyond is already committed.
        if found.cut {
            continue;
        }
        let waited = match subscription {
            Some(subscription) => {
                subscription
                    .wait(deadline.saturating_duration_since(Instant::now()))
                    .await
            }
            None => false,
        };
        if !waited {
            // Nothing for the user: the next request starts where this one did.
            return Ok(EventsChunk {
                chunk: Vec::new(),
                start: start.encode(),
                end: start.encode(),
            });
        }
    }
}

/// The scope of a request; 403 for a room the user may not peek into (Synapse's `_get_room_ids`).
async fn scope_of(state: &AppState, user: &str, room_id: Option<String>) -> Result<Scope> {
    let Some(room) = room_id else {
        return Ok(Scope {
            room: None,
            peeking: false,
        });
    };
    let joined = joined::joined_rooms(state, user).await?;
    if joined.contains(&room) {
        return Ok(Scope {
            room: Some(room),
            peeking: false,
        });
    }
    let snapshot = crate::service::writer::room_snapshot(state, &room).await?;
    let world_readable = snapshot
        .and_then(|s| {
            s.entry("m.room.history_visibility", "")
                .map(|e| e.content["history_visibility"] == "world_readable")
        })
        .unwrap_or(false);
    if !world_readable {
        return Err(Error::forbidden("Non-joined access not allowed"));
    }
    Ok(Scope {
        room: Some(room),
        peeking: true,
    })
}

/// Subscribes before looking, as /sync does: the user's key (membership changes, account data)
/// and each room of the scope, with the rooms' presence keys unless peeking (the stream carries
/// room mates' presence, which wakes only the presence keys: `notifier::presence_key`).
async fn subscribe(state: &AppState, user: &str, scope: &Scope) -> Result<Subscription> {
    if let Some(room) = &scope.room {
        let subscription = state.notifier.subscribe([room.as_str()]);
        if !scope.peeking {
            let presence = notifier::presence_key(room);
            state
                .notifier
                .extend(&subscription, [user, presence.as_str()]);
        }
        return Ok(subscription);
    }
    let subscription = state.notifier.subscribe([user]);
    let rooms = Box::pin(joined::joined_rooms(state, user)).await?;
    let presence: Vec<String> = rooms.iter().map(|r| notifier::presence_key(r)).collect();
    state.notifier.extend(
        &subscription,
        rooms.iter().chain(&presence).map(String::as_str),
    );
    Ok(subscription)
}

/// What one look found.
struct Found {
    chunk: Vec<Box<RawValue>>,
    end: SyncToken,
    /// The room events stopped at `limit` before the stream's head.
    cut: bool,
}

/// One look from `from`: every read through one snapshot on one connection, after the sync gate.
async fn look(
    state: &AppState,
    requester: &Requester,
    from: SyncToken,
    scope: &Scope,
    limit: i64,
    ignored: &HashSet<String>,
) -> Result<Found> {
    let user = requester.user_id.as_str();
    let _turn = state.sync_gate.enter(user).await?;
    let mut conn = state.db.acquire().await?;
    let mut tx = begin_snapshot(&mut conn).await?;
    let upto = store::stream::current_in(&mut tx).await?;
    let after = from.position.min(upto);
    let rooms = rooms_in_scope(&mut tx, user, scope, after).await?;
    let ids: Vec<String> = rooms.keys().cloned().collect();
    let mut rows =
        store::events::earliest_events_per_room(&mut *tx, &ids, after, upto, limit + 1).await?;
    rows.sort_by_key(|r| r.stream_ordering);
    let cut = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let end = match rows.last() {
        Some(last) if cut => last.stream_ordering,
        _ => upto,
    };
    let rows = visible_rows(state, &mut tx, user, rows, &rooms, ignored).await?;
    let viewer = Viewer {
        user_id: user,
        device_id: Some(requester.device_id.as_str()),
    };
    let mut erasure = Erasure::for_viewer(state, &mut tx, user).await?;
    let mut chunk: Vec<Box<RawValue>> = timeline::render_all(&mut tx, &mut erasure, rows, viewer)
        .await?
        .iter()
        .map(|e| timeline::to_v1_format(e))
        .collect();

    // The other streams, up to the same position.
    let ephemeral_rooms: Vec<String> = match &scope.room {
        Some(room) => vec![room.clone()],
        None => rooms
            .iter()
            .filter(|(_, m)| m.membership == "join")
            .map(|(r, _)| r.clone())
            .collect(),
    };
    let range = (after, end);
    let (others, typing_clock) = other_streams(
        state,
        &mut tx,
        user,
        scope,
        &ephemeral_rooms,
        range,
        from.typing,
    )
    .await?;
    tx.commit().await?;
    chunk.extend(to_raw(others)?);
    Ok(Found {
        chunk,
        end: SyncToken {
            position: end,
            typing: typing_clock,
        },
        cut,
    })
}

/// The streams other than room events over (`range.0`, `range.1`], as Synapse's `get_events_for`
/// orders them: presence, typing, receipts, account data (the last two with their `room_id`).
/// Returns them with the typing clock they reach.
async fn other_streams(
    state: &AppState,
    tx: &mut PgConnection,
    user: &str,
    scope: &Scope,
    ephemeral_rooms: &[String],
    (after, end): (i64, i64),
    typing_since: i64,
) -> Result<(Vec<Value>, i64)> {
    let mut others: Vec<Value> = Vec::new();
    if !scope.peeking {
        others.extend(
            presence::for_sync(state, &mut *tx, user, after, end)
                .await?
                .into_iter()
                .map(presence_v1),
        );
    }
    let (typing_events, typing_clock) = typing::for_sync(state, ephemeral_rooms, typing_since);
    others.extend(with_room_ids(typing_events));
    others.extend(with_room_ids(
        receipts::for_sync(&mut *tx, user, ephemeral_rooms, after, end).await?,
    ));
    if !scope.peeking && after > 0 {
        let (global, by_room) = account_data::for_sync(&mut *tx, user, after, end).await?;
        others.extend(global);
        for (room, events) in by_room {
            others.extend(events.into_iter().map(|mut e| {
                e["room_id"] = json!(room);
                e
            }));
        }
    }
    Ok((others, typing_clock))
}

/// The rooms whose events a look reads, with the user's membership of each: the scope's room, or
/// the joined rooms and those whose membership changed after `after` (an invite, a leave).
async fn rooms_in_scope(
    conn: &mut PgConnection,
    user: &str,
    scope: &Scope,
    after: i64,
) -> Result<HashMap<String, store::rooms::MembershipRow>> {
    if let Some(room) = &scope.room {
        let row = store::rooms::MembershipRow {
            room_id: room.clone(),
            membership: "join".into(),
            event_id: String::new(),
            stream_ordering: i64::MAX,
        };
        return Ok(HashMap::from([(room.clone(), row)]));
    }
    Ok(store::rooms::memberships_of(&mut *conn, user)
        .await?
        .into_iter()
        .filter(|m| m.membership == "join" || m.stream_ordering > after)
        .map(|m| (m.room_id.clone(), m))
        .collect())
}

/// The rows the user may see: history visibility and membership at each event, ignored senders
/// left out. In a room the user is no longer joined to, nothing after their membership changed;
/// of a room they are invited to or knocking on, only that member event.
async fn visible_rows(
    state: &AppState,
    conn: &mut PgConnection,
    user: &str,
    rows: Vec<EventRow>,
    rooms: &HashMap<String, store::rooms::MembershipRow>,
    ignored: &HashSet<String>,
) -> Result<Vec<EventRow>> {
    let mut views: HashMap<String, Visibility> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(membership) = rooms.get(&row.room_id) else {
            continue;
        };
        let own = row.event_type == "m.room.member" && row.state_key.as_deref() == Some(user);
        let in_reach = match membership.membership.as_str() {
            "join" => true,
            "invite" | "knock" => own && row.event_id == membership.event_id,
            _ => row.stream_ordering <= membership.stream_ordering,
        };
        if !in_reach
            || ignore::hides(ignored, &row.sender, row.state_key.is_some())
            || retention::expired(state, &row)
        {
            continue;
        }
        if !views.contains_key(&row.room_id) {
            let vis = Visibility::load(&mut *conn, &row.room_id, user).await?;
            views.insert(row.room_id.clone(), vis);
        }
        if views[&row.room_id].can_see_row(&row, user) {
            out.push(row);
        }
    }
    Ok(out)
}

/// Presence as the legacy stream carries it: the user in `content.user_id` (Synapse's
/// `format_user_presence_state`), `sender` kept for newer clients.
pub(super) fn presence_v1(mut event: Value) -> Value {
    let sender = event["sender"].clone();
    if let Some(content) = event["content"].as_object_mut() {
        content.insert("user_id".into(), sender);
    }
    event
}

/// Per-room ephemeral events with their `room_id`, as the legacy stream carries them.
pub(super) fn with_room_ids(by_room: HashMap<String, Value>) -> impl Iterator<Item = Value> {
    let mut by_room: Vec<(String, Value)> = by_room.into_iter().collect();
    by_room.sort_by(|a, b| a.0.cmp(&b.0));
    by_room.into_iter().map(|(room, mut event)| {
        event["room_id"] = json!(room);
        event
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_carries_the_user_in_its_content() {
        let event = presence_v1(
            json!({"type": "m.presence", "sender": "@a:x", "content": {"presence": "online"}}),
        );
        assert_eq!(event["content"]["user_id"], "@a:x");
        assert_eq!(event["sender"], "@a:x");
    }

    #[test]
    fn ephemeral_events_get_their_room() {
        let events: Vec<Value> = with_room_ids(HashMap::from([(
            "!b:x".into(),
            json!({"type": "m.typing"}),
        )]))
        .collect();
        assert_eq!(events, [json!({"type": "m.typing", "room_id": "!b:x"})]);
    }
}

//! Instant messaging: sending (validation, sanitisation, idempotency), redaction, and reading history
//! (/messages, /context, /event, /relations, /threads, timestamp_to_event).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::service::auth::Requester;
use crate::service::erasure::Erasure;
use crate::service::events::EventDraft;
use crate::service::filter::{RoomEventFilter, parse_room_event_filter};
use crate::service::rate_limit::UserAction;
use crate::service::timeline::{self, Viewer};
use crate::service::visibility::Visibility;
use crate::service::writer::{Target, TxnKey, room_snapshot};
use crate::service::{auth_rules, ignore, message_validation, retention};
use crate::store::events::EventRow;
use crate::{AppState, Error, Result, store};

/// Pagination and sync tokens: `s{position}` optionally followed by `_…` (other streams).
pub fn parse_position(token: &str) -> Option<i64> {
    let rest = token.strip_prefix('s')?;
    let number = rest.split('_').next()?;
    number.parse().ok().filter(|n: &i64| *n >= 0)
}

pub fn position_token(position: i64) -> String {
    format!("s{position}")
}

fn viewer(requester: &Requester) -> Viewer<'_> {
    Viewer {
        user_id: requester.user_id.as_str(),
        device_id: Some(requester.device_id.as_str()),
    }
}

/// Parses event content from the request body: a JSON object with canonical values.
pub fn parse_content(body: &[u8]) -> Result<Map<String, Value>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::not_json(format!("Content not JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Error::bad_json("Event content must be a JSON object")),
    }
}

async fn require_room(state: &AppState, room_id: &str) -> Result<()> {
    if store::rooms::room_version(&state.db, room_id)
        .await?
        .is_none()
    {
        return Err(Error::not_found("Unknown room"));
    }
    Ok(())
}

/// PUT /rooms/{roomId}/send/{eventType}/{txnId}, and the legacy POST without a transaction ID
/// (`txn_id` `None`: no idempotency, every request is a new event, as in Synapse).
pub async fn send(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    event_type: &str,
    txn_id: Option<&str>,
    mut content: Map<String, Value>,
) -> Result<String> {
    if event_type == "m.room.message" {
        message_validation::validate_message_content(&content).map_err(|e| Error::bad_json(e.0))?;
        if state.config.messages.sanitize_html {
            message_validation::sanitize_content(event_type, &mut content);
        }
    }
    // No room lookup here: the writer answers 404 for an unknown room under its lock, saving a query.
    state.rate_limiter.user(UserAction::Message, requester)?;
    if requester.is_shadow_banned {
        return Ok(crate::service::auth::fake_event_id());
    }
    let sender = requester.user_id.as_str();
    let mut draft = EventDraft::new(event_type, None, sender, Value::Object(content));
    draft.device_id = Some(requester.device_id.to_string());
    draft.txn_id = txn_id.map(str::to_owned);
    let txn = txn_id.map(|txn_id| TxnKey {
        user_id: sender.to_owned(),
        device_id: requester.device_id.to_string(),
        scope: json!(["send", room_id, event_type]).to_string(),
        txn_id: txn_id.to_owned(),
    });
    let committed = state
        .writer
        .submit(Target::Existing(room_id.to_owned()), vec![draft], txn)
        .await?;
    committed
        .event_ids
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("no event"))
}

/// PUT /rooms/{roomId}/redact/{eventId}/{txnId}: own events, or with the redact power level.
pub async fn redact(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    target_id: &str,
    txn_id: &str,
    mut content: Map<String, Value>,
) -> Result<String> {
    let snapshot = room_snapshot(state, room_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let sender = requester.user_id.as_str();
    if snapshot.membership(sender) != Some("join") {
        return Err(Error::forbidden("You are not in this room"));
    }
    let target = store::events::event_by_id(&state.db, target_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown event"))?;
    // As Synapse (handlers/message.py): 400, never a redaction in the wrong room.
    if target.room_id != room_id {
        return Err(Error::unknown("Cannot redact event from a different room"));
    }
    auth_rules::may_redact(snapshot.version, &*snapshot, sender, &target.sender)
        .map_err(|e| Error::forbidden(e.0))?;
    if target.event_type == "m.room.create" {
        return Err(Error::forbidden(
            "The room's create event cannot be redacted",
        ));
    }
    state.rate_limiter.user(UserAction::Message, requester)?;
    content.remove("redacts");
    let mut draft = EventDraft::new("m.room.redaction", None, sender, Value::Object(content));
    draft.redacts = Some(target_id.to_owned());
    draft.device_id = Some(requester.device_id.to_string());
    draft.txn_id = Some(txn_id.to_owned());
    let txn = TxnKey {
        user_id: sender.to_owned(),
        device_id: requester.device_id.to_string(),
        scope: json!(["redact", room_id, target_id]).to_string(),
        txn_id: txn_id.to_owned(),
    };
    let committed = state
        .writer
        .submit(Target::Existing(room_id.to_owned()), vec![draft], Some(txn))
        .await?;
    committed
        .event_ids
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("no event"))
}

/// Renders timeline events for the requester, erased senders' events pruned where they must be.
async fn serve(
    state: &AppState,
    requester: &Requester,
    rows: Vec<EventRow>,
) -> Result<Vec<Box<RawValue>>> {
    timeline::render_for(state, rows, viewer(requester)).await
}

/// Reads the room's visibility for the requester; 403 when they were never allowed in.
async fn visibility_for(state: &AppState, room_id: &str, user_id: &str) -> Result<Visibility> {
    require_room(state, room_id).await?;
    let mut conn = state.db.acquire().await?;
    let vis = Visibility::load(&mut conn, room_id, user_id).await?;
    if !vis.may_read_room() {
        return Err(Error::forbidden("You are not allowed to view this room"));
    }
    Ok(vis)
}

#[derive(Serialize)]
pub struct MessagesPage {
    pub chunk: Vec<Box<RawValue>>,
    pub start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<Box<RawValue>>,
}

pub struct MessagesQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub dir: String,
    pub limit: Option<i64>,
    pub filter: Option<String>,
}

const MAX_PAGE: i64 = 1000;

/// GET /rooms/{roomId}/messages.
pub async fn messages(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    q: MessagesQuery,
) -> Result<MessagesPage> {
    let backwards = match q.dir.as_str() {
        "b" => true,
        "f" => false,
        _ => return Err(Error::invalid_param("dir must be \"b\" or \"f\"")),
    };
    let filter = parse_room_event_filter(q.filter.as_deref())?;
    let limit = q.limit.unwrap_or(10).clamp(0, MAX_PAGE);
    let parse =
        |t: &str| parse_position(t).ok_or_else(|| Error::invalid_param("Invalid pagination token"));
    let user = requester.user_id.as_str();
    let vis = visibility_for(state, room_id, user).await?;
    let ignored = ignore::ignored_by(state, user).await?;
    let upto = store::stream::current(&state.db).await?;
    let horizon = vis.state_horizon(upto);
    let from = match &q.from {
        Some(t) => parse(t)?,
        None if backwards => upto,
        None => 0,
    };
    let to = q.to.as_deref().map(parse).transpose()?;
    let store_filter = filter.to_store();

    // Scan in pages until `limit` visible events or the edge; invisible events are skipped, not counted.
    let mut chunk_rows: Vec<EventRow> = Vec::new();
    let mut cursor = if backwards { from.min(horizon) } else { from };
    let mut exhausted = false;
    while (chunk_rows.len() as i64) < limit {
        let want = limit - chunk_rows.len() as i64;
        let rows = if backwards {
            let rows = store::events::room_events_backward(
                &state.db,
                room_id,
                cursor,
                want,
                &store_filter,
            )
            .await?;
            rows.into_iter()
                .take_while(|r| to.is_none_or(|t| r.stream_ordering > t))
                .collect::<Vec<_>>()
        } else {
            let bound = to.unwrap_or(horizon).min(horizon);
            store::events::room_events_forward(
                &state.db,
                room_id,
                cursor,
                bound,
                want,
                &store_filter,
            )
            .await?
        };
        let got = rows.len() as i64;
        if let Some(last) = rows.last() {
            cursor = if backwards {
                last.stream_ordering - 1
            } else {
                last.stream_ordering
            };
        }
        chunk_rows.extend(rows.into_iter().filter(|r| {
            vis.can_see_row(r, user)
                && !ignore::hides(&ignored, &r.sender, r.state_key.is_some())
                && !retention::expired(state, r)
        }));
        if got < want {
            exhausted = true;
            break;
        }
    }
    let state_events = if filter.lazy_load_members && !chunk_rows.is_empty() {
        let senders: Vec<String> = chunk_rows
            .iter()
            .map(|r| r.sender.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let at = chunk_rows[0].stream_ordering;
        let members = store::events::members_at(&state.db, room_id, &senders, at).await?;
        timeline::render_plain(&members, viewer(requester))
    } else {
        Vec::new()
    };
    // `end` whenever more may follow in this direction: backwards until the room's start (or what
    // the user may see); forwards, the room goes on while the user may still see it (as Synapse:
    // a page that brought events has an `end`, the live edge included).
    let more_may_follow = !exhausted || (!backwards && !chunk_rows.is_empty() && horizon >= upto);
    let end = more_may_follow.then(|| position_token(cursor));
    let chunk = serve(state, requester, chunk_rows).await?;
    Ok(MessagesPage {
        chunk,
        start: position_token(from),
        end,
        state: state_events,
    })
}

/// GET /rooms/{roomId}/event/{eventId}.
pub async fn get_event(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    event_id: &str,
) -> Result<Box<RawValue>> {
    let row = visible_event(state, requester, room_id, event_id).await?;
    let mut rendered = serve(state, requester, vec![row]).await?;
    Ok(rendered.remove(0))
}

/// GET /events/{eventId} (legacy): the event in whichever room holds it, seen as
/// GET /rooms/{roomId}/event/{eventId} sees it (404 when unknown or hidden), in the legacy format.
pub async fn get_event_by_id(
    state: &AppState,
    requester: &Requester,
    event_id: &str,
) -> Result<Box<RawValue>> {
    let room_id = store::events::event_by_id(&state.db, event_id)
        .await?
        .map(|row| row.room_id)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let event = get_event(state, requester, &room_id, event_id).await?;
    Ok(timeline::to_v1_format(&event))
}

/// The event `event_id` of `room_id` if `requester` may see it; 404 otherwise.
pub async fn visible_event(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    event_id: &str,
) -> Result<store::events::EventRow> {
    let user = requester.user_id.as_str();
    let vis = visibility_for(state, room_id, user)
        .await
        .map_err(|_| Error::not_found("Event not found"))?;
    store::events::event_by_id(&state.db, event_id)
        .await?
        .filter(|r| {
            r.room_id == room_id && vis.can_see_row(r, user) && !retention::expired(state, r)
        })
        .ok_or_else(|| Error::not_found("Event not found"))
}

#[derive(Serialize)]
pub struct Context {
    pub event: Box<RawValue>,
    pub events_before: Vec<Box<RawValue>>,
    pub events_after: Vec<Box<RawValue>>,
    pub start: String,
    pub end: String,
    pub state: Vec<Box<RawValue>>,
}

/// GET /rooms/{roomId}/context/{eventId}.
pub async fn context(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    event_id: &str,
    limit: Option<i64>,
    filter: Option<&str>,
) -> Result<Context> {
    let filter: RoomEventFilter = parse_room_event_filter(filter)?;
    let limit = limit.unwrap_or(10).clamp(0, 100);
    let user = requester.user_id.as_str();
    let vis = visibility_for(state, room_id, user).await?;
    let row = store::events::event_by_id(&state.db, event_id)
        .await?
        .filter(|r| {
            r.room_id == room_id && vis.can_see_row(r, user) && !retention::expired(state, r)
        })
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let upto = vis.state_horizon(store::stream::current(&state.db).await?);
    let store_filter = filter.to_store();
    let before_n = limit / 2;
    let after_n = limit - before_n;
    let ignored = ignore::ignored_by(state, user).await?;
    let before: Vec<EventRow> = store::events::room_events_backward(
        &state.db,
        room_id,
        row.stream_ordering - 1,
        before_n,
        &store_filter,
    )
    .await?
    .into_iter()
    .filter(|r| vis.can_see_row(r, user))
    .collect();
    let after: Vec<EventRow> = store::events::room_events_forward(
        &state.db,
        room_id,
        row.stream_ordering,
        upto,
        after_n,
        &store_filter,
    )
    .await?
    .into_iter()
    .filter(|r| vis.can_see_row(r, user))
    .collect();
    let start = before
        .last()
        .map_or(row.stream_ordering - 1, |r| r.stream_ordering - 1);
    let end = after
        .last()
        .map_or(row.stream_ordering, |r| r.stream_ordering);
    // After the tokens are taken: they still step over what the user ignores.
    let unignored = |r: &EventRow| {
        !ignore::hides(&ignored, &r.sender, r.state_key.is_some()) && !retention::expired(state, r)
    };
    let (before, after): (Vec<EventRow>, Vec<EventRow>) = (
        before.into_iter().filter(unignored).collect(),
        after.into_iter().filter(unignored).collect(),
    );
    let state_rows = if filter.lazy_load_members {
        let senders: Vec<String> = std::iter::once(&row)
            .chain(&before)
            .chain(&after)
            .map(|r| r.sender.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        store::events::members_at(&state.db, room_id, &senders, row.stream_ordering).await?
    } else {
        store::events::state_at(
            &state.db,
            room_id,
            row.stream_ordering,
            store::events::Members::Included,
        )
        .await?
    };
    let v = viewer(requester);
    let mut conn = state.db.acquire().await?;
    let mut erasure = Erasure::for_viewer(state, &mut conn, user).await?;
    let mut event = timeline::render_all(&mut conn, &mut erasure, vec![row], v).await?;
    Ok(Context {
        event: event.remove(0),
        events_before: timeline::render_all(&mut conn, &mut erasure, before, v).await?,
        events_after: timeline::render_all(&mut conn, &mut erasure, after, v).await?,
        start: position_token(start),
        end: position_token(end),
        state: timeline::render_plain(&state_rows, v),
    })
}

#[derive(Serialize)]
pub struct RelationsPage {
    pub chunk: Vec<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
}

/// GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
#[allow(clippy::too_many_arguments)]
pub async fn relations(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    event_id: &str,
    rel_type: Option<&str>,
    event_type: Option<&str>,
    from: Option<&str>,
    dir: Option<&str>,
    limit: Option<i64>,
) -> Result<RelationsPage> {
    let user = requester.user_id.as_str();
    let vis = visibility_for(state, room_id, user).await?;
    let parent = store::events::event_by_id(&state.db, event_id)
        .await?
        .filter(|r| {
            r.room_id == room_id && vis.can_see_row(r, user) && !retention::expired(state, r)
        })
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let backwards = dir.unwrap_or("b") != "f";
    let limit = limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let from = match from {
        Some(t) => Some(
            parse_position(t).ok_or_else(|| Error::invalid_param("Invalid pagination token"))?,
        ),
        None => None,
    };
    let rows = store::events::relations_page(
        &state.db,
        &parent.event_id,
        rel_type,
        event_type,
        from,
        backwards,
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    let rows: Vec<EventRow> = rows
        .into_iter()
        .take(limit as usize)
        .filter(|r| vis.can_see_row(r, user))
        .collect();
    let next_batch = if more {
        rows.last().map(|r| {
            position_token(if backwards {
                r.stream_ordering - 1
            } else {
                r.stream_ordering
            })
        })
    } else {
        None
    };
    Ok(RelationsPage {
        chunk: serve(state, requester, rows).await?,
        next_batch,
        prev_batch: None,
    })
}

/// GET /rooms/{roomId}/threads: thread roots, most recently active first.
pub async fn threads(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    include: Option<&str>,
    from: Option<&str>,
    limit: Option<i64>,
) -> Result<RelationsPage> {
    let user = requester.user_id.as_str();
    let vis = visibility_for(state, room_id, user).await?;
    let limit = limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let before = match from {
        Some(t) => {
            parse_position(t).ok_or_else(|| Error::invalid_param("Invalid pagination token"))?
        }
        None => i64::MAX,
    };
    let participated = include == Some("participated");
    let roots = store::events::thread_roots(
        &state.db,
        room_id,
        before,
        participated.then_some(user),
        limit + 1,
    )
    .await?;
    let more = roots.len() as i64 > limit;
    let roots: Vec<(EventRow, i64)> = roots.into_iter().take(limit as usize).collect();
    let next_batch = if more {
        roots.last().map(|(_, latest)| position_token(latest - 1))
    } else {
        None
    };
    let rows: Vec<EventRow> = roots
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| vis.can_see_row(r, user))
        .collect();
    Ok(RelationsPage {
        chunk: serve(state, requester, rows).await?,
        next_batch,
        prev_batch: None,
    })
}

/// GET /rooms/{roomId}/timestamp_to_event.
pub async fn timestamp_to_event(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    ts: i64,
    dir: &str,
) -> Result<Value> {
    let forwards = match dir {
        "f" => true,
        "b" => false,
        _ => return Err(Error::invalid_param("dir must be \"f\" or \"b\"")),
    };
    let user = requester.user_id.as_str();
    let vis = visibility_for(state, room_id, user).await?;
    let candidates = store::events::near_timestamp(&state.db, room_id, ts, forwards, 50).await?;
    let found = candidates
        .into_iter()
        .find(|r| vis.can_see_row(r, user))
        .ok_or_else(|| Error::not_found("No event found in that direction"))?;
    Ok(json!({"event_id": found.event_id, "origin_server_ts": found.origin_server_ts}))
}

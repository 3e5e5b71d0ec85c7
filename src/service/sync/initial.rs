//! The legacy snapshots: `GET /initialSync` (every room of the user) and
//! `GET /rooms/{roomId}/initialSync` (one room: joined, left — up to the leave — or peeked into
//! when world-readable).
//!
//! Built on /sync's machinery: one snapshot on one connection per response after the sync gate,
//! the same visibility, ignore and erasure rules and renderer, and /sync's tokens: `end` goes on
//! with `GET /events` (or /sync), each room's `messages.start` with `/messages`. Events come in the
//! legacy client format, as Synapse serves these endpoints.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::PgConnection;

use super::stream::{presence_v1, with_room_ids};
use super::{SyncToken, begin_snapshot, to_raw};
use crate::service::auth::Requester;
use crate::service::erasure::Erasure;
use crate::service::messages::position_token;
use crate::service::presence::Until;
use crate::service::timeline::{self, Viewer};
use crate::service::visibility::Visibility;
use crate::service::{account_data, ignore, presence, receipts, retention, typing};
use crate::store::events::{EventFilter, Members};
use crate::{AppState, Error, Result, store};

/// Messages per room when `limit` is not given (Synapse's default).
const DEFAULT_LIMIT: i64 = 10;
/// The most messages per room.
const MAX_LIMIT: i64 = 1000;

/// The response of `GET /initialSync`.
#[derive(Serialize)]
pub struct InitialSync {
    /// Where `GET /events` (or /sync) goes on.
    pub end: String,
    pub rooms: Vec<RoomInfo>,
    pub presence: Vec<Box<RawValue>>,
    /// Global account data.
    pub account_data: Vec<Box<RawValue>>,
    /// The joined rooms' receipts, one `m.receipt` event per room (as Synapse).
    pub receipts: Vec<Box<RawValue>>,
}

/// One room of a snapshot (the spec's RoomInfo).
#[derive(Serialize)]
pub struct RoomInfo {
    pub room_id: String,
    /// The user's membership; absent when peeking into a world-readable room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<String>,
    /// For an invite: who sent it, and the invite event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inviter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<PaginationChunk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Vec<Box<RawValue>>>,
    /// `public` when in the room directory, else `private`.
    pub visibility: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_data: Option<Vec<Box<RawValue>>>,
}

/// A room's latest messages: `start` pages back with /messages, `end` is where they stop.
#[derive(Serialize)]
pub struct PaginationChunk {
    pub chunk: Vec<Box<RawValue>>,
    pub start: String,
    pub end: String,
}

/// The messages and state of one room, as of one position.
struct RoomView {
    messages: PaginationChunk,
    state: Vec<Box<RawValue>>,
}

/// What every room of one response is read with.
struct Reader<'a> {
    state: &'a AppState,
    viewer: Viewer<'a>,
    ignored: &'a HashSet<String>,
    erasure: Erasure,
    limit: i64,
}

fn limit_of(limit: Option<i64>) -> Result<i64> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(l) if l < 0 => Err(Error::invalid_param("limit must not be negative")),
        Some(l) => Ok(l.min(MAX_LIMIT)),
    }
}

fn viewer(requester: &Requester) -> Viewer<'_> {
    Viewer {
        user_id: requester.user_id.as_str(),
        device_id: Some(requester.device_id.as_str()),
    }
}

/// GET /initialSync: the joined rooms and invites (and, with `archived`, the rooms left), each
/// with its latest `limit` messages and state, then presence, account data and receipts.
pub async fn initial_sync(
    state: &AppState,
    requester: &Requester,
    limit: Option<i64>,
    archived: bool,
) -> Result<InitialSync> {
    let limit = limit_of(limit)?;
    let user = requester.user_id.as_str();
    // The client is syncing: online, as an initial /sync makes it, before the snapshot (so that
    // change is not news to the /events that follows).
    Box::pin(presence::on_sync(state, user, None, Until::Committed)).await?;
    let _turn = state.sync_gate.enter(user).await?;
    let ignored = ignore::ignored_by(state, user).await?;
    let mut conn = state.db.acquire().await?;
    let mut tx = begin_snapshot(&mut conn).await?;
    let upto = store::stream::current_in(&mut tx).await?;
    let end = SyncToken {
        position: upto,
        typing: typing::clock(state),
    }
    .encode();
    let memberships: Vec<store::rooms::MembershipRow> =
        store::rooms::memberships_of(&mut *tx, user)
            .await?
            .into_iter()
            .filter(|m| match m.membership.as_str() {
                "join" | "invite" => true,
                "leave" => archived,
                _ => false,
            })
            .collect();
    let ids: Vec<String> = memberships.iter().map(|m| m.room_id.clone()).collect();
    let public: HashSet<String> = store::rooms::public_among(&mut *tx, &ids)
        .await?
        .into_iter()
        .collect();
    let (global_data, mut room_data) = account_data::for_sync(&mut tx, user, 0, upto).await?;
    let mut reader = Reader {
        state,
        viewer: viewer(requester),
        ignored: &ignored,
        erasure: Erasure::for_viewer(state, &mut tx, user).await?,
        limit,
    };
    let mut rooms = Vec::with_capacity(memberships.len());
    for m in &memberships {
        let mut info = RoomInfo::new(&m.room_id, public.contains(&m.room_id));
        info.membership = Some(m.membership.clone());
        if m.membership == "invite" {
            invite_of(&mut tx, &mut info, &m.event_id, reader.viewer).await?;
        } else {
            // Joined: up to now; left: up to (and with) the leave.
            let (at, end_token) = if m.membership == "join" {
                (None, end.clone())
            } else {
                (Some(m.stream_ordering), position_token(m.stream_ordering))
            };
            let view = room_view(&mut tx, &mut reader, &m.room_id, at, upto, end_token).await?;
            info.messages = Some(view.messages);
            info.state = Some(view.state);
            info.account_data = Some(to_raw(room_data.remove(&m.room_id).unwrap_or_default())?);
        }
        rooms.push(info);
    }
    let joined: Vec<String> = memberships
        .iter()
        .filter(|m| m.membership == "join")
        .map(|m| m.room_id.clone())
        .collect();
    let receipts: Vec<Value> =
        with_room_ids(receipts::for_sync(&mut tx, user, &joined, 0, upto).await?).collect();
    let presence_events = presence::for_sync(state, &mut tx, user, 0, upto).await?;
    tx.commit().await?;
    Ok(InitialSync {
        end,
        rooms,
        presence: to_raw(presence_events.into_iter().map(presence_v1).collect())?,
        account_data: to_raw(global_data)?,
        receipts: to_raw(receipts)?,
    })
}

/// GET /rooms/{roomId}/initialSync: the room as the user sees it now when joined, as it was when
/// they left, or (without `membership`) as anyone may see it when it is world-readable; 403
/// otherwise (Synapse's `check_user_in_room_or_world_readable`, departed users allowed).
pub async fn room_initial_sync(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    limit: Option<i64>,
) -> Result<RoomInfo> {
    let limit = limit_of(limit)?;
    let user = requester.user_id.as_str();
    let _turn = state.sync_gate.enter(user).await?;
    let ignored = ignore::ignored_by(state, user).await?;
    let mut conn = state.db.acquire().await?;
    let mut tx = begin_snapshot(&mut conn).await?;
    let upto = store::stream::current_in(&mut tx).await?;
    let now = SyncToken {
        position: upto,
        typing: typing::clock(state),
    }
    .encode();
    let Some((reported, at)) = access(&mut tx, user, room_id).await? else {
        return Err(Error::forbidden(
            "You are not a member of this room and it is not world-readable",
        ));
    };
    let end = at.map_or(now, position_token);
    let public = !store::rooms::public_among(&mut *tx, &[room_id.to_owned()])
        .await?
        .is_empty();
    let mut reader = Reader {
        state,
        viewer: viewer(requester),
        ignored: &ignored,
        erasure: Erasure::for_viewer(state, &mut tx, user).await?,
        limit,
    };
    let view = room_view(&mut tx, &mut reader, room_id, at, upto, end).await?;
    let (_, mut room_data) = account_data::for_sync(&mut tx, user, 0, upto).await?;
    let mut info = RoomInfo::new(room_id, public);
    info.membership = reported;
    info.messages = Some(view.messages);
    info.state = Some(view.state);
    info.account_data = Some(to_raw(room_data.remove(room_id).unwrap_or_default())?);
    tx.commit().await?;
    Ok(info)
}

/// How the user may see the room: (the membership reported, the position the snapshot stops at).
/// Joined: now; left: at the leave; otherwise, without membership, when the room is
/// world-readable. `None`: not at all (banned, invited, knocking or a stranger to a room that is
/// not world-readable).
async fn access(
    conn: &mut PgConnection,
    user: &str,
    room_id: &str,
) -> Result<Option<(Option<String>, Option<i64>)>> {
    let membership = store::rooms::memberships_of(&mut *conn, user)
        .await?
        .into_iter()
        .find(|m| m.room_id == room_id);
    Ok(match membership {
        Some(m) if m.membership == "join" => Some((Some(m.membership), None)),
        Some(m) if m.membership == "leave" => Some((Some(m.membership), Some(m.stream_ordering))),
        _ if world_readable(&mut *conn, room_id).await? => Some((None, None)),
        _ => None,
    })
}

/// An invite's `invite` event (legacy format) and `inviter`.
async fn invite_of(
    conn: &mut PgConnection,
    info: &mut RoomInfo,
    event_id: &str,
    viewer: Viewer<'_>,
) -> Result<()> {
    if let Some(row) = store::events::event_by_id(&mut *conn, event_id).await? {
        info.inviter = Some(row.sender.clone());
        let rendered = timeline::render_plain(&[row], viewer);
        info.invite = rendered.first().map(|e| timeline::to_v1_format(e));
    }
    Ok(())
}

/// Whether the room's current history visibility is `world_readable`.
async fn world_readable(conn: &mut PgConnection, room_id: &str) -> Result<bool> {
    let rows =
        store::events::current_state_of_type(&mut *conn, room_id, "m.room.history_visibility")
            .await?;
    Ok(rows.iter().any(|r| {
        serde_json::from_str::<Value>(&r.client_json)
            .is_ok_and(|e| e["content"]["history_visibility"] == "world_readable")
    }))
}

/// A room's latest messages the user may see and its state, up to position `at` (a leave) or now
/// (`None`, up to `upto`).
async fn room_view(
    conn: &mut PgConnection,
    reader: &mut Reader<'_>,
    room_id: &str,
    at: Option<i64>,
    upto: i64,
    end: String,
) -> Result<RoomView> {
    let user = reader.viewer.user_id;
    let until = at.unwrap_or(upto);
    let rooms = [room_id.to_owned()];
    let mut rows = if reader.limit == 0 {
        Vec::new()
    } else {
        store::events::latest_events_per_room(
            &mut *conn,
            &rooms,
            0,
            until,
            reader.limit,
            &EventFilter::default(),
        )
        .await?
    };
    rows.reverse();
    // /messages from here goes on before the oldest event read.
    let start = position_token(rows.first().map_or(until, |r| r.stream_ordering - 1));
    let vis = Visibility::load(&mut *conn, room_id, user).await?;
    rows.retain(|r| {
        vis.can_see_row(r, user)
            && !ignore::hides(reader.ignored, &r.sender, r.state_key.is_some())
            && !retention::expired(reader.state, r)
    });
    let state_rows = match at {
        Some(at) => store::events::state_at(&mut *conn, room_id, at, Members::Included).await?,
        None => {
            store::events::current_state_of_rooms(&mut *conn, &rooms, Members::Included).await?
        }
    };
    let chunk = timeline::render_all(&mut *conn, &mut reader.erasure, rows, reader.viewer).await?;
    Ok(RoomView {
        messages: PaginationChunk {
            chunk: v1(&chunk),
            start,
            end,
        },
        state: v1(&timeline::render_plain(&state_rows, reader.viewer)),
    })
}

fn v1(events: &[Box<RawValue>]) -> Vec<Box<RawValue>> {
    events.iter().map(|e| timeline::to_v1_format(e)).collect()
}

impl RoomInfo {
    fn new(room_id: &str, public: bool) -> Self {
        Self {
            room_id: room_id.to_owned(),
            membership: None,
            inviter: None,
            invite: None,
            messages: None,
            state: None,
            visibility: if public { "public" } else { "private" },
            account_data: None,
        }
    }
}

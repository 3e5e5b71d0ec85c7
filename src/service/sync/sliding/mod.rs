//! Sliding sync (MSC4186, "simplified sliding sync"), on /sync's machinery: the same notifier
//! wakes its long polls, the same sync gate admits it, and each response reads through one pooled
//! connection (one REPEATABLE READ snapshot for the lists, one for the rooms and extensions, both
//! bounded by the stream position the first one read).
//!
//! A connection (user, device, `conn_id`) keeps its positions in PostgreSQL (see `conn`): which
//! rooms the client has, up to where, with which config. A response sends a room whole
//! (`initial`) when the client does not have it, and otherwise only what changed since.

mod conn;
mod extensions;
mod lists;
mod render;
mod required_state;

use std::collections::HashSet;
use std::time::Instant;

use ruma::api::client::sync::sync_events::v5;
use sqlx::PgConnection;

use self::conn::{Position, SentRoom};
use super::{MAX_TIMEOUT, begin_snapshot, subscribe};
use crate::service::auth::Requester;
use crate::service::{ignore, presence};
use crate::store::sliding_sync::Connection;
use crate::{AppState, Error, Result, store};

pub use conn::EXPIRY_MS;

/// The longest `conn_id` accepted.
const MAX_CONN_ID: usize = 255;

/// POST …/org.matrix.simplified_msc3575/sync.
pub async fn sync(
    state: &AppState,
    requester: &Requester,
    req: v5::Request,
) -> Result<v5::Response> {
    let conn_id = req.conn_id.clone().unwrap_or_default();
    if conn_id.len() > MAX_CONN_ID {
        return Err(Error::invalid_param("conn_id is too long"));
    }
    let user = requester.user_id.as_str();
    let connection = Connection {
        user_id: user,
        device_id: requester.device_id.as_str(),
        conn_id: &conn_id,
    };
    let timeout = req.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let deadline = Instant::now() + timeout;
    Box::pin(presence::on_sync(
        state,
        user,
        Some(req.set_presence.as_str()),
    ))
    .await?;
    let device_key = format!("device:{user}:{}", requester.device_id);
    loop {
        // Subscribe before looking: whatever the look misses wakes the wait.
        let subscription = match req.pos {
            Some(_) if Instant::now() < deadline => {
                Some(subscribe(state, user, &device_key, false).await?.0)
            }
            _ => None,
        };
        let wait = subscription.is_some();
        let response = Box::pin(compute(state, requester, &req, &connection, wait)).await?;
        let Some(mut response) = response else {
            // Nothing new: wait (the subscription exists when this can happen).
            let remaining = deadline.saturating_duration_since(Instant::now());
            let woken = match &subscription {
                Some(s) => s.wait(remaining).await,
                None => false,
            };
            if !woken || remaining.is_zero() {
                // Timed out: the same `pos`, the lists unchanged (so left out), no rooms.
                let mut response = v5::Response::new(req.pos.clone().unwrap_or_default());
                response.txn_id = req.txn_id.clone();
                return Ok(response);
            }
            continue;
        };
        response.txn_id = req.txn_id.clone();
        return Ok(response);
    }
}

/// One look. `None` when `may_wait` and there is nothing to send (the caller waits and looks
/// again); otherwise the response, its position stored.
async fn compute(
    state: &AppState,
    requester: &Requester,
    req: &v5::Request,
    connection: &Connection<'_>,
    may_wait: bool,
) -> Result<Option<v5::Response>> {
    let user = requester.user_id.as_str();
    let _turn = state.sync_gate.enter(user).await?;
    let ignored = ignore::ignored_by(state, user).await?;
    let mut db = state.db.acquire().await?;
    let previous = match req.pos.as_deref() {
        Some(pos) => Some(conn::load(&mut db, connection, pos).await?),
        None => {
            conn::forget(&mut db, connection).await?;
            None
        }
    };
    let to_device_since =
        extensions::acknowledge_to_device(&mut db, requester, &req.extensions.to_device).await?;
    let look = Look {
        requester,
        req,
        previous: previous.as_ref(),
        ignored: &ignored,
        to_device_since,
    };
    let (mut response, next) = look_on(state, &mut db, look).await?;
    let news = !response.rooms.is_empty() || next.news;
    if let Some(previous) = previous.as_ref().filter(|_| !news) {
        // Nothing new: the client keeps its position.
        if may_wait {
            return Ok(None);
        }
        response.pos = previous.pos.to_string();
        return Ok(Some(response));
    }
    let pos = conn::save(
        &mut db,
        connection,
        previous.as_ref().map(|p| p.pos),
        &next.position,
    )
    .await?;
    response.pos = pos.to_string();
    Ok(Some(response))
}

/// What one look reads.
struct Look<'a> {
    requester: &'a Requester,
    req: &'a v5::Request,
    previous: Option<&'a Position>,
    ignored: &'a HashSet<String>,
    to_device_since: Option<i64>,
}

/// The next position, and whether the extensions carry news.
struct Next {
    position: Position,
    news: bool,
}

/// The reads of one look, all through `db`.
async fn look_on(
    state: &AppState,
    db: &mut PgConnection,
    look: Look<'_>,
) -> Result<(v5::Response, Next)> {
    let user = look.requester.user_id.as_str();
    let mut tx = begin_snapshot(db).await?;
    let upto = store::stream::current_in(&mut tx).await?;
    let candidates = lists::candidates(&mut tx, user, look.previous, upto).await?;
    let m_direct = store::account_data::get(&mut *tx, user, "", "m.direct").await?;
    tx.commit().await?;
    let direct = lists::direct_rooms(m_direct.as_deref());
    let selection = lists::select(state, db, user, look.req, candidates, direct).await?;
    let plans = render::plan(&selection, look.previous, upto);
    let mut tx = begin_snapshot(db).await?;
    let read = render::Read {
        requester: look.requester,
        ignored: look.ignored,
        from: look.previous.map(|p| p.stream_position),
    };
    let mut rendered = render::rooms(state, &mut tx, plans, read).await?;
    let since = extensions::Since {
        from: look.previous.map(|p| p.stream_position.min(upto)),
        typing: look.previous.map_or(0, |p| p.typing),
        upto,
        initial_rooms: rendered
            .iter()
            .filter(|r| r.plan.initial)
            .map(|r| r.plan.candidate.room_id.clone())
            .collect(),
    };
    let ext = extensions::read(
        state,
        &mut tx,
        look.requester,
        &look.req.extensions,
        &selection,
        look.to_device_since,
        &since,
    )
    .await?;
    tx.commit().await?;
    render::finish(state, db, user, &mut rendered, &selection.direct).await?;

    let mut position = Position {
        pos: 0,
        stream_position: upto,
        typing: ext.typing,
        rooms: look.previous.map(|p| p.rooms.clone()).unwrap_or_default(),
    };
    // Every room looked at is now known to the client up to the response's position.
    for (room_id, (candidate, config)) in &selection.rooms {
        let until = if matches!(candidate.membership.as_str(), "leave" | "ban") {
            candidate.membership_pos
        } else {
            upto
        };
        position.rooms.insert(
            room_id.clone(),
            SentRoom {
                at: until,
                m: candidate.membership.clone(),
                tl: config.timeline_limit,
                rs: config.required_state.to_pairs(),
            },
        );
    }
    // Rooms the user no longer has (forgotten, or left and seen leaving) are forgotten here too.
    position.rooms.retain(|room_id, sent| {
        selection.rooms.contains_key(room_id) || (sent.m == "join" || sent.m == "invite")
    });
    let mut response = v5::Response::new(String::new());
    response.lists = selection.counts;
    for r in rendered {
        response
            .rooms
            .insert(render::room_id(&r.plan.candidate.room_id)?, r.room);
    }
    response.extensions = ext.response;
    Ok((
        response,
        Next {
            position,
            news: ext.news,
        },
    ))
}

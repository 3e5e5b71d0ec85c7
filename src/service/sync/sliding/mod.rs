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
mod filters;
mod lists;
mod memory;
mod render;
mod required_state;

use std::collections::HashSet;
use std::time::Instant;

use ruma::api::client::sync::sync_events::v5;
use sqlx::PgConnection;

use self::conn::{Position, SentRoom};
use super::{MAX_TIMEOUT, begin_snapshot, subscribe};
use crate::service::auth::Requester;
use crate::service::{ignore, metrics, presence};
use crate::store::sliding_sync::Connection;
use crate::{AppState, Error, Result, store};

pub use conn::EXPIRY_MS;
pub use filters::ExtraFilters;

/// The longest `conn_id` accepted.
const MAX_CONN_ID: usize = 255;

/// POST …/org.matrix.simplified_msc3575/sync.
pub async fn sync(
    state: &AppState,
    requester: &Requester,
    req: v5::Request,
    extra: ExtraFilters,
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
    // A sliding sync shows no presence: its write need not be committed before the answer.
    Box::pin(presence::on_sync(
        state,
        user,
        Some(req.set_presence.as_str()),
        presence::Until::Queued,
    ))
    .await?;
    let device_key = format!("device:{user}:{}", requester.device_id);
    // What the last look that found nothing left for the wake-ups after it.
    let mut memo: Option<Box<memory::Memo>> = None;
    loop {
        // Subscribe before looking: whatever the look misses wakes the wait.
        let subscription = match req.pos {
            Some(_) if Instant::now() < deadline => {
                Some(subscribe(state, user, &device_key, false).await?)
            }
            _ => None,
        };
        let mut outcome = None;
        if let (Some(m), Some((_, joined))) = (memo.as_mut(), &subscription) {
            // Woken: most wake-ups (new messages in rooms the client has) are answered here.
            let started = Instant::now();
            outcome = match Box::pin(memory::serve(state, requester, &req, m, joined)).await {
                memory::Memory::Answer(mut response, upto) => {
                    let position = next_position(&m.previous, &m.selection, upto, m.typing);
                    let mut db = state.db.acquire().await?;
                    let pos =
                        conn::save(&mut db, &connection, Some(m.previous.pos), &position).await?;
                    response.pos = pos.to_string();
                    Some(Outcome::Answer(response))
                }
                memory::Memory::Nothing => Some(Outcome::Nothing(None)),
                memory::Memory::Unknown => None,
            };
            let source = if outcome.is_some() {
                "memory"
            } else {
                "database"
            };
            ::metrics::counter!(metrics::names::SLIDING_WOKEN, "source" => source).increment(1);
            tracing::debug!(
                source,
                compute_us = started.elapsed().as_micros() as u64,
                "sliding sync woken"
            );
        }
        let outcome = match outcome {
            Some(outcome) => outcome,
            None => {
                let wait = subscription.is_some();
                let request = (&req, &extra);
                Box::pin(compute(state, requester, request, &connection, wait)).await?
            }
        };
        match outcome {
            Outcome::Answer(mut response) => {
                response.txn_id = req.txn_id.clone();
                return Ok(*response);
            }
            Outcome::Nothing(new_memo) => {
                if new_memo.is_some() {
                    memo = new_memo;
                }
                // Nothing new: wait (the subscription exists when this can happen).
                let remaining = deadline.saturating_duration_since(Instant::now());
                let woken = match &subscription {
                    Some((s, _)) => s.wait(remaining).await,
                    None => false,
                };
                if !woken || remaining.is_zero() {
                    // Timed out: the same `pos`, the lists unchanged (so left out), no rooms.
                    let mut response = v5::Response::new(req.pos.clone().unwrap_or_default());
                    response.txn_id = req.txn_id.clone();
                    return Ok(response);
                }
            }
        }
    }
}

/// What a look found.
enum Outcome {
    /// The response, its position stored.
    Answer(Box<v5::Response>),
    /// Nothing new (the caller waits), and what memory needs to answer the wake-ups after it.
    Nothing(Option<Box<memory::Memo>>),
}

/// One look in the database. `Nothing` when `may_wait` and there is nothing to send (the caller
/// waits and looks again); otherwise the response, its position stored.
async fn compute(
    state: &AppState,
    requester: &Requester,
    (req, extra): (&v5::Request, &ExtraFilters),
    connection: &Connection<'_>,
    may_wait: bool,
) -> Result<Outcome> {
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
        extra,
        previous: previous.as_ref(),
        ignored: &ignored,
        to_device_since,
    };
    let (mut response, next, selection) = look_on(state, &mut db, look).await?;
    let news = !response.rooms.is_empty() || next.news;
    match previous {
        Some(previous) if !news => {
            // Nothing new: the client keeps its position.
            if may_wait {
                let p = next.position;
                let memo = memory::Memo::new(
                    &mut db,
                    user,
                    previous,
                    p.stream_position,
                    p.typing,
                    selection,
                    response,
                )
                .await?;
                return Ok(Outcome::Nothing(Some(Box::new(memo))));
            }
            response.pos = previous.pos.to_string();
            Ok(Outcome::Answer(Box::new(response)))
        }
        previous => {
            let used = previous.as_ref().map(|p| p.pos);
            let pos = conn::save(&mut db, connection, used, &next.position).await?;
            response.pos = pos.to_string();
            Ok(Outcome::Answer(Box::new(response)))
        }
    }
}

/// What one look reads.
struct Look<'a> {
    requester: &'a Requester,
    req: &'a v5::Request,
    extra: &'a ExtraFilters,
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
) -> Result<(v5::Response, Next, lists::Selection)> {
    let user = look.requester.user_id.as_str();
    let mut tx = begin_snapshot(db).await?;
    let upto = store::stream::current_in(&mut tx).await?;
    let candidates = lists::candidates(&mut tx, user, look.previous, upto).await?;
    let m_direct = store::account_data::get(&mut *tx, user, "", "m.direct").await?;
    let tags = if look.extra.wants_tags() {
        filters::tags_by_room(store::account_data::rooms_of_type(&mut *tx, user, "m.tag").await?)
    } else {
        Default::default()
    };
    tx.commit().await?;
    let rooms = lists::Rooms {
        candidates,
        direct: lists::direct_rooms(m_direct.as_deref()),
        tags,
    };
    let selection = lists::select(state, db, user, look.req, look.extra, rooms).await?;
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

    let position = next_position(
        look.previous.unwrap_or(&Position::default()),
        &selection,
        upto,
        ext.typing,
    );
    let mut response = v5::Response::new(String::new());
    response.lists = selection.counts.clone();
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
        selection,
    ))
}

/// The position after a response at `upto`: every room looked at is now known to the client up
/// to there (a room left, up to its leave); rooms the user no longer has (forgotten, or left and
/// seen leaving) are forgotten.
fn next_position(
    previous: &Position,
    selection: &lists::Selection,
    upto: i64,
    typing: i64,
) -> Position {
    let mut rooms = previous.rooms.clone();
    for (room_id, (candidate, config)) in &selection.rooms {
        let until = if matches!(candidate.membership.as_str(), "leave" | "ban") {
            candidate.membership_pos
        } else {
            upto
        };
        rooms.insert(
            room_id.clone(),
            SentRoom {
                at: until,
                m: candidate.membership.clone(),
                tl: config.timeline_limit,
                rs: config.required_state.to_pairs(),
            },
        );
    }
    rooms.retain(|room_id, sent| {
        selection.rooms.contains_key(room_id)
            || matches!(sent.m.as_str(), "join" | "invite" | "knock")
    });
    Position {
        pos: 0,
        stream_position: upto,
        typing,
        rooms,
    }
}

//! A connection's stored positions: what the client has been sent, kept in PostgreSQL so that a
//! `pos` works after a restart and on every process sharing the database.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::required_state::Stored;
use crate::store::sliding_sync::{self as stored, Connection};
use crate::{Error, Result, store};

/// Positions kept per connection: the one in use and the newest after it (a retried request
/// with the previous `pos` still works, as in Synapse).
const KEEP_POSITIONS: i64 = 5;
/// A position in use is marked as used at most this often (expiry counts from there).
const TOUCH_EVERY_MS: i64 = 60 * 60 * 1000;
/// Connections unused this long are forgotten (Synapse: a week).
pub const EXPIRY_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// What a room was sent with, last time it was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentRoom {
    /// The stream position up to which the client has the room.
    pub at: i64,
    /// The membership it was sent with.
    pub m: String,
    /// Its `timeline_limit`.
    pub tl: u64,
    /// Its `required_state` (`$ME` resolved, `$LAZY` kept as a pair), shared between rooms.
    pub rs: Stored,
}

/// A stored position.
#[derive(Debug, Clone, Default)]
pub struct Position {
    pub pos: i64,
    /// The room-event stream position the response covered (extensions count from here).
    pub stream_position: i64,
    /// The typing clock the response covered.
    pub typing: i64,
    /// Room ID → what the client has of it.
    pub rooms: HashMap<String, SentRoom>,
}

/// The connection's position `pos`; an unknown, expired or malformed one is `M_UNKNOWN_POS`.
pub async fn load(conn: &mut PgConnection, c: &Connection<'_>, pos: &str) -> Result<Position> {
    let unknown = || Error::unknown_pos("Unknown or expired pos; start again without one");
    let n: i64 = pos.parse().map_err(|_| unknown())?;
    let row = stored::position(&mut *conn, c, n)
        .await?
        .ok_or_else(unknown)?;
    let now = store::now_ms();
    if now - row.last_used_ts > EXPIRY_MS {
        return Err(unknown());
    }
    if now - row.last_used_ts > TOUCH_EVERY_MS {
        stored::touch(&mut *conn, n, now).await?;
    }
    let mut rooms: HashMap<String, SentRoom> =
        serde_json::from_value(row.rooms).map_err(Error::internal)?;
    share_required_state(&mut rooms);
    Ok(Position {
        pos: row.pos,
        stream_position: row.stream_position,
        typing: row.typing,
        rooms,
    })
}

/// Rooms read back with equal `required_state`s share one copy (a waiting long poll keeps its
/// position: twenty rooms of Element X's list would otherwise hold twenty copies of 17 pairs).
fn share_required_state(rooms: &mut HashMap<String, SentRoom>) {
    let mut distinct: HashSet<Stored> = HashSet::new();
    for sent in rooms.values_mut() {
        match distinct.get(&sent.rs) {
            Some(shared) => sent.rs = shared.clone(),
            None => {
                distinct.insert(sent.rs.clone());
            }
        }
    }
}

/// Stores a new position after `used` (the one the request came with) and prunes the older ones.
pub async fn save(
    conn: &mut PgConnection,
    c: &Connection<'_>,
    used: Option<i64>,
    position: &Position,
) -> Result<i64> {
    let rooms = serde_json::to_value(&position.rooms).map_err(Error::internal)?;
    let new = stored::NewPosition {
        stream_position: position.stream_position,
        typing: position.typing,
        rooms: &rooms,
        now: store::now_ms(),
    };
    Ok(stored::save(conn, c, new, used, KEEP_POSITIONS).await?)
}

/// A request without `pos`: the connection starts over.
pub async fn forget(conn: &mut PgConnection, c: &Connection<'_>) -> Result<()> {
    Ok(stored::forget_connection(conn, c).await?)
}

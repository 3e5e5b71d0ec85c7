//! Sliding sync (MSC4186): connection positions, and the rooms' bump stamps.

use serde_json::Value;
use sqlx::{Connection as _, PgConnection, PgExecutor};

/// A stored connection position.
pub struct PositionRow {
    pub pos: i64,
    pub stream_position: i64,
    pub typing: i64,
    /// Room ID → what the client was sent of it (see the migration).
    pub rooms: Value,
    pub last_used_ts: i64,
}

/// Which connection a position belongs to.
pub struct Connection<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub conn_id: &'a str,
}

/// The position `pos` of this connection, if it is still kept.
pub async fn position(
    db: impl PgExecutor<'_>,
    conn: &Connection<'_>,
    pos: i64,
) -> sqlx::Result<Option<PositionRow>> {
    sqlx::query_as!(
        PositionRow,
        "SELECT pos, stream_position, typing, rooms, last_used_ts FROM sliding_sync_positions
         WHERE pos = $1 AND user_id = $2 AND device_id = $3 AND conn_id = $4",
        pos,
        conn.user_id,
        conn.device_id,
        conn.conn_id
    )
    .fetch_optional(db)
    .await
}

/// Marks a position as in use (expiry counts from there).
pub async fn touch(db: impl PgExecutor<'_>, pos: i64, now: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sliding_sync_positions SET last_used_ts = $2 WHERE pos = $1",
        pos,
        now
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores a new position and returns its `pos`.
async fn insert(
    db: impl PgExecutor<'_>,
    conn: &Connection<'_>,
    stream_position: i64,
    typing: i64,
    rooms: &Value,
    now: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO sliding_sync_positions
             (user_id, device_id, conn_id, stream_position, typing, rooms, last_used_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING pos",
        conn.user_id,
        conn.device_id,
        conn.conn_id,
        stream_position,
        typing,
        rooms,
        now
    )
    .fetch_one(db)
    .await
}

/// Stores a new position and prunes the connection's older ones (`prune_connection`) in one
/// transaction that does not wait for its commit to reach the disk: a position lost in a crash
/// only makes its client start over (`M_UNKNOWN_POS`), and a response does not wait for a flush.
pub async fn save(
    conn: &mut PgConnection,
    c: &Connection<'_>,
    new: NewPosition<'_>,
    used: Option<i64>,
    keep: i64,
) -> sqlx::Result<i64> {
    let mut tx = conn.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit TO OFF")
        .execute(&mut *tx)
        .await?;
    let pos = insert(
        &mut *tx,
        c,
        new.stream_position,
        new.typing,
        new.rooms,
        new.now,
    )
    .await?;
    prune_connection(&mut *tx, c, used.unwrap_or(pos), keep).await?;
    tx.commit().await?;
    Ok(pos)
}

/// A position to store.
pub struct NewPosition<'a> {
    pub stream_position: i64,
    pub typing: i64,
    pub rooms: &'a Value,
    pub now: i64,
}

/// Drops the connection's positions before `used` (the client has moved past them) and, except
/// `used` itself, all but the newest `keep`.
async fn prune_connection(
    db: impl PgExecutor<'_>,
    conn: &Connection<'_>,
    used: i64,
    keep: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM sliding_sync_positions
         WHERE user_id = $1 AND device_id = $2 AND conn_id = $3
           AND pos <> $4 AND (pos < $4 OR pos NOT IN (
               SELECT pos FROM sliding_sync_positions
               WHERE user_id = $1 AND device_id = $2 AND conn_id = $3
               ORDER BY pos DESC LIMIT $5))",
        conn.user_id,
        conn.device_id,
        conn.conn_id,
        used,
        keep
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets a connection (a request without `pos` starts it over).
pub async fn forget_connection(db: impl PgExecutor<'_>, conn: &Connection<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM sliding_sync_positions WHERE user_id = $1 AND device_id = $2 AND conn_id = $3",
        conn.user_id,
        conn.device_id,
        conn.conn_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Drops positions unused since `before`.
pub async fn prune_unused(db: impl PgExecutor<'_>, before: i64) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "DELETE FROM sliding_sync_positions WHERE last_used_ts < $1",
        before
    )
    .execute(db)
    .await?
    .rows_affected())
}

/// A user's membership of a room, as the room list sees it.
pub struct ListedMembership {
    pub room_id: String,
    pub membership: String,
    /// Stream position of the member event.
    pub stream_ordering: i64,
    /// A leave or ban sent by someone else (a kick, a ban) after the user had joined.
    pub removed: bool,
}

/// Every room the user has a membership in and has not forgotten.
pub async fn memberships(
    db: impl PgExecutor<'_>,
    user_id: &str,
) -> sqlx::Result<Vec<ListedMembership>> {
    sqlx::query_as!(
        ListedMembership,
        r#"SELECT m.room_id, m.membership, m.stream_ordering,
                  COALESCE(e.sender <> m.user_id, FALSE) AND EXISTS (
                      SELECT 1 FROM events j
                      WHERE j.room_id = m.room_id AND j.event_type = 'm.room.member'
                        AND j.state_key = m.user_id AND j.stream_ordering < m.stream_ordering
                        AND j.client_json::jsonb -> 'content' ->> 'membership' = 'join'
                  ) AS "removed!"
           FROM memberships m
           LEFT JOIN events e ON e.event_id = m.event_id AND m.membership IN ('leave', 'ban')
           WHERE m.user_id = $1 AND NOT m.forgotten"#,
        user_id
    )
    .fetch_all(db)
    .await
}

/// The stream position of each room's latest event of one of `types` at or below `upto` (rooms
/// without one are absent).
pub async fn bump_stamps(
    db: impl PgExecutor<'_>,
    rooms: &[String],
    types: &[String],
    upto: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT rm.room_id AS "room_id!", e.stream_ordering AS "stamp!"
           FROM UNNEST($1::text[]) AS rm(room_id)
           CROSS JOIN LATERAL (
               SELECT stream_ordering FROM events
               WHERE room_id = rm.room_id AND event_type = ANY($2) AND stream_ordering <= $3
               ORDER BY stream_ordering DESC LIMIT 1
           ) e"#,
        rooms,
        types,
        upto
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.room_id, r.stamp)).collect())
}

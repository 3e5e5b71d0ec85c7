//! presence: the presence state of local users.

use sqlx::{PgConnection, PgExecutor};

#[derive(Clone)]
pub struct PresenceRow {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub last_sync_ts: i64,
}

pub async fn get(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<Option<PresenceRow>> {
    sqlx::query_as!(
        PresenceRow,
        "SELECT user_id, state, status_msg, last_active_ts, last_sync_ts FROM presence WHERE user_id = $1",
        user_id
    )
    .fetch_optional(db)
    .await
}

/// The row locked until the transaction ends, so that concurrent updates do not interleave.
pub async fn get_for_update(
    conn: &mut PgConnection,
    user_id: &str,
) -> sqlx::Result<Option<PresenceRow>> {
    sqlx::query_as!(
        PresenceRow,
        "SELECT user_id, state, status_msg, last_active_ts, last_sync_ts FROM presence WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_optional(conn)
    .await
}

/// The rows of `users`, locked until the transaction ends. Rows are locked in user order, so
/// that batches of several processes cannot deadlock on them.
pub async fn get_many_for_update(
    conn: &mut PgConnection,
    users: &[String],
) -> sqlx::Result<Vec<PresenceRow>> {
    sqlx::query_as!(
        PresenceRow,
        "SELECT user_id, state, status_msg, last_active_ts, last_sync_ts FROM presence
         WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
        users
    )
    .fetch_all(conn)
    .await
}

/// Several users' presence writes, one per user, column by column; `positions[i]` is Some when
/// /sync must report the change.
#[derive(Default)]
pub struct PresenceWrites {
    pub users: Vec<String>,
    pub states: Vec<String>,
    pub status_msgs: Vec<Option<String>>,
    pub last_active: Vec<i64>,
    pub last_sync: Vec<i64>,
    pub positions: Vec<Option<i64>>,
}

/// Writes several users' presence in one statement.
pub async fn upsert_many(conn: &mut PgConnection, w: &PresenceWrites) -> sqlx::Result<()> {
    // A position is never 0: 0 stands for "keep the stored one".
    sqlx::query!(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, last_sync_ts, stream_position)
         SELECT u, s, m, a, y, COALESCE(p, 0)
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[]) AS w(u, s, m, a, y, p)
         ORDER BY u
         ON CONFLICT (user_id) DO UPDATE SET state = EXCLUDED.state, status_msg = EXCLUDED.status_msg,
             last_active_ts = EXCLUDED.last_active_ts,
             last_sync_ts = GREATEST(presence.last_sync_ts, EXCLUDED.last_sync_ts),
             stream_position = CASE WHEN EXCLUDED.stream_position = 0 THEN presence.stream_position
                                    ELSE EXCLUDED.stream_position END",
        &w.users,
        &w.states,
        &w.status_msgs as &[Option<String>],
        &w.last_active,
        &w.last_sync,
        &w.positions as &[Option<i64>]
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Users whose shown state has gone stale: online but idle, or not syncing any more.
pub async fn stale(
    db: impl PgExecutor<'_>,
    idle_before: i64,
    offline_before: i64,
) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query!(
        "SELECT user_id, CASE WHEN last_sync_ts < $2 AND last_active_ts < $2 THEN 'offline' ELSE 'unavailable' END AS \"state!\"
         FROM presence
         WHERE state <> 'offline'
           AND ((last_sync_ts < $2 AND last_active_ts < $2) OR (state = 'online' AND last_active_ts < $1))",
        idle_before,
        offline_before
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.state)).collect())
}

/// Moves a user to `state` if the row still matches the staleness condition; true when changed.
pub async fn mark_stale(
    conn: &mut PgConnection,
    user_id: &str,
    state: &str,
    idle_before: i64,
    offline_before: i64,
    position: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE presence SET state = $2, stream_position = $5
         WHERE user_id = $1 AND state <> 'offline' AND state <> $2
           AND ((last_sync_ts < $4 AND last_active_ts < $4) OR (state = 'online' AND last_active_ts < $3))",
        user_id,
        state,
        idle_before,
        offline_before,
        position
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Presence changes in (since, upto] of users sharing a joined room with `user_id`, and the user's own.
pub async fn changed_for(
    db: impl PgExecutor<'_>,
    user_id: &str,
    since: i64,
    upto: i64,
) -> sqlx::Result<Vec<PresenceRow>> {
    sqlx::query_as!(
        PresenceRow,
        "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.last_sync_ts FROM presence p
         WHERE p.stream_position > $2 AND p.stream_position <= $3
           AND (p.user_id = $1 OR EXISTS (
               SELECT 1 FROM memberships mine JOIN memberships theirs ON theirs.room_id = mine.room_id
               WHERE mine.user_id = $1 AND mine.membership = 'join'
                 AND theirs.user_id = p.user_id AND theirs.membership = 'join'))",
        user_id,
        since,
        upto
    )
    .fetch_all(db)
    .await
}

/// The presence of `users` and of the users joined to any of `rooms`, whenever it last changed.
pub async fn of_users_and_members(
    db: impl PgExecutor<'_>,
    users: &[String],
    rooms: &[String],
) -> sqlx::Result<Vec<PresenceRow>> {
    sqlx::query_as!(
        PresenceRow,
        "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.last_sync_ts FROM presence p
         WHERE p.user_id = ANY($1)
            OR EXISTS (SELECT 1 FROM memberships m
                       WHERE m.user_id = p.user_id AND m.room_id = ANY($2) AND m.membership = 'join')",
        users,
        rooms
    )
    .fetch_all(db)
    .await
}

/// Whether two users share a joined room.
pub async fn share_a_room(db: impl PgExecutor<'_>, a: &str, b: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (
             SELECT 1 FROM memberships x JOIN memberships y ON y.room_id = x.room_id
             WHERE x.user_id = $1 AND x.membership = 'join' AND y.user_id = $2 AND y.membership = 'join') AS "shared!""#,
        a,
        b
    )
    .fetch_one(db)
    .await
}

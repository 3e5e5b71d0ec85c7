//! rooms, room_state, memberships and room_aliases.

use sqlx::{PgConnection, PgExecutor};

use super::events::NewEventRow;

pub struct RoomHead {
    pub room_id: String,
    pub room_version: String,
    pub head_event_id: String,
    pub head_depth: i64,
}

/// Locks the rooms' rows until the transaction ends; rows come back in room ID order.
pub async fn lock_rooms(conn: &mut PgConnection, room_ids: &[&str]) -> sqlx::Result<Vec<RoomHead>> {
    let ids: Vec<String> = room_ids.iter().map(|s| s.to_string()).collect();
    sqlx::query_as!(
        RoomHead,
        "SELECT room_id, room_version, head_event_id, head_depth FROM rooms
         WHERE room_id = ANY($1) ORDER BY room_id FOR UPDATE",
        &ids
    )
    .fetch_all(conn)
    .await
}

pub async fn get_head(conn: &mut PgConnection, room_id: &str) -> sqlx::Result<Option<RoomHead>> {
    sqlx::query_as!(
        RoomHead,
        "SELECT room_id, room_version, head_event_id, head_depth FROM rooms WHERE room_id = $1",
        room_id
    )
    .fetch_optional(conn)
    .await
}

pub async fn insert_room(
    conn: &mut PgConnection,
    room_id: &str,
    version: &str,
    is_public: bool,
    now: i64,
) -> sqlx::Result<()> {
    // The head is set once the events are in (events::insert_batch).
    sqlx::query!(
        "INSERT INTO rooms (room_id, room_version, head_event_id, head_depth, is_public, created_ts)
         VALUES ($1, $2, '', 0, $3, $4)",
        room_id,
        version,
        is_public,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Returns false when the alias is taken.
pub async fn insert_alias(
    conn: &mut PgConnection,
    alias: &str,
    room_id: &str,
    creator: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        alias,
        room_id,
        creator,
        now
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub struct StateEventRow {
    pub event_type: String,
    pub state_key: String,
    pub event_id: String,
    pub sender: String,
    pub client_json: String,
}

pub async fn current_state_events(
    conn: &mut PgConnection,
    room_id: &str,
) -> sqlx::Result<Vec<StateEventRow>> {
    sqlx::query_as!(
        StateEventRow,
        "SELECT s.event_type, s.state_key, s.event_id, e.sender, e.client_json
         FROM room_state s JOIN events e USING (event_id) WHERE s.room_id = $1",
        room_id
    )
    .fetch_all(conn)
    .await
}

/// The servers, other than `own`, of the users joined to any room `user_id` is joined to: where
/// the user's presence goes.
pub async fn servers_sharing_a_room(
    db: impl PgExecutor<'_>,
    user_id: &str,
    own: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT DISTINCT substr(m.user_id, strpos(m.user_id, ':') + 1) AS "server!"
           FROM memberships mine
           JOIN memberships m ON m.room_id = mine.room_id AND m.membership = 'join'
           WHERE mine.user_id = $1 AND mine.membership = 'join'
             AND substr(m.user_id, strpos(m.user_id, ':') + 1) <> $2"#,
        user_id,
        own
    )
    .fetch_all(db)
    .await
}

/// Points the current state (and memberships) of the stored state events `event_ids` at them (the
/// last of the list for a key named twice): a joined remote room's state, a resolved fork's.
pub async fn restore_state(conn: &mut PgConnection, event_ids: &[String]) -> sqlx::Result<()> {
    sqlx::query!(
        r#"WITH chosen AS (
               -- One event per key: the last of the list.
               SELECT DISTINCT ON (room_id, event_type, state_key)
                      room_id, event_type, state_key, event_id, stream_ordering,
                      client_json::jsonb -> 'content' ->> 'membership' AS membership
               FROM events WHERE event_id = ANY($1) AND state_key IS NOT NULL
               ORDER BY room_id, event_type, state_key, array_position($1, event_id) DESC
           ), current AS (
               INSERT INTO room_state (room_id, event_type, state_key, event_id, stream_ordering)
               SELECT room_id, event_type, state_key, event_id, stream_ordering FROM chosen
               ON CONFLICT (room_id, event_type, state_key)
               DO UPDATE SET event_id = EXCLUDED.event_id, stream_ordering = EXCLUDED.stream_ordering
           )
           INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering)
           SELECT room_id, state_key, COALESCE(membership, 'leave'), event_id, stream_ordering
           FROM chosen WHERE event_type = 'm.room.member'
           ON CONFLICT (room_id, user_id) DO UPDATE SET membership = EXCLUDED.membership,
               event_id = EXCLUDED.event_id, stream_ordering = EXCLUDED.stream_ordering"#,
        event_ids
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves room_state and memberships to the newest state events among `rows`.
pub async fn apply_state(conn: &mut PgConnection, rows: &[NewEventRow<'_>]) -> sqlx::Result<()> {
    // One row per key: ON CONFLICT cannot touch a row twice in one statement. Later events win.
    let mut latest: std::collections::HashMap<(&str, &str, &str), &NewEventRow<'_>> =
        Default::default();
    for row in rows {
        if let Some(key) = &row.event.state_key {
            latest.insert((&row.event.room_id, &row.event.event_type, key), row);
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    let (mut rooms, mut types, mut keys, mut ids, mut streams) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut m_rooms, mut m_users, mut m_memberships, mut m_ids, mut m_streams) =
        (vec![], vec![], vec![], vec![], vec![]);
    for ((room, event_type, key), row) in latest {
        rooms.push(room.to_owned());
        types.push(event_type.to_owned());
        keys.push(key.to_owned());
        ids.push(row.event.event_id.clone());
        streams.push(row.stream_ordering);
        if event_type == "m.room.member" {
            let membership = row
                .event
                .content
                .get("membership")
                .and_then(|m| m.as_str())
                .unwrap_or("leave");
            m_rooms.push(room.to_owned());
            m_users.push(key.to_owned());
            m_memberships.push(membership.to_owned());
            m_ids.push(row.event.event_id.clone());
            m_streams.push(row.stream_ordering);
        }
    }
    sqlx::query!(
        "INSERT INTO room_state (room_id, event_type, state_key, event_id, stream_ordering)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
         ON CONFLICT (room_id, event_type, state_key)
         DO UPDATE SET event_id = EXCLUDED.event_id, stream_ordering = EXCLUDED.stream_ordering",
        &rooms,
        &types,
        &keys,
        &ids,
        &streams
    )
    .execute(&mut *conn)
    .await?;
    if !m_rooms.is_empty() {
        sqlx::query!(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = EXCLUDED.membership,
                 event_id = EXCLUDED.event_id, stream_ordering = EXCLUDED.stream_ordering, forgotten = FALSE",
            &m_rooms,
            &m_users,
            &m_memberships,
            &m_ids,
            &m_streams
        )
        .execute(conn)
        .await?;
    }
    Ok(())
}

pub struct MembershipRow {
    pub room_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_ordering: i64,
}

/// Every room the user has a membership in and has not forgotten.
pub async fn memberships_of(
    db: impl PgExecutor<'_>,
    user_id: &str,
) -> sqlx::Result<Vec<MembershipRow>> {
    sqlx::query_as!(
        MembershipRow,
        "SELECT room_id, membership, event_id, stream_ordering FROM memberships
         WHERE user_id = $1 AND NOT forgotten",
        user_id
    )
    .fetch_all(db)
    .await
}

/// How a user's membership of each room moved over a stretch of the stream: what it was at `at`,
/// and which kinds of membership events the user got in (`at`, `upto`].
pub struct MembershipMove {
    pub room_id: String,
    /// The membership as of `at` (`None`: no member event yet).
    pub before: Option<String>,
    /// A join in (`at`, `upto`].
    pub joined: bool,
    /// Something other than a join (a leave, kick, ban, invite) in (`at`, `upto`].
    pub not_joined: bool,
}

/// The user's membership history of `rooms` around (`at`, `upto`]: what /sync needs to tell a new
/// join (or a leave and rejoin) from a profile change.
pub async fn membership_moves(
    db: impl PgExecutor<'_>,
    user_id: &str,
    rooms: &[String],
    at: i64,
    upto: i64,
) -> sqlx::Result<Vec<MembershipMove>> {
    sqlx::query_as!(
        MembershipMove,
        r#"SELECT rm.room_id AS "room_id!",
                  (SELECT e.client_json::jsonb -> 'content' ->> 'membership' FROM events e
                   WHERE e.room_id = rm.room_id AND e.event_type = 'm.room.member' AND e.state_key = $1
                     AND e.stream_ordering <= $3
                   ORDER BY e.stream_ordering DESC LIMIT 1) AS before,
                  EXISTS (SELECT 1 FROM events e
                   WHERE e.room_id = rm.room_id AND e.event_type = 'm.room.member' AND e.state_key = $1
                     AND e.stream_ordering > $3 AND e.stream_ordering <= $4
                     AND e.client_json::jsonb -> 'content' ->> 'membership' = 'join') AS "joined!",
                  EXISTS (SELECT 1 FROM events e
                   WHERE e.room_id = rm.room_id AND e.event_type = 'm.room.member' AND e.state_key = $1
                     AND e.stream_ordering > $3 AND e.stream_ordering <= $4
                     AND e.client_json::jsonb -> 'content' ->> 'membership' IS DISTINCT FROM 'join') AS "not_joined!"
           FROM UNNEST($2::text[]) AS rm(room_id)"#,
        user_id,
        rooms,
        at,
        upto
    )
    .fetch_all(db)
    .await
}

pub async fn joined_rooms(db: impl PgExecutor<'_>, user_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT room_id FROM memberships WHERE user_id = $1 AND membership = 'join'",
        user_id
    )
    .fetch_all(db)
    .await
}

/// The rooms each of `users` is joined to: (user, room) pairs.
pub async fn joined_rooms_of_users(
    db: impl PgExecutor<'_>,
    users: &[String],
) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query!(
        "SELECT user_id, room_id FROM memberships WHERE user_id = ANY($1) AND membership = 'join'",
        users
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.room_id)).collect())
}

/// The rooms both users are joined to, in code point order of their IDs (what `/mutual_rooms`
/// pages by).
pub async fn mutual_joined_rooms(
    db: impl PgExecutor<'_>,
    user_id: &str,
    other_user_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT a.room_id FROM memberships a
           JOIN memberships b ON b.room_id = a.room_id AND b.user_id = $2 AND b.membership = 'join'
           WHERE a.user_id = $1 AND a.membership = 'join'
           ORDER BY a.room_id COLLATE "C""#,
        user_id,
        other_user_id
    )
    .fetch_all(db)
    .await
}

pub async fn room_version(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT room_version FROM rooms WHERE room_id = $1", room_id)
        .fetch_optional(db)
        .await
}

pub async fn resolve_alias(db: impl PgExecutor<'_>, alias: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT room_id FROM room_aliases WHERE alias = $1", alias)
        .fetch_optional(db)
        .await
}

pub async fn membership(
    db: impl PgExecutor<'_>,
    room_id: &str,
    user_id: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT membership FROM memberships WHERE room_id = $1 AND user_id = $2",
        room_id,
        user_id
    )
    .fetch_optional(db)
    .await
}

/// The room's joined or invited members who are guests of this server (to make them leave when
/// the room stops allowing guests).
pub async fn guest_members(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT m.user_id FROM memberships m JOIN users u ON u.user_id = m.user_id
         WHERE m.room_id = $1 AND m.membership IN ('join', 'invite') AND u.is_guest",
        room_id
    )
    .fetch_all(db)
    .await
}

pub async fn forget(db: impl PgExecutor<'_>, room_id: &str, user_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE memberships SET forgotten = TRUE WHERE room_id = $1 AND user_id = $2",
        room_id,
        user_id
    )
    .execute(db)
    .await?;
    Ok(())
}

pub struct MemberRow {
    pub user_id: String,
    pub membership: String,
}

pub async fn members(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<Vec<MemberRow>> {
    sqlx::query_as!(
        MemberRow,
        "SELECT user_id, membership FROM memberships WHERE room_id = $1",
        room_id
    )
    .fetch_all(db)
    .await
}

pub async fn aliases_of(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias",
        room_id
    )
    .fetch_all(db)
    .await
}

pub async fn delete_alias(db: impl PgExecutor<'_>, alias: &str) -> sqlx::Result<bool> {
    Ok(
        sqlx::query!("DELETE FROM room_aliases WHERE alias = $1", alias)
            .execute(db)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Points every alias of `from` at `to` (a room upgrade).
pub async fn move_aliases(db: impl PgExecutor<'_>, from: &str, to: &str) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "UPDATE room_aliases SET room_id = $2 WHERE room_id = $1",
        from,
        to
    )
    .execute(db)
    .await?
    .rows_affected())
}

pub async fn alias_creator(
    db: impl PgExecutor<'_>,
    alias: &str,
) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query!(
        "SELECT room_id, creator FROM room_aliases WHERE alias = $1",
        alias
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.room_id, r.creator)))
}

pub async fn set_public(
    db: impl PgExecutor<'_>,
    room_id: &str,
    is_public: bool,
) -> sqlx::Result<bool> {
    Ok(sqlx::query!(
        "UPDATE rooms SET is_public = $2 WHERE room_id = $1",
        room_id,
        is_public
    )
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

pub async fn is_public(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar!("SELECT is_public FROM rooms WHERE room_id = $1", room_id)
        .fetch_optional(db)
        .await
}

/// Public rooms with their joined-member count, ordered by size then ID (a stable order for paging).
pub struct PublicRoomRow {
    pub room_id: String,
    pub joined: i64,
}

pub async fn public_rooms(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<PublicRoomRow>> {
    sqlx::query_as!(
        PublicRoomRow,
        r#"SELECT r.room_id, COUNT(m.user_id) AS "joined!"
           FROM rooms r LEFT JOIN memberships m ON m.room_id = r.room_id AND m.membership = 'join'
           WHERE r.is_public GROUP BY r.room_id ORDER BY COUNT(m.user_id) DESC, r.room_id"#
    )
    .fetch_all(db)
    .await
}

/// Those of `rooms` listed in the public room directory.
pub async fn public_among(db: impl PgExecutor<'_>, rooms: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT room_id FROM rooms WHERE room_id = ANY($1) AND is_public",
        rooms
    )
    .fetch_all(db)
    .await
}

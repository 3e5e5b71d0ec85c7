//! remote_invites and soft_failed_events: what federation keeps about rooms beside their events,
//! and the reads of `events` that rooms shared with other servers need.

use sqlx::{PgConnection, PgExecutor};

/// Records the stripped state (a JSON array) that came with `user_id`'s invite `event_id` from
/// another server, replacing an earlier invite's.
pub async fn put_remote_invite(
    conn: &mut PgConnection,
    room_id: &str,
    user_id: &str,
    event_id: &str,
    invite_state: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO remote_invites (room_id, user_id, event_id, invite_state) VALUES ($1, $2, $3, $4)
         ON CONFLICT (room_id, user_id) DO UPDATE SET event_id = EXCLUDED.event_id,
             invite_state = EXCLUDED.invite_state",
        room_id,
        user_id,
        event_id,
        invite_state
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the stripped state of `user_id`'s remote invite to `room_id` (they joined or left).
pub async fn delete_remote_invite(
    conn: &mut PgConnection,
    room_id: &str,
    user_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM remote_invites WHERE room_id = $1 AND user_id = $2",
        room_id,
        user_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The stripped state (a JSON array) of the remote invite `event_id`, if that is how it came.
pub async fn remote_invite_state(
    db: impl PgExecutor<'_>,
    room_id: &str,
    user_id: &str,
    event_id: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT invite_state FROM remote_invites WHERE room_id = $1 AND user_id = $2 AND event_id = $3",
        room_id,
        user_id,
        event_id
    )
    .fetch_optional(db)
    .await
}

/// Keeps a soft-failed event (a second copy changes nothing).
pub async fn insert_soft_failed(
    conn: &mut PgConnection,
    event_id: &str,
    room_id: &str,
    pdu: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO soft_failed_events (event_id, room_id, pdu, received_ts) VALUES ($1, $2, $3, $4)
         ON CONFLICT (event_id) DO NOTHING",
        event_id,
        room_id,
        pdu,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A soft-failed event's room and PDU.
pub async fn soft_failed(
    db: impl PgExecutor<'_>,
    event_id: &str,
) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query!(
        "SELECT room_id, pdu FROM soft_failed_events WHERE event_id = $1",
        event_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.room_id, r.pdu)))
}

/// Those of `event_ids` stored here, shown or soft-failed.
pub async fn known_among(
    db: impl PgExecutor<'_>,
    event_ids: &[String],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT event_id AS "event_id!" FROM events WHERE event_id = ANY($1)
           UNION SELECT event_id FROM soft_failed_events WHERE event_id = ANY($1)"#,
        event_ids
    )
    .fetch_all(db)
    .await
}

/// The stream positions of those of `event_ids` stored in `events`.
pub async fn positions_of(
    conn: &mut PgConnection,
    event_ids: &[String],
) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        "SELECT event_id, stream_ordering FROM events WHERE event_id = ANY($1)",
        event_ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.event_id, r.stream_ordering))
        .collect())
}

/// One state event as the authorization rules need it.
pub struct AuthStateRow {
    pub event_id: String,
    pub event_type: String,
    pub state_key: String,
    pub sender: String,
    pub client_json: String,
}

/// The room's state events of the (type, state key) pairs `keys` as of position `at`.
pub async fn state_entries_at(
    conn: &mut PgConnection,
    room_id: &str,
    at: i64,
    keys: &[(String, String)],
) -> sqlx::Result<Vec<AuthStateRow>> {
    let types: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    let state_keys: Vec<String> = keys.iter().map(|k| k.1.clone()).collect();
    sqlx::query_as!(
        AuthStateRow,
        r#"SELECT e.event_id AS "event_id!", e.event_type AS "event_type!", e.state_key AS "state_key!",
                  e.sender AS "sender!", e.client_json AS "client_json!"
           FROM UNNEST($3::text[], $4::text[]) AS k(event_type, state_key)
           CROSS JOIN LATERAL (
               SELECT * FROM events e
               WHERE e.room_id = $1 AND e.event_type = k.event_type AND e.state_key = k.state_key
                 AND e.stream_ordering <= $2
               ORDER BY e.stream_ordering DESC LIMIT 1
           ) e"#,
        room_id,
        at,
        &types,
        &state_keys
    )
    .fetch_all(conn)
    .await
}

/// Makes the room's current state (`room_state`, and the memberships of its member events) the
/// already stored events `event_ids`, dropping what it held: a remote room joined again, whose
/// state came whole from `send_join`. The events stored with the join are applied after this.
pub async fn reset_state(
    conn: &mut PgConnection,
    room_id: &str,
    event_ids: &[String],
) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM room_state WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        "INSERT INTO room_state (room_id, event_type, state_key, event_id, stream_ordering)
         SELECT room_id, event_type, state_key, event_id, stream_ordering FROM events
         WHERE event_id = ANY($2) AND room_id = $1 AND state_key IS NOT NULL
         ON CONFLICT (room_id, event_type, state_key)
         DO UPDATE SET event_id = EXCLUDED.event_id, stream_ordering = EXCLUDED.stream_ordering",
        room_id,
        event_ids
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering)
         SELECT room_id, state_key, coalesce(client_json::jsonb -> 'content' ->> 'membership', 'leave'),
                event_id, stream_ordering
         FROM events
         WHERE event_id = ANY($2) AND room_id = $1 AND event_type = 'm.room.member' AND state_key IS NOT NULL
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = EXCLUDED.membership,
             event_id = EXCLUDED.event_id, stream_ordering = EXCLUDED.stream_ordering",
        room_id,
        event_ids
    )
    .execute(conn)
    .await?;
    Ok(())
}

//! Purging history: deleting a room's old events (never state events, never the room's newest
//! event) and what indexes them.

use sqlx::PgConnection;

/// Which events of a room a purge deletes.
#[derive(Debug, Clone)]
pub struct PurgeRange<'a> {
    pub room_id: &'a str,
    /// Only events before this stream position (exclusive).
    pub before_stream: i64,
    /// Only events with an `origin_server_ts` before this.
    pub before_ts: i64,
    /// Also events of this server's users (the server name as `%:server`, a LIKE pattern for
    /// local senders); when false those are kept, as Synapse keeps local events by default.
    pub delete_local: bool,
    pub local_sender_pattern: &'a str,
}

/// Deletes the message events in the range with their search entries, notifications and
/// transaction IDs, under the room's lock (so the head cannot move meanwhile). State events stay:
/// they make the room's state at every position, which /sync, /messages and the auth rules read.
/// Returns how many events went.
pub async fn purge_events(conn: &mut PgConnection, r: &PurgeRange<'_>) -> sqlx::Result<i64> {
    let Some(head) = super::rooms::lock_rooms(conn, &[r.room_id]).await?.pop() else {
        return Ok(0);
    };
    sqlx::query_scalar!(
        r#"WITH gone AS (
               DELETE FROM events
               WHERE room_id = $1 AND state_key IS NULL AND stream_ordering < $2
                 AND origin_server_ts < $3 AND event_id <> $4
                 AND ($5 OR sender NOT LIKE $6)
               RETURNING event_id, stream_ordering),
           search AS (DELETE FROM event_search WHERE stream_ordering IN (SELECT stream_ordering FROM gone)),
           notified AS (DELETE FROM notifications WHERE event_id IN (SELECT event_id FROM gone)),
           txns AS (DELETE FROM event_txns WHERE event_id IN (SELECT event_id FROM gone))
           SELECT count(*) AS "n!" FROM gone"#,
        r.room_id,
        r.before_stream,
        r.before_ts,
        head.head_event_id,
        r.delete_local,
        r.local_sender_pattern
    )
    .fetch_one(conn)
    .await
}

/// The stream position of an event of the room (None when it is not in the room).
pub async fn event_position(
    conn: &mut PgConnection,
    room_id: &str,
    event_id: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        "SELECT stream_ordering FROM events WHERE room_id = $1 AND event_id = $2",
        room_id,
        event_id
    )
    .fetch_optional(conn)
    .await
}

/// The content of each room's current `m.room.retention` event, for rooms that have one.
pub async fn retention_policies(conn: &mut PgConnection) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query!(
        r#"SELECT s.room_id, e.client_json FROM room_state s JOIN events e USING (event_id)
           WHERE s.event_type = 'm.room.retention' AND s.state_key = ''"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.room_id, r.client_json))
        .collect())
}

/// Every room's ID.
pub async fn all_rooms(conn: &mut PgConnection) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!("SELECT room_id FROM rooms ORDER BY room_id")
        .fetch_all(conn)
        .await
}

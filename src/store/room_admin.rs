//! rooms, as the admin API lists them: each room's summary worked out from its current state.

use sqlx::{PgExecutor, Postgres, QueryBuilder};

/// A room's summary for the admin API.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminRoomRow {
    pub room_id: String,
    pub version: String,
    pub public: bool,
    pub name: Option<String>,
    pub canonical_alias: Option<String>,
    pub topic: Option<String>,
    pub avatar: Option<String>,
    pub creator: Option<String>,
    pub room_type: Option<String>,
    /// `m.federate` of the create event ("false" when the room is local-only).
    pub federate: Option<String>,
    pub encryption: Option<String>,
    pub join_rules: Option<String>,
    pub guest_access: Option<String>,
    pub history_visibility: Option<String>,
    pub joined_members: i64,
    pub state_events: i64,
}

/// A field of the content of the room's current state event of `event_type` (state key "").
macro_rules! state_field {
    ($event_type:literal, $field:literal, $as:literal) => {
        concat!(
            "(SELECT e.client_json::jsonb -> 'content' ->> '", $field,
            "' FROM room_state s JOIN events e USING (event_id) WHERE s.room_id = r.room_id AND s.event_type = '",
            $event_type, "' AND s.state_key = '') AS ", $as
        )
    };
}

/// The one column list of `AdminRoomRow`, as a derived table `t` to filter and order on.
const SUMMARY: &str = concat!(
    "(SELECT r.room_id, r.room_version AS version, r.is_public AS public, ",
    state_field!("m.room.name", "name", "name"),
    ", ",
    state_field!("m.room.canonical_alias", "alias", "canonical_alias"),
    ", ",
    state_field!("m.room.topic", "topic", "topic"),
    ", ",
    state_field!("m.room.avatar", "url", "avatar"),
    ", ",
    "(SELECT e.sender FROM room_state s JOIN events e USING (event_id) WHERE s.room_id = r.room_id AND s.event_type = 'm.room.create' AND s.state_key = '') AS creator, ",
    state_field!("m.room.create", "type", "room_type"),
    ", ",
    state_field!("m.room.create", "m.federate", "federate"),
    ", ",
    state_field!("m.room.encryption", "algorithm", "encryption"),
    ", ",
    state_field!("m.room.join_rules", "join_rule", "join_rules"),
    ", ",
    state_field!("m.room.guest_access", "guest_access", "guest_access"),
    ", ",
    state_field!(
        "m.room.history_visibility",
        "history_visibility",
        "history_visibility"
    ),
    ", ",
    "(SELECT count(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join') AS joined_members, ",
    "(SELECT count(*) FROM room_state s WHERE s.room_id = r.room_id) AS state_events ",
    "FROM rooms r) t"
);

/// The orderings of the listing: (column, whether forwards means largest first, as Synapse).
pub fn order_column(order_by: &str) -> Option<(&'static str, bool)> {
    Some(match order_by {
        "name" | "alphabetical" => ("t.name", false),
        "canonical_alias" => ("t.canonical_alias", false),
        "joined_members" | "joined_local_members" | "size" => ("t.joined_members", true),
        "version" => ("t.version", false),
        "creator" => ("t.creator", false),
        "encryption" => ("t.encryption", false),
        "federatable" => ("t.federate", false),
        "public" => ("t.public", false),
        "join_rules" => ("t.join_rules", false),
        "guest_access" => ("t.guest_access", false),
        "history_visibility" => ("t.history_visibility", false),
        "state_events" => ("t.state_events", true),
        _ => return None,
    })
}

fn push_search<'a>(q: &mut QueryBuilder<'a, Postgres>, pattern: Option<&'a String>) {
    if let Some(p) = pattern {
        q.push(" WHERE (t.name ILIKE ")
            .push_bind(p)
            .push(" OR t.canonical_alias ILIKE ")
            .push_bind(p)
            .push(" OR t.room_id ILIKE ")
            .push_bind(p)
            .push(")");
    }
}

/// One page of rooms matching `search` (a LIKE pattern), ordered by `order` then room ID.
pub async fn list(
    db: impl PgExecutor<'_>,
    search: Option<&String>,
    order: &'static str,
    descending: bool,
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<AdminRoomRow>> {
    let mut q = QueryBuilder::new(format!("SELECT t.* FROM {SUMMARY}"));
    push_search(&mut q, search);
    let dir = if descending { "DESC" } else { "ASC" };
    q.push(format!(
        " ORDER BY {order} {dir} NULLS LAST, t.room_id {dir} LIMIT "
    ))
    .push_bind(limit)
    .push(" OFFSET ")
    .push_bind(offset);
    q.build_query_as().fetch_all(db).await
}

/// How many rooms match `search`.
pub async fn count(db: impl PgExecutor<'_>, search: Option<&String>) -> sqlx::Result<i64> {
    let mut q = QueryBuilder::new(format!("SELECT count(*) FROM {SUMMARY}"));
    push_search(&mut q, search);
    q.build_query_scalar().fetch_one(db).await
}

pub async fn get(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<Option<AdminRoomRow>> {
    sqlx::query_as(&format!("SELECT t.* FROM {SUMMARY} WHERE t.room_id = $1"))
        .bind(room_id)
        .fetch_optional(db)
        .await
}

/// How many devices the room's joined members have (Synapse's `joined_local_devices`).
pub async fn joined_devices(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM memberships m JOIN devices d USING (user_id)
           WHERE m.room_id = $1 AND m.membership = 'join'"#,
        room_id
    )
    .fetch_one(db)
    .await
}

/// The room's joined members, by user ID.
pub async fn joined_members(db: impl PgExecutor<'_>, room_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT user_id FROM memberships WHERE room_id = $1 AND membership = 'join' ORDER BY user_id",
        room_id
    )
    .fetch_all(db)
    .await
}

/// Deletes every trace of the room: its events and what indexes them, its state, memberships,
/// remote invites' state, soft-failed events, aliases, receipts, notifications and room account
/// data, then the room. Takes the room's lock first (as the event writer does), so no event is
/// being added meanwhile. False when the room does not exist (anymore).
pub async fn purge_room(conn: &mut sqlx::PgConnection, room_id: &str) -> sqlx::Result<bool> {
    if super::rooms::lock_rooms(conn, &[room_id]).await?.is_empty() {
        return Ok(false);
    }
    sqlx::query!(
        "DELETE FROM event_txns WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)",
        room_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("DELETE FROM event_search WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM notifications WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM receipts WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM account_data WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM remote_invites WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM soft_failed_events WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM room_state WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM memberships WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM room_aliases WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM events WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM rooms WHERE room_id = $1", room_id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

//! events and event_txns.

use std::collections::HashMap;

use sqlx::{PgConnection, PgExecutor};

use serde_json::Value;

/// A built, signed event, ready to be stored (made by service::events).
#[derive(Debug, Clone)]
pub struct BuiltEvent {
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub pdu: String,
    pub client_json: String,
    pub content: Value,
    pub state_unsigned: Option<String>,
    pub device_id: Option<String>,
    pub txn_id: Option<String>,
    pub relates_to: Option<String>,
    pub rel_type: Option<String>,
    pub contains_url: bool,
    /// The event an m.room.redaction removes.
    pub redacts: Option<String>,
    /// The PDU's reference hash in v1/v2 rooms, where later events cite it (not stored: it is
    /// computed from the PDU).
    pub reference_hash: Option<String>,
}

/// Identifies an idempotent request: one device, one endpoint (`scope`), one transaction ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxnKey {
    pub user_id: String,
    pub device_id: String,
    pub scope: String,
    pub txn_id: String,
}

pub struct NewEventRow<'a> {
    pub stream_ordering: i64,
    pub event: &'a BuiltEvent,
}

/// Everything a writer batch stores, for `insert_batch`.
pub struct BatchWrite<'a> {
    pub events: &'a [BuiltEvent],
    pub notifications: &'a [crate::store::receipts::NewNotification],
    /// Transaction keys and the first event each produced.
    pub txns: &'a [(TxnKey, String)],
    pub now: i64,
    /// (room, new head event, its depth, the head it must replace: None when the room is locked).
    pub heads: &'a [(&'a str, &'a str, i64, Option<&'a str>)],
    /// A NOTIFY sent at commit: (channel, payload: a JSON object, to which the statement adds
    /// `s`, the batch's last position, as `stream::notify` does).
    pub notify: (&'a str, &'a str),
    /// (event ID, destination): the events queued for other servers with them (see
    /// store::federation_queue), in the order they go out.
    pub outbound: &'a [(String, String)],
}

/// Claims stream positions for the batch's events (in order) and stores them with their
/// notifications, transaction keys and room heads, and queues the NOTIFY: one statement, one round
/// trip. It takes the stream lock (see store::stream), so the less time between it and the commit
/// the better. A head given with the head it replaces moves only from that one; if any does not, or
/// a transaction ID is already stored, the statement fails with SQLSTATE AX001 before taking the
/// stream lock (see the migration's `axon_assert`). Events in rooms shared with other servers are
/// queued for them in the same statement (`outbound`: nothing to do for the others). Returns the
/// last position and the users newly notified.
pub async fn insert_batch(
    conn: &mut PgConnection,
    batch: &BatchWrite<'_>,
) -> sqlx::Result<(i64, Vec<String>)> {
    let events = batch.events;
    let notifications = batch.notifications;
    let n = events.len();
    let mut ids = Vec::with_capacity(n);
    let mut rooms = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut keys: Vec<Option<String>> = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut depths = Vec::with_capacity(n);
    let mut pdus = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    let mut unsigned: Vec<Option<String>> = Vec::with_capacity(n);
    let mut devices: Vec<Option<String>> = Vec::with_capacity(n);
    let mut txns: Vec<Option<String>> = Vec::with_capacity(n);
    let mut relates: Vec<Option<String>> = Vec::with_capacity(n);
    let mut rels: Vec<Option<String>> = Vec::with_capacity(n);
    let mut urls = Vec::with_capacity(n);
    let (mut s_ids, mut s_keys, mut s_texts) = (Vec::new(), Vec::new(), Vec::new());
    for e in events {
        if let Some((key, text)) = crate::store::search::searchable(&e.event_type, &e.content) {
            s_ids.push(e.event_id.clone());
            s_keys.push(key.to_owned());
            s_texts.push(text.to_owned());
        }
        ids.push(e.event_id.clone());
        rooms.push(e.room_id.clone());
        types.push(e.event_type.clone());
        keys.push(e.state_key.clone());
        senders.push(e.sender.clone());
        ts.push(e.origin_server_ts);
        depths.push(e.depth);
        pdus.push(e.pdu.clone());
        clients.push(e.client_json.clone());
        unsigned.push(e.state_unsigned.clone());
        devices.push(e.device_id.clone());
        txns.push(e.txn_id.clone());
        relates.push(e.relates_to.clone());
        rels.push(e.rel_type.clone());
        urls.push(e.contains_url);
    }
    let n_users: Vec<String> = notifications.iter().map(|r| r.user_id.clone()).collect();
    let n_events: Vec<String> = notifications.iter().map(|r| r.event_id.clone()).collect();
    let n_threads: Vec<String> = notifications.iter().map(|r| r.thread_id.clone()).collect();
    let n_actions: Vec<String> = notifications.iter().map(|r| r.actions.clone()).collect();
    let n_highlights: Vec<bool> = notifications.iter().map(|r| r.highlight).collect();
    let n_ts: Vec<i64> = notifications.iter().map(|r| r.ts).collect();
    let t_users: Vec<String> = batch.txns.iter().map(|r| r.0.user_id.clone()).collect();
    let t_devices: Vec<String> = batch.txns.iter().map(|r| r.0.device_id.clone()).collect();
    let t_scopes: Vec<String> = batch.txns.iter().map(|r| r.0.scope.clone()).collect();
    let t_ids: Vec<String> = batch.txns.iter().map(|r| r.0.txn_id.clone()).collect();
    let t_events: Vec<String> = batch.txns.iter().map(|r| r.1.clone()).collect();
    let h_rooms: Vec<String> = batch.heads.iter().map(|h| h.0.to_owned()).collect();
    let h_events: Vec<String> = batch.heads.iter().map(|h| h.1.to_owned()).collect();
    let h_depths: Vec<i64> = batch.heads.iter().map(|h| h.2).collect();
    let h_expected: Vec<Option<String>> =
        batch.heads.iter().map(|h| h.3.map(str::to_owned)).collect();
    let o_events: Vec<String> = batch.outbound.iter().map(|o| o.0.clone()).collect();
    let o_destinations: Vec<String> = batch.outbound.iter().map(|o| o.1.clone()).collect();
    let row = sqlx::query!(
        r#"WITH heads AS (
               UPDATE rooms SET head_event_id = h.head, head_depth = h.depth
               FROM UNNEST($29::text[], $30::text[], $31::bigint[], $34::text[]) AS h(room_id, head, depth, expected)
               WHERE rooms.room_id = h.room_id AND (h.expected IS NULL OR rooms.head_event_id = h.expected)
               RETURNING 1
           ), txns AS (
               INSERT INTO event_txns (user_id, device_id, scope, txn_id, event_id, created_ts)
               SELECT *, $28::bigint FROM UNNEST($23::text[], $24::text[], $25::text[], $26::text[], $27::text[])
               ON CONFLICT DO NOTHING
               RETURNING 1
           ), guard AS (
               SELECT axon_assert((SELECT count(*) FROM heads) = cardinality($29::text[])
                                      AND (SELECT count(*) FROM txns) = cardinality($23::text[]),
                                  'a room head moved or a transaction ID was used') AS ok
           ), pos AS (
               -- After the guard: the room locks come before the stream lock, as on the locking path.
               UPDATE stream_head SET position = position + $1 WHERE (SELECT ok FROM guard)
               RETURNING position
           ), ev AS (
               INSERT INTO events (stream_ordering, event_id, room_id, event_type, state_key, sender,
                   origin_server_ts, depth, pdu, client_json, state_unsigned, device_id, txn_id, relates_to,
                   rel_type, contains_url)
               SELECT (SELECT position FROM pos) - $1 + u.ord, u.event_id, u.room_id, u.event_type, u.state_key,
                   u.sender, u.ts, u.depth, u.pdu, u.client_json, u.state_unsigned, u.device_id, u.txn_id,
                   u.relates_to, u.rel_type, u.contains_url
               FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
                   $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                   $16::bool[])
                   WITH ORDINALITY AS u(event_id, room_id, event_type, state_key, sender, ts, depth, pdu,
                   client_json, state_unsigned, device_id, txn_id, relates_to, rel_type, contains_url, ord)
               RETURNING event_id, room_id, stream_ordering, sender, event_type
           ), searched AS (
               -- The full-text index (see migration 0010): only events with searchable text.
               INSERT INTO event_search (stream_ordering, room_id, sender, event_type, key, tsv)
               SELECT ev.stream_ordering, ev.room_id, ev.sender, ev.event_type, s.key,
                   to_tsvector('english', s.text)
               FROM UNNEST($35::text[], $36::text[], $37::text[]) AS s(event_id, key, text)
               JOIN ev ON ev.event_id = s.event_id
           ), notified AS (
               INSERT INTO notifications (user_id, room_id, stream_ordering, event_id, thread_id, actions, highlight, ts)
               SELECT n.user_id, ev.room_id, ev.stream_ordering, n.event_id, n.thread_id, n.actions, n.highlight, n.ts
               FROM UNNEST($17::text[], $18::text[], $19::text[], $20::text[], $21::bool[], $22::bigint[])
                   AS n(user_id, event_id, thread_id, actions, highlight, ts)
               JOIN ev ON ev.event_id = n.event_id
               ON CONFLICT (user_id, stream_ordering) DO NOTHING
               RETURNING user_id
           ), destinations AS (
               INSERT INTO federation_destinations (destination)
               SELECT DISTINCT d FROM UNNEST($39::text[]) AS d
               ON CONFLICT DO NOTHING
           ), queued AS (
               -- Ordered: queue positions follow the stream (and the caller's order per event).
               INSERT INTO federation_outbox (destination, kind, stream_ordering, queued_ts)
               SELECT o.destination, 'pdu', ev.stream_ordering, $28::bigint
               FROM UNNEST($38::text[], $39::text[]) WITH ORDINALITY AS o(event_id, destination, ord)
               JOIN ev ON ev.event_id = o.event_id
               ORDER BY ev.stream_ordering, o.ord
           )
           SELECT (SELECT position FROM pos) AS "last!",
                  ARRAY(SELECT DISTINCT user_id FROM notified) AS "notified!",
                  pg_notify($32, left($33, -1) || ',"s":' || (SELECT position FROM pos) || '}')::text
                      AS "notify""#,
        n as i64,
        &ids,
        &rooms,
        &types,
        &keys as &[Option<String>],
        &senders,
        &ts,
        &depths,
        &pdus,
        &clients,
        &unsigned as &[Option<String>],
        &devices as &[Option<String>],
        &txns as &[Option<String>],
        &relates as &[Option<String>],
        &rels as &[Option<String>],
        &urls,
        &n_users,
        &n_events,
        &n_threads,
        &n_actions,
        &n_highlights,
        &n_ts,
        &t_users,
        &t_devices,
        &t_scopes,
        &t_ids,
        &t_events,
        batch.now,
        &h_rooms,
        &h_events,
        &h_depths,
        batch.notify.0,
        batch.notify.1,
        &h_expected as &[Option<String>],
        &s_ids,
        &s_keys,
        &s_texts,
        &o_events,
        &o_destinations
    )
    .fetch_one(conn)
    .await?;
    Ok((row.last, row.notified))
}

/// The (room, event) each already-used transaction key produced.
pub async fn find_txns(
    conn: &mut PgConnection,
    keys: &[&TxnKey],
) -> sqlx::Result<HashMap<TxnKey, (String, String)>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let users: Vec<String> = keys.iter().map(|k| k.user_id.clone()).collect();
    let devices: Vec<String> = keys.iter().map(|k| k.device_id.clone()).collect();
    let scopes: Vec<String> = keys.iter().map(|k| k.scope.clone()).collect();
    let txn_ids: Vec<String> = keys.iter().map(|k| k.txn_id.clone()).collect();
    let rows = sqlx::query!(
        // LATERAL: one unique-index probe per key and per event. A plain join lets the planner scan
        // a whole table, and a plan cached while the table was small would keep doing so.
        r#"SELECT k.user_id AS "user_id!", k.device_id AS "device_id!", k.scope AS "scope!", k.txn_id AS "txn_id!",
                  t.event_id, e.room_id AS "room_id?"
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS k(user_id, device_id, scope, txn_id)
         CROSS JOIN LATERAL (
             SELECT event_id FROM event_txns
             WHERE user_id = k.user_id AND device_id = k.device_id AND scope = k.scope AND txn_id = k.txn_id
         ) t
         LEFT JOIN LATERAL (SELECT room_id FROM events WHERE event_id = t.event_id) e ON TRUE"#,
        &users,
        &devices,
        &scopes,
        &txn_ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let key = TxnKey {
                user_id: r.user_id,
                device_id: r.device_id,
                scope: r.scope,
                txn_id: r.txn_id,
            };
            (key, (r.room_id.unwrap_or_default(), r.event_id))
        })
        .collect())
}

pub async fn prune_txns(db: impl PgExecutor<'_>, older_than: i64) -> sqlx::Result<u64> {
    Ok(
        sqlx::query!("DELETE FROM event_txns WHERE created_ts < $1", older_than)
            .execute(db)
            .await?
            .rows_affected(),
    )
}

/// An event as served to clients, with what `unsigned` needs.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub client_json: String,
    pub state_unsigned: Option<String>,
    pub device_id: Option<String>,
    pub txn_id: Option<String>,
    /// The redaction event (client format) when this event was redacted.
    pub redacted_because: Option<String>,
}

#[cfg(test)]
impl EventRow {
    /// An event of `event_type` at `stream_ordering` in `!r:x`, sent by `@a:x`, for unit tests.
    pub fn example(stream_ordering: i64, event_type: &str, state_key: Option<&str>) -> Self {
        EventRow {
            stream_ordering,
            event_id: format!("$e{stream_ordering}"),
            room_id: "!r:x".into(),
            event_type: event_type.into(),
            state_key: state_key.map(str::to_owned),
            sender: "@a:x".into(),
            origin_server_ts: 0,
            client_json: "{}".into(),
            state_unsigned: None,
            device_id: None,
            txn_id: None,
            redacted_because: None,
        }
    }
}

/// RoomEventFilter fields that narrow a query. Type patterns are SQL LIKE patterns (`*` → `%`).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub contains_url: Option<bool>,
}

/// Events of a room at or below `from`, newest first.
pub async fn room_events_backward(
    db: impl PgExecutor<'_>,
    room_id: &str,
    from: i64,
    limit: i64,
    f: &EventFilter,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender, e.origin_server_ts,
                  e.client_json, e.state_unsigned, e.device_id, e.txn_id, r.client_json AS "redacted_because?"
           FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
           WHERE e.room_id = $1 AND e.stream_ordering <= $2
             AND ($4::text[] IS NULL OR e.event_type LIKE ANY($4))
             AND NOT (e.event_type LIKE ANY($5))
             AND ($6::text[] IS NULL OR e.sender = ANY($6))
             AND NOT (e.sender = ANY($7))
             AND ($8::bool IS NULL OR e.contains_url = $8)
           ORDER BY e.stream_ordering DESC LIMIT $3"#,
        room_id,
        from,
        limit,
        f.types.as_deref() as Option<&[String]>,
        &f.not_types,
        f.senders.as_deref() as Option<&[String]>,
        &f.not_senders,
        f.contains_url
    )
    .fetch_all(db)
    .await
}

/// Events of a room in (`after`, `upto`], oldest first.
pub async fn room_events_forward(
    db: impl PgExecutor<'_>,
    room_id: &str,
    after: i64,
    upto: i64,
    limit: i64,
    f: &EventFilter,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender, e.origin_server_ts,
                  e.client_json, e.state_unsigned, e.device_id, e.txn_id, r.client_json AS "redacted_because?"
           FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
           WHERE e.room_id = $1 AND e.stream_ordering > $2 AND e.stream_ordering <= $3
             AND ($5::text[] IS NULL OR e.event_type LIKE ANY($5))
             AND NOT (e.event_type LIKE ANY($6))
             AND ($7::text[] IS NULL OR e.sender = ANY($7))
             AND NOT (e.sender = ANY($8))
             AND ($9::bool IS NULL OR e.contains_url = $9)
           ORDER BY e.stream_ordering ASC LIMIT $4"#,
        room_id,
        after,
        upto,
        limit,
        f.types.as_deref() as Option<&[String]>,
        &f.not_types,
        f.senders.as_deref() as Option<&[String]>,
        &f.not_senders,
        f.contains_url
    )
    .fetch_all(db)
    .await
}

/// The newest `limit` events (after `after`, at or below `upto`) of each room, newest first per room.
pub async fn latest_events_per_room(
    db: impl PgExecutor<'_>,
    rooms: &[String],
    after: i64,
    upto: i64,
    limit: i64,
    f: &EventFilter,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering AS "stream_ordering!", e.event_id AS "event_id!", e.room_id AS "room_id!",
                  e.event_type AS "event_type!", e.state_key, e.sender AS "sender!",
                  e.origin_server_ts AS "origin_server_ts!", e.client_json AS "client_json!", e.state_unsigned,
                  e.device_id, e.txn_id, e.redacted_because AS "redacted_because?"
           FROM UNNEST($1::text[]) AS rm(room_id)
           CROSS JOIN LATERAL (
               SELECT e.*, r.client_json AS redacted_because
               FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE e.room_id = rm.room_id AND e.stream_ordering > $2 AND e.stream_ordering <= $3
                 AND ($5::text[] IS NULL OR e.event_type LIKE ANY($5))
                 AND NOT (e.event_type LIKE ANY($6))
                 AND ($7::text[] IS NULL OR e.sender = ANY($7))
                 AND NOT (e.sender = ANY($8))
                 AND ($9::bool IS NULL OR e.contains_url = $9)
               ORDER BY e.stream_ordering DESC LIMIT $4
           ) e"#,
        rooms,
        after,
        upto,
        limit,
        f.types.as_deref() as Option<&[String]>,
        &f.not_types,
        f.senders.as_deref() as Option<&[String]>,
        &f.not_senders,
        f.contains_url
    )
    .fetch_all(db)
    .await
}

/// The oldest `limit` events (after `after`, at or below `upto`) of each room, oldest first per room:
/// the event stream of the legacy `GET /events`.
pub async fn earliest_events_per_room(
    db: impl PgExecutor<'_>,
    rooms: &[String],
    after: i64,
    upto: i64,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering AS "stream_ordering!", e.event_id AS "event_id!", e.room_id AS "room_id!",
                  e.event_type AS "event_type!", e.state_key, e.sender AS "sender!",
                  e.origin_server_ts AS "origin_server_ts!", e.client_json AS "client_json!", e.state_unsigned,
                  e.device_id, e.txn_id, e.redacted_because AS "redacted_because?"
           FROM UNNEST($1::text[]) AS rm(room_id)
           CROSS JOIN LATERAL (
               SELECT e.*, r.client_json AS redacted_because
               FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE e.room_id = rm.room_id AND e.stream_ordering > $2 AND e.stream_ordering <= $3
               ORDER BY e.stream_ordering ASC LIMIT $4
           ) e"#,
        rooms,
        after,
        upto,
        limit
    )
    .fetch_all(db)
    .await
}

/// A stored PDU and what serving it to another server needs.
#[derive(Debug, Clone)]
pub struct PduRow {
    pub stream_ordering: i64,
    pub event_id: String,
    pub sender: String,
    pub depth: i64,
    /// The federation form, canonical JSON.
    pub pdu: String,
}

/// The PDUs of a room at or below position `from`, newest first (`/backfill`).
pub async fn pdus_backward(
    db: impl PgExecutor<'_>,
    room_id: &str,
    from: i64,
    limit: i64,
) -> sqlx::Result<Vec<PduRow>> {
    sqlx::query_as!(
        PduRow,
        "SELECT stream_ordering, event_id, sender, depth, pdu FROM events
         WHERE room_id = $1 AND stream_ordering <= $2 ORDER BY stream_ordering DESC LIMIT $3",
        room_id,
        from,
        limit
    )
    .fetch_all(db)
    .await
}

/// The stored PDUs among `event_ids` that belong to `room_id`, in stream order.
pub async fn room_pdus_of(
    db: impl PgExecutor<'_>,
    room_id: &str,
    event_ids: &[String],
) -> sqlx::Result<Vec<PduRow>> {
    sqlx::query_as!(
        PduRow,
        "SELECT stream_ordering, event_id, sender, depth, pdu FROM events
         WHERE room_id = $1 AND event_id = ANY($2) ORDER BY stream_ordering",
        room_id,
        event_ids
    )
    .fetch_all(db)
    .await
}

/// (position, user, membership) of every membership change in `room_id` of the users of `server`,
/// oldest first: what history another server may see.
pub async fn server_member_history(
    db: impl PgExecutor<'_>,
    room_id: &str,
    server: &str,
) -> sqlx::Result<Vec<(i64, String, Option<String>)>> {
    let rows = sqlx::query!(
        r#"SELECT stream_ordering, state_key AS "user_id!",
                  (client_json::jsonb -> 'content' ->> 'membership') AS membership
           FROM events
           WHERE room_id = $1 AND event_type = 'm.room.member'
             AND right(state_key, length($2) + 1) = ':' || $2
           ORDER BY stream_ordering"#,
        room_id,
        server
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.stream_ordering, r.user_id, r.membership))
        .collect())
}

/// The stored PDUs (federation form) of events.
pub async fn pdus_of(
    db: impl PgExecutor<'_>,
    event_ids: &[String],
) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query!(
        "SELECT event_id, pdu FROM events WHERE event_id = ANY($1)",
        event_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.event_id, r.pdu)).collect())
}

pub async fn event_by_id(
    db: impl PgExecutor<'_>,
    event_id: &str,
) -> sqlx::Result<Option<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender, e.origin_server_ts,
                  e.client_json, e.state_unsigned, e.device_id, e.txn_id, r.client_json AS "redacted_because?"
           FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
           WHERE e.event_id = $1"#,
        event_id
    )
    .fetch_optional(db)
    .await
}

/// The room's state as of stream position `at` (the newest event per key at or below it).
///
/// Two statements rather than one with a flag: the one without members must name its filter
/// literally, or a cached generic plan could not use the index of state without members.
pub async fn state_at(
    db: impl PgExecutor<'_>,
    room_id: &str,
    at: i64,
    members: Members,
) -> sqlx::Result<Vec<EventRow>> {
    match members {
        Members::Included => {
            sqlx::query_as!(
                EventRow,
                r#"SELECT DISTINCT ON (e.event_type, e.state_key)
                          e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender,
                          e.origin_server_ts, e.client_json, e.state_unsigned, e.device_id, e.txn_id,
                          r.client_json AS "redacted_because?"
                   FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
                   WHERE e.room_id = $1 AND e.state_key IS NOT NULL AND e.stream_ordering <= $2
                   ORDER BY e.event_type, e.state_key, e.stream_ordering DESC"#,
                room_id,
                at
            )
            .fetch_all(db)
            .await
        }
        Members::Excluded => {
            sqlx::query_as!(
                EventRow,
                r#"SELECT DISTINCT ON (e.event_type, e.state_key)
                          e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender,
                          e.origin_server_ts, e.client_json, e.state_unsigned, e.device_id, e.txn_id,
                          r.client_json AS "redacted_because?"
                   FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
                   WHERE e.room_id = $1 AND e.state_key IS NOT NULL AND e.stream_ordering <= $2
                     AND e.event_type <> 'm.room.member'
                   ORDER BY e.event_type, e.state_key, e.stream_ordering DESC"#,
                room_id,
                at
            )
            .fetch_all(db)
            .await
        }
    }
}

/// Whether a read of a room's state includes its member events: a sync that lazy-loads members
/// reads only those it needs (a big room has thousands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Members {
    Included,
    Excluded,
}

/// The current state of several rooms (through room_state), for sync. Two statements, as in
/// [`state_at`].
pub async fn current_state_of_rooms(
    db: impl PgExecutor<'_>,
    rooms: &[String],
    members: Members,
) -> sqlx::Result<Vec<EventRow>> {
    match members {
        Members::Included => {
            sqlx::query_as!(
                EventRow,
                r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender,
                          e.origin_server_ts, e.client_json, e.state_unsigned, e.device_id, e.txn_id,
                          r.client_json AS "redacted_because?"
                   FROM room_state s JOIN events e ON e.event_id = s.event_id
                   LEFT JOIN events r ON r.event_id = e.redacted_by
                   WHERE s.room_id = ANY($1)"#,
                rooms
            )
            .fetch_all(db)
            .await
        }
        Members::Excluded => {
            sqlx::query_as!(
                EventRow,
                r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender,
                          e.origin_server_ts, e.client_json, e.state_unsigned, e.device_id, e.txn_id,
                          r.client_json AS "redacted_because?"
                   FROM room_state s JOIN events e ON e.event_id = s.event_id
                   LEFT JOIN events r ON r.event_id = e.redacted_by
                   WHERE s.room_id = ANY($1) AND s.event_type <> 'm.room.member'"#,
                rooms
            )
            .fetch_all(db)
            .await
        }
    }
}

/// The current state events of one type in a room (a space's `m.space.child` events, say).
pub async fn current_state_of_type(
    db: impl PgExecutor<'_>,
    room_id: &str,
    event_type: &str,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender, e.origin_server_ts,
                  e.client_json, e.state_unsigned, e.device_id, e.txn_id, r.client_json AS "redacted_because?"
           FROM room_state s JOIN events e ON e.event_id = s.event_id
           LEFT JOIN events r ON r.event_id = e.redacted_by
           WHERE s.room_id = $1 AND s.event_type = $2"#,
        room_id,
        event_type
    )
    .fetch_all(db)
    .await
}

/// State events of the rooms with positions in (`after`, `upto`], oldest first.
pub async fn state_changes(
    db: impl PgExecutor<'_>,
    rooms: &[String],
    after: i64,
    upto: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender, e.origin_server_ts,
                  e.client_json, e.state_unsigned, e.device_id, e.txn_id, r.client_json AS "redacted_because?"
           FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
           WHERE e.room_id = ANY($1) AND e.state_key IS NOT NULL AND e.stream_ordering > $2 AND e.stream_ordering <= $3
           ORDER BY e.stream_ordering"#,
        rooms,
        after,
        upto
    )
    .fetch_all(db)
    .await
}

/// The member events of `users` as they stood at position `at` (for historical display names).
pub async fn members_at(
    db: impl PgExecutor<'_>,
    room_id: &str,
    users: &[String],
    at: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering AS "stream_ordering!", e.event_id AS "event_id!", e.room_id AS "room_id!",
                  e.event_type AS "event_type!", e.state_key, e.sender AS "sender!",
                  e.origin_server_ts AS "origin_server_ts!", e.client_json AS "client_json!", e.state_unsigned,
                  e.device_id, e.txn_id, e.redacted_because AS "redacted_because?"
           FROM UNNEST($2::text[]) AS u(user_id)
           CROSS JOIN LATERAL (
               SELECT e.*, r.client_json AS redacted_because
               FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
               WHERE e.room_id = $1 AND e.event_type = 'm.room.member' AND e.state_key = u.user_id
                 AND e.stream_ordering <= $3
               ORDER BY e.stream_ordering DESC LIMIT 1
           ) e"#,
        room_id,
        users,
        at
    )
    .fetch_all(db)
    .await
}

/// (position, value) of every change of one state key, oldest first: membership history of a user,
/// history_visibility history of a room.
pub async fn state_key_history(
    db: impl PgExecutor<'_>,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    content_key: &str,
) -> sqlx::Result<Vec<(i64, Option<String>)>> {
    let rows = sqlx::query!(
        r#"SELECT stream_ordering, (client_json::jsonb -> 'content' ->> $4) AS value
           FROM events WHERE room_id = $1 AND event_type = $2 AND state_key = $3
           ORDER BY stream_ordering"#,
        room_id,
        event_type,
        state_key,
        content_key
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.stream_ordering, r.value))
        .collect())
}

/// Relations pointing at any of `event_ids` with the given types, oldest first.
pub async fn relations_of(
    db: impl PgExecutor<'_>,
    event_ids: &[String],
    rel_types: &[String],
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender, e.origin_server_ts,
                  e.client_json, e.state_unsigned, e.device_id, e.txn_id, NULL::text AS "redacted_because?"
           FROM events e
           WHERE e.relates_to = ANY($1) AND e.rel_type = ANY($2) AND e.redacted_by IS NULL
           ORDER BY e.stream_ordering"#,
        event_ids,
        rel_types
    )
    .fetch_all(db)
    .await
}

/// Marks an event redacted and replaces its served forms (the PDU too, when given); its text
/// leaves the search index in the same statement.
pub async fn redact(
    conn: &mut PgConnection,
    event_id: &str,
    redacted_by: &str,
    client_json: &str,
    pdu: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"WITH redacted AS (
               UPDATE events SET redacted_by = $2, client_json = $3, relates_to = NULL, rel_type = NULL,
                   pdu = COALESCE($4, pdu)
               WHERE event_id = $1
               RETURNING stream_ordering
           )
           DELETE FROM event_search WHERE stream_ordering IN (SELECT stream_ordering FROM redacted)"#,
        event_id,
        redacted_by,
        client_json,
        pdu
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One page of the events relating to `parent`, newest first when `backwards`.
pub async fn relations_page(
    db: impl PgExecutor<'_>,
    parent: &str,
    rel_type: Option<&str>,
    event_type: Option<&str>,
    from: Option<i64>,
    backwards: bool,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender, e.origin_server_ts,
                  e.client_json, e.state_unsigned, e.device_id, e.txn_id, r.client_json AS "redacted_because?"
           FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
           WHERE e.relates_to = $1
             AND ($2::text IS NULL OR e.rel_type = $2)
             AND ($3::text IS NULL OR e.event_type = $3)
             AND ($4::bigint IS NULL OR (CASE WHEN $5 THEN e.stream_ordering <= $4 ELSE e.stream_ordering > $4 END))
           ORDER BY CASE WHEN $5 THEN -e.stream_ordering ELSE e.stream_ordering END
           LIMIT $6"#,
        parent,
        rel_type,
        event_type,
        from,
        backwards,
        limit
    )
    .fetch_all(db)
    .await
}

/// Thread roots of a room with their latest activity below `before`, most recent first.
pub async fn thread_roots(
    db: impl PgExecutor<'_>,
    room_id: &str,
    before: i64,
    participant: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<(EventRow, i64)>> {
    let rows = sqlx::query!(
        r#"WITH threads AS (
               SELECT t.relates_to AS root, MAX(t.stream_ordering) AS latest,
                      BOOL_OR(t.sender = $3) AS replied
               FROM events t WHERE t.room_id = $1 AND t.rel_type = 'm.thread'
               GROUP BY t.relates_to
           )
           SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender, e.origin_server_ts,
                  e.client_json, e.state_unsigned, e.device_id, e.txn_id, r.client_json AS "redacted_because?",
                  th.latest AS "latest!"
           FROM threads th JOIN events e ON e.event_id = th.root
           LEFT JOIN events r ON r.event_id = e.redacted_by
           WHERE th.latest < $2 AND ($3::text IS NULL OR th.replied OR e.sender = $3)
           ORDER BY th.latest DESC LIMIT $4"#,
        room_id,
        before,
        participant,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let row = EventRow {
                stream_ordering: r.stream_ordering,
                event_id: r.event_id,
                room_id: r.room_id,
                event_type: r.event_type,
                state_key: r.state_key,
                sender: r.sender,
                origin_server_ts: r.origin_server_ts,
                client_json: r.client_json,
                state_unsigned: r.state_unsigned,
                device_id: r.device_id,
                txn_id: r.txn_id,
                redacted_because: r.redacted_because,
            };
            (row, r.latest)
        })
        .collect())
}

/// Events nearest `ts`: the first at or after it (forwards) or at or before it (backwards).
pub async fn near_timestamp(
    db: impl PgExecutor<'_>,
    room_id: &str,
    ts: i64,
    forwards: bool,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender, e.origin_server_ts,
                  e.client_json, e.state_unsigned, e.device_id, e.txn_id, NULL::text AS "redacted_because?"
           FROM events e
           WHERE e.room_id = $1 AND (CASE WHEN $3 THEN e.origin_server_ts >= $2 ELSE e.origin_server_ts <= $2 END)
           ORDER BY CASE WHEN $3 THEN e.origin_server_ts ELSE -e.origin_server_ts END, e.stream_ordering
           LIMIT $4"#,
        room_id,
        ts,
        forwards,
        limit
    )
    .fetch_all(db)
    .await
}

//! event_search: the full-text index of POST /search (see migration 0010). Rows are written by
//! `events::insert_batch` and removed by `events::redact`; this file holds the reads.

use serde_json::Value;
use sqlx::PgExecutor;

use crate::store::events::{EventFilter, EventRow};

/// The searchable text of an event, with its search key: an m.room.message's `body`, an
/// m.room.name's `name`, an m.room.topic's `topic` (as Synapse indexes them). None for every other
/// event (encrypted ones too: their content is ciphertext) and for a non-string value.
pub fn searchable<'a>(event_type: &str, content: &'a Value) -> Option<(&'static str, &'a str)> {
    let (key, field) = match event_type {
        "m.room.message" => ("content.body", "body"),
        "m.room.name" => ("content.name", "name"),
        "m.room.topic" => ("content.topic", "topic"),
        _ => return None,
    };
    content.get(field)?.as_str().map(|text| (key, text))
}

/// Where a page starts: after the last result of the previous one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cursor {
    /// The first page.
    Start,
    /// `order_by: rank`: after (rank, position) in (rank DESC, position DESC) order.
    Rank(f32, i64),
    /// `order_by: recent`: below this position.
    Recent(i64),
}

/// What to search: the words, the keys, and where the user may look.
pub struct SearchQuery<'a> {
    /// The client's search term, parsed by `websearch_to_tsquery('english', …)`.
    pub term: &'a str,
    /// Of 'content.body', 'content.name', 'content.topic'.
    pub keys: &'a [String],
    /// The rooms searched, each with one visible range of positions (inclusive): a room whose
    /// visible history has gaps appears once per range.
    pub rooms: &'a [String],
    pub lows: &'a [i64],
    pub highs: &'a [i64],
    /// The RoomEventFilter's types and senders (type patterns as SQL LIKE patterns).
    pub filter: &'a EventFilter,
    /// Order by rank (else by position, newest first).
    pub by_rank: bool,
    pub cursor: Cursor,
    /// The page size plus one, to tell whether more follow.
    pub limit: i64,
}

/// One match, in result order.
#[derive(Debug, Clone)]
pub struct Hit {
    pub stream_ordering: i64,
    pub room_id: String,
    pub sender: String,
    /// ts_rank_cd of the event's text against the query.
    pub rank: f32,
    /// Every match of the query, whatever the cursor (the same on each row).
    pub total: i64,
    /// Matches from the cursor on in this room / from this sender (to tell whether a group has more).
    pub room_rest: i64,
    pub sender_rest: i64,
}

/// One page of matches: a GIN lookup restricted to the visible ranges, ranked, counted, cut.
pub async fn page(db: impl PgExecutor<'_>, q: &SearchQuery<'_>) -> sqlx::Result<Vec<Hit>> {
    let (after_rank, after_pos) = match q.cursor {
        Cursor::Start => (None, None),
        Cursor::Rank(rank, pos) => (Some(rank), Some(pos)),
        Cursor::Recent(pos) => (None, Some(pos)),
    };
    sqlx::query_as!(
        Hit,
        r#"WITH q AS (SELECT websearch_to_tsquery('english', $1) AS q),
           m AS (
               SELECT s.stream_ordering, s.room_id, s.sender, ts_rank_cd(s.tsv, q.q) AS rank
               FROM q, event_search s
               JOIN UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS v(room_id, lo, hi)
                   ON s.room_id = v.room_id AND s.stream_ordering BETWEEN v.lo AND v.hi
               WHERE s.tsv @@ q.q AND s.key = ANY($5)
                 AND ($6::text[] IS NULL OR s.event_type LIKE ANY($6))
                 AND NOT (s.event_type LIKE ANY($7))
                 AND ($8::text[] IS NULL OR s.sender = ANY($8))
                 AND NOT (s.sender = ANY($9))
                 AND ($10::bool IS NULL OR EXISTS (
                     SELECT 1 FROM events e WHERE e.stream_ordering = s.stream_ordering AND e.contains_url = $10))
           ),
           rest AS (
               SELECT * FROM m
               WHERE $12::bigint IS NULL
                  OR (CASE WHEN $11 THEN (m.rank, m.stream_ordering) < ($13::real, $12::bigint)
                           ELSE m.stream_ordering < $12 END)
           )
           SELECT stream_ordering AS "stream_ordering!", room_id AS "room_id!", sender AS "sender!",
                  rank AS "rank!",
                  (SELECT count(*) FROM m) AS "total!",
                  count(*) OVER (PARTITION BY room_id) AS "room_rest!",
                  count(*) OVER (PARTITION BY sender) AS "sender_rest!"
           FROM rest
           ORDER BY CASE WHEN $11 THEN rank ELSE 0 END DESC, stream_ordering DESC
           LIMIT $14"#,
        q.term,
        q.rooms,
        q.lows,
        q.highs,
        q.keys,
        q.filter.types.as_deref(),
        &q.filter.not_types,
        q.filter.senders.as_deref(),
        &q.filter.not_senders,
        q.filter.contains_url,
        q.by_rank,
        after_pos,
        after_rank,
        q.limit
    )
    .fetch_all(db)
    .await
}

/// The words of each text that the query matched (ts_headline between `start` and `stop`, which
/// the caller picks so that they occur in no text).
pub async fn headlines(
    db: impl PgExecutor<'_>,
    term: &str,
    texts: &[String],
    options: &str,
) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query_scalar!(
        r#"SELECT ts_headline('english', t.text, websearch_to_tsquery('english', $1), $3) AS "headline!"
           FROM UNNEST($2::text[]) WITH ORDINALITY AS t(text, n) ORDER BY t.n"#,
        term,
        texts,
        options
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Events by position, for serving results (any order).
pub async fn events_at(db: impl PgExecutor<'_>, positions: &[i64]) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.stream_ordering, e.event_id, e.room_id, e.event_type, e.state_key, e.sender, e.origin_server_ts,
                  e.client_json, e.state_unsigned, e.device_id, e.txn_id, r.client_json AS "redacted_because?"
           FROM events e LEFT JOIN events r ON r.event_id = e.redacted_by
           WHERE e.stream_ordering = ANY($1)"#,
        positions
    )
    .fetch_all(db)
    .await
}

/// A change of the user's membership (`is_member`) or of a room's history visibility.
pub struct HistoryChange {
    pub room_id: String,
    pub stream_ordering: i64,
    pub is_member: bool,
    /// `membership` or `history_visibility` (None when the content lacks it).
    pub value: Option<String>,
}

/// The user's membership history and the history_visibility history of several rooms, by room
/// then position: what `Visibility` needs, for many rooms in one query.
pub async fn visibility_histories(
    db: impl PgExecutor<'_>,
    rooms: &[String],
    user_id: &str,
) -> sqlx::Result<Vec<HistoryChange>> {
    sqlx::query_as!(
        HistoryChange,
        r#"SELECT room_id, stream_ordering, event_type = 'm.room.member' AS "is_member!",
                  client_json::jsonb -> 'content' ->> (CASE WHEN event_type = 'm.room.member'
                                                           THEN 'membership' ELSE 'history_visibility' END) AS value
           FROM events
           WHERE room_id = ANY($1) AND state_key IS NOT NULL
             AND ((event_type = 'm.room.member' AND state_key = $2)
                  OR (event_type = 'm.room.history_visibility' AND state_key = ''))
           ORDER BY room_id, stream_ordering"#,
        rooms,
        user_id
    )
    .fetch_all(db)
    .await
}

-- Full-text search (POST /search). One row per event that has something searchable: the `body` of
-- an m.room.message, the `name` of an m.room.name, the `topic` of an m.room.topic (as Synapse's
-- event_search). Everything else — encrypted events included, whose content is not plaintext — is
-- never indexed, so the table and its index stay a fraction of `events`.
--
-- Rows are written by the event writer's batch statement (store::events::insert_batch, same
-- statement, no extra round trip) and deleted by the redaction's own statement (store::events::redact),
-- so a redacted event's old text cannot be found.
CREATE TABLE event_search (
    -- The event's position (events.stream_ordering): also the order of `order_by: recent` and the
    -- tie-break of `rank`.
    stream_ordering BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    -- 'content.body', 'content.name' or 'content.topic': the request's `keys`.
    key TEXT NOT NULL,
    -- to_tsvector('english', text), as Synapse on PostgreSQL; queried with websearch_to_tsquery.
    tsv TSVECTOR NOT NULL
);
-- The search itself: which rows hold the query's words.
CREATE INDEX event_search_tsv ON event_search USING GIN (tsv);

INSERT INTO event_search (stream_ordering, room_id, sender, event_type, key, tsv)
SELECT stream_ordering, room_id, sender, event_type, k.key, to_tsvector('english', t.text)
FROM events
CROSS JOIN LATERAL (
    SELECT CASE event_type WHEN 'm.room.message' THEN 'content.body'
                           WHEN 'm.room.name' THEN 'content.name'
                           ELSE 'content.topic' END AS key,
           client_json::jsonb -> 'content' -> CASE event_type WHEN 'm.room.message' THEN 'body'
                                                              WHEN 'm.room.name' THEN 'name'
                                                              ELSE 'topic' END AS value
) k
CROSS JOIN LATERAL (SELECT k.value #>> '{}' AS text) t
WHERE event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
  AND redacted_by IS NULL AND jsonb_typeof(k.value) = 'string';

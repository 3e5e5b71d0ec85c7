//! federation_outbox, federation_destinations (the outbound queue) and federation_inbound_txns.
//! Local events are queued by `events::insert_batch`, in the statement that stores them.

use sqlx::PgPool;

/// A queued PDU or EDU, as it goes out.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    /// `pdu` or `edu`.
    pub kind: String,
    /// The PDU or EDU as JSON; None for a PDU whose event was purged before it was sent.
    pub body: Option<String>,
    /// When it was queued (ms).
    pub queued_ts: i64,
    /// The EDU's replacement key (see `enqueue_edus`).
    pub edu_key: Option<String>,
}

/// An EDU to queue: its body and, for EDUs a newer one of the same key makes pointless, that key.
#[derive(Debug, Clone)]
pub struct NewEdu {
    pub body: String,
    pub key: Option<String>,
}

/// A destination whose lease was just taken.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub destination: String,
    /// The last wait after a failure (ms); 0 after a success.
    pub retry_interval_ms: i64,
    pub failures: i32,
}

/// Queues `edus` for each destination, in one transaction. An EDU with a key replaces the one
/// queued with that key for the destination, and takes its turn at the end of the queue.
pub async fn enqueue_edus(
    db: &PgPool,
    destinations: &[String],
    edus: &[NewEdu],
) -> sqlx::Result<()> {
    let now = super::now_ms();
    let bodies: Vec<String> = edus.iter().map(|e| e.body.clone()).collect();
    let keys: Vec<Option<String>> = edus.iter().map(|e| e.key.clone()).collect();
    let mut tx = db.begin().await?;
    sqlx::query!(
        "INSERT INTO federation_destinations (destination) SELECT * FROM UNNEST($1::text[])
         ON CONFLICT DO NOTHING",
        destinations
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO federation_outbox (destination, kind, body, edu_key, queued_ts)
         SELECT d, 'edu', e.body, e.key, $4
         FROM UNNEST($1::text[]) AS d
         CROSS JOIN UNNEST($2::text[], $3::text[]) WITH ORDINALITY AS e(body, key, ord)
         ORDER BY d, e.ord
         ON CONFLICT (destination, edu_key) WHERE edu_key IS NOT NULL
         DO UPDATE SET body = EXCLUDED.body, queued_ts = EXCLUDED.queued_ts,
             id = nextval(pg_get_serial_sequence('federation_outbox', 'id'))",
        destinations,
        &bodies,
        &keys as &[Option<String>],
        now
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Takes the lease of one destination that is due and has something queued, for `owner` until
/// `now + lease_ms`; others' live leases and rows locked by another claim are skipped.
pub async fn claim(
    db: &PgPool,
    owner: &str,
    now: i64,
    lease_ms: i64,
) -> sqlx::Result<Option<Claimed>> {
    sqlx::query_as!(
        Claimed,
        "UPDATE federation_destinations SET lease_owner = $1, lease_until_ts = $2 + $3
         WHERE destination = (
             SELECT d.destination FROM federation_destinations d
             WHERE d.retry_at_ts <= $2 AND (d.lease_until_ts < $2 OR d.lease_owner IS NULL)
               AND EXISTS (SELECT 1 FROM federation_outbox o WHERE o.destination = d.destination)
             ORDER BY d.retry_at_ts
             LIMIT 1
             FOR UPDATE SKIP LOCKED)
         RETURNING destination, retry_interval_ms, failures",
        owner,
        now,
        lease_ms
    )
    .fetch_optional(db)
    .await
}

/// Extends `owner`'s lease of `destination` to `until`; false when the lease is no longer theirs.
pub async fn renew(db: &PgPool, destination: &str, owner: &str, until: i64) -> sqlx::Result<bool> {
    let renewed = sqlx::query!(
        "UPDATE federation_destinations SET lease_until_ts = $3
         WHERE destination = $1 AND lease_owner = $2",
        destination,
        owner,
        until
    )
    .execute(db)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// The oldest `max_pdus` queued PDUs for `destination` (with their events' PDUs) and its oldest
/// `max_edus` EDUs, in queue order within each kind.
pub async fn next_batch(
    db: &PgPool,
    destination: &str,
    max_pdus: i64,
    max_edus: i64,
) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as!(
        OutboxRow,
        r#"(SELECT o.id AS "id!", o.kind AS "kind!", coalesce(o.body, e.pdu) AS body,
                   o.queued_ts AS "queued_ts!", o.edu_key
            FROM federation_outbox o LEFT JOIN events e ON e.stream_ordering = o.stream_ordering
            WHERE o.destination = $1 AND o.kind = 'pdu'
            ORDER BY o.id LIMIT $2)
           UNION ALL
           (SELECT id, kind, body, queued_ts, edu_key FROM federation_outbox
            WHERE destination = $1 AND kind = 'edu'
            ORDER BY id LIMIT $3)"#,
        destination,
        max_pdus,
        max_edus
    )
    .fetch_all(db)
    .await
}

/// The transaction holding `ids` was accepted: they leave the queue, the retry state resets and
/// the lease is released.
pub async fn delivered(
    db: &PgPool,
    destination: &str,
    owner: &str,
    ids: &[i64],
) -> sqlx::Result<()> {
    sqlx::query!(
        "WITH sent AS (
             DELETE FROM federation_outbox WHERE destination = $1 AND id = ANY($2)
         )
         UPDATE federation_destinations SET retry_at_ts = 0, retry_interval_ms = 0, failures = 0,
             lease_owner = NULL, lease_until_ts = 0
         WHERE destination = $1 AND lease_owner = $3",
        destination,
        ids,
        owner
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The attempt failed: no new attempt before `retry_at`, and the lease is released.
pub async fn failed(
    db: &PgPool,
    destination: &str,
    owner: &str,
    retry_at: i64,
    interval_ms: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE federation_destinations SET retry_at_ts = $3, retry_interval_ms = $4,
             failures = failures + 1, lease_owner = NULL, lease_until_ts = 0
         WHERE destination = $1 AND lease_owner = $2",
        destination,
        owner,
        retry_at,
        interval_ms
    )
    .execute(db)
    .await?;
    Ok(())
}

/// `destination` contacted this server: its backoff ends now. True when it was backing off.
pub async fn clear_backoff(db: &PgPool, destination: &str) -> sqlx::Result<bool> {
    let cleared = sqlx::query!(
        "UPDATE federation_destinations SET retry_at_ts = 0, retry_interval_ms = 0
         WHERE destination = $1 AND (retry_at_ts > 0 OR retry_interval_ms > 0)",
        destination
    )
    .execute(db)
    .await?;
    Ok(cleared.rows_affected() > 0)
}

/// Gives up every lease `owner` holds (a clean shutdown: other processes take over at once).
pub async fn release_all(db: &PgPool, owner: &str) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "UPDATE federation_destinations SET lease_owner = NULL, lease_until_ts = 0
         WHERE lease_owner = $1",
        owner
    )
    .execute(db)
    .await?
    .rows_affected())
}

/// What waits (PDUs, EDUs) and how many destinations are backing off at `now`, for the metrics.
pub async fn depth(db: &PgPool, now: i64) -> sqlx::Result<(i64, i64, i64)> {
    let row = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM federation_outbox WHERE kind = 'pdu') AS "pdus!",
                  (SELECT count(*) FROM federation_outbox WHERE kind = 'edu') AS "edus!",
                  (SELECT count(*) FROM federation_destinations WHERE retry_at_ts > $1) AS "backing_off!""#,
        now
    )
    .fetch_one(db)
    .await?;
    Ok((row.pdus, row.edus, row.backing_off))
}

/// The answer stored for a transaction already received.
pub async fn inbound_response(
    db: &PgPool,
    origin: &str,
    txn_id: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2",
        origin,
        txn_id
    )
    .fetch_optional(db)
    .await
}

/// Records a received transaction and its answer; if a concurrent copy was recorded first, returns
/// that one's answer.
pub async fn record_inbound(
    db: &PgPool,
    origin: &str,
    txn_id: &str,
    response: &str,
    pdu_count: i32,
    edu_count: i32,
) -> sqlx::Result<String> {
    let stored = sqlx::query_scalar!(
        r#"WITH recorded AS (
               INSERT INTO federation_inbound_txns (origin, txn_id, response, pdu_count, edu_count, received_ts)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (origin, txn_id) DO NOTHING
               RETURNING response
           )
           SELECT response AS "response!" FROM recorded
           UNION ALL
           SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2
           LIMIT 1"#,
        origin,
        txn_id,
        response,
        pdu_count,
        edu_count,
        super::now_ms()
    )
    .fetch_optional(db)
    .await?;
    Ok(stored.unwrap_or_else(|| response.to_owned()))
}

/// Forgets the transactions received before `before` (ms); answers how many.
pub async fn prune_inbound(db: &PgPool, before: i64) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "DELETE FROM federation_inbound_txns WHERE received_ts < $1",
        before
    )
    .execute(db)
    .await?
    .rows_affected())
}

//! federation_outbox, federation_destinations (the outbound queue) and federation_inbound_txns.

use sqlx::PgPool;

/// A queued PDU or EDU.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub body: String,
}

/// Queues `bodies` (of `kind`, "pdu" or "edu") for each destination, in one transaction.
pub async fn enqueue(
    db: &PgPool,
    destinations: &[String],
    kind: &str,
    bodies: &[String],
) -> sqlx::Result<()> {
    let now = super::now_ms();
    let mut tx = db.begin().await?;
    for destination in destinations {
        sqlx::query!(
            "INSERT INTO federation_destinations (destination) VALUES ($1) ON CONFLICT DO NOTHING",
            destination
        )
        .execute(&mut *tx)
        .await?;
        for body in bodies {
            sqlx::query!(
                "INSERT INTO federation_outbox (destination, kind, body, queued_ts) VALUES ($1, $2, $3, $4)",
                destination,
                kind,
                body,
                now
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await
}

/// Takes the lease of one destination that is due and has something queued, for `owner` until
/// `now + lease_ms`; others' live leases and rows locked by another claim are skipped.
pub async fn claim(
    db: &PgPool,
    owner: &str,
    now: i64,
    lease_ms: i64,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "UPDATE federation_destinations SET lease_owner = $1, lease_until_ts = $2 + $3
         WHERE destination = (
             SELECT d.destination FROM federation_destinations d
             WHERE d.retry_at_ts <= $2 AND (d.lease_until_ts < $2 OR d.lease_owner IS NULL)
               AND EXISTS (SELECT 1 FROM federation_outbox o WHERE o.destination = d.destination)
             ORDER BY d.retry_at_ts
             LIMIT 1
             FOR UPDATE SKIP LOCKED)
         RETURNING destination",
        owner,
        now,
        lease_ms
    )
    .fetch_optional(db)
    .await
}

/// The oldest `limit` queued items of `kind` for `destination`.
pub async fn next_batch(
    db: &PgPool,
    destination: &str,
    kind: &str,
    limit: i64,
) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as!(
        OutboxRow,
        "SELECT id, kind, body FROM federation_outbox WHERE destination = $1 AND kind = $2
         ORDER BY id LIMIT $3",
        destination,
        kind,
        limit
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
    let mut tx = db.begin().await?;
    sqlx::query!(
        "DELETE FROM federation_outbox WHERE destination = $1 AND id = ANY($2)",
        destination,
        ids
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE federation_destinations SET retry_at_ts = 0, retry_interval_ms = 0, failures = 0,
             lease_owner = NULL, lease_until_ts = 0
         WHERE destination = $1 AND lease_owner = $2",
        destination,
        owner
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
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

/// The last wait before `destination` (ms; 0 after a success).
pub async fn retry_interval(db: &PgPool, destination: &str) -> sqlx::Result<i64> {
    Ok(sqlx::query_scalar!(
        "SELECT retry_interval_ms FROM federation_destinations WHERE destination = $1",
        destination
    )
    .fetch_optional(db)
    .await?
    .unwrap_or(0))
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
    sqlx::query!(
        "INSERT INTO federation_inbound_txns (origin, txn_id, response, pdu_count, edu_count, received_ts)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (origin, txn_id) DO NOTHING",
        origin,
        txn_id,
        response,
        pdu_count,
        edu_count,
        super::now_ms()
    )
    .execute(db)
    .await?;
    Ok(inbound_response(db, origin, txn_id)
        .await?
        .unwrap_or_else(|| response.to_owned()))
}

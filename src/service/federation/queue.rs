//! The outbound transaction queue, persisted in PostgreSQL (`federation_outbox`,
//! `federation_destinations`): PDUs and EDUs wait per destination and leave only once a
//! transaction holding them was accepted, so neither a remote outage nor a restart loses them.
//! Local events are queued by the writer in the statement that stores them (committed means
//! queued); EDUs through [`Outbox::enqueue_edus`].
//!
//! A process sends to a destination only while it holds the destination's lease (taken with
//! `FOR UPDATE SKIP LOCKED`, renewed while a transaction is in flight): one transaction in flight
//! per destination across all processes on the database, ordered by queue position, at most 50
//! PDUs and 100 EDUs each. A process that dies loses its leases when they run out (30 s) and
//! another takes its destinations over; a clean shutdown gives them up at once. Failures back off
//! exponentially (5 s doubling to 1 h); a destination that contacts this server (any authenticated
//! request) ends its backoff and is tried at once. Whoever queues wakes this process's sender;
//! every process also looks for due destinations each second.
//!
//! Memory stays bounded whatever waits: at most `MAX_CONCURRENT` destinations are sent to at once,
//! each with one transaction in memory; nothing is kept per destination between attempts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ruma::api::federation::transactions::send_transaction_message::v1 as send;
use ruma::serde::Raw;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, ServerName};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use super::client::FederationClient;
use crate::service::metrics::names;
use crate::store::federation_queue::{self as store, Claimed, NewEdu, OutboxRow};
use crate::{Error, Result};

const MAX_PDUS: i64 = 50;
const MAX_EDUS: i64 = 100;
/// Destinations sent to at once by one process.
const MAX_CONCURRENT: usize = 32;
/// How often other processes' queued items are looked for.
const POLL: Duration = Duration::from_secs(1);
/// A lease not renewed for this long is free for another process to take.
const LEASE_MS: i64 = 30_000;
const FIRST_RETRY_MS: i64 = 5_000;
const MAX_RETRY_MS: i64 = 3_600_000;
/// A typing notice queued longer ago than this is not sent (the receiver's own timeout has passed).
const TYPING_STALE_MS: i64 = 30_000;
/// EDUs being handed to the queue at once (see [`Outbox::edu_permit`]); beyond, new ones are dropped.
const MAX_EDUS_QUEUEING: usize = 256;

/// An EDU to queue.
#[derive(Debug, Clone)]
pub struct Edu {
    pub body: Value,
    /// EDUs a newer one makes pointless (a user's typing notice or read receipt in a room) carry
    /// a key: a newer EDU with the same key replaces the one waiting. Keys of typing notices start
    /// with `m.typing ` (stale ones are not sent).
    pub key: Option<String>,
}

impl Edu {
    pub fn new(body: Value) -> Self {
        Self { body, key: None }
    }
}

/// This process's sender.
pub struct Outbox {
    db: PgPool,
    client: Arc<FederationClient>,
    /// This process's lease name.
    owner: String,
    wake: Notify,
    sending: Arc<Semaphore>,
    /// Tasks handing EDUs to the queue.
    edus_queueing: Arc<Semaphore>,
    /// How long a lease lasts without renewal (ms).
    lease_ms: AtomicI64,
    started: AtomicBool,
    /// True once the sender stops: every sender task ends.
    stop: watch::Sender<bool>,
}

impl Outbox {
    pub fn new(db: PgPool, client: Arc<FederationClient>) -> Self {
        Self {
            db,
            client,
            owner: crate::service::auth::random_string(16),
            wake: Notify::new(),
            sending: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            edus_queueing: Arc::new(Semaphore::new(MAX_EDUS_QUEUEING)),
            lease_ms: AtomicI64::new(LEASE_MS),
            started: AtomicBool::new(false),
            stop: watch::channel(false).0,
        }
    }

    /// Wakes this process's sender: something was queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A permit to hand an EDU to the queue in the background; None when too many are on their
    /// way already (the EDU is then dropped: typing notices and receipts are not worth queueing
    /// without bound).
    pub fn edu_permit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.edus_queueing.clone().try_acquire_owned().ok();
        if permit.is_none() {
            ::metrics::counter!(names::FED_EDUS_DROPPED).increment(1);
        }
        permit
    }

    /// Queues `edus` for each destination (this server left out) and wakes the sender.
    pub async fn enqueue_edus(&self, destinations: &[OwnedServerName], edus: &[Edu]) -> Result<()> {
        let destinations: Vec<String> = destinations
            .iter()
            .filter(|d| **d != self.client.origin())
            .map(|d| d.to_string())
            .collect();
        // One row per key: the last EDU of a key wins.
        let mut rows: Vec<NewEdu> = Vec::with_capacity(edus.len());
        for edu in edus {
            if let Some(key) = &edu.key {
                rows.retain(|r| r.key.as_ref() != Some(key));
            }
            rows.push(NewEdu {
                body: edu.body.to_string(),
                key: edu.key.clone(),
            });
        }
        if destinations.is_empty() || rows.is_empty() {
            return Ok(());
        }
        store::enqueue_edus(&self.db, &destinations, &rows).await?;
        self.wake();
        Ok(())
    }

    /// `origin` sent this server an authenticated request: it is up, so its backoff ends and
    /// whatever waits for it is sent now (by this process, or whichever claims it first).
    pub async fn contacted_by(&self, origin: &ServerName) -> Result<()> {
        if store::clear_backoff(&self.db, origin.as_str()).await? {
            ::metrics::counter!(names::FED_WOKEN).increment(1);
            tracing::info!(destination = %origin, "the server contacted us: retrying it now");
            self.wake();
        }
        Ok(())
    }

    /// Starts the sender (the server and tests do; admin commands do not). Once only.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let outbox = self.clone();
        tokio::spawn(async move {
            while !outbox.stopped() {
                outbox.claim_due().await;
                tokio::select! {
                    _ = outbox.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = until_stopped(outbox.stop.subscribe()) => {}
                }
            }
        });
    }

    /// Stops sending at once, transactions in flight included, and keeps the leases: what a
    /// process that dies leaves behind (tests use it for that). See also `shutdown`.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// A clean stop: sending stops and this process's leases are given up, so that other
    /// processes take its destinations over at once.
    pub async fn shutdown(&self) {
        self.stop();
        if let Err(e) = store::release_all(&self.db, &self.owner).await {
            tracing::warn!(error = %e, "giving up federation leases");
        }
    }

    /// How long a lease lasts without renewal (tests shorten it to see a takeover soon).
    pub fn set_lease(&self, lease: Duration) {
        self.lease_ms
            .store(lease.as_millis().max(3) as i64, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Takes every due destination it has room for and sends to each in its own task.
    async fn claim_due(self: &Arc<Self>) {
        loop {
            if self.stopped() {
                return;
            }
            let Ok(permit) = self.sending.clone().try_acquire_owned() else {
                return;
            };
            let now = crate::store::now_ms();
            let lease_ms = self.lease_ms.load(Ordering::Relaxed);
            match store::claim(&self.db, &self.owner, now, lease_ms).await {
                Ok(Some(claimed)) => {
                    let outbox = self.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        outbox.send_leased(claimed, now + lease_ms).await;
                        // More may be queued: look again at once.
                        outbox.wake();
                    });
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a federation destination");
                    return;
                }
            }
        }
    }

    /// Sends one transaction to the claimed destination, renewing the lease while it is in flight.
    /// Gives up (dropping the request) when the sender stops or the lease is lost: another
    /// process may be sending to the destination by then.
    async fn send_leased(&self, claimed: Claimed, mut held_until: i64) {
        let destination = claimed.destination.clone();
        let lease_ms = self.lease_ms.load(Ordering::Relaxed);
        let stopped = until_stopped(self.stop.subscribe());
        tokio::pin!(stopped);
        let send = self.send_one(&claimed);
        tokio::pin!(send);
        let mut renew = tokio::time::interval(Duration::from_millis((lease_ms / 3) as u64));
        renew.tick().await;
        loop {
            tokio::select! {
                sent = &mut send => {
                    if let Err(e) = sent {
                        tracing::warn!(%destination, error = %e, "federation queue");
                    }
                    return;
                }
                _ = renew.tick() => {
                    let until = crate::store::now_ms() + lease_ms;
                    match store::renew(&self.db, &destination, &self.owner, until).await {
                        Ok(true) => held_until = until,
                        Ok(false) => {
                            tracing::warn!(%destination, "lost the lease of a federation destination");
                            return;
                        }
                        Err(e) if crate::store::now_ms() + lease_ms / 3 >= held_until => {
                            tracing::warn!(%destination, error = %e, "could not renew a lease; giving the destination up");
                            return;
                        }
                        Err(_) => {}
                    }
                }
                _ = &mut stopped => return,
            }
        }
    }

    /// Sends one transaction to `claimed`'s destination (whose lease this process holds) and
    /// records the outcome, which releases the lease.
    async fn send_one(&self, claimed: &Claimed) -> Result<()> {
        let destination = claimed.destination.as_str();
        let (pdus, edus): (Vec<OutboxRow>, Vec<OutboxRow>) =
            store::next_batch(&self.db, destination, MAX_PDUS, MAX_EDUS)
                .await?
                .into_iter()
                .partition(|r| r.kind == "pdu");
        let ids: Vec<i64> = pdus.iter().chain(&edus).map(|r| r.id).collect();
        let Some(request) = self.transaction(&pdus, &edus, &ids)? else {
            // Nothing left worth sending (purged events, stale typing notices): done with them.
            return Ok(store::delivered(&self.db, destination, &self.owner, &ids).await?);
        };
        let server = OwnedServerName::try_from(destination).map_err(Error::internal)?;
        if claimed.failures > 0 {
            ::metrics::counter!(names::FED_RETRIES).increment(1);
        }
        let started = Instant::now();
        let outcome = self.client.send(&server, request).await;
        ::metrics::histogram!(names::FED_TXN_DURATION).record(started.elapsed());
        match outcome {
            Ok(_) => {
                ::metrics::counter!(names::FED_TXNS_SENT).increment(1);
                store::delivered(&self.db, destination, &self.owner, &ids).await?
            }
            Err(e) => {
                ::metrics::counter!(names::FED_TXNS_FAILED).increment(1);
                let interval = next_interval(claimed.retry_interval_ms);
                tracing::info!(%destination, error = %e, retry_in_ms = interval, "transaction failed");
                let retry_at = crate::store::now_ms() + interval;
                store::failed(&self.db, destination, &self.owner, retry_at, interval).await?;
            }
        }
        Ok(())
    }

    /// The transaction of the queued rows `ids` (PDUs, then EDUs); None when none is worth
    /// sending. Its ID follows from the rows, so a retry of the same rows is the same transaction.
    fn transaction(
        &self,
        pdus: &[OutboxRow],
        edus: &[OutboxRow],
        ids: &[i64],
    ) -> Result<Option<send::Request>> {
        let (Some(first), Some(last)) = (ids.iter().min(), ids.iter().max()) else {
            return Ok(None);
        };
        let mut request = send::Request::new(
            OwnedTransactionId::from(format!("{first}-{last}-{}", ids.len())),
            self.client.origin().to_owned(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        for body in pdus.iter().filter_map(|r| r.body.clone()) {
            request
                .pdus
                .push(serde_json::value::RawValue::from_string(body).map_err(Error::internal)?);
        }
        let stale_typing = crate::store::now_ms() - TYPING_STALE_MS;
        for row in edus {
            let typing = row
                .edu_key
                .as_deref()
                .is_some_and(|k| k.starts_with("m.typing "));
            if let Some(body) = &row.body
                && !(typing && row.queued_ts < stale_typing)
            {
                request
                    .edus
                    .push(Raw::from_json_string(body.clone()).map_err(Error::internal)?);
            }
        }
        Ok((!request.pdus.is_empty() || !request.edus.is_empty()).then_some(request))
    }
}

/// Resolves once the sender stops.
async fn until_stopped(mut stop: watch::Receiver<bool>) {
    loop {
        let stopped = *stop.borrow_and_update();
        if stopped || stop.changed().await.is_err() {
            return;
        }
    }
}

/// The wait after a failure, given the previous one: 5 s, then doubling up to an hour.
pub fn next_interval(previous_ms: i64) -> i64 {
    if previous_ms <= 0 {
        FIRST_RETRY_MS
    } else {
        (previous_ms * 2).min(MAX_RETRY_MS)
    }
}

/// The answer already given to `origin`'s transaction `txn_id`, if it was received before. A
/// transaction larger than the spec allows is refused.
pub async fn earlier_answer(
    db: &PgPool,
    origin: &str,
    txn_id: &str,
    pdu_count: usize,
    edu_count: usize,
) -> Result<Option<String>> {
    if pdu_count > MAX_PDUS as usize || edu_count > MAX_EDUS as usize {
        return Err(Error::bad_json(
            "A transaction holds at most 50 PDUs and 100 EDUs",
        ));
    }
    Ok(store::inbound_response(db, origin, txn_id).await?)
}

/// Records the answer to a transaction just applied (per-PDU results: `None` for success);
/// returns the answer stored, which is the earlier one if the same transaction raced this one.
pub async fn record_answer(
    db: &PgPool,
    origin: &str,
    txn_id: &str,
    results: &std::collections::BTreeMap<String, Option<String>>,
    pdu_count: usize,
    edu_count: usize,
) -> Result<String> {
    let mut accepted = 0;
    let pdus: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(id, r)| {
            let v = match r {
                None => {
                    accepted += 1;
                    serde_json::json!({})
                }
                Some(e) => serde_json::json!({ "error": e }),
            };
            (id.clone(), v)
        })
        .collect();
    ::metrics::counter!(names::FED_INBOUND_TXNS).increment(1);
    ::metrics::counter!(names::FED_INBOUND_PDUS, "result" => "accepted").increment(accepted);
    ::metrics::counter!(names::FED_INBOUND_PDUS, "result" => "refused")
        .increment(results.len() as u64 - accepted);
    let answer = serde_json::json!({ "pdus": pdus }).to_string();
    Ok(store::record_inbound(
        db,
        origin,
        txn_id,
        &answer,
        pdu_count as i32,
        edu_count as i32,
    )
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(next_interval(0), 5_000);
        assert_eq!(next_interval(5_000), 10_000);
        assert_eq!(next_interval(3_000_000), MAX_RETRY_MS);
        assert_eq!(next_interval(MAX_RETRY_MS), MAX_RETRY_MS);
    }
}

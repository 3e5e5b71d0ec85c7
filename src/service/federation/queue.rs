//! The outbound transaction queue, persisted in PostgreSQL (`federation_outbox`,
//! `federation_destinations`): PDUs and EDUs wait per destination and leave only once a
//! transaction holding them was accepted, so neither a remote outage nor a restart loses them.
//! A process sends to a destination only while it holds the destination's lease (taken with
//! `FOR UPDATE SKIP LOCKED`): one transaction in flight per destination across all processes on
//! the database, ordered by queue position, at most 50 PDUs and 100 EDUs each; failures back off
//! exponentially (5 s doubling to 1 h). `enqueue` wakes this process's sender; others poll each
//! second.

use std::sync::Arc;
use std::time::Duration;

use ruma::api::federation::transactions::send_transaction_message::v1 as send;
use ruma::serde::Raw;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId};
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, mpsc};

use super::client::FederationClient;
use crate::store::federation_queue as store;
use crate::{Error, Result};

const MAX_PDUS: i64 = 50;
const MAX_EDUS: i64 = 100;
/// Destinations sent to at once by one process.
const MAX_CONCURRENT: usize = 32;
/// How often other processes' queued items are looked for.
const POLL: Duration = Duration::from_secs(1);
/// The lease outlives the federation client's request timeout.
const LEASE_MS: i64 = 150_000;
const FIRST_RETRY_MS: i64 = 5_000;
const MAX_RETRY_MS: i64 = 3_600_000;

/// Which of PDU or EDU a queued item is.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Pdu,
    Edu,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Pdu => "pdu",
            Kind::Edu => "edu",
        }
    }
}

/// PDUs committed locally and waiting to be queued (see [`Outbox::pdu_committed`]).
const MAX_COMMITTED_WAITING: usize = 4096;

/// PDUs committed by the writer, on their way into the persisted queue: (destinations, PDU).
type Committed = (Vec<OwnedServerName>, serde_json::Value);

/// This process's sender.
pub struct Outbox {
    db: PgPool,
    client: Arc<FederationClient>,
    /// This process's lease name.
    owner: String,
    wake: Notify,
    sending: Arc<Semaphore>,
    /// The writer's committed PDUs, queued in commit order by one task (`start`).
    committed: mpsc::Sender<Committed>,
    /// Taken by `start`.
    committed_rx: std::sync::Mutex<Option<mpsc::Receiver<Committed>>>,
}

impl Outbox {
    pub fn new(db: PgPool, client: Arc<FederationClient>) -> Self {
        let (committed, committed_rx) = mpsc::channel(MAX_COMMITTED_WAITING);
        Self {
            db,
            client,
            owner: crate::service::auth::random_string(16),
            wake: Notify::new(),
            sending: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            committed,
            committed_rx: std::sync::Mutex::new(Some(committed_rx)),
        }
    }

    /// A local event the writer committed, for `destinations`: queued in the background, in commit
    /// order (when more than `MAX_COMMITTED_WAITING` wait, this one is queued on its own task).
    pub fn pdu_committed(
        self: &Arc<Self>,
        destinations: Vec<OwnedServerName>,
        pdu: serde_json::Value,
    ) {
        if let Err(mpsc::error::TrySendError::Full((destinations, pdu))) =
            self.committed.try_send((destinations, pdu))
        {
            let outbox = self.clone();
            tokio::spawn(async move { outbox.queue_committed(&destinations, &pdu).await });
        }
    }

    async fn queue_committed(&self, destinations: &[OwnedServerName], pdu: &serde_json::Value) {
        if let Err(e) = self
            .enqueue(destinations, Kind::Pdu, std::slice::from_ref(pdu))
            .await
        {
            tracing::error!(error = %e, "queueing a PDU for other servers failed");
        }
    }

    /// Queues `items` (JSON objects) for each destination and wakes the sender.
    pub async fn enqueue(
        &self,
        destinations: &[OwnedServerName],
        kind: Kind,
        items: &[serde_json::Value],
    ) -> Result<()> {
        let destinations: Vec<String> = destinations
            .iter()
            .filter(|d| **d != self.client.origin())
            .map(|d| d.to_string())
            .collect();
        let bodies: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        store::enqueue(&self.db, &destinations, kind.as_str(), &bodies).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Starts the sender (the server and tests do; admin commands do not).
    pub fn start(self: &Arc<Self>) {
        let taken = self
            .committed_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut committed) = taken {
            let outbox = self.clone();
            tokio::spawn(async move {
                while let Some((destinations, pdu)) = committed.recv().await {
                    outbox.queue_committed(&destinations, &pdu).await;
                }
            });
        }
        let outbox = self.clone();
        tokio::spawn(async move {
            loop {
                outbox.claim_due().await;
                tokio::select! {
                    _ = outbox.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        });
    }

    /// Takes every due destination it has room for and sends to each in its own task.
    async fn claim_due(self: &Arc<Self>) {
        loop {
            let Ok(permit) = self.sending.clone().try_acquire_owned() else {
                return;
            };
            let now = crate::store::now_ms();
            match store::claim(&self.db, &self.owner, now, LEASE_MS).await {
                Ok(Some(destination)) => {
                    let outbox = self.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Err(e) = outbox.send_one(&destination).await {
                            tracing::warn!(%destination, error = %e, "federation queue");
                        }
                        // More may be queued: look again at once.
                        outbox.wake.notify_one();
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

    /// Sends one transaction to `destination` (whose lease this process holds) and records the
    /// outcome, which releases the lease.
    async fn send_one(&self, destination: &str) -> Result<()> {
        let pdus = store::next_batch(&self.db, destination, "pdu", MAX_PDUS).await?;
        let edus = store::next_batch(&self.db, destination, "edu", MAX_EDUS).await?;
        let ids: Vec<i64> = pdus.iter().chain(&edus).map(|r| r.id).collect();
        let (Some(first), Some(last)) = (ids.iter().min(), ids.iter().max()) else {
            return Ok(store::delivered(&self.db, destination, &self.owner, &[]).await?);
        };
        let server = OwnedServerName::try_from(destination).map_err(Error::internal)?;
        let mut request = send::Request::new(
            OwnedTransactionId::from(format!("{first}-{last}-{}", ids.len())),
            self.client.origin().to_owned(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        for row in &pdus {
            request.pdus.push(
                serde_json::value::RawValue::from_string(row.body.clone())
                    .map_err(Error::internal)?,
            );
        }
        for row in &edus {
            request
                .edus
                .push(Raw::from_json_string(row.body.clone()).map_err(Error::internal)?);
        }
        match self.client.send(&server, request).await {
            Ok(_) => store::delivered(&self.db, destination, &self.owner, &ids).await?,
            Err(e) => {
                let previous = store::retry_interval(&self.db, destination).await?;
                let interval = next_interval(previous);
                tracing::info!(%destination, error = %e, retry_in_ms = interval, "transaction failed");
                let retry_at = crate::store::now_ms() + interval;
                store::failed(&self.db, destination, &self.owner, retry_at, interval).await?;
            }
        }
        Ok(())
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
    let pdus: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(id, r)| {
            let v = match r {
                None => serde_json::json!({}),
                Some(e) => serde_json::json!({ "error": e }),
            };
            (id.clone(), v)
        })
        .collect();
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

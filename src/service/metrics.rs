//! Prometheus metrics: the recorder, the metric names, and what is sampled at scrape time.
//!
//! Code records through the `metrics` facade (`metrics::counter!(names::X).increment(1)`): with no
//! recorder installed (`metrics.enabled = false`) that is one atomic load. With the recorder, a
//! metric with a static name and static labels is found by a pre-hashed key; nothing allocates.
//! Gauges that cost a system call or a query (process, pools, media) are read only when scraped.

pub mod process;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::store;

/// Every metric name, in one place (the Grafana dashboard in `contrib/grafana/axon.json` uses them).
pub mod names {
    /// Histogram of request latency, labelled `endpoint` (the route template), `method`, `status`.
    pub const HTTP_DURATION: &str = "axon_http_request_duration_seconds";
    /// Histogram: how many requests (jobs) each event-writer batch carried.
    pub const WRITER_BATCH_SIZE: &str = "axon_writer_batch_size";
    /// Histogram: how long a writer batch took from its first statement to its commit.
    pub const WRITER_COMMIT: &str = "axon_writer_commit_duration_seconds";
    /// Counter of batches redone, labelled `reason`: `conflict` (the optimistic path lost a race
    /// and the batch ran again under room locks) or `failure` (each job retried on its own).
    pub const WRITER_REDONE: &str = "axon_writer_batches_redone_total";
    /// Gauge: requests waiting in the writer's queue when a batch was taken.
    pub const WRITER_QUEUED: &str = "axon_writer_queue_depth";
    /// Gauge: /sync long polls waiting for something to answer.
    pub const SYNC_WAITING: &str = "axon_sync_long_polls_waiting";
    /// Counter: waiting long polls woken (by a commit, or a reconnection).
    pub const SYNC_WAKEUPS: &str = "axon_sync_wakeups_total";
    /// Counter of /sync computations, labelled `source`: `memory` or `database`.
    pub const SYNC_ANSWERS: &str = "axon_sync_answers_total";
    /// Counter of woken sliding sync long polls, labelled `source`: `memory` (answered, or sent
    /// back to waiting, without the database) or `database`.
    pub const SLIDING_WOKEN: &str = "axon_sliding_sync_woken_total";
    /// Counter: times the LISTEN connection was lost and re-established.
    pub const LISTEN_RECONNECTS: &str = "axon_notifier_listen_reconnects_total";
    /// Counter: notifications received from other processes (and this one) over LISTEN.
    pub const NOTIFICATIONS: &str = "axon_notifier_notifications_received_total";
    /// Gauges per `pool` (`requests`, `writer`): open connections, idle ones, and tasks waiting.
    pub const POOL_SIZE: &str = "axon_db_pool_connections";
    pub const POOL_IDLE: &str = "axon_db_pool_idle_connections";
    pub const POOL_WAITING: &str = "axon_db_pool_acquires_waiting";
    /// Histogram per `pool`: how long taking a connection took (the writer, database-path /sync).
    pub const POOL_ACQUIRE: &str = "axon_db_pool_acquire_duration_seconds";
    /// Gauge: bytes of media files (uploads and thumbnails) stored, each file counted once.
    pub const MEDIA_BYTES: &str = "axon_media_stored_bytes";
    /// Gauge per `kind` (`pdu`, `edu`): what waits in the outbound federation queue, every
    /// destination together (sampled when scraped).
    pub const FED_QUEUED: &str = "axon_federation_queue_depth";
    /// Gauge: destinations backing off after a failure (sampled when scraped).
    pub const FED_BACKING_OFF: &str = "axon_federation_destinations_backing_off";
    /// Counters: outbound transactions accepted by their destination, and failed (unreachable,
    /// or an error answer); retries are attempts to a destination whose last attempt failed.
    pub const FED_TXNS_SENT: &str = "axon_federation_transactions_sent_total";
    pub const FED_TXNS_FAILED: &str = "axon_federation_transactions_failed_total";
    pub const FED_RETRIES: &str = "axon_federation_retries_total";
    /// Histogram: how long an outbound transaction took, sent to answered.
    pub const FED_TXN_DURATION: &str = "axon_federation_transaction_duration_seconds";
    /// Counter: backoffs ended early because the destination contacted this server.
    pub const FED_WOKEN: &str = "axon_federation_destinations_woken_total";
    /// Counter: EDUs (typing, receipts) dropped instead of queued because too many were on their
    /// way to the queue at once.
    pub const FED_EDUS_DROPPED: &str = "axon_federation_edus_dropped_total";
    /// Counters: transactions received (retries answered from the stored answer not counted), and
    /// their PDUs by `result` (`accepted`, `refused`).
    pub const FED_INBOUND_TXNS: &str = "axon_federation_inbound_transactions_total";
    pub const FED_INBOUND_PDUS: &str = "axon_federation_inbound_pdus_total";
    /// Counter of other servers' key fetches by `via` (`direct`, `notary`) and `result` (`ok`,
    /// `failed`).
    pub const FED_KEY_FETCHES: &str = "axon_federation_key_fetches_total";
    /// The process, under the names Prometheus client libraries use.
    pub const RSS: &str = "process_resident_memory_bytes";
    pub const CPU: &str = "process_cpu_seconds_total";
    pub const OPEN_FDS: &str = "process_open_fds";
    pub const MAX_FDS: &str = "process_max_fds";
}

/// Latency buckets, 0.5 ms to 60 s: sends answer in milliseconds, long polls in up to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Batch sizes up to the writer's 256.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// How often histogram samples are folded into their buckets when nobody scrapes (their buffer
/// would grow otherwise).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// The media total sums two tables: at most once a minute.
const MEDIA_EVERY: Duration = Duration::from_secs(60);

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle) and
/// starts its upkeep task. Must run inside the tokio runtime.
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(names::WRITER_BATCH_SIZE.into()),
                BATCH_BUCKETS,
            )
        })
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    // Another thread may have won the race: then its recorder is the global one.
    if metrics::set_global_recorder(recorder).is_err() {
        return HANDLE
            .get()
            .cloned()
            .ok_or("a metrics recorder is already installed".into());
    }
    let _ = HANDLE.set(handle.clone());
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        names::HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency by endpoint template, method and status"
    );
    describe_histogram!(names::WRITER_BATCH_SIZE, "Requests per event-writer batch");
    describe_histogram!(
        names::WRITER_COMMIT,
        Unit::Seconds,
        "Event-writer batch latency, first statement to commit"
    );
    describe_counter!(
        names::WRITER_REDONE,
        "Event-writer batches redone (conflict: under room locks; failure: job by job)"
    );
    describe_gauge!(
        names::WRITER_QUEUED,
        "Requests waiting in the event writer's queue"
    );
    describe_gauge!(names::SYNC_WAITING, "/sync long polls waiting");
    describe_counter!(names::SYNC_WAKEUPS, "Waiting /sync long polls woken");
    describe_counter!(
        names::SYNC_ANSWERS,
        "/sync computations by source (memory or database)"
    );
    describe_counter!(
        names::SLIDING_WOKEN,
        "Woken sliding sync long polls by where they looked (memory or database)"
    );
    describe_counter!(
        names::LISTEN_RECONNECTS,
        "LISTEN connection losses recovered"
    );
    describe_counter!(names::NOTIFICATIONS, "Notifications received over LISTEN");
    describe_gauge!(names::POOL_SIZE, "Open database connections per pool");
    describe_gauge!(names::POOL_IDLE, "Idle database connections per pool");
    describe_gauge!(
        names::POOL_WAITING,
        "Tasks waiting for a database connection"
    );
    describe_histogram!(
        names::POOL_ACQUIRE,
        Unit::Seconds,
        "Time taken to get a database connection"
    );
    describe_gauge!(
        names::MEDIA_BYTES,
        Unit::Bytes,
        "Bytes of media files stored"
    );
    describe_gauge!(
        names::FED_QUEUED,
        "PDUs and EDUs waiting in the outbound federation queue"
    );
    describe_gauge!(
        names::FED_BACKING_OFF,
        "Federation destinations backing off after a failure"
    );
    describe_counter!(
        names::FED_TXNS_SENT,
        "Outbound federation transactions accepted"
    );
    describe_counter!(
        names::FED_TXNS_FAILED,
        "Outbound federation transactions failed"
    );
    describe_counter!(
        names::FED_RETRIES,
        "Outbound transactions to a destination whose last attempt failed"
    );
    describe_histogram!(
        names::FED_TXN_DURATION,
        Unit::Seconds,
        "Outbound federation transaction latency"
    );
    describe_counter!(
        names::FED_WOKEN,
        "Backoffs ended because the destination contacted us"
    );
    describe_counter!(
        names::FED_EDUS_DROPPED,
        "Outbound EDUs dropped under overload"
    );
    describe_counter!(names::FED_INBOUND_TXNS, "Federation transactions received");
    describe_counter!(
        names::FED_INBOUND_PDUS,
        "PDUs received in transactions, by result"
    );
    describe_counter!(
        names::FED_KEY_FETCHES,
        "Other servers' key fetches, by route and result"
    );
    describe_gauge!(names::RSS, Unit::Bytes, "Resident memory");
    describe_gauge!(names::CPU, Unit::Seconds, "User and system CPU time");
    describe_gauge!(names::OPEN_FDS, "Open file descriptors");
    describe_gauge!(names::MAX_FDS, "The open file descriptor limit");
}

/// What a scrape reads besides the recorded metrics.
pub struct Scrape {
    handle: PrometheusHandle,
    db: PgPool,
    writer_db: PgPool,
    /// The last media total and when it was read.
    media: Mutex<Option<(Instant, i64)>>,
}

impl Scrape {
    pub fn new(handle: PrometheusHandle, db: PgPool, writer_db: PgPool) -> Self {
        Self {
            handle,
            db,
            writer_db,
            media: Mutex::new(None),
        }
    }

    /// Samples the process, the pools and the media total, then renders every metric in the
    /// Prometheus text format.
    pub async fn render(&self) -> String {
        if let Some(p) = process::sample() {
            metrics::gauge!(names::RSS).set(p.rss_bytes as f64);
            metrics::gauge!(names::CPU).set(p.cpu_seconds);
            metrics::gauge!(names::OPEN_FDS).set(p.open_fds as f64);
            if let Some(max) = p.max_fds {
                metrics::gauge!(names::MAX_FDS).set(max as f64);
            }
        }
        for (label, pool) in [("requests", &self.db), ("writer", &self.writer_db)] {
            metrics::gauge!(names::POOL_SIZE, "pool" => label).set(pool.size() as f64);
            metrics::gauge!(names::POOL_IDLE, "pool" => label).set(pool.num_idle() as f64);
        }
        if let Some(bytes) = self.media_bytes().await {
            metrics::gauge!(names::MEDIA_BYTES).set(bytes as f64);
        }
        self.federation_queue().await;
        self.handle.render()
    }

    /// The outbound federation queue's depth and the destinations backing off (a scrape never
    /// waits long on a busy pool: the gauges then keep their last values).
    async fn federation_queue(&self) {
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            store::federation_queue::depth(&self.db, store::now_ms()),
        );
        if let Ok(Ok((pdus, edus, backing_off))) = read.await {
            metrics::gauge!(names::FED_QUEUED, "kind" => "pdu").set(pdus as f64);
            metrics::gauge!(names::FED_QUEUED, "kind" => "edu").set(edus as f64);
            metrics::gauge!(names::FED_BACKING_OFF).set(backing_off as f64);
        }
    }

    async fn media_bytes(&self) -> Option<i64> {
        let last = *self.media.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, bytes)) = last
            && at.elapsed() < MEDIA_EVERY
        {
            return Some(bytes);
        }
        // A scrape never waits long on a busy pool: the gauge then keeps its last value.
        let read =
            tokio::time::timeout(Duration::from_secs(2), store::media::stored_bytes(&self.db));
        match read.await {
            Ok(Ok(bytes)) => {
                *self.media.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), bytes));
                Some(bytes)
            }
            _ => last.map(|(_, bytes)| bytes),
        }
    }
}

/// Times taking a connection from `pool` (labelled `label`) and counts the waiters meanwhile.
pub async fn timed_acquire<T, F>(label: &'static str, acquire: F) -> T
where
    F: Future<Output = T>,
{
    let waiting = metrics::gauge!(names::POOL_WAITING, "pool" => label);
    waiting.increment(1.0);
    let started = Instant::now();
    let out = acquire.await;
    waiting.decrement(1.0);
    metrics::histogram!(names::POOL_ACQUIRE, "pool" => label).record(started.elapsed());
    out
}

/// Counts a waiting long poll while it lives.
pub struct Waiting(());

impl Waiting {
    pub fn start() -> Self {
        metrics::gauge!(names::SYNC_WAITING).increment(1.0);
        Waiting(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!(names::SYNC_WAITING).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::names::*;

    /// The Grafana dashboard asks only for metrics Axon exports.
    #[test]
    fn the_dashboard_uses_the_exported_names() {
        let all = [
            HTTP_DURATION,
            WRITER_BATCH_SIZE,
            WRITER_COMMIT,
            WRITER_REDONE,
            WRITER_QUEUED,
            SYNC_WAITING,
            SYNC_WAKEUPS,
            SYNC_ANSWERS,
            LISTEN_RECONNECTS,
            NOTIFICATIONS,
            POOL_SIZE,
            POOL_IDLE,
            POOL_WAITING,
            POOL_ACQUIRE,
            MEDIA_BYTES,
            FED_QUEUED,
            FED_BACKING_OFF,
            FED_TXNS_SENT,
            FED_TXNS_FAILED,
            FED_RETRIES,
            FED_TXN_DURATION,
            FED_WOKEN,
            FED_EDUS_DROPPED,
            FED_INBOUND_TXNS,
            FED_INBOUND_PDUS,
            FED_KEY_FETCHES,
            RSS,
            CPU,
            OPEN_FDS,
            MAX_FDS,
        ];
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana/axon.json");
        let dashboard = std::fs::read_to_string(path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
        assert!(json["panels"].as_array().unwrap().len() > 10);
        let mut used = 0;
        for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !(word.starts_with("axon_") || word.starts_with("process_")) {
                continue;
            }
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word);
            assert!(
                all.contains(&base) || all.contains(&word),
                "{word} is not exported"
            );
            used += 1;
        }
        assert!(used >= all.len());
    }
}

//! Devices' last activity (time, address, User-Agent), recorded off the request path in batches:
//! a crowd coming online would otherwise take a pooled connection and a commit per device, beside
//! the syncs that need them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::store;
pub use crate::store::users::Seen;

/// Activity records waiting at most; beyond it a record is dropped (the device's next request
/// after the throttling interval records it again).
const MAX_QUEUED: usize = 4096;
/// Devices in one statement at most.
const MAX_BATCH: usize = 512;

/// The queue of activity records and its task.
#[derive(Default)]
pub struct LastSeenWriter {
    queue: OnceLock<mpsc::Sender<Seen>>,
}

impl LastSeenWriter {
    pub fn start(&self, db: PgPool) {
        let (tx, rx) = mpsc::channel(MAX_QUEUED);
        if self.queue.set(tx).is_ok() {
            tokio::spawn(run(db, rx));
        }
    }

    /// Queues a record without waiting; a full queue (or a writer not started) drops it.
    pub fn note(&self, seen: Seen) {
        if let Some(queue) = self.queue.get()
            && queue.try_send(seen).is_err()
        {
            tracing::debug!("last-seen queue full: a device's activity is recorded later");
        }
    }
}

async fn run(db: PgPool, mut queue: mpsc::Receiver<Seen>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let latest = latest_per_device(std::mem::take(&mut batch));
        if let Err(e) = store::users::touch_devices(&db, &latest).await {
            tracing::warn!(error = %e, devices = latest.len(), "could not record last_seen");
        }
    }
}

/// Each device's latest record, in (user, device) order: the order their rows are updated in.
fn latest_per_device(batch: Vec<Seen>) -> Vec<Seen> {
    let mut latest: BTreeMap<(String, String), Seen> = BTreeMap::new();
    for seen in batch {
        let key = (seen.user_id.clone(), seen.device_id.clone());
        match latest.get(&key) {
            Some(known) if known.ts > seen.ts => {}
            _ => {
                latest.insert(key, seen);
            }
        }
    }
    latest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(user: &str, device: &str, ts: i64) -> Seen {
        Seen {
            user_id: user.into(),
            device_id: device.into(),
            ts,
            ip: None,
            user_agent: None,
        }
    }

    #[test]
    fn a_batch_keeps_each_devices_latest_record_in_order() {
        let kept = latest_per_device(vec![
            seen("@b:x", "D", 5),
            seen("@a:x", "D", 1),
            seen("@b:x", "D", 3),
            seen("@a:x", "E", 2),
        ]);
        let kept: Vec<(&str, &str, i64)> = kept
            .iter()
            .map(|s| (s.user_id.as_str(), s.device_id.as_str(), s.ts))
            .collect();
        assert_eq!(kept, [("@a:x", "D", 1), ("@a:x", "E", 2), ("@b:x", "D", 5)]);
    }
}

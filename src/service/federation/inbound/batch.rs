//! A received transaction's PDUs applied together, in order: what their checks read from the
//! database read once for the lot, checked side by side (signatures, hashes, auth events), then
//! handed to the writer one after the other without waiting, so that they commit together. A PDU
//! whose auth events include an earlier PDU of the transaction waits until those before it are
//! stored (its check reads them).

use std::collections::{BTreeMap, HashSet};

use futures_util::{StreamExt, stream};
use ruma::canonical_json::CanonicalJsonValue;

use super::{Parsed, Receiver};
use crate::Error;

/// PDUs checked at once.
const CHECKING: usize = 8;

/// Per-PDU results by event ID: None for success, else the reason for the refusal.
type Results = BTreeMap<String, Option<String>>;

impl Receiver<'_> {
    /// Applies `parsed` in order (a repeated event ID counts once).
    pub(super) async fn apply_in_order(&self, parsed: impl Iterator<Item = Parsed>) -> Results {
        let mut results = Results::new();
        let mut segment: Vec<Parsed> = Vec::new();
        let mut in_segment: HashSet<String> = HashSet::new();
        for p in parsed {
            if results.contains_key(&p.event_id) || in_segment.contains(&p.event_id) {
                continue;
            }
            if cites_any(&p, &in_segment) {
                self.apply_together(std::mem::take(&mut segment), &mut results)
                    .await;
                in_segment.clear();
            }
            in_segment.insert(p.event_id.clone());
            segment.push(p);
        }
        self.apply_together(segment, &mut results).await;
        results
    }

    /// Checks `segment`'s PDUs side by side, then appends them in order in one writer batch.
    async fn apply_together(&self, segment: Vec<Parsed>, results: &mut Results) {
        // Which are known, and their auth events: read once for the segment (its PDUs do not cite
        // each other).
        let lookups = match self.lookups(&segment).await {
            Ok(lookups) => lookups,
            Err(e) => {
                tracing::warn!(error = %e, "could not read what a transaction's checks need");
                let reason = e.to_string();
                for p in segment {
                    results.insert(p.event_id, Some(reason.clone()));
                }
                return;
            }
        };
        let lookups = &lookups;
        let checked: Vec<_> = stream::iter(segment)
            .map(|p| async move {
                let id = p.event_id.clone();
                (id, self.prepare(p, lookups).await)
            })
            .buffered(CHECKING)
            .collect()
            .await;
        let mut waiting = Vec::with_capacity(checked.len());
        for (id, checked) in checked {
            match checked.and_then(|p| p.map(|pdu| self.writer.push_remote(pdu)).transpose()) {
                Ok(Some(stored)) => waiting.push((id, stored)),
                // Already stored.
                Ok(None) => {
                    results.insert(id, None);
                }
                Err(e) => refused(results, id, e),
            }
        }
        for (id, stored) in waiting {
            match stored.await {
                Ok(_) => {
                    results.insert(id, None);
                }
                Err(e) => refused(results, id, e),
            }
        }
    }
}

fn refused(results: &mut Results, event_id: String, e: Error) {
    tracing::info!(%event_id, error = %e, "refused a PDU");
    results.insert(event_id, Some(e.to_string()));
}

/// Whether `p`'s auth events name one of `ids` (plain IDs, or `[id, hashes]` pairs in v1/v2).
fn cites_any(p: &Parsed, ids: &HashSet<String>) -> bool {
    let Some(CanonicalJsonValue::Array(auth)) = p.object.get("auth_events") else {
        return false;
    };
    auth.iter().any(|item| {
        let id = match item {
            CanonicalJsonValue::String(id) => Some(id),
            CanonicalJsonValue::Array(pair) => match pair.first() {
                Some(CanonicalJsonValue::String(id)) => Some(id),
                _ => None,
            },
            _ => None,
        };
        id.is_some_and(|id| ids.contains(id))
    })
}

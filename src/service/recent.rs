//! The tail of the event stream this process wrote, kept in memory so that a /sync woken by a
//! new message can answer without reading it back from the database.
//!
//! This process's writer feeds it right after each commit, and presence changes leave a marker.
//! Anything else that takes a stream position (account data, receipts, to-device messages, another
//! process's writes) is absent, so it shows up as a gap; a sync whose range has a gap takes the
//! database path instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::store::events::{BuiltEvent, EventRow};

/// Enough for a woken long-poll (it is a few positions behind) at thousands of events a second.
const CAPACITY: usize = 2048;

pub struct RecentEvent {
    pub row: EventRow,
    pub relates_to: Option<String>,
    pub contains_url: bool,
    /// The event a redaction removes.
    pub redacts: Option<String>,
    /// The notifications the event made (what its unread counts grew by), by user: each woken
    /// member's sync looks up its own (see `notified_for`).
    notified: Vec<Notified>,
}

/// `notified` in the order `RecentEvent::notified_for` searches: by user.
fn by_user(mut notified: Vec<Notified>) -> Vec<Notified> {
    notified.sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
    notified
}

pub struct Notified {
    pub user_id: String,
    /// "main" outside threads.
    pub thread_id: String,
    pub highlight: bool,
}

impl RecentEvent {
    pub fn is_redaction(&self) -> bool {
        self.redacts.is_some() || self.row.event_type == "m.room.redaction"
    }

    /// The notifications the event made for `user`.
    pub fn notified_for<'a>(&'a self, user: &str) -> impl Iterator<Item = &'a Notified> {
        let from = self.notified.partition_point(|n| n.user_id.as_str() < user);
        self.notified[from..]
            .iter()
            .take_while(move |n| n.user_id == user)
    }

    pub fn new(event: &BuiltEvent, stream_ordering: i64, notified: Vec<Notified>) -> Self {
        Self {
            row: EventRow {
                stream_ordering,
                event_id: event.event_id.clone(),
                room_id: event.room_id.clone(),
                event_type: event.event_type.clone(),
                state_key: event.state_key.clone(),
                sender: event.sender.clone(),
                origin_server_ts: event.origin_server_ts,
                client_json: event.client_json.clone(),
                state_unsigned: event.state_unsigned.clone(),
                device_id: event.device_id.clone(),
                txn_id: event.txn_id.clone(),
                redacted_because: None,
            },
            relates_to: event.relates_to.clone(),
            contains_url: event.contains_url,
            redacts: event.redacts.clone(),
            notified: by_user(notified),
        }
    }
}

/// What one stream position holds.
pub enum RecentEntry {
    Event(Box<RecentEvent>),
    /// A user's presence changed.
    Presence(Box<PresenceNews>),
}

/// A committed presence change, as /sync reports it.
pub struct PresenceNews {
    /// The user's presence as stored by the change.
    pub row: crate::store::presence::PresenceRow,
    /// The rooms the user was joined to: who shares one with them sees the change.
    pub rooms: Vec<String>,
}

#[derive(Default)]
pub struct RecentEvents {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_position: BTreeMap<i64, Arc<RecentEntry>>,
    /// Event ID → position, for the events in `by_position`.
    by_id: HashMap<String, i64>,
}

impl RecentEvents {
    /// Remembers committed events (call only after their transaction committed).
    pub fn record(&self, events: impl IntoIterator<Item = RecentEvent>) {
        self.insert(
            events
                .into_iter()
                .map(|e| (e.row.stream_ordering, RecentEntry::Event(Box::new(e)))),
        );
    }

    /// Remembers a committed presence change.
    pub fn record_presence(&self, position: i64, news: PresenceNews) {
        self.insert([(position, RecentEntry::Presence(Box::new(news)))]);
    }

    fn insert(&self, entries: impl IntoIterator<Item = (i64, RecentEntry)>) {
        let mut inner = self.inner.lock().unwrap();
        for (position, entry) in entries {
            if let RecentEntry::Event(event) = &entry {
                // A redacted event's stored form changed: forget it, which leaves a gap there (a
                // sync over it reads the database).
                if let Some(target) = &event.redacts
                    && let Some(at) = inner.by_id.remove(target)
                {
                    inner.by_position.remove(&at);
                }
                inner.by_id.insert(event.row.event_id.clone(), position);
            }
            inner.by_position.insert(position, Arc::new(entry));
        }
        while inner.by_position.len() > CAPACITY {
            if let Some((_, entry)) = inner.by_position.pop_first()
                && let RecentEntry::Event(event) = &*entry
            {
                inner.by_id.remove(&event.row.event_id);
            }
        }
    }

    /// Forgets everything (the database may have been restored: positions can be reused).
    pub fn clear(&self) {
        *self.inner.lock().unwrap() = Inner::default();
    }

    /// A recent event by ID.
    pub fn event(&self, event_id: &str) -> Option<Arc<RecentEntry>> {
        let inner = self.inner.lock().unwrap();
        let position = inner.by_id.get(event_id)?;
        inner.by_position.get(position).cloned()
    }

    /// The entries at positions `after + 1`, `after + 2`, … for as long as they follow each other
    /// without a gap: exactly the stream's content over that range.
    pub fn run_after(&self, after: i64) -> Vec<Arc<RecentEntry>> {
        let inner = self.inner.lock().unwrap();
        (after + 1..)
            .zip(inner.by_position.range(after + 1..))
            .take_while(|(expected, (position, _))| expected == *position)
            .map(|(_, (_, entry))| entry.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: i64) -> RecentEvent {
        RecentEvent {
            row: EventRow::example(position, "m.room.message", None),
            relates_to: None,
            contains_url: false,
            redacts: None,
            notified: Vec::new(),
        }
    }

    fn positions(run: &[Arc<RecentEntry>]) -> Vec<i64> {
        run.iter()
            .map(|e| match &**e {
                RecentEntry::Event(e) => e.row.stream_ordering,
                RecentEntry::Presence(_) => -1,
            })
            .collect()
    }

    #[test]
    fn a_run_stops_at_the_first_gap() {
        let recent = RecentEvents::default();
        recent.record([event(5), event(6), event(8)]);
        assert_eq!(positions(&recent.run_after(4)), vec![5, 6]);
        assert_eq!(positions(&recent.run_after(6)), Vec::<i64>::new());
        assert_eq!(positions(&recent.run_after(7)), vec![8]);
        let row = crate::store::presence::PresenceRow {
            user_id: "@a:x".into(),
            state: "online".into(),
            status_msg: None,
            last_active_ts: 0,
            last_sync_ts: 0,
        };
        recent.record_presence(
            7,
            PresenceNews {
                row,
                rooms: Vec::new(),
            },
        );
        assert_eq!(positions(&recent.run_after(4)), vec![5, 6, -1, 8]);
        // Position 3 was never seen: nothing after 2 can be vouched for.
        assert!(recent.run_after(2).is_empty());
    }

    #[test]
    fn out_of_order_commits_fill_the_gap() {
        let recent = RecentEvents::default();
        recent.record([event(12), event(13)]);
        assert!(recent.run_after(9).is_empty());
        recent.record([event(10), event(11)]);
        assert_eq!(positions(&recent.run_after(9)), vec![10, 11, 12, 13]);
    }

    #[test]
    fn a_redaction_leaves_a_gap_where_its_target_was() {
        let recent = RecentEvents::default();
        recent.record([event(1), event(2)]);
        assert!(recent.event("$e1").is_some());
        let mut redaction = event(3);
        redaction.row.event_type = "m.room.redaction".into();
        redaction.redacts = Some("$e1".into());
        recent.record([redaction]);
        assert!(recent.event("$e1").is_none());
        assert!(recent.run_after(0).is_empty());
        assert_eq!(positions(&recent.run_after(1)), vec![2, 3]);
    }

    #[test]
    fn each_user_finds_the_notifications_made_for_them() {
        let mut e = event(1);
        let n = |user: &str, thread: &str| Notified {
            user_id: user.into(),
            thread_id: thread.into(),
            highlight: false,
        };
        e.notified = by_user(vec![
            n("@c:x", "main"),
            n("@a:x", "main"),
            n("@b:x", "t"),
            n("@a:x", "t"),
        ]);
        let threads = |user: &str| -> Vec<String> {
            let mut t: Vec<String> = e.notified_for(user).map(|n| n.thread_id.clone()).collect();
            t.sort();
            t
        };
        assert_eq!(threads("@a:x"), ["main", "t"]);
        assert_eq!(threads("@b:x"), ["t"]);
        assert_eq!(threads("@c:x"), ["main"]);
        assert!(threads("@d:x").is_empty());
        assert!(threads("@0:x").is_empty());
    }

    #[test]
    fn the_oldest_entries_are_dropped_past_capacity() {
        let recent = RecentEvents::default();
        recent.record((1..=(CAPACITY as i64 + 10)).map(event));
        assert!(recent.run_after(0).is_empty());
        assert_eq!(recent.run_after(10).len(), CAPACITY);
        assert!(recent.event("$e10").is_none());
        assert!(recent.event("$e11").is_some());
    }
}

//! The counts a sync reports that are not events — unread notifications per room and one-time key
//! counts — as each device's last response reported them, with the stream position they hold at.
//! A sync answered from memory brings them forward with the notifications of the events it serves
//! instead of counting again. Anything else that changes them (a read receipt, a key upload or
//! claim) takes a stream position, which a sync from memory never crosses.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::service::push::UnreadCounts;

/// Beyond this many devices the map starts over: a miss only costs a read.
const MAX_DEVICES: usize = 50_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCounts {
    pub one_time: Arc<BTreeMap<String, i64>>,
    pub unused_fallback: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct DeviceCounts {
    /// The stream position the counts hold at.
    pub as_of: i64,
    /// Rooms absent here are unknown (not zero).
    pub unread: HashMap<String, UnreadCounts>,
    pub keys: KeyCounts,
    /// The response delivered to-device messages, which the next token acknowledges.
    pub to_device_delivered: bool,
}

#[derive(Default)]
pub struct SyncCounts {
    by_device: Mutex<HashMap<(String, String), DeviceCounts>>,
}

impl SyncCounts {
    /// Takes the device's counts out if they hold at exactly `as_of` (the caller puts back the
    /// counts of its own response; without them the next sync reads them again).
    pub fn take(&self, user: &str, device: &str, as_of: i64) -> Option<DeviceCounts> {
        let mut map = self.by_device.lock().unwrap();
        let key = (user.to_owned(), device.to_owned());
        if map.get(&key).is_some_and(|c| c.as_of == as_of) {
            map.remove(&key)
        } else {
            None
        }
    }

    /// The device's key counts if they hold at exactly `as_of`.
    pub fn keys(&self, user: &str, device: &str, as_of: i64) -> Option<KeyCounts> {
        let map = self.by_device.lock().unwrap();
        map.get(&(user.to_owned(), device.to_owned()))
            .filter(|c| c.as_of == as_of)
            .map(|c| c.keys.clone())
    }

    /// Whether the device's response at `as_of` delivered to-device messages that are not yet
    /// acknowledged; from now on they count as acknowledged.
    pub fn acknowledge_to_device(&self, user: &str, device: &str, as_of: i64) -> bool {
        let mut map = self.by_device.lock().unwrap();
        match map.get_mut(&(user.to_owned(), device.to_owned())) {
            Some(counts) if counts.as_of == as_of && counts.to_device_delivered => {
                counts.to_device_delivered = false;
                true
            }
            _ => false,
        }
    }

    pub fn clear(&self) {
        self.by_device.lock().unwrap().clear();
    }

    pub fn put(&self, user: &str, device: &str, counts: DeviceCounts) {
        let mut map = self.by_device.lock().unwrap();
        if map.len() >= MAX_DEVICES {
            map.clear();
        }
        map.insert((user.to_owned(), device.to_owned()), counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_only_handed_out_for_their_own_position() {
        let cache = SyncCounts::default();
        cache.put(
            "@a:x",
            "D",
            DeviceCounts {
                as_of: 7,
                unread: HashMap::new(),
                keys: KeyCounts::default(),
                to_device_delivered: true,
            },
        );
        assert!(cache.keys("@a:x", "D", 7).is_some());
        assert!(cache.keys("@a:x", "D", 8).is_none());
        assert!(cache.keys("@a:x", "E", 7).is_none());
        assert!(!cache.acknowledge_to_device("@a:x", "D", 8));
        assert!(cache.acknowledge_to_device("@a:x", "D", 7));
        assert!(!cache.acknowledge_to_device("@a:x", "D", 7));
        assert!(cache.take("@a:x", "D", 8).is_none());
        assert!(cache.take("@a:x", "D", 7).is_some());
        assert!(cache.take("@a:x", "D", 7).is_none());
    }
}

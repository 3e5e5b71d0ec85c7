//! Ignoring users (spec: "Ignoring Users"): the `m.ignored_user_list` account data. Events from
//! ignored users are left out of what the ignoring user is served, except state events, as in
//! Synapse's `filter_events_for_client` (synapse/visibility.py: `not event.is_state() and
//! sender_ignored`); invites from them are not shown.
//!
//! The list is read on every sync, so it is cached per user; a write forgets it here and, through
//! the notifier's per-user settings message (as for push rules), in every other process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::{AppState, Result, store};

pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

/// The users a user ignores.
pub type Ignored = Arc<HashSet<String>>;

const MAX_CACHED_LISTS: usize = 100_000;

#[derive(Default)]
pub struct IgnoreCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_user: HashMap<String, Ignored>,
    /// Moves on every change: a read that raced one is not cached.
    generation: u64,
}

impl IgnoreCache {
    pub fn forget(&self, user_id: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.by_user.remove(user_id);
        inner.generation += 1;
    }

    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.by_user.clear();
        inner.generation += 1;
    }
}

/// The users `user_id` ignores, if cached (the in-memory sync path reads no database).
pub fn cached(state: &AppState, user_id: &str) -> Option<Ignored> {
    state
        .ignored
        .inner
        .lock()
        .unwrap()
        .by_user
        .get(user_id)
        .cloned()
}

/// The users `user_id` ignores (cached).
pub async fn ignored_by(state: &AppState, user_id: &str) -> Result<Ignored> {
    ignored_through(state, &state.db, user_id).await
}

/// The users `user_id` ignores (cached), a miss read through `db` (a connection the caller holds
/// already, rather than another from the pool).
pub async fn ignored_through(
    state: &AppState,
    db: impl sqlx::PgExecutor<'_>,
    user_id: &str,
) -> Result<Ignored> {
    let generation = {
        let inner = state.ignored.inner.lock().unwrap();
        if let Some(found) = inner.by_user.get(user_id) {
            return Ok(found.clone());
        }
        inner.generation
    };
    let content = store::account_data::get(db, user_id, "", IGNORED_USER_LIST).await?;
    let list: Ignored = Arc::new(parse(content.as_deref()));
    let mut inner = state.ignored.inner.lock().unwrap();
    if inner.generation == generation {
        if inner.by_user.len() >= MAX_CACHED_LISTS {
            inner.by_user.clear();
        }
        inner.by_user.insert(user_id.to_owned(), list.clone());
    }
    Ok(list)
}

/// The keys of `ignored_users` in the stored content; anything malformed ignores nobody.
fn parse(content: Option<&str>) -> HashSet<String> {
    content
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .and_then(|v| v.get("ignored_users")?.as_object().cloned())
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether an event is hidden from a user ignoring `ignored`: a non-state event by one of them.
pub fn hides(ignored: &HashSet<String>, sender: &str, is_state: bool) -> bool {
    !is_state && ignored.contains(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_keys_of_ignored_users() {
        let set = parse(Some(r#"{"ignored_users": {"@a:x": {}, "@b:x": {}}}"#));
        assert_eq!(set.len(), 2);
        assert!(parse(Some(r#"{"ignored_users": []}"#)).is_empty());
        assert!(parse(Some("{}")).is_empty());
        assert!(parse(None).is_empty());
    }

    #[test]
    fn hides_only_non_state_events_of_ignored_senders() {
        let set: HashSet<String> = ["@a:x".to_owned()].into();
        assert!(hides(&set, "@a:x", false));
        assert!(!hides(&set, "@a:x", true));
        assert!(!hides(&set, "@b:x", false));
    }
}

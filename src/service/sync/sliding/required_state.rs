//! `required_state` (MSC4186): which state events of a room a list or subscription asks for.
//! `["*", "*"]` is everything, `"*"` as a type or state key matches any, `$ME` as a state key is
//! the requester, and `["m.room.member", "$LAZY"]` the members who sent the timeline's events.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, OnceLock};

/// The stored form of a `required_state`: its pairs, `$LAZY` as a pair. Shared (one allocation for
/// every room a list sends), since a waiting connection keeps one per room it has sent.
pub type Stored = Arc<[(String, String)]>;

/// A room's `required_state`, merged over every list and subscription that carries it. Cloning
/// shares it: the rooms of one list hold one copy; merging copies on write.
#[derive(Debug, Clone, Default)]
pub struct RequiredState(Arc<Inner>);

#[derive(Debug, Clone, Default)]
struct Inner {
    /// (type, state key) pairs as asked, `$ME` resolved; a sorted set, so configs compare.
    pairs: BTreeSet<(String, String)>,
    /// `["m.room.member", "$LAZY"]` was asked.
    lazy_members: bool,
    /// The stored form, made once.
    stored: OnceLock<Stored>,
}

impl PartialEq for RequiredState {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.pairs == other.0.pairs && self.0.lazy_members == other.0.lazy_members)
    }
}

impl Eq for RequiredState {}

impl RequiredState {
    /// Builds it from the request's pairs for `user`.
    pub fn new<'a>(user: &str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out = Self::default();
        out.extend(user, pairs);
        out
    }

    /// Adds pairs (a room in several lists gets the union, as Synapse does).
    pub fn extend<'a>(&mut self, user: &str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let inner = self.edit();
        for (event_type, key) in pairs {
            match (event_type, key) {
                ("m.room.member", "$LAZY") => inner.lazy_members = true,
                (t, "$ME") => {
                    inner.pairs.insert((t.to_owned(), user.to_owned()));
                }
                (t, k) => {
                    inner.pairs.insert((t.to_owned(), k.to_owned()));
                }
            }
        }
    }

    /// Merges another room config's required state.
    pub fn merge(&mut self, other: &RequiredState) {
        if *self == *other {
            return;
        }
        let inner = self.edit();
        inner.pairs.extend(other.0.pairs.iter().cloned());
        inner.lazy_members |= other.0.lazy_members;
    }

    /// This config alone, to change (its stored form made again when next asked for).
    fn edit(&mut self) -> &mut Inner {
        let inner = Arc::make_mut(&mut self.0);
        inner.stored = OnceLock::new();
        inner
    }

    pub fn lazy_members(&self) -> bool {
        self.0.lazy_members
    }

    pub fn is_empty(&self) -> bool {
        self.0.pairs.is_empty() && !self.0.lazy_members
    }

    /// Whether the state event (type, key) is asked for (lazy members aside).
    pub fn wants(&self, event_type: &str, key: &str) -> bool {
        self.0
            .pairs
            .iter()
            .any(|(t, k)| (t == "*" || t == event_type) && (k == "*" || k == key))
    }

    /// Whether every member event is asked for (then all members are read, not just some).
    pub fn wants_all_members(&self) -> bool {
        self.0
            .pairs
            .iter()
            .any(|(t, k)| (t == "*" || t == "m.room.member") && k == "*")
    }

    /// The members asked for by name (explicit state keys of `m.room.member`, `$ME` included).
    pub fn named_members(&self) -> HashSet<&str> {
        self.0
            .pairs
            .iter()
            .filter(|(t, k)| (t == "*" || t == "m.room.member") && k != "*")
            .map(|(_, k)| k.as_str())
            .collect()
    }

    /// The stored form: the pairs, with `$LAZY` as a pair; every clone of this config shares it.
    pub fn to_pairs(&self) -> Stored {
        let inner = &self.0;
        inner
            .stored
            .get_or_init(|| {
                let lazy = inner
                    .lazy_members
                    .then(|| ("m.room.member".to_owned(), "$LAZY".to_owned()));
                inner.pairs.iter().cloned().chain(lazy).collect()
            })
            .clone()
    }

    /// From the stored form (`$ME` is already resolved there).
    #[cfg(test)]
    pub fn from_pairs(user: &str, pairs: &[(String, String)]) -> Self {
        Self::new(user, pairs.iter().map(|(t, k)| (t.as_str(), k.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_me_and_lazy() {
        let rs = RequiredState::new(
            "@me:x",
            [
                ("m.room.name", ""),
                ("m.room.member", "$ME"),
                ("m.room.member", "$LAZY"),
                ("m.space.child", "*"),
            ],
        );
        assert!(rs.wants("m.room.name", ""));
        assert!(!rs.wants("m.room.topic", ""));
        assert!(rs.wants("m.room.member", "@me:x"));
        assert!(!rs.wants("m.room.member", "@other:x"));
        assert!(rs.wants("m.space.child", "!a:x"));
        assert!(rs.lazy_members());
        assert!(!rs.wants_all_members());
        assert_eq!(rs.named_members(), HashSet::from(["@me:x"]));

        let all = RequiredState::new("@me:x", [("*", "*")]);
        assert!(all.wants("anything", "at all"));
        assert!(all.wants_all_members());
        let any_type = RequiredState::new("@me:x", [("*", "")]);
        assert!(any_type.wants("m.room.topic", ""));
        assert!(!any_type.wants("m.room.member", "@me:x"));
    }

    #[test]
    fn stored_form_round_trips_and_merges() {
        let rs = RequiredState::new("@me:x", [("m.room.member", "$LAZY"), ("m.room.name", "")]);
        assert_eq!(RequiredState::from_pairs("@me:x", &rs.to_pairs()), rs);
        let mut merged = RequiredState::new("@me:x", [("m.room.topic", "")]);
        merged.merge(&rs);
        assert!(merged.wants("m.room.topic", "") && merged.wants("m.room.name", ""));
        assert!(merged.lazy_members());
        // Clones share the stored form; a merge makes a new one.
        let shared = rs.clone();
        assert!(Arc::ptr_eq(&rs.to_pairs(), &shared.to_pairs()));
        assert_eq!(merged.to_pairs().len(), 3);
    }
}

//! A list's filters (MSC4186): those of ruma's request type (`is_dm`, `is_invite`,
//! `is_encrypted`, `room_types`, `not_room_types`), and those ruma 0.17.2 lacks (`spaces`, `tags`,
//! `not_tags`), which the HTTP layer reads from the body beside it into [`ExtraFilters`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ruma::api::client::sync::sync_events::v5;
use serde::Deserialize;
use serde_json::Value;

use super::lists::Candidate;
use crate::service::room_cache::RoomSnapshot;

/// The filters of each list that ruma's request type lacks.
#[derive(Debug, Default, Deserialize)]
pub struct ExtraFilters {
    #[serde(default)]
    lists: BTreeMap<String, ExtraList>,
}

#[derive(Debug, Default, Deserialize)]
struct ExtraList {
    #[serde(default)]
    filters: Option<ListExtras>,
}

/// One list's filters beyond ruma's. Each is off when absent; present (even empty) it applies,
/// as in Synapse.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ListExtras {
    /// Only rooms an `m.space.child` event (with a `via`) of one of these spaces names; spaces
    /// the user has not joined are ignored (none joined: no rooms). Subspaces are not walked.
    #[serde(default)]
    pub spaces: Option<Vec<String>>,
    /// Only rooms with one of these tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// No rooms with one of these tags (before `tags`).
    #[serde(default)]
    pub not_tags: Option<Vec<String>>,
}

impl ExtraFilters {
    /// From a request body ruma has already accepted.
    pub fn from_body(body: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(body)
    }

    /// The extra filters of list `name`, if it has any.
    pub fn of(&self, name: &str) -> Option<&ListExtras> {
        self.lists.get(name)?.filters.as_ref()
    }

    /// Whether some list filters by tag (then the user's tags are read).
    pub fn wants_tags(&self) -> bool {
        self.lists
            .values()
            .filter_map(|l| l.filters.as_ref())
            .any(|f| f.tags.is_some() || f.not_tags.is_some())
    }

    /// The spaces named by any list's `spaces` filter.
    pub fn spaces(&self) -> impl Iterator<Item = &str> {
        self.lists
            .values()
            .filter_map(|l| l.filters.as_ref()?.spaces.as_ref())
            .flatten()
            .map(String::as_str)
    }
}

/// Room ID → the names of its tags, from the user's `m.tag` room account data.
pub fn tags_by_room(rows: Vec<(String, String)>) -> HashMap<String, HashSet<String>> {
    rows.into_iter()
        .map(|(room, content)| {
            let tags = serde_json::from_str::<Value>(&content)
                .ok()
                .and_then(|v| {
                    v.get("tags")?
                        .as_object()
                        .map(|t| t.keys().cloned().collect())
                })
                .unwrap_or_default();
            (room, tags)
        })
        .collect()
}

/// The rooms the current `m.space.child` events of a space name (a child with no `via` has
/// been removed).
pub fn space_children(space: &RoomSnapshot) -> impl Iterator<Item = &str> {
    space
        .state
        .get("m.space.child")
        .into_iter()
        .flatten()
        .filter(|(_, entry)| {
            entry
                .content
                .get("via")
                .and_then(Value::as_array)
                .is_some_and(|via| !via.is_empty())
        })
        .map(|(child, _)| child.as_str())
}

/// What the filters look at besides the room itself.
pub struct Context<'a> {
    /// Rooms `m.direct` names.
    pub direct: &'a HashSet<String>,
    /// Room snapshots, for the encryption and room type filters (read when some list asks).
    pub snapshots: &'a HashMap<String, Arc<RoomSnapshot>>,
    /// The user's tags by room (read when some list asks).
    pub tags: &'a HashMap<String, HashSet<String>>,
    /// Space ID → the rooms it names, for the joined spaces the lists name.
    pub spaces: &'a HashMap<String, HashSet<String>>,
}

/// Whether a room passes a list's filters.
pub fn passes(
    f: Option<&v5::request::ListFilters>,
    extra: Option<&ListExtras>,
    c: &Candidate,
    cx: &Context<'_>,
) -> bool {
    f.is_none_or(|f| passes_ruma(f, c, cx)) && extra.is_none_or(|x| passes_extra(x, c, cx))
}

/// The filters of ruma's type.
fn passes_ruma(f: &v5::request::ListFilters, c: &Candidate, cx: &Context<'_>) -> bool {
    if f.is_dm
        .is_some_and(|dm| dm != cx.direct.contains(&c.room_id))
    {
        return false;
    }
    if f.is_invite
        .is_some_and(|inv| inv != (c.membership == "invite"))
    {
        return false;
    }
    let snapshot = cx.snapshots.get(&c.room_id);
    if let Some(encrypted) = f.is_encrypted {
        let is = snapshot.is_some_and(|s| s.entry("m.room.encryption", "").is_some());
        if is != encrypted {
            return false;
        }
    }
    if !f.room_types.is_empty() || !f.not_room_types.is_empty() {
        let room_type = snapshot.and_then(|s| {
            s.entry("m.room.create", "")
                .and_then(|e| e.content["type"].as_str().map(str::to_owned))
        });
        let matches = |t: &ruma::directory::RoomTypeFilter| t.as_str() == room_type.as_deref();
        if !f.room_types.is_empty() && !f.room_types.iter().any(matches) {
            return false;
        }
        if f.not_room_types.iter().any(matches) {
            return false;
        }
    }
    true
}

/// `spaces`, `tags` and `not_tags`.
fn passes_extra(x: &ListExtras, c: &Candidate, cx: &Context<'_>) -> bool {
    if let Some(spaces) = &x.spaces {
        let named = spaces.iter().any(|space| {
            cx.spaces
                .get(space)
                .is_some_and(|children| children.contains(&c.room_id))
        });
        if !named {
            return false;
        }
    }
    let tags = cx.tags.get(&c.room_id);
    let tagged = |wanted: &Vec<String>| tags.is_some_and(|t| wanted.iter().any(|w| t.contains(w)));
    if x.not_tags.as_ref().is_some_and(tagged) {
        return false;
    }
    if x.tags.as_ref().is_some_and(|t| !tagged(t)) {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(room: &str) -> Candidate {
        Candidate {
            room_id: room.into(),
            membership: "join".into(),
            membership_pos: 1,
            stamp: 1,
        }
    }

    #[test]
    fn extra_filters_are_read_beside_ruma() {
        let body = br#"{"lists": {
            "a": {"ranges": [[0, 9]], "filters": {"is_dm": true, "tags": ["m.favourite"],
                  "not_tags": [], "spaces": ["!s:x"]}},
            "b": {"ranges": [[0, 9]]},
            "c": {"filters": null}}, "timeout": 5}"#;
        let extra = ExtraFilters::from_body(body).unwrap();
        let a = extra.of("a").unwrap();
        assert_eq!(a.tags.as_deref(), Some(&["m.favourite".to_owned()][..]));
        assert_eq!(a.not_tags.as_deref(), Some(&[][..]));
        assert!(extra.of("b").is_none() && extra.of("c").is_none());
        assert!(extra.wants_tags());
        assert_eq!(extra.spaces().collect::<Vec<_>>(), ["!s:x"]);
        assert!(ExtraFilters::from_body(br#"{"lists": {"a": {"filters": {"tags": 5}}}}"#).is_err());
        assert!(!ExtraFilters::from_body(b"{}").unwrap().wants_tags());
    }

    #[test]
    fn tags_and_not_tags() {
        let tags = tags_by_room(vec![
            (
                "!fav".into(),
                r#"{"tags": {"m.favourite": {"order": 0.5}}}"#.into(),
            ),
            (
                "!both".into(),
                r#"{"tags": {"m.favourite": {}, "u.work": {}}}"#.into(),
            ),
            ("!bad".into(), "not json".into()),
        ]);
        let (direct, snapshots, spaces) = (HashSet::new(), HashMap::new(), HashMap::new());
        let cx = Context {
            direct: &direct,
            snapshots: &snapshots,
            tags: &tags,
            spaces: &spaces,
        };
        let filter = ListExtras {
            tags: Some(vec!["m.favourite".into()]),
            not_tags: Some(vec!["u.work".into()]),
            ..ListExtras::default()
        };
        let pass = |room: &str| passes(None, Some(&filter), &candidate(room), &cx);
        assert!(pass("!fav"));
        assert!(!pass("!both"), "not_tags wins over tags");
        assert!(!pass("!bad") && !pass("!none"));
        let untagged = ListExtras {
            not_tags: Some(vec!["m.favourite".into()]),
            ..ListExtras::default()
        };
        assert!(passes(None, Some(&untagged), &candidate("!none"), &cx));
        assert!(!passes(None, Some(&untagged), &candidate("!fav"), &cx));
        let no_tags = ListExtras {
            tags: Some(Vec::new()),
            ..ListExtras::default()
        };
        assert!(!passes(None, Some(&no_tags), &candidate("!fav"), &cx));
    }

    #[test]
    fn spaces_name_their_children() {
        let (direct, snapshots, tags) = (HashSet::new(), HashMap::new(), HashMap::new());
        let spaces = HashMap::from([(
            "!space:x".to_owned(),
            HashSet::from(["!child:x".to_owned()]),
        )]);
        let cx = Context {
            direct: &direct,
            snapshots: &snapshots,
            tags: &tags,
            spaces: &spaces,
        };
        let filter = |s: &[&str]| ListExtras {
            spaces: Some(s.iter().map(|s| (*s).to_owned()).collect()),
            ..ListExtras::default()
        };
        let child = candidate("!child:x");
        assert!(passes(None, Some(&filter(&["!space:x"])), &child, &cx));
        assert!(passes(
            None,
            Some(&filter(&["!unknown:x", "!space:x"])),
            &child,
            &cx
        ));
        assert!(!passes(None, Some(&filter(&["!unknown:x"])), &child, &cx));
        assert!(!passes(
            None,
            Some(&filter(&["!space:x"])),
            &candidate("!other:x"),
            &cx
        ));
    }
}

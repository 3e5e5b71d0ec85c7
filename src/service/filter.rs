//! Filters (spec: filter.yaml, room_event_filter.yaml): parsing and the pieces other services apply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::events::EventFilter as StoreFilter;
use crate::{AppState, Error, Result, store};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Filter {
    pub event_fields: Option<Vec<String>>,
    pub event_format: Option<String>,
    pub presence: EventFilter,
    pub account_data: EventFilter,
    pub room: RoomFilter,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct EventFilter {
    pub limit: Option<i64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RoomFilter {
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub include_leave: bool,
    pub ephemeral: RoomEventFilter,
    pub state: RoomEventFilter,
    pub timeline: RoomEventFilter,
    pub account_data: RoomEventFilter,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RoomEventFilter {
    pub limit: Option<i64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
    pub unread_thread_notifications: bool,
}

/// `*` is the spec's wildcard; everything else in a type is literal for LIKE.
fn like_pattern(t: &str) -> String {
    let mut out = String::with_capacity(t.len() + 4);
    for c in t.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("\\%"),
            '_' => out.push_str("\\_"),
            '*' => out.push('%'),
            c => out.push(c),
        }
    }
    out
}

/// Whether `event_type` matches a filter type (with `*` wildcards).
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == event_type,
        Some((prefix, rest)) => {
            if !event_type.starts_with(prefix) {
                return false;
            }
            let tail = &event_type[prefix.len()..];
            if rest.is_empty() {
                return true;
            }
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && type_matches(rest, &tail[i..]))
        }
    }
}

impl RoomEventFilter {
    /// `types: []` or a `*` in `not_types`: nothing of this kind is wanted.
    pub fn excludes_everything(&self) -> bool {
        self.types.as_ref().is_some_and(Vec::is_empty) || self.not_types.iter().any(|t| t == "*")
    }

    pub fn to_store(&self) -> StoreFilter {
        StoreFilter {
            types: self
                .types
                .as_ref()
                .map(|t| t.iter().map(|t| like_pattern(t)).collect()),
            not_types: self.not_types.iter().map(|t| like_pattern(t)).collect(),
            senders: self.senders.clone(),
            not_senders: self.not_senders.clone(),
            contains_url: self.contains_url,
        }
    }

    pub fn allows_type(&self, event_type: &str) -> bool {
        allows_type(self.types.as_deref(), &self.not_types, event_type)
    }

    pub fn allows_sender(&self, sender: &str) -> bool {
        allows_id(self.senders.as_deref(), &self.not_senders, sender)
    }

    pub fn allows_room(&self, room_id: &str) -> bool {
        allows_id(self.rooms.as_deref(), &self.not_rooms, room_id)
    }

    /// See `select`.
    pub fn select(&self, events: Vec<Value>) -> Vec<Value> {
        select(
            events,
            |t| self.allows_type(t),
            |s| self.allows_sender(s),
            self.limit,
        )
    }

    /// What `to_store` asks of the database, checked in memory.
    pub fn allows_event(&self, event_type: &str, sender: &str, contains_url: bool) -> bool {
        self.allows_type(event_type)
            && self.allows_sender(sender)
            && self
                .contains_url
                .is_none_or(|wanted| wanted == contains_url)
    }
}

/// `not_types` wins over `types`; no `types` allows every type.
fn allows_type(types: Option<&[String]>, not_types: &[String], event_type: &str) -> bool {
    !not_types.iter().any(|p| type_matches(p, event_type))
        && types.is_none_or(|types| types.iter().any(|p| type_matches(p, event_type)))
}

/// For senders and rooms: the exclusions win; no list of inclusions allows everything else.
fn allows_id(included: Option<&[String]>, excluded: &[String], id: &str) -> bool {
    !excluded.iter().any(|x| x == id) && included.is_none_or(|ids| ids.iter().any(|x| x == id))
}

/// Of a list outside the timeline (account data, ephemeral events, presence; oldest first), the
/// events a filter allows by `type` and, where they have one, `sender`: the latest, up to its
/// `limit`.
fn select(
    events: Vec<Value>,
    allows_type: impl Fn(&str) -> bool,
    allows_sender: impl Fn(&str) -> bool,
    limit: Option<i64>,
) -> Vec<Value> {
    let mut events: Vec<Value> = events
        .into_iter()
        .filter(|e| {
            e["type"].as_str().is_some_and(&allows_type)
                && e["sender"].as_str().is_none_or(&allows_sender)
        })
        .collect();
    if let Some(limit) = limit.filter(|l| *l > 0).map(|l| l as usize) {
        events.drain(..events.len().saturating_sub(limit));
    }
    events
}

impl EventFilter {
    /// See `select`.
    pub fn select(&self, events: Vec<Value>) -> Vec<Value> {
        select(
            events,
            |t| self.allows_type(t),
            |s| self.allows_sender(s),
            self.limit,
        )
    }

    /// `types: []` or a `*` in `not_types`: nothing of this kind is wanted.
    pub fn excludes_everything(&self) -> bool {
        self.types.as_ref().is_some_and(Vec::is_empty) || self.not_types.iter().any(|t| t == "*")
    }

    pub fn allows_type(&self, event_type: &str) -> bool {
        allows_type(self.types.as_deref(), &self.not_types, event_type)
    }

    pub fn allows_sender(&self, sender: &str) -> bool {
        allows_id(self.senders.as_deref(), &self.not_senders, sender)
    }
}

impl RoomFilter {
    pub fn allows_room(&self, room_id: &str) -> bool {
        allows_id(self.rooms.as_deref(), &self.not_rooms, room_id)
    }
}

pub fn parse_room_event_filter(text: Option<&str>) -> Result<RoomEventFilter> {
    match text {
        None | Some("") => Ok(RoomEventFilter::default()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Error::invalid_param(format!("Invalid filter: {e}"))),
    }
}

/// Parsed filters, shared by the requests that use them: a client sends the same filter (inline
/// or by ID) with every `/sync`, a crowd's clients often the same one, and every waiting long poll
/// holds its filter (about a kilobyte parsed). A stored filter never changes, so an entry by ID
/// stays right on every process.
#[derive(Default)]
pub struct FilterCache {
    /// Filter JSON → the filter parsed from it.
    by_text: Mutex<HashMap<Box<str>, Arc<Filter>>>,
    /// Stored filter ID (one sequence for all users) → its owner and the filter, parsed.
    by_id: Mutex<HashMap<i64, StoredFilter>>,
}

/// A cached stored filter: its owner and the filter.
type StoredFilter = (Box<str>, Arc<Filter>);

/// Each map is emptied when it grows past this many entries.
const MAX_CACHED_FILTERS: usize = 10_000;

/// Inserts into one of the cache's maps, emptying it first when it is full.
fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) -> &mut V {
    if map.len() >= MAX_CACHED_FILTERS {
        map.clear();
    }
    map.entry(key).or_insert(value)
}

impl FilterCache {
    /// The filter `text` parses to, from the cache or parsed now (an error is not kept).
    fn parse(&self, text: &str) -> serde_json::Result<Arc<Filter>> {
        if let Some(filter) = self.by_text.lock().unwrap().get(text) {
            return Ok(filter.clone());
        }
        let filter = Arc::new(serde_json::from_str::<Filter>(text)?);
        let mut by_text = self.by_text.lock().unwrap();
        Ok(insert_bounded(&mut by_text, text.into(), filter).clone())
    }

    /// `user_id`'s stored filter `id`, if it is cached (another user's ID is not).
    fn stored(&self, user_id: &str, id: i64) -> Option<Arc<Filter>> {
        let by_id = self.by_id.lock().unwrap();
        let (owner, filter) = by_id.get(&id)?;
        (**owner == *user_id).then(|| filter.clone())
    }

    fn keep_stored(&self, user_id: &str, id: i64, filter: &Arc<Filter>) {
        let mut by_id = self.by_id.lock().unwrap();
        insert_bounded(&mut by_id, id, (user_id.into(), filter.clone()));
    }
}

/// A `filter` query parameter: inline JSON, or the ID of a stored filter.
pub async fn resolve(state: &AppState, user_id: &str, text: Option<&str>) -> Result<Arc<Filter>> {
    let cache = &state.filters;
    match text {
        None | Some("") => Ok(Arc::default()),
        Some(text) if text.trim_start().starts_with('{') => cache
            .parse(text)
            .map_err(|e| Error::invalid_param(format!("Invalid filter: {e}"))),
        Some(id) => {
            let id: i64 = id
                .parse()
                .map_err(|_| Error::invalid_param("Invalid filter ID"))?;
            if let Some(filter) = cache.stored(user_id, id) {
                return Ok(filter);
            }
            let stored = store::filters::get(&state.db, user_id, id)
                .await?
                .ok_or_else(|| Error::not_found("No such filter"))?;
            let filter = cache.parse(&stored).map_err(Error::internal)?;
            cache.keep_stored(user_id, id, &filter);
            Ok(filter)
        }
    }
}

/// Validates and stores a filter, returning its ID.
pub async fn create(state: &AppState, user_id: &str, body: Value) -> Result<String> {
    let _: Filter = serde_json::from_value(body.clone())
        .map_err(|e| Error::bad_json(format!("Invalid filter: {e}")))?;
    let id = store::filters::insert(&state.db, user_id, &body.to_string()).await?;
    Ok(id.to_string())
}

pub async fn get(state: &AppState, user_id: &str, filter_id: &str) -> Result<Value> {
    let id: i64 = filter_id
        .parse()
        .map_err(|_| Error::not_found("No such filter"))?;
    let stored = store::filters::get(&state.db, user_id, id)
        .await?
        .ok_or_else(|| Error::not_found("No such filter"))?;
    serde_json::from_str(&stored).map_err(Error::internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn lists_outside_the_timeline_keep_allowed_types_and_senders_then_the_latest() {
        let events = vec![
            json!({"type": "m.presence", "sender": "@a:x"}),
            json!({"type": "m.presence", "sender": "@b:x"}),
            json!({"type": "org.example.custom"}),
            json!({"type": "m.presence", "sender": "@c:x"}),
        ];
        let senders = |kept: Vec<Value>| -> Vec<String> {
            kept.iter()
                .map(|e| e["sender"].as_str().unwrap_or("-").to_owned())
                .collect()
        };
        let f: EventFilter = parse(json!({"not_senders": ["@b:x"], "types": ["m.*"]}));
        assert_eq!(senders(f.select(events.clone())), ["@a:x", "@c:x"]);
        // Events without a sender pass a sender filter; a limit keeps the latest.
        let f: EventFilter = parse(json!({"senders": ["@a:x"], "limit": 2}));
        assert_eq!(senders(f.select(events.clone())), ["@a:x", "-"]);
        let f: RoomEventFilter = parse(json!({"not_types": ["m.presence"]}));
        assert_eq!(senders(f.select(events.clone())), ["-"]);
        // No limit, or a meaningless one, keeps everything.
        let f: EventFilter = parse(json!({"limit": 0}));
        assert_eq!(f.select(events.clone()).len(), 4);
    }

    #[test]
    fn exclusions_win_over_inclusions() {
        let f: RoomEventFilter = parse(json!({
            "types": ["m.room.*"], "not_types": ["m.room.member"],
            "senders": ["@a:x", "@b:x"], "not_senders": ["@b:x"],
            "rooms": ["!r:x", "!s:x"], "not_rooms": ["!s:x"],
        }));
        assert!(f.allows_type("m.room.message"));
        assert!(!f.allows_type("m.room.member"));
        assert!(!f.allows_type("m.reaction"));
        assert!(f.allows_sender("@a:x"));
        assert!(!f.allows_sender("@b:x"));
        assert!(!f.allows_sender("@c:x"));
        assert!(f.allows_room("!r:x"));
        assert!(!f.allows_room("!s:x"));
        assert!(!f.allows_room("!t:x"));
        let everything = RoomEventFilter::default();
        assert!(everything.allows_type("anything") && everything.allows_sender("@z:x"));
    }

    #[test]
    fn wildcards_match_prefixes_and_infixes() {
        assert!(type_matches("m.room.*", "m.room.message"));
        assert!(type_matches("*", "anything"));
        assert!(type_matches("m.*.message", "m.room.message"));
        assert!(!type_matches("m.room.*", "m.call.invite"));
        assert!(type_matches("m.room.message", "m.room.message"));
        assert!(!type_matches("m.room.message", "m.room.messages"));
    }

    #[test]
    fn like_patterns_escape_sql_wildcards() {
        assert_eq!(like_pattern("my_type.*"), "my\\_type.%");
        assert_eq!(like_pattern("100%"), "100\\%");
    }
}

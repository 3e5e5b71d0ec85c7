//! The POST /search request body (spec: search.yaml), its checks, and the `next_batch` token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::service::filter::RoomEventFilter;
use crate::store::search::Cursor;
use crate::{Error, Result};

pub const ALL_KEYS: [&str; 3] = ["content.body", "content.name", "content.topic"];

#[derive(Debug, Deserialize)]
pub struct SearchRequest {
    pub search_categories: Categories,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Categories {
    pub room_events: Option<RoomEventsCriteria>,
}

/// `search_categories.room_events`, as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoomEventsCriteria {
    pub search_term: Option<String>,
    pub keys: Option<Vec<String>>,
    pub filter: Option<Value>,
    pub order_by: Option<String>,
    pub event_context: Option<EventContextSpec>,
    pub include_state: bool,
    pub groupings: Option<Groupings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventContextSpec {
    pub before_limit: Option<i64>,
    pub after_limit: Option<i64>,
    pub include_profile: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Groupings {
    pub group_by: Vec<GroupBy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroupBy {
    pub key: Option<String>,
}

/// A checked request: every field with its default.
#[derive(Debug)]
pub struct Criteria {
    pub term: String,
    pub keys: Vec<String>,
    pub filter: RoomEventFilter,
    /// Results per page (the filter's `limit`, default 10, at most 100).
    pub limit: i64,
    pub by_rank: bool,
    /// (before_limit, after_limit, include_profile) when context is asked for.
    pub context: Option<(i64, i64, bool)>,
    pub include_state: bool,
    pub group_by_room: bool,
    pub group_by_sender: bool,
}

const MAX_LIMIT: i64 = 100;
const MAX_CONTEXT: i64 = 100;

impl RoomEventsCriteria {
    pub fn check(self) -> Result<Criteria> {
        let term = self
            .search_term
            .ok_or_else(|| Error::missing_param("search_term is required"))?;
        let keys = match self.keys {
            None => ALL_KEYS.iter().map(|k| k.to_string()).collect(),
            Some(keys) => {
                if let Some(bad) = keys.iter().find(|k| !ALL_KEYS.contains(&k.as_str())) {
                    return Err(Error::invalid_param(format!(
                        "Unknown search key {bad:?}: use content.body, content.name or content.topic"
                    )));
                }
                keys
            }
        };
        let by_rank = match self.order_by.as_deref() {
            None | Some("rank") => true,
            Some("recent") => false,
            Some(other) => {
                return Err(Error::invalid_param(format!(
                    "Invalid order_by {other:?}: use rank or recent"
                )));
            }
        };
        let filter: RoomEventFilter = match self.filter {
            None | Some(Value::Null) => RoomEventFilter::default(),
            Some(v) => serde_json::from_value(v)
                .map_err(|e| Error::bad_json(format!("Invalid filter: {e}")))?,
        };
        let limit = filter.limit.unwrap_or(10).clamp(1, MAX_LIMIT);
        let context = self.event_context.map(|c| {
            (
                c.before_limit.unwrap_or(5).clamp(0, MAX_CONTEXT),
                c.after_limit.unwrap_or(5).clamp(0, MAX_CONTEXT),
                c.include_profile,
            )
        });
        let (mut group_by_room, mut group_by_sender) = (false, false);
        for g in self.groupings.map(|g| g.group_by).unwrap_or_default() {
            match g.key.as_deref() {
                Some("room_id") => group_by_room = true,
                Some("sender") => group_by_sender = true,
                other => {
                    return Err(Error::invalid_param(format!(
                        "Invalid group_by key {other:?}: use room_id or sender"
                    )));
                }
            }
        }
        Ok(Criteria {
            term,
            keys,
            filter,
            limit,
            by_rank,
            context,
            include_state: self.include_state,
            group_by_room,
            group_by_sender,
        })
    }
}

/// A group a `next_batch` stays within.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Within {
    All,
    Room(String),
    Sender(String),
}

/// What a `next_batch` carries: where the last page ended, and in which group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// `order_by: rank`: the last result's rank (as bits, to come back exactly).
    pub rank_bits: Option<u32>,
    /// The last result's position.
    pub pos: i64,
    pub within: Within,
}

impl Batch {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(token: &str) -> Result<Self> {
        URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| Error::invalid_param("Invalid next_batch"))
    }

    /// The cursor for the next page; a token of the other ordering is refused.
    pub fn cursor(&self, by_rank: bool) -> Result<Cursor> {
        match (by_rank, self.rank_bits) {
            (true, Some(bits)) => Ok(Cursor::Rank(f32::from_bits(bits), self.pos)),
            (false, None) => Ok(Cursor::Recent(self.pos)),
            _ => Err(Error::invalid_param(
                "next_batch belongs to a search with another order_by",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_tokens_round_trip() {
        let b = Batch {
            rank_bits: Some(0.1f32.to_bits()),
            pos: 42,
            within: Within::Room("!r:x".into()),
        };
        let back = Batch::decode(&b.encode()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.cursor(true).unwrap(), Cursor::Rank(0.1, 42));
        assert!(back.cursor(false).is_err());
        assert!(Batch::decode("not a token").is_err());
    }
}

//! POST /search (spec: search.yaml; the Server Side Search module): full-text search of the rooms
//! the user is joined to, as Synapse (synapse/handlers/search.py searches only joined rooms), over
//! the events they may see there (history visibility at each event: `Visibility::visible_ranges`,
//! applied in the query so that counts and pages are exact). PostgreSQL does the matching
//! (`websearch_to_tsquery('english', …)` against `to_tsvector('english', …)`, ranked by
//! `ts_rank_cd`, as Synapse's storage/databases/main/search.py); see store::search.
//!
//! Paging: results come in a stable order — rank then position (`rank`), or position (`recent`),
//! both descending — and `next_batch` carries the last result's place in it, so a page starts
//! exactly after the previous one: nothing repeated, nothing skipped.

mod context;
pub mod request;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::service::auth::Requester;
use crate::service::ignore;
use crate::service::timeline::{self, Viewer};
use crate::service::visibility::Visibility;
use crate::store::search::{Cursor, Hit, SearchQuery};
use crate::{AppState, Result, store};
pub use context::EventContext;
use request::{Batch, Criteria, SearchRequest, Within};

#[derive(Serialize)]
pub struct SearchResponse {
    pub search_categories: ResultCategories,
}

#[derive(Serialize)]
pub struct ResultCategories {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_events: Option<RoomEventsResults>,
}

#[derive(Serialize, Default)]
pub struct RoomEventsResults {
    /// Every match the user may see (whatever the page).
    pub count: i64,
    /// The words of this page's results that the search term matched (lower case).
    pub highlights: Vec<String>,
    pub results: Vec<SearchResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
    /// With `include_state`: the current state of each room with a result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<BTreeMap<String, Vec<Box<RawValue>>>>,
    /// `room_id` and/or `sender` → group key → group.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<&'static str, BTreeMap<String, GroupValue>>,
}

#[derive(Serialize)]
pub struct SearchResult {
    pub rank: f64,
    pub result: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<EventContext>,
}

#[derive(Serialize)]
pub struct GroupValue {
    /// Continues within this group; absent when the group has no more results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
    /// The place of the group's first result in this page (groups sort by it).
    pub order: i64,
    /// The group's event IDs in this page, in result order.
    pub results: Vec<String>,
}

/// POST /search.
pub async fn search(
    state: &AppState,
    requester: &Requester,
    body: SearchRequest,
    next_batch: Option<&str>,
) -> Result<SearchResponse> {
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(SearchResponse {
            search_categories: ResultCategories { room_events: None },
        });
    };
    let criteria = criteria.check()?;
    let batch = next_batch.map(Batch::decode).transpose()?;
    let results = room_events(state, requester, &criteria, batch.as_ref()).await?;
    Ok(SearchResponse {
        search_categories: ResultCategories {
            room_events: Some(results),
        },
    })
}

/// (position, value) changes of one room: the user's membership, the history visibility.
type Histories = (Vec<(i64, String)>, Vec<(i64, String)>);

/// How to group: the group name, whether asked for, the group key and the hit's remaining count in
/// its group, the `Within` of a group token.
type GroupKind = (
    &'static str,
    bool,
    fn(&Hit) -> (&str, i64),
    fn(String) -> Within,
);

/// The rooms searched with their visible ranges, as the three arrays the query takes.
async fn visible_ranges(
    state: &AppState,
    user_id: &str,
    c: &Criteria,
    within: &Within,
) -> Result<(Vec<String>, Vec<i64>, Vec<i64>)> {
    let rooms: Vec<String> = store::rooms::joined_rooms(&state.db, user_id)
        .await?
        .into_iter()
        .filter(|r| c.filter.allows_room(r))
        .filter(|r| !matches!(within, Within::Room(only) if only != r))
        .collect();
    let mut histories: HashMap<String, Histories> = HashMap::new();
    for change in store::search::visibility_histories(&state.db, &rooms, user_id).await? {
        let (members, settings) = histories.entry(change.room_id).or_default();
        if change.is_member {
            let m = change.value.unwrap_or_else(|| "leave".into());
            members.push((change.stream_ordering, m));
        } else {
            let v = change.value.unwrap_or_else(|| "shared".into());
            settings.push((change.stream_ordering, v));
        }
    }
    let (mut ids, mut lows, mut highs) = (Vec::new(), Vec::new(), Vec::new());
    for (room_id, (members, settings)) in histories {
        for (lo, hi) in Visibility::from_histories(members, settings).visible_ranges() {
            ids.push(room_id.clone());
            lows.push(lo);
            highs.push(hi);
        }
    }
    Ok((ids, lows, highs))
}

async fn room_events(
    state: &AppState,
    requester: &Requester,
    c: &Criteria,
    batch: Option<&Batch>,
) -> Result<RoomEventsResults> {
    let user_id = requester.user_id.as_str();
    let within = batch.map_or(Within::All, |b| b.within.clone());
    let cursor = batch.map_or(Ok(Cursor::Start), |b| b.cursor(c.by_rank))?;
    let (rooms, lows, highs) = visible_ranges(state, user_id, c, &within).await?;
    if rooms.is_empty() {
        return Ok(RoomEventsResults::default());
    }
    let mut filter = c.filter.to_store();
    filter
        .not_senders
        .extend(ignore::ignored_by(state, user_id).await?.iter().cloned());
    if let Within::Sender(only) = &within {
        let allowed = filter.senders.as_ref().is_none_or(|s| s.contains(only));
        filter.senders = Some(if allowed { vec![only.clone()] } else { vec![] });
    }
    let mut hits = store::search::page(
        &state.db,
        &SearchQuery {
            term: &c.term,
            keys: &c.keys,
            rooms: &rooms,
            lows: &lows,
            highs: &highs,
            filter: &filter,
            by_rank: c.by_rank,
            cursor,
            limit: c.limit + 1,
        },
    )
    .await?;
    let more = hits.len() as i64 > c.limit;
    hits.truncate(c.limit as usize);
    let count = hits.first().map_or(0, |h| h.total);
    let rows = ordered_rows(state, &hits).await?;
    let viewer = Viewer {
        user_id,
        device_id: Some(requester.device_id.as_str()),
    };
    let rendered = timeline::render_for(state, rows.clone(), viewer).await?;
    let highlights = highlights(state, &c.term, &rows).await?;
    let mut contexts = match c.context {
        Some(limits) => context::contexts(state, user_id, viewer, &rows, limits).await?,
        None => Vec::new(),
    }
    .into_iter();
    let results = hits
        .iter()
        .zip(rendered)
        .map(|(hit, result)| SearchResult {
            rank: f64::from(hit.rank),
            result,
            context: contexts.next(),
        })
        .collect();
    let token_at = |within: Within| {
        hits.last().map(|last| {
            Batch {
                rank_bits: c.by_rank.then(|| last.rank.to_bits()),
                pos: last.stream_ordering,
                within,
            }
            .encode()
        })
    };
    let state_map = match c.include_state {
        true => Some(context::current_state(state, viewer, &rows).await?),
        false => None,
    };
    Ok(RoomEventsResults {
        count,
        highlights,
        results,
        next_batch: if more { token_at(within) } else { None },
        state: state_map,
        groups: groups(c, &hits, &rows, token_at),
    })
}

/// The stored events of the hits, in the hits' order (a hit whose event is gone is dropped).
async fn ordered_rows(state: &AppState, hits: &[Hit]) -> Result<Vec<store::events::EventRow>> {
    let positions: Vec<i64> = hits.iter().map(|h| h.stream_ordering).collect();
    let mut by_pos: HashMap<i64, store::events::EventRow> =
        store::search::events_at(&state.db, &positions)
            .await?
            .into_iter()
            .map(|r| (r.stream_ordering, r))
            .collect();
    Ok(positions.iter().filter_map(|p| by_pos.remove(p)).collect())
}

/// The groups of this page: each group's event IDs; a `next_batch` that stays within the group
/// while it has more results after this page (the page is a contiguous run of the whole order, so
/// the group's next result comes after the page's last one).
fn groups(
    c: &Criteria,
    hits: &[Hit],
    rows: &[store::events::EventRow],
    token_at: impl Fn(Within) -> Option<String>,
) -> BTreeMap<&'static str, BTreeMap<String, GroupValue>> {
    let mut out = BTreeMap::new();
    let kinds: [GroupKind; 2] = [
        (
            "room_id",
            c.group_by_room,
            |h| (&h.room_id, h.room_rest),
            Within::Room,
        ),
        (
            "sender",
            c.group_by_sender,
            |h| (&h.sender, h.sender_rest),
            Within::Sender,
        ),
    ];
    for (name, wanted, key_of, within) in kinds {
        if !wanted {
            continue;
        }
        let mut groups: BTreeMap<String, GroupValue> = BTreeMap::new();
        let mut rests: HashMap<String, i64> = HashMap::new();
        for (i, (hit, row)) in hits.iter().zip(rows).enumerate() {
            let (key, rest) = key_of(hit);
            rests.insert(key.to_owned(), rest);
            groups
                .entry(key.to_owned())
                .or_insert_with(|| GroupValue {
                    next_batch: None,
                    order: i as i64,
                    results: Vec::new(),
                })
                .results
                .push(row.event_id.clone());
        }
        for (key, group) in groups.iter_mut() {
            if rests[key] > group.results.len() as i64 {
                group.next_batch = token_at(within(key.clone()));
            }
        }
        out.insert(name, groups);
    }
    out
}

/// The words of the results' searchable text that the term matched, lower-cased (Synapse:
/// `_find_highlights_in_postgres`, ts_headline between markers that occur in no text).
async fn highlights(
    state: &AppState,
    term: &str,
    rows: &[store::events::EventRow],
) -> Result<Vec<String>> {
    let texts: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let event: serde_json::Value = serde_json::from_str(&r.client_json).ok()?;
            store::search::searchable(&r.event_type, &event["content"]).map(|(_, t)| t.to_owned())
        })
        .collect();
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let (mut start, mut stop) = ("<".to_owned(), ">".to_owned());
    while texts.iter().any(|t| t.contains(&start)) {
        start.push('<');
    }
    while texts.iter().any(|t| t.contains(&stop)) {
        stop.push('>');
    }
    let options = format!("StartSel={start}, StopSel={stop}, HighlightAll=true");
    let mut words: Vec<String> = Vec::new();
    for headline in store::search::headlines(&state.db, term, &texts, &options).await? {
        let mut rest = headline.as_str();
        while let Some((_, after)) = rest.split_once(start.as_str()) {
            let Some((word, tail)) = after.split_once(stop.as_str()) else {
                break;
            };
            words.push(word.to_lowercase());
            rest = tail;
        }
    }
    words.sort();
    words.dedup();
    Ok(words)
}

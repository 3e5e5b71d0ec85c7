//! What a search result may come with: `event_context` (the events around it, with the senders'
//! profiles as they stood then) and `include_state` (the current state of the result's rooms).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::service::messages::position_token;
use crate::service::timeline::{self, Viewer};
use crate::service::visibility::Visibility;
use crate::service::{ignore, retention};
use crate::store::events::{EventFilter, EventRow, Members};
use crate::{AppState, Result, store};

#[derive(Serialize)]
pub struct EventContext {
    pub start: String,
    pub end: String,
    pub events_before: Vec<Box<RawValue>>,
    pub events_after: Vec<Box<RawValue>>,
    /// With `include_profile`: each sender's display name and avatar at the context's last event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_info: Option<BTreeMap<String, Profile>>,
}

#[derive(Serialize)]
pub struct Profile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub displayname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// The context of each row, in order: up to `before`/`after` events the user may see around it.
pub async fn contexts(
    state: &AppState,
    user_id: &str,
    viewer: Viewer<'_>,
    rows: &[EventRow],
    (before_n, after_n, include_profile): (i64, i64, bool),
) -> Result<Vec<EventContext>> {
    let upto = store::stream::current(&state.db).await?;
    let ignored = ignore::ignored_by(state, user_id).await?;
    let mut visibilities: HashMap<&str, Visibility> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if !visibilities.contains_key(row.room_id.as_str()) {
            let mut conn = state.db.acquire().await?;
            let vis = Visibility::load(&mut conn, &row.room_id, user_id).await?;
            visibilities.insert(&row.room_id, vis);
        }
        let vis = &visibilities[row.room_id.as_str()];
        let shown = |r: &EventRow| {
            vis.can_see_row(r, user_id)
                && !ignore::hides(&ignored, &r.sender, r.state_key.is_some())
                && !retention::expired(state, r)
        };
        let none = EventFilter::default();
        let pos = row.stream_ordering;
        let before: Vec<EventRow> =
            store::events::room_events_backward(&state.db, &row.room_id, pos - 1, before_n, &none)
                .await?;
        let after: Vec<EventRow> =
            store::events::room_events_forward(&state.db, &row.room_id, pos, upto, after_n, &none)
                .await?;
        let start = before.last().map_or(pos - 1, |r| r.stream_ordering - 1);
        let end = after.last().map_or(pos, |r| r.stream_ordering);
        let before: Vec<EventRow> = before.into_iter().filter(|r| shown(r)).collect();
        let after: Vec<EventRow> = after.into_iter().filter(|r| shown(r)).collect();
        let profile_info = match include_profile {
            true => Some(profiles(state, row, &before, &after).await?),
            false => None,
        };
        out.push(EventContext {
            start: position_token(start),
            end: position_token(end),
            events_before: timeline::render_for(state, before, viewer).await?,
            events_after: timeline::render_for(state, after, viewer).await?,
            profile_info,
        });
    }
    Ok(out)
}

/// The senders' member events as of the context's last event (as Synapse: the state at
/// `events_after`'s last event, else the result's).
async fn profiles(
    state: &AppState,
    row: &EventRow,
    before: &[EventRow],
    after: &[EventRow],
) -> Result<BTreeMap<String, Profile>> {
    let senders: Vec<String> = std::iter::once(row)
        .chain(before)
        .chain(after)
        .map(|r| r.sender.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let at = after.last().unwrap_or(row).stream_ordering;
    let members = store::events::members_at(&state.db, &row.room_id, &senders, at).await?;
    Ok(members
        .into_iter()
        .filter_map(|m| {
            let event: Value = serde_json::from_str(&m.client_json).ok()?;
            let field = |k: &str| event["content"][k].as_str().map(str::to_owned);
            let profile = Profile {
                displayname: field("displayname"),
                avatar_url: field("avatar_url"),
            };
            Some((m.state_key?, profile))
        })
        .collect())
}

/// The current state of each room with a result (the user is joined to each).
pub async fn current_state(
    state: &AppState,
    viewer: Viewer<'_>,
    rows: &[EventRow],
) -> Result<BTreeMap<String, Vec<Box<RawValue>>>> {
    let rooms: Vec<String> = rows
        .iter()
        .map(|r| r.room_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let state_rows =
        store::events::current_state_of_rooms(&state.db, &rooms, Members::Included).await?;
    let mut out: BTreeMap<String, Vec<EventRow>> =
        rooms.iter().map(|r| (r.clone(), Vec::new())).collect();
    for r in state_rows {
        out.entry(r.room_id.clone()).or_default().push(r);
    }
    Ok(out
        .into_iter()
        .map(|(room, rows)| (room, timeline::render_plain(&rows, viewer)))
        .collect())
}

//! The extensions of MSC4186: `to_device` (MSC3885), `e2ee` (MSC3884), `account_data` (MSC3959),
//! `receipts` (MSC3960) and `typing` (MSC3961), each limited to the lists and rooms it names.

use std::collections::HashSet;

use ruma::api::client::sync::sync_events::v5::{self, request::ExtensionRoomConfig};
use ruma::serde::Raw;
use ruma::{OneTimeKeyAlgorithm, OwnedUserId, UInt};
use serde_json::Value;
use sqlx::PgConnection;

use super::lists::Selection;
use crate::service::auth::Requester;
use crate::service::{account_data, e2ee, receipts, typing};
use crate::{AppState, Error, Result, store};

/// At most this many to-device messages per response (the client's `limit` may ask for fewer).
const TO_DEVICE_LIMIT: u64 = 1000;
const TO_DEVICE_DEFAULT: u64 = 100;

/// The extensions' part of a response, and what the connection's next position keeps of it.
pub struct Extensions {
    pub response: v5::response::Extensions,
    /// The typing clock the response covered.
    pub typing: i64,
    /// Something a client would act on (key counts alone are not).
    pub news: bool,
}

/// Where the extensions count from.
pub struct Since {
    /// The connection's previous stream position (None: the connection is new).
    pub from: Option<i64>,
    pub typing: i64,
    pub upto: i64,
    /// Rooms sent whole in this response: their receipts come from the start.
    pub initial_rooms: HashSet<String>,
}

/// Acknowledges the to-device messages at or below the client's `since` (a write, so before the
/// read-only snapshot). Returns the position to deliver from.
pub async fn acknowledge_to_device(
    conn: &mut PgConnection,
    requester: &Requester,
    req: &v5::request::ToDevice,
) -> Result<Option<i64>> {
    if req.enabled != Some(true) {
        return Ok(None);
    }
    let since = match req.since.as_deref() {
        None | Some("") => 0,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| Error::invalid_param("Invalid to_device since"))?,
    };
    store::to_device::acknowledge(
        &mut *conn,
        requester.user_id.as_str(),
        requester.device_id.as_str(),
        since,
    )
    .await?;
    Ok(Some(since))
}

/// Reads every extension asked for in the response's snapshot `tx`.
pub async fn read(
    state: &AppState,
    tx: &mut PgConnection,
    requester: &Requester,
    req: &v5::request::Extensions,
    selection: &Selection,
    to_device_since: Option<i64>,
    since: &Since,
) -> Result<Extensions> {
    let user = requester.user_id.as_str();
    let from = since.from.unwrap_or(0);
    let mut out = Extensions {
        response: v5::response::Extensions::default(),
        typing: since.typing,
        news: false,
    };
    if let Some(to_device_since) = to_device_since {
        let limit = req
            .to_device
            .limit
            .map_or(TO_DEVICE_DEFAULT, u64::from)
            .clamp(1, TO_DEVICE_LIMIT) as i64;
        let device = requester.device_id.as_str();
        let (events, cut) =
            e2ee::to_device_batch(tx, user, device, to_device_since, since.upto, limit).await?;
        let mut to_device = v5::response::ToDevice::default();
        to_device.next_batch = cut.unwrap_or(since.upto).max(to_device_since).to_string();
        out.news |= !events.is_empty();
        to_device.events = raw_all(events)?;
        out.response.to_device = Some(to_device);
    }
    if req.e2ee.enabled == Some(true) {
        let e2ee = &mut out.response.e2ee;
        if since.from.is_some() {
            let (changed, left) = e2ee::device_list_changes(tx, user, from, since.upto).await?;
            out.news |= !changed.is_empty() || !left.is_empty();
            e2ee.device_lists.changed = user_ids(changed);
            e2ee.device_lists.left = user_ids(left);
        }
        let (counts, fallback) = e2ee::key_counts(tx, user, requester.device_id.as_str()).await?;
        e2ee.device_one_time_keys_count = counts
            .into_iter()
            .map(|(alg, n)| (OneTimeKeyAlgorithm::from(alg.as_str()), uint(n)))
            .collect();
        e2ee.device_unused_fallback_key_types = Some(
            fallback
                .iter()
                .map(|a| OneTimeKeyAlgorithm::from(a.as_str()))
                .collect(),
        );
    }
    if req.account_data.enabled == Some(true) {
        let rooms = relevant(
            selection,
            req.account_data.lists.as_deref(),
            req.account_data.rooms.as_deref(),
        );
        let (global, mut by_room) = account_data::for_sync(tx, user, from, since.upto).await?;
        let data = &mut out.response.account_data;
        data.global = raw_all(global)?;
        for room in rooms {
            if let Some(events) = by_room.remove(&room) {
                data.rooms
                    .insert(super::render::room_id(&room)?, raw_all(events)?);
            }
        }
        out.news |= !data.is_empty();
    }
    if req.receipts.enabled == Some(true) {
        let rooms = joined(
            selection,
            relevant(
                selection,
                req.receipts.lists.as_deref(),
                req.receipts.rooms.as_deref(),
            ),
        );
        let (fresh, known): (Vec<String>, Vec<String>) = rooms
            .into_iter()
            .partition(|r| since.initial_rooms.contains(r));
        let mut found = receipts::for_sync(tx, user, &known, from, since.upto).await?;
        if !fresh.is_empty() {
            found.extend(receipts::for_sync(tx, user, &fresh, 0, since.upto).await?);
        }
        for (room, event) in found {
            out.response
                .receipts
                .rooms
                .insert(super::render::room_id(&room)?, raw(event)?);
        }
        out.news |= !out.response.receipts.is_empty();
    }
    if req.typing.enabled == Some(true) {
        let rooms = joined(
            selection,
            relevant(
                selection,
                req.typing.lists.as_deref(),
                req.typing.rooms.as_deref(),
            ),
        );
        let typing_since = if since.from.is_some() {
            since.typing
        } else {
            0
        };
        let (events, clock) = typing::for_sync(state, &rooms, typing_since);
        out.typing = clock;
        for (room, event) in events {
            out.response
                .typing
                .rooms
                .insert(super::render::room_id(&room)?, raw(event)?);
        }
        out.news |= !out.response.typing.is_empty();
    }
    Ok(out)
}

/// The rooms an extension covers: those in the ranges of the lists it names and the subscriptions
/// it names (`"*"`, or absent, is every list or every subscription, as Synapse defaults it).
fn relevant(
    selection: &Selection,
    lists: Option<&[String]>,
    rooms: Option<&[ExtensionRoomConfig]>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let all_lists = lists.is_none_or(|l| l.iter().any(|n| n == "*"));
    for (name, in_ranges) in &selection.list_rooms {
        if all_lists || lists.is_some_and(|l| l.contains(name)) {
            out.extend(in_ranges.iter().cloned());
        }
    }
    match rooms {
        None => out.extend(selection.subscribed.iter().cloned()),
        Some(rooms) => {
            for r in rooms {
                match r {
                    ExtensionRoomConfig::AllSubscribed => {
                        out.extend(selection.subscribed.iter().cloned())
                    }
                    ExtensionRoomConfig::Room(id)
                        if selection.subscribed.iter().any(|s| s == id.as_str()) =>
                    {
                        out.push(id.to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Of `rooms`, those the user is joined to (receipts and typing are for members).
fn joined(selection: &Selection, rooms: Vec<String>) -> Vec<String> {
    rooms
        .into_iter()
        .filter(|r| {
            selection
                .rooms
                .get(r)
                .is_some_and(|(c, _)| c.membership == "join")
        })
        .collect()
}

fn uint(n: i64) -> UInt {
    UInt::try_from(n.max(0) as u64).unwrap_or(UInt::MAX)
}

fn user_ids(users: Vec<String>) -> Vec<OwnedUserId> {
    users
        .into_iter()
        .filter_map(|u| OwnedUserId::try_from(u).ok())
        .collect()
}

fn raw<T>(value: Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&value).map_err(Error::internal)?,
    ))
}

fn raw_all<T>(values: Vec<Value>) -> Result<Vec<Raw<T>>> {
    values.into_iter().map(raw).collect()
}

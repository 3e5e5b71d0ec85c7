//! Other servers' users joining and leaving local rooms (`make_join`/`send_join`,
//! `make_leave`/`send_leave`), and other servers reading a room's events and state (`event`,
//! `state`, `state_ids`) — for servers with members in the room.

use std::collections::{BTreeSet, HashSet};

use ruma::ServerName;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::inbound::{self, Receiver, user_of};
use crate::service::events::EventDraft;
use crate::service::room_versions::{self, RoomVersion};
use crate::service::writer;
use crate::store::{self, events::Members};
use crate::{AppState, Error, Result};

/// Events an auth chain holds at most (beyond that the answer is cut short).
const MAX_AUTH_CHAIN: usize = 50_000;

/// `make_join` / `make_leave`: the room's version and an event template for `user_id` of `origin`.
/// `supported` are the versions the joining server knows (`ver`; `None` for a leave).
pub async fn make(
    state: &AppState,
    origin: &ServerName,
    room_id: &str,
    user_id: &str,
    membership: &str,
    supported: Option<&[String]>,
) -> Result<(RoomVersion, Value)> {
    if !user_of(user_id, origin) {
        return Err(Error::forbidden(
            "The user does not belong to the requesting server",
        ));
    }
    let snapshot = writer::room_snapshot(state, room_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let version = snapshot.version;
    if let Some(supported) = supported {
        // Without `ver`, a server supports version 1 only.
        let knows = if supported.is_empty() {
            version.as_str() == "1"
        } else {
            supported.iter().any(|v| v == version.as_str())
        };
        if !knows {
            return Err(Error::incompatible_room_version(format!(
                "The room is version {}, which the joining server does not support",
                version.as_str()
            ))
            .with_extra("room_version", json!(version.as_str())));
        }
    }
    let draft = EventDraft::new(
        "m.room.member",
        Some(user_id),
        user_id,
        json!({ "membership": membership }),
    );
    let template = writer::join_template(
        state.server_name.as_str(),
        snapshot,
        &draft,
        store::now_ms(),
    )?;
    Ok((version, template))
}

/// What `send_join` answers: the state before the join and its auth chain, as PDUs.
pub struct JoinAnswer {
    pub state: Vec<Box<RawValue>>,
    pub auth_chain: Vec<Box<RawValue>>,
    pub event: Box<RawValue>,
    pub servers: Vec<String>,
}

/// `send_join` / `send_leave`: checks the signed membership event of `origin`'s user and appends
/// it; for a join, answers the room's state before it and its auth chain.
pub async fn send(
    state: &AppState,
    origin: &ServerName,
    room_id: &str,
    event_id: &str,
    membership: &str,
    pdu: &RawValue,
) -> Result<Option<JoinAnswer>> {
    let parsed = inbound::parse(&state.db, pdu)
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    if parsed.room_id != room_id || parsed.event_id != event_id {
        return Err(Error::bad_json(
            "The event's room or ID does not match the request",
        ));
    }
    let event: Value =
        serde_json::from_str(pdu.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    let sender = event["sender"].as_str().unwrap_or_default();
    if event["type"] != "m.room.member"
        || event["state_key"].as_str() != Some(sender)
        || event["content"]["membership"] != membership
    {
        return Err(Error::bad_json(format!(
            "The event must be a {membership} of its sender"
        )));
    }
    if !user_of(sender, origin) {
        return Err(Error::forbidden(
            "The user does not belong to the requesting server",
        ));
    }
    let before = writer::room_snapshot(state, room_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let receiver = Receiver::of(state);
    receiver.accept(parsed).await?;
    if membership != "join" {
        return Ok(None);
    }
    let state_ids: Vec<String> = before
        .state
        .values()
        .flat_map(|m| m.values().map(|e| e.event_id.clone()))
        .collect();
    let mut servers: BTreeSet<String> = before
        .members_with("join")
        .filter_map(|u| Some(ruma::UserId::parse(u).ok()?.server_name().to_string()))
        .collect();
    servers.insert(origin.to_string());
    let mut chain_of = state_ids.clone();
    chain_of.push(event_id.to_owned());
    Ok(Some(JoinAnswer {
        state: raw_pdus(state, &state_ids).await?,
        auth_chain: auth_chain(state, &chain_of).await?,
        event: RawValue::from_string(pdu.get().to_owned()).map_err(Error::internal)?,
        servers: servers.into_iter().collect(),
    }))
}

/// The stored PDUs of `ids` (unknown ones left out).
async fn raw_pdus(state: &AppState, ids: &[String]) -> Result<Vec<Box<RawValue>>> {
    store::events::pdus_of(&state.db, ids)
        .await?
        .into_iter()
        .map(|(_, pdu)| RawValue::from_string(pdu).map_err(Error::internal))
        .collect()
}

/// The auth chain of `ids`: every event reachable through `auth_events`, as PDUs.
pub(crate) async fn auth_chain(state: &AppState, ids: &[String]) -> Result<Vec<Box<RawValue>>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut chain = Vec::new();
    let mut frontier: Vec<String> = ids.to_vec();
    let mut first = true;
    while !frontier.is_empty() && chain.len() < MAX_AUTH_CHAIN {
        let pdus = store::events::pdus_of(&state.db, &frontier).await?;
        frontier = Vec::new();
        for (_, text) in pdus {
            let pdu: Value = serde_json::from_str(&text).map_err(Error::internal)?;
            for item in pdu["auth_events"].as_array().into_iter().flatten() {
                let id = item
                    .as_str()
                    .or_else(|| item.get(0).and_then(Value::as_str));
                if let Some(id) = id
                    && seen.insert(id.to_owned())
                {
                    frontier.push(id.to_owned());
                }
            }
            // The starting events themselves belong to the chain only when reached again.
            if !first {
                chain.push(RawValue::from_string(text).map_err(Error::internal)?);
            }
        }
        first = false;
    }
    Ok(chain)
}

/// Refuses `origin` unless one of its users is joined to `room_id` (or the room's history is
/// `world_readable`).
pub(crate) async fn ensure_in_room(
    state: &AppState,
    origin: &ServerName,
    room_id: &str,
) -> Result<RoomVersion> {
    let snapshot = writer::room_snapshot(state, room_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let readable = snapshot
        .entry("m.room.history_visibility", "")
        .is_some_and(|e| e.content["history_visibility"] == "world_readable");
    if readable || snapshot.members_with("join").any(|u| user_of(u, origin)) {
        return Ok(snapshot.version);
    }
    Err(Error::forbidden("The requesting server is not in the room"))
}

/// `GET /event/{eventId}`: one PDU of a room `origin` is in (a soft-failed one too, as the spec
/// asks).
pub async fn event(state: &AppState, origin: &ServerName, event_id: &str) -> Result<Box<RawValue>> {
    if let Some(row) = store::events::event_by_id(&state.db, event_id).await? {
        ensure_in_room(state, origin, &row.room_id).await?;
        return raw_pdus(state, &[event_id.to_owned()])
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("Unknown event"));
    }
    let (room_id, pdu) = store::federation_rooms::soft_failed(&state.db, event_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown event"))?;
    ensure_in_room(state, origin, &room_id).await?;
    RawValue::from_string(pdu).map_err(Error::internal)
}

/// `GET /state_ids` and `/state`: the state IDs before `event_id` and their auth chain's IDs, or
/// (`full`) their PDUs.
pub async fn state_at(
    state: &AppState,
    origin: &ServerName,
    room_id: &str,
    event_id: &str,
) -> Result<(Vec<String>, Vec<Box<RawValue>>)> {
    ensure_in_room(state, origin, room_id).await?;
    let row = store::events::event_by_id(&state.db, event_id)
        .await?
        .filter(|r| r.room_id == room_id)
        .ok_or_else(|| Error::not_found("Unknown event"))?;
    let ids: Vec<String> = store::events::state_at(
        &state.db,
        room_id,
        row.stream_ordering - 1,
        Members::Included,
    )
    .await?
    .into_iter()
    .map(|r| r.event_id)
    .collect();
    let chain = auth_chain(state, &ids).await?;
    Ok((ids, chain))
}

/// The state PDUs of `ids`.
pub async fn pdus(state: &AppState, ids: &[String]) -> Result<Vec<Box<RawValue>>> {
    raw_pdus(state, ids).await
}

/// The event ID of a PDU (for the auth chain's IDs).
pub fn id_of(version: RoomVersion, pdu: &RawValue) -> Option<String> {
    let object = serde_json::from_str(pdu.get()).ok()?;
    inbound::event_id_of(version, &object).ok()
}

/// The room version of a known room.
pub async fn version_of(state: &AppState, room_id: &str) -> Result<RoomVersion> {
    store::rooms::room_version(&state.db, room_id)
        .await?
        .and_then(|v| room_versions::parse(&v))
        .ok_or_else(|| Error::not_found("Unknown room"))
}

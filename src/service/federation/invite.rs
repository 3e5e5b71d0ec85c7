//! Invites across servers. A local user inviting another server's user: the invite is built here on
//! the room's current state, signed by the invitee's server (`PUT /v2/invite`, with the room's
//! stripped state as full PDUs), then stored and sent to the room's servers. Another server's user
//! inviting a local one: the event is checked (format, the sender's server's signature, the room's
//! ACL, a blocked room), signed here and stored — out of band, with the stripped state that came
//! with it, when this server is not in the room. And a local invitee rejecting such an invite:
//! `make_leave`/`send_leave` through the inviting server (or the room's), else a leave recorded
//! here alone, as Synapse does, so that nobody is stuck with an invite.

use ruma::api::federation::membership::{
    RawStrippedState, create_invite::v2 as invite_api, create_leave_event::v2 as send_leave,
    prepare_leave_event::v1 as make_leave,
};
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::signatures::PublicKeyMap;
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId, ServerName};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::inbound::{self, Parsed, Receiver, user_of};
use super::{acl, join};
use crate::service::events::{self, EventDraft, EventRef, MAX_EVENT_BYTES, Placement};
use crate::service::room_cache::{RoomSnapshot, StateEntry};
use crate::service::room_versions::{self, RoomVersion};
use crate::service::writer::{self, Committed};
use crate::{AppState, Error, Result, store};

/// Stripped state events kept of an invite at most (the spec's list is seven, plus the inviter).
const MAX_STRIPPED: usize = 50;

/// An invite from another server (`PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`).
pub struct ReceivedInvite<'a> {
    pub room_id: &'a str,
    pub event_id: &'a str,
    pub room_version: &'a str,
    pub event: &'a RawValue,
    pub invite_room_state: &'a [RawStrippedState],
}

/// Checks, signs and stores an invite of a local user from `origin`; answers the event with this
/// server's signature added.
pub async fn receive(
    state: &AppState,
    origin: &ServerName,
    invite: ReceivedInvite<'_>,
) -> Result<Box<RawValue>> {
    let unsupported = || {
        Error::incompatible_room_version(format!(
            "Room version {} is not supported by this server",
            invite.room_version
        ))
        .with_extra("room_version", json!(invite.room_version))
    };
    let mut version = room_versions::parse(invite.room_version).ok_or_else(unsupported)?;
    if let Some(known) = store::rooms::room_version(&state.db, invite.room_id).await? {
        // A room known here keeps the version it has.
        version = room_versions::parse(&known).ok_or_else(unsupported)?;
    }
    if invite.event.get().len() > MAX_EVENT_BYTES {
        return Err(Error::too_large("The invite is larger than 65536 bytes"));
    }
    let object: CanonicalJsonObject = serde_json::from_str(invite.event.get())
        .map_err(|e| Error::bad_json(format!("The invite is not a canonical JSON object: {e}")))?;
    let event_id = inbound::event_id_of(version, &object)?;
    let pdu = serde_json::to_value(&object).map_err(Error::internal)?;
    let invitee = check_format(state, origin, &invite, &event_id, &pdu)?;
    if store::admin_jobs::is_blocked(&state.db, invite.room_id).await? {
        return Err(Error::forbidden(
            "This room has been blocked on this server",
        ));
    }
    acl::ensure_allowed(state, invite.room_id, origin).await?;
    let user = store::users::get_user(&state.db, &invitee).await?;
    if user.is_none_or(|u| u.deactivated) {
        return Err(Error::forbidden(format!(
            "{invitee} does not exist on this server"
        )));
    }
    state.rate_limiter.remote_invite(&invitee)?;
    let receiver = Receiver::of(state);
    let mut object = receiver.verify(version, object).await?;
    ruma::signatures::sign_event(
        state.server_name.as_str(),
        &state.signing_key,
        &mut object,
        &version.rules().redaction,
    )
    .map_err(|e| Error::internal(format!("signing an invite: {e}")))?;
    if let Some(CanonicalJsonValue::Object(unsigned)) = object.get_mut("unsigned") {
        unsigned.remove("invite_room_state");
    }
    let stripped = stripped_state(invite.room_id, &invitee, invite.invite_room_state);
    let parsed = Parsed {
        room_id: invite.room_id.to_owned(),
        version,
        event_id,
        object: object.clone(),
    };
    keep(state, parsed, stripped).await?;
    RawValue::from_string(CanonicalJsonValue::Object(object).to_string()).map_err(Error::internal)
}

/// The spec's checks of an invite's form (400 `M_INVALID_PARAM`); answers the invitee.
fn check_format(
    state: &AppState,
    origin: &ServerName,
    invite: &ReceivedInvite<'_>,
    event_id: &str,
    pdu: &Value,
) -> Result<String> {
    if event_id != invite.event_id || pdu["room_id"] != invite.room_id {
        return Err(Error::invalid_param(
            "The invite's event ID or room does not match the request",
        ));
    }
    if pdu["type"] != "m.room.member" || pdu["content"]["membership"] != "invite" {
        return Err(Error::invalid_param("The event is not an invite"));
    }
    if !pdu["sender"].as_str().is_some_and(|s| user_of(s, origin)) {
        return Err(Error::invalid_param(
            "The invite's sender is not a user of the requesting server",
        ));
    }
    match pdu["state_key"].as_str() {
        Some(invitee) if user_of(invitee, &state.server_name) => Ok(invitee.to_owned()),
        _ => Err(Error::invalid_param(
            "The invite is not for a user of this server",
        )),
    }
}

/// Stores a checked invite: through the writer like any received event when this server is in the
/// room, else out of band with the room's stripped state.
async fn keep(state: &AppState, parsed: Parsed, stripped: String) -> Result<()> {
    if writer::room_snapshot(state, &parsed.room_id)
        .await?
        .is_some_and(|room| is_inside(state, &room))
    {
        return Receiver::of(state).accept(parsed).await;
    }
    let pdu = serde_json::to_value(&parsed.object).map_err(Error::internal)?;
    let event = inbound::to_built(parsed.version, &parsed.event_id, &parsed.room_id, &pdu)?;
    state
        .writer
        .submit_out_of_band(parsed.version, event, Some(stripped))
        .await?;
    Ok(())
}

/// Whether a local user is joined to the room (this server is in it).
pub fn is_inside(state: &AppState, room: &RoomSnapshot) -> bool {
    room.member_lists()
        .join_servers
        .contains(state.server_name.as_str())
}

/// The invite's stripped state as the invitee's /sync shows it (a JSON array of
/// `{type, state_key, sender, content}`), from full PDUs (since Matrix 1.16) or stripped events:
/// entries of another room, malformed ones and the invitee's own member event are left out.
fn stripped_state(room_id: &str, invitee: &str, entries: &[RawStrippedState]) -> String {
    let mut out = Vec::new();
    for entry in entries.iter().take(MAX_STRIPPED) {
        #[allow(deprecated)]
        let raw = match entry {
            RawStrippedState::Pdu(raw) => raw.get(),
            RawStrippedState::Stripped(raw) => raw.json().get(),
            _ => continue,
        };
        let Ok(event) = serde_json::from_str::<Value>(raw) else {
            continue;
        };
        let (Some(kind), Some(key), Some(sender), Some(content)) = (
            event["type"].as_str(),
            event["state_key"].as_str(),
            event["sender"].as_str(),
            event["content"].as_object(),
        ) else {
            continue;
        };
        if event["room_id"].as_str().is_some_and(|r| r != room_id)
            || (kind == "m.room.member" && key == invitee)
        {
            continue;
        }
        out.push(json!({"type": kind, "state_key": key, "sender": sender, "content": content}));
    }
    Value::Array(out).to_string()
}

/// Invites `target`, a user of another server, to `room_id` on behalf of local `sender`.
pub async fn invite_remote(
    state: &AppState,
    sender: &str,
    room_id: &str,
    target: &ruma::UserId,
    content: Value,
) -> Result<Committed> {
    let room = writer::room_snapshot(state, room_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let version = room.version;
    let draft = EventDraft::new("m.room.member", Some(target.as_str()), sender, content);
    let mut prepared = writer::prepare(state, room.clone(), &draft)?;
    let request = invite_api::Request::new(
        OwnedRoomId::try_from(room_id).map_err(Error::internal)?,
        OwnedEventId::try_from(prepared.event.event_id.as_str()).map_err(Error::internal)?,
        RoomVersionId::try_from(version.as_str()).map_err(Error::internal)?,
        RawValue::from_string(prepared.event.pdu.clone()).map_err(Error::internal)?,
        invite_room_state(state, &room, sender).await?,
    );
    let server = target.server_name();
    let answer = state.federation.send(server, request).await?;
    prepared.event.pdu =
        countersigned(state, version, &prepared.event.pdu, &answer.event, server).await?;
    state.writer.submit_remote(prepared).await
}

/// The room's stripped state as full PDUs (as Matrix 1.16 asks): the state events /sync shows
/// invitees, and the inviter's member event.
async fn invite_room_state(
    state: &AppState,
    room: &RoomSnapshot,
    inviter: &str,
) -> Result<Vec<RawStrippedState>> {
    let mut ids: Vec<String> = crate::service::sync::STRIPPED_STATE
        .iter()
        .filter_map(|t| room.entry(t, "").map(|e| e.event_id.clone()))
        .collect();
    if let Some(member) = room.entry("m.room.member", inviter) {
        ids.push(member.event_id.clone());
    }
    store::events::pdus_of(&state.db, &ids)
        .await?
        .into_iter()
        .map(|(_, pdu)| {
            RawValue::from_string(pdu)
                .map(RawStrippedState::Pdu)
                .map_err(Error::internal)
        })
        .collect()
}

/// Our invite PDU with the invitee's server's signatures from its answer, once they verify (the
/// rest of the answer is not taken: the invite stays as built here).
async fn countersigned(
    state: &AppState,
    version: RoomVersion,
    ours: &str,
    answer: &RawValue,
    server: &ServerName,
) -> Result<String> {
    let theirs: CanonicalJsonObject = serde_json::from_str(answer.get())
        .map_err(|e| Error::remote(format!("{server} answered a bad invite: {e}")))?;
    let signatures = match theirs.get("signatures") {
        Some(CanonicalJsonValue::Object(all)) => all.get(server.as_str()).cloned(),
        _ => None,
    };
    let Some(CanonicalJsonValue::Object(by_key)) = signatures else {
        return Err(Error::remote(format!("{server} did not sign the invite")));
    };
    let mut event: CanonicalJsonObject = serde_json::from_str(ours).map_err(Error::internal)?;
    let at = match event.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => return Err(Error::internal("an invite without origin_server_ts")),
    };
    let key_ids: Vec<String> = by_key.keys().cloned().collect();
    let mut keys = PublicKeyMap::new();
    keys.insert(
        server.to_string(),
        state.keyring.keys_valid_at(server, &key_ids, at).await?,
    );
    let mut only_theirs = event.clone();
    let mut signed_by = CanonicalJsonObject::new();
    signed_by.insert(
        server.to_string(),
        CanonicalJsonValue::Object(by_key.clone()),
    );
    only_theirs.insert("signatures".into(), CanonicalJsonValue::Object(signed_by));
    let redacted = ruma::canonical_json::redact(only_theirs, &version.rules().redaction, None)
        .map_err(Error::internal)?;
    ruma::signatures::verify_json(&keys, &redacted).map_err(|e| {
        Error::remote(format!(
            "{server}'s signature of the invite does not verify: {e}"
        ))
    })?;
    if let Some(CanonicalJsonValue::Object(all)) = event.get_mut("signatures") {
        all.insert(server.to_string(), CanonicalJsonValue::Object(by_key));
    }
    Ok(CanonicalJsonValue::Object(event).to_string())
}

/// `user_id`'s pending invite to `room_id` from another server's user, when this server is not in
/// the room (so the invite must be answered through that server).
pub async fn pending_remote_invite(
    state: &AppState,
    room_id: &str,
    user_id: &str,
) -> Result<Option<std::sync::Arc<StateEntry>>> {
    let Some(room) = writer::room_snapshot(state, room_id).await? else {
        return Ok(None);
    };
    if is_inside(state, &room) {
        return Ok(None);
    }
    Ok(room
        .entry("m.room.member", user_id)
        .filter(|e| e.content["membership"] == "invite" && !user_of(&e.sender, &state.server_name))
        .cloned())
}

/// Rejects `invite` (see [`pending_remote_invite`]) of local `user_id`: `make_leave`/`send_leave`
/// through the inviter's server, then the room's; when neither answers, a leave recorded here
/// alone (never sent: the inviting server keeps the invite until it hears otherwise).
pub async fn reject(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    invite: &StateEntry,
    reason: Option<&str>,
) -> Result<Committed> {
    let version = super::membership::version_of(state, room_id).await?;
    let mut content = Map::new();
    if let Some(reason) = reason {
        content.insert("reason".into(), json!(reason));
    }
    let mut servers: Vec<OwnedServerName> = Vec::new();
    for server in [
        ruma::UserId::parse(invite.sender.as_str())
            .ok()
            .map(|u| u.server_name().to_owned()),
        ruma::RoomId::parse(room_id)
            .ok()
            .and_then(|r| r.server_name().map(ToOwned::to_owned)),
    ]
    .into_iter()
    .flatten()
    {
        if server != state.server_name && !servers.contains(&server) {
            servers.push(server);
        }
    }
    for server in &servers {
        match leave_through(state, server, version, (room_id, user_id), content.clone()).await {
            Ok(event) => return state.writer.submit_out_of_band(version, event, None).await,
            Err(e) => {
                tracing::info!(%server, room_id, error = %e, "remote invite rejection failed")
            }
        }
    }
    let event = local_leave(state, version, (room_id, user_id), invite, content).await?;
    state.writer.submit_out_of_band(version, event, None).await
}

/// `make_leave` and `send_leave` v2 through `server`: the leave as sent.
async fn leave_through(
    state: &AppState,
    server: &ServerName,
    version: RoomVersion,
    (room_id, user_id): (&str, &str),
    content: Map<String, Value>,
) -> Result<events::BuiltEvent> {
    let room = OwnedRoomId::try_from(room_id).map_err(|_| Error::invalid_param("Bad room ID"))?;
    let user = OwnedUserId::try_from(user_id).map_err(Error::internal)?;
    let template = state
        .federation
        .send(server, make_leave::Request::new(room.clone(), user))
        .await?;
    let version = template
        .room_version
        .as_ref()
        .and_then(|v| room_versions::parse(v.as_str()))
        .unwrap_or(version);
    let (event_id, pdu) = join::complete(
        state,
        version,
        (room_id, user_id, "leave"),
        &template.event,
        content,
    )?;
    let raw = RawValue::from_string(pdu.clone()).map_err(Error::internal)?;
    let id = OwnedEventId::try_from(event_id.as_str()).map_err(Error::internal)?;
    state
        .federation
        .send(server, send_leave::Request::new(room, id, raw))
        .await?;
    let pdu: Value = serde_json::from_str(&pdu).map_err(Error::internal)?;
    inbound::to_built(version, &event_id, room_id, &pdu)
}

/// A leave built and signed here on the invite alone (its only prev and auth event), as Synapse
/// makes one when the inviting server cannot be reached.
async fn local_leave(
    state: &AppState,
    version: RoomVersion,
    (room_id, user_id): (&str, &str),
    invite: &StateEntry,
    content: Map<String, Value>,
) -> Result<events::BuiltEvent> {
    let stored = store::events::pdus_of(&state.db, std::slice::from_ref(&invite.event_id))
        .await?
        .pop()
        .ok_or_else(|| Error::internal("the invite is not stored"))?;
    let invite_pdu: CanonicalJsonObject =
        serde_json::from_str(&stored.1).map_err(Error::internal)?;
    let depth = match invite_pdu.get("depth") {
        Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
        _ => 0,
    };
    let cited = EventRef {
        id: invite.event_id.clone(),
        hash: if version.server_chosen_event_ids() {
            Some(
                ruma::signatures::reference_hash(&invite_pdu, version.rules())
                    .map_err(Error::internal)?,
            )
        } else {
            None
        },
    };
    let mut content = content;
    content.insert("membership".into(), json!("leave"));
    let draft = EventDraft::new(
        "m.room.member",
        Some(user_id),
        user_id,
        Value::Object(content),
    );
    let place = Placement {
        version,
        room_id: Some(room_id),
        prev_events: vec![cited.clone()],
        auth_events: vec![cited],
        depth: depth.saturating_add(1),
    };
    events::build(state, &draft, place, store::now_ms())
}

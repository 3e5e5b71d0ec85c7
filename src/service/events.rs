//! Building events in the room version's format: content hash, signature, and the event ID —
//! `$opaque:server_name` chosen here and carried in the PDU (v1, v2) or the reference hash (v3+,
//! whose encoding ruma picks per version).

use ruma::CanonicalJsonValue;
use ruma::canonical_json::CanonicalJsonObject;
use serde_json::{Map, Value, json};

use crate::service::room_versions::RoomVersion;
use crate::{AppState, Error, Result};

/// The largest PDU the spec allows.
pub const MAX_EVENT_BYTES: usize = 65536;

/// An event a local user wants to create, before it has a place in the room.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub content: Map<String, Value>,
    /// For m.room.redaction.
    pub redacts: Option<String>,
    /// The sending device, for local echo (`unsigned.transaction_id`).
    pub device_id: Option<String>,
    pub txn_id: Option<String>,
    /// A kick (`POST /kick`): refused unless the target is joined, invited or knocking, checked
    /// under the room's lock. The leave event alone cannot tell: sent for a banned user it is an
    /// unban, for a user who is not in the room it changes nothing.
    pub kick: bool,
    /// A guest's join: refused unless the room's `m.room.guest_access` is `can_join`, checked under
    /// the room's lock, so that a join cannot slip past a revocation (which makes the guests it
    /// finds leave).
    pub guest_join: bool,
}

impl EventDraft {
    pub fn new(event_type: &str, state_key: Option<&str>, sender: &str, content: Value) -> Self {
        let content = match content {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Self {
            event_type: event_type.to_owned(),
            state_key: state_key.map(str::to_owned),
            sender: sender.to_owned(),
            content,
            redacts: None,
            device_id: None,
            txn_id: None,
            kick: false,
            guest_join: false,
        }
    }
}

pub use crate::store::events::BuiltEvent;

/// Where the event goes in its room.
pub struct Placement<'a> {
    pub version: RoomVersion,
    /// `None` only for a v12 create event, whose room ID is derived from its own hash.
    pub room_id: Option<&'a str>,
    pub prev_events: Vec<EventRef>,
    pub auth_events: Vec<EventRef>,
    pub depth: i64,
}

/// An event another event cites (in `prev_events` or `auth_events`).
#[derive(Debug, Clone)]
pub struct EventRef {
    pub id: String,
    /// Its reference hash, cited alongside the ID in v1/v2 (`[id, {"sha256": hash}]`).
    pub hash: Option<String>,
}

/// `prev_events`/`auth_events` in the version's format: IDs, or `[id, {"sha256": hash}]` pairs.
pub(crate) fn event_refs(version: RoomVersion, refs: &[EventRef]) -> CanonicalJsonValue {
    let string = |s: &str| CanonicalJsonValue::String(s.to_owned());
    CanonicalJsonValue::Array(
        refs.iter()
            .map(|r| {
                if !version.server_chosen_event_ids() {
                    return string(&r.id);
                }
                let mut hashes = CanonicalJsonObject::new();
                if let Some(hash) = &r.hash {
                    hashes.insert("sha256".into(), string(hash));
                }
                CanonicalJsonValue::Array(vec![string(&r.id), CanonicalJsonValue::Object(hashes)])
            })
            .collect(),
    )
}

/// Turns client JSON into canonical JSON: floats and integers beyond ±(2^53−1) are refused.
pub fn canonical_content(content: &Map<String, Value>) -> Result<CanonicalJsonObject> {
    ruma::canonical_json::try_from_json_map(content.clone())
        .map_err(|e| Error::bad_json(format!("Event content is not canonical JSON: {e}")))
}

pub fn build(
    state: &AppState,
    draft: &EventDraft,
    place: Placement<'_>,
    origin_server_ts: i64,
) -> Result<BuiltEvent> {
    let version = place.version;
    let rules = version.rules();
    let mut pdu = CanonicalJsonObject::new();
    let string = |s: &str| CanonicalJsonValue::String(s.to_owned());

    let mut content = canonical_content(&draft.content)?;
    // The whole PDU must fit in 64 KiB; refuse early what cannot, before hashing and signing.
    if CanonicalJsonValue::Object(content.clone())
        .to_string()
        .len()
        > MAX_EVENT_BYTES
    {
        return Err(Error::too_large(format!(
            "Event is larger than {MAX_EVENT_BYTES} bytes"
        )));
    }
    if let Some(redacts) = &draft.redacts {
        if version.redacts_in_content() {
            // v11 moved `redacts` into the content, where redaction keeps it.
            content.insert("redacts".into(), string(redacts));
        } else {
            pdu.insert("redacts".into(), string(redacts));
        }
    }
    // v1/v2: the server picks the event ID, and the PDU carries it (signed and hashed with it).
    let chosen_id = version.server_chosen_event_ids().then(|| {
        format!(
            "${}:{}",
            crate::service::auth::random_string(18),
            state.server_name
        )
    });
    if let Some(id) = &chosen_id {
        pdu.insert("event_id".into(), string(id));
    }
    pdu.insert(
        "auth_events".into(),
        event_refs(version, &place.auth_events),
    );
    pdu.insert("content".into(), CanonicalJsonValue::Object(content));
    pdu.insert(
        "depth".into(),
        CanonicalJsonValue::Integer(place.depth.try_into().map_err(Error::internal)?),
    );
    pdu.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(origin_server_ts.try_into().map_err(Error::internal)?),
    );
    pdu.insert(
        "prev_events".into(),
        event_refs(version, &place.prev_events),
    );
    if let Some(room_id) = place.room_id {
        pdu.insert("room_id".into(), string(room_id));
    }
    pdu.insert("sender".into(), string(&draft.sender));
    if let Some(state_key) = &draft.state_key {
        pdu.insert("state_key".into(), string(state_key));
    }
    pdu.insert("type".into(), string(&draft.event_type));
    if version.has_origin() {
        pdu.insert("origin".into(), string(state.server_name.as_str()));
    }

    ruma::signatures::hash_and_sign_event(
        state.server_name.as_str(),
        &state.signing_key,
        &mut pdu,
        &rules.redaction,
    )
    .map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => {
            Error::too_large(format!("Event is larger than {MAX_EVENT_BYTES} bytes"))
        }
        e => Error::internal(format!("signing: {e}")),
    })?;
    let pdu_text = CanonicalJsonValue::Object(pdu.clone()).to_string();
    if pdu_text.len() > MAX_EVENT_BYTES {
        return Err(Error::too_large(format!(
            "Event is larger than {MAX_EVENT_BYTES} bytes"
        )));
    }
    // v1/v2 events are cited with their reference hash (the hash of the redacted PDU without
    // signatures), as the spec's pdu_v1 asks and Synapse does: not with `hashes.sha256`.
    let reference_hash = version
        .server_chosen_event_ids()
        .then(|| ruma::signatures::reference_hash(&pdu, rules))
        .transpose()
        .map_err(|e| Error::too_large(format!("Event cannot be hashed: {e}")))?;
    let (event_id, room_id) = match chosen_id {
        Some(id) => (id, place.room_id.map(str::to_owned)),
        None => {
            let hash = ruma::signatures::reference_hash(&pdu, rules)
                .map_err(|e| Error::too_large(format!("Event cannot be hashed: {e}")))?;
            let room_id = place.room_id.map(str::to_owned);
            (format!("${hash}"), room_id.or(Some(format!("!{hash}"))))
        }
    };
    let room_id = room_id.ok_or_else(|| Error::internal("an event needs a room ID"))?;

    let content = match &draft.redacts {
        Some(redacts) if version.redacts_in_content() => {
            let mut c = draft.content.clone();
            c.insert("redacts".into(), json!(redacts));
            Value::Object(c)
        }
        _ => Value::Object(draft.content.clone()),
    };
    let mut client = json!({
        "content": content,
        "event_id": event_id,
        "origin_server_ts": origin_server_ts,
        "room_id": room_id,
        "sender": draft.sender,
        "type": draft.event_type,
    });
    if let Some(state_key) = &draft.state_key {
        client["state_key"] = json!(state_key);
    }
    if let Some(redacts) = &draft.redacts {
        // Clients of every version read the top-level key.
        client["redacts"] = json!(redacts);
    }
    let (relates_to, rel_type) = relation_of(&draft.content);
    Ok(BuiltEvent {
        event_id,
        room_id,
        event_type: draft.event_type.clone(),
        state_key: draft.state_key.clone(),
        sender: draft.sender.clone(),
        origin_server_ts,
        depth: place.depth,
        pdu: pdu_text,
        client_json: client.to_string(),
        contains_url: draft.content.get("url").is_some_and(Value::is_string),
        content,
        state_unsigned: None,
        device_id: draft.device_id.clone(),
        txn_id: draft.txn_id.clone(),
        relates_to,
        rel_type,
        redacts: draft.redacts.clone(),
        reference_hash,
    })
}

/// `m.relates_to` as (target event, relation type); replies (`m.in_reply_to`) are not relations.
pub(crate) fn relation_of(content: &Map<String, Value>) -> (Option<String>, Option<String>) {
    let Some(relates) = content.get("m.relates_to").and_then(Value::as_object) else {
        return (None, None);
    };
    match (
        relates.get("event_id").and_then(Value::as_str),
        relates.get("rel_type").and_then(Value::as_str),
    ) {
        (Some(id), Some(rel)) => (Some(id.to_owned()), Some(rel.to_owned())),
        _ => (None, None),
    }
}

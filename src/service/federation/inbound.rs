//! Events received from other servers (`/send`, `send_join`): the spec's checks on receipt of a
//! PDU — format and size, the signatures of the servers that must sign it (through the keyring),
//! the content hash (a redacted copy is kept on a mismatch), authorization by its own auth events —
//! and then the writer, which checks it against the room's current state and stores it like a
//! local event (room cache, memberships, notifier, push counts).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::signatures::{PublicKeyMap, Verified};
use ruma::{ServerName, UserId};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sqlx::PgPool;

use super::KeyRing;
use crate::service::auth_check::{self, EventFields, PduView};
use crate::service::events::{self, BuiltEvent, MAX_EVENT_BYTES};
use crate::service::room_cache::{RoomCache, RoomSnapshot};
use crate::service::room_versions::{self, RoomVersion};
use crate::service::writer::{self, IncomingPdu, Writer};
use crate::store;
use crate::{AppState, Error, Result};

mod batch;

/// What receiving PDUs needs.
pub struct Receiver<'a> {
    pub db: &'a PgPool,
    pub keyring: &'a KeyRing,
    pub writer: &'a Writer,
    /// The rooms' current state, to tell the rooms this server is in.
    pub rooms: &'a RoomCache,
    pub server_name: &'a ServerName,
}

impl<'a> Receiver<'a> {
    pub fn of(state: &'a AppState) -> Self {
        Self {
            db: &state.db,
            keyring: &state.keyring,
            writer: &state.writer,
            rooms: &state.rooms,
            server_name: &state.server_name,
        }
    }
}

/// A received PDU, parsed: its room, its version and its ID.
pub struct Parsed {
    pub room_id: String,
    pub version: RoomVersion,
    pub event_id: String,
    pub object: CanonicalJsonObject,
}

/// Parses a PDU of a room this server knows; `Ok(None)` for a room it is not in.
pub async fn parse(db: &PgPool, pdu: &RawValue) -> Result<Option<Parsed>> {
    parse_with(db, pdu, &mut HashMap::new()).await
}

/// As `parse`, remembering the rooms' versions in `versions` (a transaction's PDUs are mostly of
/// one room).
async fn parse_with(
    db: &PgPool,
    pdu: &RawValue,
    versions: &mut HashMap<String, Option<RoomVersion>>,
) -> Result<Option<Parsed>> {
    if pdu.get().len() > MAX_EVENT_BYTES {
        return Err(Error::too_large("A PDU is larger than 65536 bytes"));
    }
    let object: CanonicalJsonObject = serde_json::from_str(pdu.get())
        .map_err(|e| Error::bad_json(format!("A PDU is not a canonical JSON object: {e}")))?;
    let room_id = match object.get("room_id") {
        Some(CanonicalJsonValue::String(r)) => r.clone(),
        _ => return Err(Error::bad_json("A PDU has no room_id")),
    };
    let version = match versions.get(&room_id) {
        Some(known) => *known,
        None => {
            let version = store::rooms::room_version(db, &room_id)
                .await?
                .and_then(|v| room_versions::parse(&v));
            versions.insert(room_id.clone(), version);
            version
        }
    };
    let Some(version) = version else {
        return Ok(None);
    };
    let event_id = event_id_of(version, &object)?;
    Ok(Some(Parsed {
        room_id,
        version,
        event_id,
        object,
    }))
}

/// The event ID: carried in v1/v2 PDUs, the reference hash in later versions.
pub fn event_id_of(version: RoomVersion, object: &CanonicalJsonObject) -> Result<String> {
    if version.server_chosen_event_ids() {
        return match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => Ok(id.clone()),
            _ => Err(Error::bad_json("A v1/v2 PDU needs an event_id")),
        };
    }
    let hash = ruma::signatures::reference_hash(object, version.rules())
        .map_err(|e| Error::bad_json(format!("A PDU cannot be hashed: {e}")))?;
    Ok(format!("${hash}"))
}

impl Receiver<'_> {
    /// Applies the PDUs of a transaction from `origin`, in order: per-PDU results by event ID
    /// (`None` for success), rooms this server is not in left out. A PDU that is not an object with
    /// a room ID fails the whole transaction before anything is applied.
    pub async fn apply_transaction(
        &self,
        pdus: &[Box<RawValue>],
    ) -> Result<BTreeMap<String, Option<String>>> {
        let mut parsed = Vec::with_capacity(pdus.len());
        let mut versions = HashMap::new();
        for pdu in pdus {
            match parse_with(self.db, pdu, &mut versions).await {
                Ok(Some(p)) => parsed.push(Ok(p)),
                Ok(None) => {}
                // Bad format fails the transaction; an unhashable event only itself.
                Err(e) if e.errcode() == "M_BAD_JSON" && !pdu.get().contains("\"room_id\"") => {
                    return Err(e);
                }
                Err(e) => parsed.push(Err(e)),
            }
        }
        let mut results = BTreeMap::new();
        let mut inside = Vec::with_capacity(parsed.len());
        for p in parsed.into_iter().flatten() {
            match self.snapshot_if_outside(&p.room_id).await {
                Ok(None) => inside.push(p),
                Ok(Some(room)) => {
                    let id = p.event_id.clone();
                    let outcome = self.outside(&room, p).await;
                    if let Err(e) = &outcome {
                        tracing::info!(event_id = %id, error = %e, "refused a PDU");
                    }
                    results.insert(id, outcome.err().map(|e| e.to_string()));
                }
                Err(e) => {
                    results.insert(p.event_id.clone(), Some(e.to_string()));
                }
            }
        }
        results.extend(self.apply_in_order(inside.into_iter()).await);
        Ok(results)
    }

    /// The room's state when no local user is joined to it (this server is not in the room:
    /// known only through an invite, or left); `None` when this server is in it.
    async fn snapshot_if_outside(&self, room_id: &str) -> Result<Option<Arc<RoomSnapshot>>> {
        let room = match self.rooms.get(room_id) {
            Some(room) => room,
            None => {
                let mut conn = self.db.acquire().await?;
                writer::cached_snapshot(self.rooms, &mut conn, room_id)
                    .await?
                    .ok_or_else(|| Error::not_found("Unknown room"))?
            }
        };
        let inside = room
            .member_lists()
            .join_servers
            .contains(self.server_name.as_str());
        Ok((!inside).then_some(room))
    }

    /// A PDU of a room this server is not in: ignored (as Synapse does), unless it withdraws a
    /// local user's invite — a leave of theirs sent by their inviter, citing the invite among its
    /// auth events — which is then recorded out of band (the room's state is not known here to
    /// check it further).
    async fn outside(&self, room: &RoomSnapshot, p: Parsed) -> Result<()> {
        let field = |key: &str| match p.object.get(key) {
            Some(CanonicalJsonValue::String(s)) => Some(s.as_str()),
            _ => None,
        };
        let (Some(sender), Some(target)) = (field("sender"), field("state_key")) else {
            return Ok(());
        };
        let membership = match p.object.get("content") {
            Some(CanonicalJsonValue::Object(c)) => c.get("membership").cloned(),
            _ => None,
        };
        let invite = room.entry("m.room.member", target);
        let rescinds = field("type") == Some("m.room.member")
            && membership == Some(CanonicalJsonValue::String("leave".into()))
            && sender != target
            && user_of(target, self.server_name)
            && invite.is_some_and(|i| {
                i.content["membership"] == "invite"
                    && i.sender == sender
                    && refs(p.version, &canonical_value(&p.object, "auth_events"))
                        .contains(&i.event_id)
            });
        if !rescinds {
            tracing::debug!(event_id = %p.event_id, "ignored a PDU of a room this server is not in");
            return Ok(());
        }
        let known =
            store::federation_rooms::known_among(self.db, std::slice::from_ref(&p.event_id));
        if !known.await?.is_empty() {
            return Ok(());
        }
        let object = self.verify(p.version, p.object).await?;
        let pdu = serde_json::to_value(&object).map_err(Error::internal)?;
        let event = to_built(p.version, &p.event_id, &p.room_id, &pdu)?;
        self.writer
            .submit_out_of_band(p.version, event, None)
            .await?;
        Ok(())
    }

    /// Checks a PDU and appends it to its room (known events, soft-failed ones included, are
    /// accepted again as they are).
    pub async fn accept(&self, p: Parsed) -> Result<()> {
        let lookups = self.lookups(std::slice::from_ref(&p)).await?;
        if let Some(incoming) = self.prepare(p, &lookups).await? {
            self.writer.submit_remote(incoming).await?;
        }
        Ok(())
    }

    /// What checking `pdus` reads from the database, in two statements for all of them.
    async fn lookups(&self, pdus: &[Parsed]) -> Result<Lookups> {
        let ids: Vec<String> = pdus.iter().map(|p| p.event_id.clone()).collect();
        let known: HashSet<String> = store::federation_rooms::known_among(self.db, &ids)
            .await?
            .into_iter()
            .collect();
        let mut cited_ids: Vec<String> = pdus
            .iter()
            .filter(|p| !known.contains(&p.event_id))
            .flat_map(|p| {
                let is_create = matches!(p.object.get("type"),
                    Some(CanonicalJsonValue::String(t)) if t == "m.room.create");
                let cited = canonical_value(&p.object, "auth_events");
                auth_ids(p.version, &p.room_id, is_create, &cited)
            })
            .collect();
        cited_ids.sort_unstable();
        cited_ids.dedup();
        let mut auth = HashMap::with_capacity(cited_ids.len());
        if !cited_ids.is_empty() {
            for (id, text) in store::events::pdus_of(self.db, &cited_ids).await? {
                auth.insert(id, serde_json::from_str(&text).map_err(Error::internal)?);
            }
        }
        Ok(Lookups { known, auth })
    }

    /// Checks a PDU for the writer with what `lookups` read; None for an event already stored
    /// (soft-failed ones included).
    async fn prepare(&self, p: Parsed, lookups: &Lookups) -> Result<Option<IncomingPdu>> {
        if lookups.known.contains(&p.event_id) {
            return Ok(None);
        }
        let object = self.verify(p.version, p.object).await?;
        let incoming = incoming(p.version, &p.event_id, &p.room_id, object, &lookups.auth)?;
        Ok(Some(incoming))
    }

    /// Checks the signatures the spec requires; on a content hash mismatch answers the redacted
    /// event, as the spec asks.
    pub(crate) async fn verify(
        &self,
        version: RoomVersion,
        object: CanonicalJsonObject,
    ) -> Result<CanonicalJsonObject> {
        let rules = version.rules();
        let servers = ruma::signatures::required_server_signatures_to_verify_event(
            &object,
            &rules.signatures,
        )
        .map_err(|e| Error::bad_json(format!("signatures: {e}")))?;
        let at = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
            _ => return Err(Error::bad_json("A PDU needs origin_server_ts")),
        };
        let mut keys = PublicKeyMap::new();
        for server in servers {
            let key_ids: Vec<String> = match object.get("signatures") {
                Some(CanonicalJsonValue::Object(s)) => match s.get(server.as_str()) {
                    Some(CanonicalJsonValue::Object(k)) => k.keys().cloned().collect(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let found = self.keyring.keys_valid_at(&server, &key_ids, at).await?;
            keys.insert(server.to_string(), found);
        }
        match ruma::signatures::verify_event(&keys, &object, rules) {
            Ok(Verified::All) => Ok(object),
            Ok(Verified::Signatures) => {
                ruma::canonical_json::redact(object, &rules.redaction, None)
                    .map_err(|e| Error::bad_json(format!("redaction: {e}")))
            }
            Err(e) => Err(Error::forbidden(format!("signature check failed: {e}"))),
        }
    }
}

/// What checking a group of PDUs reads from the database, read once for the group.
struct Lookups {
    /// Those of the PDUs stored here already (soft-failed ones included).
    known: HashSet<String>,
    /// The PDUs, by event ID, that the others' auth events name and that are stored here.
    auth: HashMap<String, Value>,
}

/// The event IDs an event with these `auth_events` is authorized by: those, and in v12 rooms the
/// create event, which every other event cites by the room ID rather than among them.
fn auth_ids(
    version: RoomVersion,
    room_id: &str,
    is_create: bool,
    auth_events: &Value,
) -> Vec<String> {
    let mut ids = refs(version, auth_events);
    if version.room_id_from_create() && !is_create {
        ids.push(format!("${}", room_id.trim_start_matches('!')));
    }
    ids
}

/// The writer's form of a verified PDU, once authorized by its own auth events, found in `auth`.
fn incoming(
    version: RoomVersion,
    event_id: &str,
    room_id: &str,
    object: CanonicalJsonObject,
    auth: &HashMap<String, Value>,
) -> Result<IncomingPdu> {
    let pdu: Value = serde_json::to_value(&object).map_err(Error::internal)?;
    let fields = Fields::of(&pdu)?;
    let view = PduView::new(
        EventFields {
            event_id: Some(event_id),
            room_id: Some(room_id),
            sender: fields.sender,
            event_type: fields.event_type,
            state_key: fields.state_key,
            prev_events: &refs(version, &pdu["prev_events"]),
            redacts: fields.redacts,
        },
        fields.content,
        "",
    )
    .map_err(|e| Error::bad_json(e.0))?;
    if fields.event_type == "m.room.create" {
        return Err(Error::forbidden("A room's create event cannot be appended"));
    }
    let mut ids = auth_ids(version, room_id, false, &pdu["auth_events"]);
    ids.sort_unstable();
    ids.dedup();
    // They must be known events of the room (Axon does not fetch missing ones yet).
    let mut by = Vec::with_capacity(ids.len());
    for id in &ids {
        let pdu = auth
            .get(id)
            .ok_or_else(|| Error::forbidden("Some of the event's auth events are unknown here"))?;
        by.push((id.as_str(), pdu));
    }
    check_by(version, room_id, &view, by.into_iter())?;
    Ok(IncomingPdu {
        event: built_event(version, event_id, room_id, &fields, &pdu)?,
        view,
        may_soft_fail: true,
    })
}

/// Checks `view` against the authorization rules with `auth` (event ID, PDU) as the state.
fn check_by<'a>(
    version: RoomVersion,
    room_id: &str,
    view: &PduView,
    auth: impl Iterator<Item = (&'a str, &'a Value)>,
) -> Result<()> {
    let mut state: HashMap<(String, String), PduView> = HashMap::new();
    for (id, pdu) in auth {
        let f = Fields::of(pdu)?;
        if pdu["room_id"].as_str().is_some_and(|r| r != room_id) {
            return Err(Error::forbidden("An auth event belongs to another room"));
        }
        let Some(key) = f.state_key else {
            return Err(Error::forbidden("An auth event is not a state event"));
        };
        let auth_view = PduView::new(
            EventFields {
                event_id: Some(id),
                room_id: Some(room_id),
                sender: f.sender,
                event_type: f.event_type,
                state_key: Some(key),
                prev_events: &[],
                redacts: None,
            },
            f.content,
            "",
        )
        .map_err(|e| Error::bad_json(e.0))?;
        state.insert((f.event_type.to_owned(), key.to_owned()), auth_view);
    }
    auth_check::check(version, view, |t, k| {
        state.get(&(t.to_owned(), k.to_owned()))
    })
    .map_err(|e| Error::forbidden(format!("not allowed by its auth events: {}", e.0)))
}

/// The authorization rules' view of a PDU.
fn view_of(version: RoomVersion, event_id: &str, pdu: &Value) -> Result<PduView> {
    let f = Fields::of(pdu)?;
    PduView::new(
        EventFields {
            event_id: Some(event_id),
            // A v12 create event has none.
            room_id: pdu["room_id"].as_str(),
            sender: f.sender,
            event_type: f.event_type,
            state_key: f.state_key,
            prev_events: &refs(version, &pdu["prev_events"]),
            redacts: f.redacts,
        },
        f.content,
        "",
    )
    .map_err(|e| Error::bad_json(e.0))
}

/// Whether `pdu` is authorized by its auth events, all of which must be among `known` (event
/// ID → PDU, for checking a state received with a join).
pub fn authorized_by(
    version: RoomVersion,
    event_id: &str,
    room_id: &str,
    pdu: &Value,
    known: &HashMap<String, Value>,
) -> Result<()> {
    let view = view_of(version, event_id, pdu)?;
    let is_create = pdu["type"] == "m.room.create";
    let ids = auth_ids(version, room_id, is_create, &pdu["auth_events"]);
    let mut auth = Vec::with_capacity(ids.len());
    for id in &ids {
        let pdu = known
            .get(id)
            .ok_or_else(|| Error::forbidden(format!("auth event {id} is missing")))?;
        auth.push((id.as_str(), pdu));
    }
    check_by(version, room_id, &view, auth.into_iter())
}

/// The stored form of a checked PDU.
pub fn to_built(
    version: RoomVersion,
    event_id: &str,
    room_id: &str,
    pdu: &Value,
) -> Result<BuiltEvent> {
    let fields = Fields::of(pdu)?;
    built_event(version, event_id, room_id, &fields, pdu)
}

/// The fields of a PDU every check reads.
struct Fields<'a> {
    sender: &'a str,
    event_type: &'a str,
    state_key: Option<&'a str>,
    content: &'a Map<String, Value>,
    redacts: Option<&'a str>,
    depth: i64,
    origin_server_ts: i64,
}

impl<'a> Fields<'a> {
    fn of(pdu: &'a Value) -> Result<Self> {
        let text = |key: &str| {
            pdu[key]
                .as_str()
                .ok_or_else(|| Error::bad_json(format!("A PDU needs a string {key}")))
        };
        let content = pdu["content"]
            .as_object()
            .ok_or_else(|| Error::bad_json("A PDU needs a content object"))?;
        Ok(Self {
            sender: text("sender")?,
            event_type: text("type")?,
            state_key: pdu["state_key"].as_str(),
            content,
            redacts: pdu["redacts"]
                .as_str()
                .or_else(|| content.get("redacts").and_then(Value::as_str)),
            depth: pdu["depth"]
                .as_i64()
                .ok_or_else(|| Error::bad_json("A PDU needs a depth"))?,
            origin_server_ts: pdu["origin_server_ts"]
                .as_i64()
                .ok_or_else(|| Error::bad_json("A PDU needs origin_server_ts"))?,
        })
    }
}

/// A field of a canonical JSON object as plain JSON (`null` when absent).
fn canonical_value(object: &CanonicalJsonObject, key: &str) -> Value {
    object
        .get(key)
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(Value::Null)
}

/// Event IDs of `prev_events`/`auth_events`: plain IDs, or `[id, hashes]` pairs in v1/v2.
pub(crate) fn refs(version: RoomVersion, value: &Value) -> Vec<String> {
    let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter_map(|item| {
            if version.server_chosen_event_ids() {
                item.get(0)?.as_str().map(str::to_owned)
            } else {
                item.as_str().map(str::to_owned)
            }
        })
        .collect()
}

/// The stored form of a received event, as `events::build` makes a local one.
fn built_event(
    version: RoomVersion,
    event_id: &str,
    room_id: &str,
    f: &Fields<'_>,
    pdu: &Value,
) -> Result<BuiltEvent> {
    UserId::parse(f.sender).map_err(|_| Error::bad_json("Invalid sender"))?;
    let mut client = json!({
        "content": f.content,
        "event_id": event_id,
        "origin_server_ts": f.origin_server_ts,
        "room_id": room_id,
        "sender": f.sender,
        "type": f.event_type,
    });
    if let Some(key) = f.state_key {
        client["state_key"] = json!(key);
    }
    if let Some(redacts) = f.redacts {
        client["redacts"] = json!(redacts);
    }
    let mut stored = pdu.clone();
    if let Some(o) = stored.as_object_mut() {
        o.remove("unsigned");
    }
    let (relates_to, rel_type) = events::relation_of(f.content);
    Ok(BuiltEvent {
        event_id: event_id.to_owned(),
        room_id: room_id.to_owned(),
        event_type: f.event_type.to_owned(),
        state_key: f.state_key.map(str::to_owned),
        sender: f.sender.to_owned(),
        origin_server_ts: f.origin_server_ts,
        depth: f.depth,
        pdu: stored.to_string(),
        client_json: client.to_string(),
        content: Value::Object(f.content.clone()),
        state_unsigned: None,
        device_id: None,
        txn_id: None,
        relates_to,
        rel_type,
        contains_url: f.content.get("url").is_some_and(Value::is_string),
        redacts: f.redacts.map(str::to_owned),
        // v1/v2 events are cited with their reference hash, as `events::build` keeps it.
        reference_hash: if version.server_chosen_event_ids() {
            let object: ruma::CanonicalJsonObject = serde_json::from_value(pdu.clone())
                .map_err(|e| Error::bad_json(format!("Event is not canonical JSON: {e}")))?;
            Some(
                ruma::signatures::reference_hash(&object, version.rules())
                    .map_err(|e| Error::bad_json(format!("Event cannot be hashed: {e}")))?,
            )
        } else {
            None
        },
    })
}

/// Whether `user` belongs to `server`.
pub fn user_of(user: &str, server: &ServerName) -> bool {
    UserId::parse(user).is_ok_and(|u| u.server_name() == server)
}

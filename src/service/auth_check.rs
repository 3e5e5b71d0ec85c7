//! Authorization of the events local users create, through ruma's `state-res`: the same
//! implementation of the spec's authorization rules (every room version) that other Rust
//! homeservers run.
//!
//! Each event is checked against the room's *current* state (the state before the event), which is
//! also where its `auth_events` come from. A light [`PduView`] presents a draft, or a cached state
//! event, as ruma's [`Event`]: IDs parsed once, content kept as raw JSON (ruma deserialises only the
//! fields it needs, lazily).
//!
//! Local checks beyond ruma's, for events this server creates (not rules of the spec's text):
//! * the content must be a JSON object;
//! * `m.room.create` must have the empty state key and `content.room_version` equal to the room's
//!   version (an absent one would mean version 1); in v1–v10 `content.creator` must be a user ID
//!   (the spec only asks for the key; anything else would leave the room without a creator);
//! * a join is sent by the user who joins, the creator's first join included (the spec lets
//!   anyone send that one);
//! * third-party invites (`content.third_party_invite` on an invite) are refused: Axon does not
//!   support them (`invite_3pid`), so there is no identity server whose signature could be trusted.

use ruma::events::{StateEventType, TimelineEventType};
use ruma::state_res::{self, Event};
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde_json::Value;
use serde_json::value::RawValue as RawJsonValue;

use crate::service::room_versions::RoomVersion;

/// Refusal with a reason a person can read (becomes 403 M_FORBIDDEN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

/// An event as ruma's authorization rules see it.
#[derive(Debug)]
pub struct PduView {
    /// The event's ID; for a draft not yet hashed, a stand-in with this server's name.
    id: OwnedEventId,
    /// Only the create event's check reads it.
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    kind: TimelineEventType,
    state_key: Option<String>,
    content: Box<RawJsonValue>,
    prev_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    /// For the room's `m.room.power_levels`: its content split so that a check can be given the
    /// levels of just the users it looks up (see [`PowerLevelsSplit`]).
    levels: Option<PowerLevelsSplit>,
}

/// Power levels content split at `users`. ruma parses the whole content of the power levels at
/// each check, and `users` holds an entry per privileged member: thousands in a big room, a
/// millisecond per message. A check that does not change the power levels reads the levels of at
/// most three users (the sender, the target of a membership, the user vouching for a join), so it
/// is given the content with only their entries.
#[derive(Debug)]
struct PowerLevelsSplit {
    /// Every other top-level entry, as JSON text `"key":value,…` (empty when there are none).
    rest: String,
    /// `users`: user ID → the level's JSON text.
    users: std::collections::HashMap<String, Box<RawJsonValue>>,
}

impl PowerLevelsSplit {
    /// `None` when the content has no usable shape (not an object, `users` not an object): such
    /// content is then given to ruma whole, for it to judge.
    fn of(content: &RawJsonValue) -> Option<Self> {
        let top: std::collections::BTreeMap<String, Box<RawJsonValue>> =
            serde_json::from_str(content.get()).ok()?;
        let mut rest = String::new();
        let mut users = std::collections::HashMap::new();
        for (key, value) in top {
            if key == "users" {
                users = serde_json::from_str(value.get()).ok()?;
                continue;
            }
            if !rest.is_empty() {
                rest.push(',');
            }
            rest.push_str(&serde_json::to_string(&key).ok()?);
            rest.push(':');
            rest.push_str(value.get());
        }
        Some(Self { rest, users })
    }

    /// The content with the `users` entries of `wanted` only.
    fn content_for(&self, wanted: &[&str]) -> Option<Box<RawJsonValue>> {
        let mut text = String::with_capacity(self.rest.len() + 64);
        text.push('{');
        text.push_str(&self.rest);
        if !self.rest.is_empty() {
            text.push(',');
        }
        text.push_str("\"users\":{");
        let mut first = true;
        for (i, user) in wanted.iter().enumerate() {
            if wanted[..i].contains(user) {
                continue;
            }
            if let Some(level) = self.users.get(*user) {
                if !first {
                    text.push(',');
                }
                first = false;
                text.push_str(&serde_json::to_string(user).ok()?);
                text.push(':');
                text.push_str(level.get());
            }
        }
        text.push_str("}}");
        RawJsonValue::from_string(text).ok()
    }
}

/// The fields of an event the rules need, as plain strings.
pub struct EventFields<'a> {
    pub event_id: Option<&'a str>,
    pub room_id: Option<&'a str>,
    pub sender: &'a str,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub prev_events: &'a [String],
    pub redacts: Option<&'a str>,
}

fn bad(what: &str, value: &str) -> AuthError {
    AuthError(format!("{value:?} is not a valid {what}"))
}

impl PduView {
    /// Parses `fields` once; `content` must be a JSON object. `server_name` names the stand-in
    /// event ID of a draft.
    pub fn new(
        fields: EventFields<'_>,
        content: &impl serde::Serialize,
        server_name: &str,
    ) -> Result<Self, AuthError> {
        let id = match fields.event_id {
            Some(id) => EventId::parse(id).map_err(|_| bad("event ID", id))?,
            None => EventId::parse(format!("$pending:{server_name}"))
                .map_err(|_| bad("server name", server_name))?,
        };
        let room_id = fields
            .room_id
            .map(|r| RoomId::parse(r).map_err(|_| bad("room ID", r)))
            .transpose()?;
        let prev_events = fields
            .prev_events
            .iter()
            .map(|p| EventId::parse(p).map_err(|_| bad("event ID", p)))
            .collect::<Result<_, _>>()?;
        let redacts = fields
            .redacts
            .map(|r| EventId::parse(r).map_err(|_| bad("event ID", r)))
            .transpose()?;
        let content = serde_json::value::to_raw_value(content)
            .map_err(|e| AuthError(format!("content: {e}")))?;
        let levels = (fields.event_type == "m.room.power_levels" && fields.state_key == Some(""))
            .then(|| PowerLevelsSplit::of(&content))
            .flatten();
        Ok(Self {
            id,
            room_id,
            sender: UserId::parse(fields.sender).map_err(|_| bad("user ID", fields.sender))?,
            kind: TimelineEventType::from(fields.event_type),
            state_key: fields.state_key.map(str::to_owned),
            content,
            prev_events,
            redacts,
            levels,
        })
    }

    /// This power levels event with only the `users` entries of `wanted` (see
    /// [`PowerLevelsSplit`]); `None` when it was not split.
    fn with_users(&self, wanted: &[&str]) -> Option<Self> {
        let content = self.levels.as_ref()?.content_for(wanted)?;
        Some(Self {
            id: self.id.clone(),
            room_id: None,
            sender: self.sender.clone(),
            kind: self.kind.clone(),
            state_key: self.state_key.clone(),
            content,
            prev_events: Vec::new(),
            redacts: None,
            levels: None,
        })
    }

    /// The same view under its final event ID.
    pub fn with_id(mut self, event_id: &str) -> Result<Self, AuthError> {
        self.id = EventId::parse(event_id).map_err(|_| bad("event ID", event_id))?;
        Ok(self)
    }
}

impl Event for PduView {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        MilliSecondsSinceUnixEpoch(ruma::UInt::MIN)
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        // The create event, the only one whose auth events ruma reads here, has none.
        Box::new(std::iter::empty())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

/// The state event types the rules look up, as strings (ruma's enum shows them only through
/// `Display`, which would allocate per lookup).
fn state_type_str(t: &StateEventType) -> Option<&'static str> {
    Some(match t {
        StateEventType::RoomCreate => "m.room.create",
        StateEventType::RoomMember => "m.room.member",
        StateEventType::RoomPowerLevels => "m.room.power_levels",
        StateEventType::RoomJoinRules => "m.room.join_rules",
        StateEventType::RoomThirdPartyInvite => "m.room.third_party_invite",
        _ => return None,
    })
}

/// Checks `event` against the authorization rules of `version`, given the room's current state
/// before it (`state(type, state_key)`); for `m.room.create` the state is not read.
pub fn check<'s>(
    version: RoomVersion,
    event: &PduView,
    state: impl Fn(&str, &str) -> Option<&'s PduView>,
) -> Result<(), AuthError> {
    let rules = &version.rules().authorization;
    let authoriser = local_checks(version, event)?;
    if event.kind == TimelineEventType::RoomCreate {
        return state_res::check_state_independent_auth_rules(rules, event, |_: &EventId| {
            None::<&PduView>
        })
        .map_err(AuthError);
    }
    // Only a change of the power levels needs all of `users`.
    let levels = if event.kind == TimelineEventType::RoomPowerLevels {
        None
    } else {
        let mut wanted = vec![event.sender.as_str()];
        wanted.extend(event.state_key.as_deref().filter(|k| k.starts_with('@')));
        wanted.extend(authoriser.as_deref());
        state("m.room.power_levels", "").and_then(|pl| pl.with_users(&wanted))
    };
    state_res::check_state_dependent_auth_rules(rules, event, |t: &StateEventType, key: &str| {
        match state_type_str(t) {
            Some("m.room.power_levels") if levels.is_some() => levels.as_ref(),
            Some(t) => state(t, key),
            None => state(&t.to_string(), key),
        }
    })
    .map_err(AuthError)
}

/// The rules Axon adds for its own events (see the module documentation). Answers the user named
/// by `join_authorised_via_users_server`, if any.
fn local_checks(version: RoomVersion, event: &PduView) -> Result<Option<String>, AuthError> {
    #[derive(serde::Deserialize)]
    struct Fields<'a> {
        #[serde(borrow)]
        room_version: Option<&'a RawJsonValue>,
        #[serde(borrow)]
        membership: Option<&'a RawJsonValue>,
        #[serde(borrow)]
        third_party_invite: Option<&'a RawJsonValue>,
        #[serde(borrow)]
        creator: Option<&'a RawJsonValue>,
        join_authorised_via_users_server: Option<Value>,
    }
    if !event.content.get().starts_with('{') {
        return Err(AuthError(format!(
            "the content of {} must be a JSON object",
            event.kind
        )));
    }
    let is_create = event.kind == TimelineEventType::RoomCreate;
    let is_member = event.kind == TimelineEventType::RoomMember;
    if !is_create && !is_member {
        return Ok(None);
    }
    let fields: Fields<'_> = serde_json::from_str(event.content.get())
        .map_err(|e| AuthError(format!("malformed content of {}: {e}", event.kind)))?;
    if is_create {
        if event.state_key.as_deref() != Some("") {
            return Err(AuthError(
                "m.room.create must be a state event with an empty state key".into(),
            ));
        }
        let expected = format!("\"{}\"", version.as_str());
        match fields.room_version.map(RawJsonValue::get) {
            Some(v) if v == expected => {}
            Some(v) => {
                return Err(AuthError(format!(
                    "content.room_version {v} does not match the room version {expected}"
                )));
            }
            None => {
                return Err(AuthError(format!(
                    "m.room.create needs content.room_version {expected} (without it the room would be version 1)"
                )));
            }
        }
        if version.create_has_creator_field()
            && fields
                .creator
                .and_then(|c| serde_json::from_str::<String>(c.get()).ok())
                .is_none_or(|c| UserId::parse(c).is_err())
        {
            return Err(AuthError(format!(
                "m.room.create in room version {} needs content.creator, a user ID",
                version.as_str()
            )));
        }
        return Ok(None);
    }
    let membership = fields.membership.map(RawJsonValue::get);
    if membership == Some("\"invite\"") && fields.third_party_invite.is_some() {
        return Err(AuthError("third-party invites are not supported".into()));
    }
    if membership == Some("\"join\"") && event.state_key.as_deref() != Some(event.sender.as_str()) {
        return Err(AuthError(format!(
            "{} cannot make someone else join the room; users can only join themselves",
            event.sender
        )));
    }
    Ok(match fields.join_authorised_via_users_server {
        Some(Value::String(user)) => Some(user),
        _ => None,
    })
}

#[cfg(test)]
mod tests;

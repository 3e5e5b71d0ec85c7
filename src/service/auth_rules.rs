//! Room authorisation rules for room versions 10, 11 and 12, for events created by
//! local users.
//!
//! This follows the "Authorisation rules" sections of the Matrix room version
//! specifications (`/rooms/v10`, `/rooms/v11`, `/rooms/v12`), adapted to a homeserver
//! without federation:
//!
//! * events are checked against the room's *current* state (the state before the
//!   event), which stands in for the event's `auth_events` and `prev_events`;
//! * rules about signatures, `prev_events`, `room_id` and the shape of `auth_events`
//!   concern the event envelope, which the caller builds itself, and are not checked
//!   here (see [`check`] for the exact list);
//! * third-party invites (`content.third_party_invite` on an invite) are refused;
//! * joins to `restricted` / `knock_restricted` rooms by users who are neither invited
//!   nor joined need `join_authorised_via_users_server` naming a joined user with the
//!   power to invite (the rule of room versions 8 and later); the signature of that
//!   user's server is the envelope's business (here it is always this server's).
//!
//! Redactions: `m.room.redaction` events are authorised like any other event (the
//! *redact level* is not part of the auth rules). Whether a redaction may actually
//! take effect is a separate check, which callers perform with [`may_redact`].

use serde_json::Value;
use std::fmt;

/// The room versions Axon implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomVersion {
    V10,
    V11,
    V12,
}

impl RoomVersion {
    /// The version string as it appears in `m.room.create` `content.room_version`.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomVersion::V10 => "10",
            RoomVersion::V11 => "11",
            RoomVersion::V12 => "12",
        }
    }

    /// Whether room creators have infinite power (room version 12 and later).
    pub fn has_privileged_creators(self) -> bool {
        matches!(self, RoomVersion::V12)
    }
}

/// A state event as the auth rules need it.
pub struct StateEvent<'a> {
    pub sender: &'a str,
    pub content: &'a Value,
}

/// Read access to the room's current state (type, state_key) -> event.
pub trait RoomState {
    fn get(&self, event_type: &str, state_key: &str) -> Option<StateEvent<'_>>;
}

/// The event being authorised.
pub struct NewEvent<'a> {
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub content: &'a Value,
}

/// Refusal with a reason a person can read (becomes 403 M_FORBIDDEN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

fn deny<T>(reason: impl Into<String>) -> Result<T, AuthError> {
    Err(AuthError(reason.into()))
}

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// The power level of room creators in room version 12 ("infinitely high").
pub const CREATOR_POWER_LEVEL: i64 = i64::MAX;

/// Largest power level value a power levels event may hold (canonical JSON range).
pub const MAX_POWER_LEVEL_VALUE: i64 = (1 << 53) - 1;
/// Smallest power level value a power levels event may hold (canonical JSON range).
pub const MIN_POWER_LEVEL_VALUE: i64 = -((1 << 53) - 1);

/// Level of the room creator(s) when the room has no `m.room.power_levels` event
/// (room versions 10 and 11; in version 12 creators are infinitely powerful).
pub const DEFAULT_CREATOR_LEVEL: i64 = 100;

/// Default values of the top-level power level fields.
const DEFAULT_USERS: i64 = 0;
const DEFAULT_EVENTS: i64 = 0;
const DEFAULT_STATE: i64 = 50;
const DEFAULT_BAN: i64 = 50;
const DEFAULT_KICK: i64 = 50;
const DEFAULT_INVITE: i64 = 0;
const DEFAULT_REDACT: i64 = 50;
const DEFAULT_NOTIFICATION: i64 = 50;

/// The integer-valued top-level properties of `m.room.power_levels`.
const LEVEL_FIELDS: [&str; 7] = [
    "users_default",
    "events_default",
    "state_default",
    "ban",
    "redact",
    "kick",
    "invite",
];

const CREATE: &str = "m.room.create";
const MEMBER: &str = "m.room.member";
const POWER_LEVELS: &str = "m.room.power_levels";
const JOIN_RULES: &str = "m.room.join_rules";
const THIRD_PARTY_INVITE: &str = "m.room.third_party_invite";
/// The member event key naming the user whose server vouched for a restricted join.
pub const AUTHORISING_USER: &str = "join_authorised_via_users_server";

// ---------------------------------------------------------------------------
// State accessors
// ---------------------------------------------------------------------------

/// The membership (`join`, `invite`, `leave`, `ban`, `knock`, ...) of `user_id`
/// in the current state, if the user has a membership event.
pub fn membership<'s>(state: &'s dyn RoomState, user_id: &str) -> Option<&'s str> {
    state
        .get(MEMBER, user_id)
        .and_then(|e| e.content.get("membership"))
        .and_then(Value::as_str)
}

/// The room's join rule (`content.join_rule` of `m.room.join_rules`), if any.
pub fn join_rule(state: &dyn RoomState) -> Option<&str> {
    state
        .get(JOIN_RULES, "")
        .and_then(|e| e.content.get("join_rule"))
        .and_then(Value::as_str)
}

/// The "original" creator of the room: the user whose first join right after
/// `m.room.create` is allowed, and who has level 100 without a power levels event
/// in v10/v11. In v10 this is `content.creator` (falling back to the `sender` if
/// that is missing); in v11 and later it is the `sender` of the create event.
fn original_creator<'s>(version: RoomVersion, create: &StateEvent<'s>) -> &'s str {
    match version {
        RoomVersion::V10 => create
            .content
            .get("creator")
            .and_then(Value::as_str)
            .unwrap_or(create.sender),
        RoomVersion::V11 | RoomVersion::V12 => create.sender,
    }
}

/// The room creators under `version`.
///
/// * v10: `content.creator` of `m.room.create`;
/// * v11: the `sender` of `m.room.create`;
/// * v12: the `sender` of `m.room.create` plus every string in
///   `content.additional_creators`.
///
/// Empty when the room has no create event.
pub fn creators(version: RoomVersion, state: &dyn RoomState) -> Vec<String> {
    let Some(create) = state.get(CREATE, "") else {
        return Vec::new();
    };
    let mut out = vec![original_creator(version, &create).to_owned()];
    if version.has_privileged_creators()
        && let Some(extra) = create
            .content
            .get("additional_creators")
            .and_then(Value::as_array)
    {
        for user in extra.iter().filter_map(Value::as_str) {
            if !out.iter().any(|u| u == user) {
                out.push(user.to_owned());
            }
        }
    }
    out
}

/// Whether `user_id` is a room creator under `version` (see [`creators`]).
pub fn is_creator(version: RoomVersion, state: &dyn RoomState, user_id: &str) -> bool {
    let Some(create) = state.get(CREATE, "") else {
        return false;
    };
    if original_creator(version, &create) == user_id {
        return true;
    }
    version.has_privileged_creators()
        && create
            .content
            .get("additional_creators")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(user_id)))
}

/// Whether `user_id` is the only room creator (no `additional_creators` in v12).
pub fn is_sole_creator(version: RoomVersion, state: &dyn RoomState, user_id: &str) -> bool {
    let c = creators(version, state);
    c.len() == 1 && c[0] == user_id
}

fn power_levels_content(state: &dyn RoomState) -> Option<&Value> {
    state.get(POWER_LEVELS, "").map(|e| e.content)
}

/// A top-level level field of the current power levels (or its default).
fn level_field(state: &dyn RoomState, field: &str, default: i64) -> i64 {
    power_levels_content(state)
        .and_then(|c| c.get(field))
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

/// The power level of `user_id` under the current state.
///
/// Room creators in v12 count as infinitely powerful: [`CREATOR_POWER_LEVEL`]
/// (`i64::MAX`). Without a power levels event the creator has level 100 in
/// v10/v11 and everyone else 0.
pub fn user_power_level(version: RoomVersion, state: &dyn RoomState, user_id: &str) -> i64 {
    if version.has_privileged_creators() && is_creator(version, state, user_id) {
        return CREATOR_POWER_LEVEL;
    }
    match power_levels_content(state) {
        Some(content) => content
            .get("users")
            .and_then(|u| u.get(user_id))
            .and_then(Value::as_i64)
            .unwrap_or_else(|| {
                content
                    .get("users_default")
                    .and_then(Value::as_i64)
                    .unwrap_or(DEFAULT_USERS)
            }),
        None => {
            if is_creator(version, state, user_id) {
                DEFAULT_CREATOR_LEVEL
            } else {
                DEFAULT_USERS
            }
        }
    }
}

/// The power level needed to send `event_type` (state or not): `events[event_type]`
/// if set, otherwise `state_default` (default 50, also without a power levels
/// event) for state events or `events_default` (default 0) for other events.
///
/// Membership events are not governed by this level (see [`invite_level`],
/// [`kick_level`], [`ban_level`]).
pub fn required_event_level(
    _version: RoomVersion,
    state: &dyn RoomState,
    event_type: &str,
    is_state: bool,
) -> i64 {
    let content = power_levels_content(state);
    if let Some(level) = content
        .and_then(|c| c.get("events"))
        .and_then(|e| e.get(event_type))
        .and_then(Value::as_i64)
    {
        return level;
    }
    if is_state {
        level_field(state, "state_default", DEFAULT_STATE)
    } else {
        level_field(state, "events_default", DEFAULT_EVENTS)
    }
}

/// The *invite level* (default 0).
pub fn invite_level(state: &dyn RoomState) -> i64 {
    level_field(state, "invite", DEFAULT_INVITE)
}

/// The *kick level* (default 50).
pub fn kick_level(state: &dyn RoomState) -> i64 {
    level_field(state, "kick", DEFAULT_KICK)
}

/// The *ban level* (default 50).
pub fn ban_level(state: &dyn RoomState) -> i64 {
    level_field(state, "ban", DEFAULT_BAN)
}

/// The *redact level* (default 50): needed to redact other users' events.
pub fn redact_level(state: &dyn RoomState) -> i64 {
    level_field(state, "redact", DEFAULT_REDACT)
}

/// The level needed to trigger the notification `key` (e.g. `room` for `@room`);
/// default 50.
pub fn notification_level(state: &dyn RoomState, key: &str) -> i64 {
    power_levels_content(state)
        .and_then(|c| c.get("notifications"))
        .and_then(|n| n.get(key))
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_NOTIFICATION)
}

/// Whether a redaction sent by `redactor` may take effect on an event sent by
/// `original_sender`: always for one's own events, otherwise only with at least
/// the *redact level*.
///
/// This is the client-facing rule for a single-server world (the spec's "same
/// server" condition is meant for federation and would let any local user redact
/// any other local user's events). The `m.room.redaction` event itself must first
/// pass [`check`] (which applies `events["m.room.redaction"]` / `events_default`).
pub fn may_redact(
    version: RoomVersion,
    state: &dyn RoomState,
    redactor: &str,
    original_sender: &str,
) -> Result<(), AuthError> {
    if redactor == original_sender {
        return Ok(());
    }
    let have = user_power_level(version, state, redactor);
    let need = redact_level(state);
    if have >= need {
        Ok(())
    } else {
        deny(format!(
            "you need power level {need} to redact other users' events (you have {})",
            show_level(have)
        ))
    }
}

/// Formats a power level for error messages.
fn show_level(level: i64) -> String {
    if level == CREATOR_POWER_LEVEL {
        "infinite, as a room creator".to_owned()
    } else {
        level.to_string()
    }
}

// ---------------------------------------------------------------------------
// Identifier grammar
// ---------------------------------------------------------------------------

/// Whether `s` is a user ID the rules accept: `@localpart:server_name`, at most
/// 255 bytes, with a valid server name. The localpart follows the spec's
/// *historical* grammar that servers must accept (anything but `:` and NUL), so
/// that existing user IDs keep working.
pub fn is_valid_user_id(s: &str) -> bool {
    if s.len() > 255 {
        return false;
    }
    let Some(rest) = s.strip_prefix('@') else {
        return false;
    };
    let Some((localpart, server)) = rest.split_once(':') else {
        return false;
    };
    !localpart.contains('\0') && is_valid_server_name(server)
}

/// `server_name = hostname [ ":" port ]` per the appendices.
pub fn is_valid_server_name(s: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let ip6 = &rest[..end];
        let ok = (2..=45).contains(&ip6.len())
            && ip6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        let after = &rest[end + 1..];
        let port = if after.is_empty() {
            None
        } else {
            match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            }
        };
        (ok, port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let ok = (1..=255).contains(&host.len())
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        (ok, port)
    };
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// The server name of a user ID (everything after the first `:`).
fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map(|(_, s)| s).unwrap_or("")
}

// ---------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------

/// Checks `event` against the authorization rules of `version`, given the current
/// state *before* the event. For m.room.create (the first event) the state is empty.
///
/// Rules that concern the event envelope and are therefore the caller's job (not
/// checked here): signatures; `prev_events` (stood in for by "the room already has
/// a create event"); the `room_id` domain (v10/v11) or absence (v12) on
/// `m.room.create`; the `room_id` naming the create event (v12); the auth events
/// selection; signature checks for `join_authorised_via_users_server`.
///
/// Deliberate tightenings for local events, beyond the spec's text:
/// * event `content` must be a JSON object;
/// * `m.room.create` must have the empty state key, and `content.room_version` must
///   be present and equal `version` (an absent one means room version 1);
/// * in v10 `content.creator` must be a string;
/// * the creator's first join right after the create event must be sent by the
///   creator themself;
/// * power level values must lie in the canonical JSON integer range.
pub fn check(
    version: RoomVersion,
    event: &NewEvent<'_>,
    state: &dyn RoomState,
) -> Result<(), AuthError> {
    if !event.content.is_object() {
        return deny(format!(
            "the content of {} must be a JSON object",
            event.event_type
        ));
    }

    // Rule 1: m.room.create.
    if event.event_type == CREATE {
        return check_create(version, event, state);
    }

    // Rules 2/3 ("considering the auth events"): the room must have a create event.
    let Some(create) = state.get(CREATE, "") else {
        return deny("the room does not exist (it has no m.room.create event)");
    };

    // m.federate = false: only users of the creator's server may take part.
    if create.content.get("m.federate") == Some(&Value::Bool(false))
        && server_of(event.sender) != server_of(create.sender)
    {
        return deny(format!(
            "this room does not federate: {} is not on the room creator's server",
            event.sender
        ));
    }

    // m.room.member.
    if event.event_type == MEMBER {
        return check_member(version, event, state, &create);
    }

    // The sender must be joined.
    let sender_membership = membership(state, event.sender);
    if sender_membership != Some("join") {
        return deny(not_joined(event.sender, sender_membership));
    }

    let sender_level = user_power_level(version, state, event.sender);

    // m.room.third_party_invite: the invite level, and nothing else.
    if event.event_type == THIRD_PARTY_INVITE {
        let need = invite_level(state);
        if sender_level >= need {
            return Ok(());
        }
        return deny(format!(
            "you need power level {need} to invite users (you have {})",
            show_level(sender_level)
        ));
    }

    // The event type's required power level.
    let need = required_event_level(version, state, event.event_type, event.state_key.is_some());
    if need > sender_level {
        return deny(format!(
            "you need power level {need} to send {} (you have {})",
            event.event_type,
            show_level(sender_level)
        ));
    }

    // State keys that are user IDs belong to that user.
    if let Some(state_key) = event.state_key
        && state_key.starts_with('@')
        && state_key != event.sender
    {
        return deny(format!(
            "the state key {state_key} belongs to another user; only {state_key} may set it"
        ));
    }

    if event.event_type == POWER_LEVELS {
        return check_power_levels(version, event, state, sender_level);
    }

    Ok(())
}

fn not_joined(user: &str, membership: Option<&str>) -> String {
    match membership {
        Some("ban") => format!("{user} is banned from this room"),
        Some("invite") => format!("{user} is invited but has not joined the room"),
        Some("knock") => format!("{user} has knocked but is not in the room"),
        _ => format!("{user} is not in the room"),
    }
}

fn check_create(
    version: RoomVersion,
    event: &NewEvent<'_>,
    state: &dyn RoomState,
) -> Result<(), AuthError> {
    // "If it has any prev_events, reject": the create event must be the first event.
    if state.get(CREATE, "").is_some() {
        return deny("the room already exists: m.room.create can only be the first event");
    }
    if event.state_key != Some("") {
        return deny("m.room.create must be a state event with an empty state key");
    }
    let content = event.content;
    match content.get("room_version") {
        None => {
            return deny(format!(
                "m.room.create needs content.room_version \"{}\" (without it the room would be version 1)",
                version.as_str()
            ));
        }
        Some(v) if v.as_str() != Some(version.as_str()) => {
            return deny(format!(
                "content.room_version {v} does not match the room version \"{}\"",
                version.as_str()
            ));
        }
        Some(_) => {}
    }
    match version {
        RoomVersion::V10 => match content.get("creator") {
            None => return deny("m.room.create in room version 10 needs content.creator"),
            Some(c) if !c.is_string() => {
                return deny("content.creator of m.room.create must be a user ID");
            }
            Some(_) => {}
        },
        RoomVersion::V11 => {}
        RoomVersion::V12 => {
            if let Some(extra) = content.get("additional_creators") {
                let Some(list) = extra.as_array() else {
                    return deny("content.additional_creators must be an array of user IDs");
                };
                for entry in list {
                    match entry.as_str() {
                        Some(user) if is_valid_user_id(user) => {}
                        Some(user) => {
                            return deny(format!(
                                "content.additional_creators contains {user:?}, which is not a valid user ID"
                            ));
                        }
                        None => {
                            return deny(format!(
                                "content.additional_creators contains {entry}, which is not a user ID string"
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_member(
    version: RoomVersion,
    event: &NewEvent<'_>,
    state: &dyn RoomState,
    create: &StateEvent<'_>,
) -> Result<(), AuthError> {
    let Some(target) = event.state_key else {
        return deny("m.room.member events need a state key (the user ID they are about)");
    };
    let Some(membership_value) = event.content.get("membership") else {
        return deny("m.room.member events need content.membership");
    };
    let Some(new_membership) = membership_value.as_str() else {
        return deny(format!("unknown membership {membership_value}"));
    };
    let sender = event.sender;
    let sender_membership = membership(state, sender);
    let target_membership = membership(state, target);

    match new_membership {
        "join" => {
            // The creator's own join right after m.room.create. The state stands in for
            // "the only previous event is m.room.create": before the creator has joined
            // nobody can send anything, so the creator having no membership event, and the
            // room having neither power levels nor join rules, means nothing else happened.
            if target == original_creator(version, create)
                && sender == target
                && target_membership.is_none()
                && state.get(POWER_LEVELS, "").is_none()
                && state.get(JOIN_RULES, "").is_none()
            {
                return Ok(());
            }
            if sender != target {
                return deny(format!(
                    "{sender} cannot make {target} join the room; users can only join themselves"
                ));
            }
            if sender_membership == Some("ban") {
                return deny(format!("{sender} is banned from this room"));
            }
            let invited_or_joined = matches!(target_membership, Some("invite" | "join"));
            match join_rule(state) {
                Some("public") => Ok(()),
                Some(rule @ ("invite" | "knock")) => {
                    if invited_or_joined {
                        Ok(())
                    } else {
                        deny(format!(
                            "{sender} cannot join: the room's join rule is {rule} and {sender} has not been invited"
                        ))
                    }
                }
                Some(rule @ ("restricted" | "knock_restricted")) => {
                    if invited_or_joined {
                        Ok(())
                    } else {
                        check_authorised_join(version, event, state, rule)
                    }
                }
                Some(rule) => deny(format!(
                    "{sender} cannot join: the room's join rule {rule:?} does not allow joining"
                )),
                None => deny(format!("{sender} cannot join: the room has no join rules")),
            }
        }
        "invite" => {
            if event.content.get("third_party_invite").is_some() {
                return deny("third-party invites are not supported");
            }
            if sender_membership != Some("join") {
                return deny(not_joined(sender, sender_membership));
            }
            match target_membership {
                Some("join") => return deny(format!("{target} is already in the room")),
                Some("ban") => return deny(format!("{target} is banned from this room")),
                _ => {}
            }
            let have = user_power_level(version, state, sender);
            let need = invite_level(state);
            if have >= need {
                Ok(())
            } else {
                deny(format!(
                    "you need power level {need} to invite users (you have {})",
                    show_level(have)
                ))
            }
        }
        "leave" => {
            if sender == target {
                return match sender_membership {
                    Some("invite" | "join" | "knock") => Ok(()),
                    Some("ban") => deny(format!(
                        "{sender} is banned from this room and cannot unban themself"
                    )),
                    _ => deny(format!("{sender} is not in the room")),
                };
            }
            if sender_membership != Some("join") {
                return deny(not_joined(sender, sender_membership));
            }
            let have = user_power_level(version, state, sender);
            let target_banned = target_membership == Some("ban");
            let action = if target_banned { "unban" } else { "kick" };
            if target_banned {
                let need = ban_level(state);
                if have < need {
                    return deny(format!(
                        "you need power level {need} to unban users (you have {})",
                        show_level(have)
                    ));
                }
            }
            let need = kick_level(state);
            if have < need {
                return deny(format!(
                    "you need power level {need} to {action} users (you have {})",
                    show_level(have)
                ));
            }
            let target_level = user_power_level(version, state, target);
            if target_level < have {
                Ok(())
            } else {
                deny(outranked(action, target, target_level, have))
            }
        }
        "ban" => {
            if sender_membership != Some("join") {
                return deny(not_joined(sender, sender_membership));
            }
            let have = user_power_level(version, state, sender);
            let need = ban_level(state);
            if have < need {
                return deny(format!(
                    "you need power level {need} to ban users (you have {})",
                    show_level(have)
                ));
            }
            let target_level = user_power_level(version, state, target);
            if target_level < have {
                Ok(())
            } else {
                deny(outranked("ban", target, target_level, have))
            }
        }
        "knock" => {
            match join_rule(state) {
                Some("knock" | "knock_restricted") => {}
                _ => return deny("this room does not accept knocks"),
            }
            if sender != target {
                return deny(format!("{sender} cannot knock on behalf of {target}"));
            }
            match sender_membership {
                Some("ban") => deny(format!("{sender} is banned from this room")),
                Some("invite") => deny(format!("{sender} is already invited to the room")),
                Some("join") => deny(format!("{sender} is already in the room")),
                _ => Ok(()),
            }
        }
        other => deny(format!("unknown membership {other:?}")),
    }
}

/// A join to a `restricted` or `knock_restricted` room by a user who is neither invited nor joined
/// (room versions 8 and later): `content.join_authorised_via_users_server` must name a joined user
/// with the power to invite. Whether the joiner belongs to an allowed room is the resident server's
/// check before it vouches (`service::restricted`), not an auth rule.
fn check_authorised_join(
    version: RoomVersion,
    event: &NewEvent<'_>,
    state: &dyn RoomState,
    rule: &str,
) -> Result<(), AuthError> {
    let sender = event.sender;
    let Some(authoriser) = event.content.get(AUTHORISING_USER).and_then(Value::as_str) else {
        return deny(format!(
            "{sender} cannot join: the room's join rule is {rule}, {sender} has not been invited \
             and the join names no authorising user ({AUTHORISING_USER})"
        ));
    };
    if membership(state, authoriser) != Some("join") {
        return deny(format!(
            "{sender} cannot join: the authorising user {authoriser} is not in the room"
        ));
    }
    let have = user_power_level(version, state, authoriser);
    let need = invite_level(state);
    if have < need {
        return deny(format!(
            "{sender} cannot join: the authorising user {authoriser} cannot invite (power level {} < {need})",
            show_level(have)
        ));
    }
    Ok(())
}

fn outranked(action: &str, target: &str, target_level: i64, have: i64) -> String {
    if target_level == CREATOR_POWER_LEVEL {
        let done = match action {
            "kick" => "kicked",
            "ban" => "banned",
            _ => "unbanned",
        };
        format!("you cannot {action} {target}: room creators cannot be {done}")
    } else {
        format!(
            "you cannot {action} {target}: their power level ({target_level}) is not lower than yours ({})",
            show_level(have)
        )
    }
}

/// Is `v` a JSON integer in the canonical JSON range?
fn as_level(v: &Value) -> Option<i64> {
    v.as_i64()
        .filter(|n| (MIN_POWER_LEVEL_VALUE..=MAX_POWER_LEVEL_VALUE).contains(n))
}

fn check_power_levels(
    version: RoomVersion,
    event: &NewEvent<'_>,
    state: &dyn RoomState,
    sender_level: i64,
) -> Result<(), AuthError> {
    let new = event.content;

    // Shape: integers only (v10+), users keyed by user IDs.
    for field in LEVEL_FIELDS {
        if let Some(v) = new.get(field)
            && as_level(v).is_none()
        {
            return deny(format!("power levels: {field} must be an integer, not {v}"));
        }
    }
    for field in ["events", "notifications"] {
        if let Some(v) = new.get(field) {
            let Some(map) = v.as_object() else {
                return deny(format!("power levels: {field} must be an object"));
            };
            for (key, level) in map {
                if as_level(level).is_none() {
                    return deny(format!(
                        "power levels: {field}.{key} must be an integer, not {level}"
                    ));
                }
            }
        }
    }
    if let Some(v) = new.get("users") {
        let Some(map) = v.as_object() else {
            return deny("power levels: users must be an object");
        };
        for (user, level) in map {
            if !is_valid_user_id(user) {
                return deny(format!(
                    "power levels: users contains {user:?}, which is not a valid user ID"
                ));
            }
            if as_level(level).is_none() {
                return deny(format!(
                    "power levels: the level of {user} must be an integer, not {level}"
                ));
            }
        }
    }

    // v12: creators have infinite power and cannot be listed.
    if version.has_privileged_creators()
        && let Some(map) = new.get("users").and_then(Value::as_object)
    {
        for creator in creators(version, state) {
            if map.contains_key(&creator) {
                return deny(format!(
                    "power levels: {creator} is a room creator and cannot be given a power level"
                ));
            }
        }
    }

    let Some(old) = power_levels_content(state) else {
        return Ok(());
    };
    let have = show_level(sender_level);

    // Top-level fields: old and new values must both be within the sender's level.
    for field in LEVEL_FIELDS {
        let old_v = old.get(field);
        let new_v = new.get(field);
        if old_v == new_v {
            continue;
        }
        if let Some(o) = old_v.and_then(Value::as_i64)
            && o > sender_level
        {
            return deny(format!(
                "power levels: you cannot change {field}: its current value {o} is above your power level ({have})"
            ));
        }
        if let Some(n) = new_v.and_then(Value::as_i64)
            && n > sender_level
        {
            return deny(format!(
                "power levels: you cannot set {field} to {n}: that is above your power level ({have})"
            ));
        }
    }

    // events / notifications entries.
    let empty = serde_json::Map::new();
    for field in ["events", "notifications"] {
        let old_map = old.get(field).and_then(Value::as_object).unwrap_or(&empty);
        let new_map = new.get(field).and_then(Value::as_object).unwrap_or(&empty);
        for (key, old_v) in old_map {
            if new_map.get(key) == Some(old_v) {
                continue;
            }
            if let Some(o) = old_v.as_i64()
                && o > sender_level
            {
                return deny(format!(
                    "power levels: you cannot change {field}.{key}: its current value {o} is above your power level ({have})"
                ));
            }
        }
        for (key, new_v) in new_map {
            if old_map.get(key) == Some(new_v) {
                continue;
            }
            if let Some(n) = new_v.as_i64()
                && n > sender_level
            {
                return deny(format!(
                    "power levels: you cannot set {field}.{key} to {n}: that is above your power level ({have})"
                ));
            }
        }
    }

    // users entries.
    let old_users = old
        .get("users")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let new_users = new
        .get("users")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (user, old_v) in old_users {
        if new_users.get(user) == Some(old_v) || user == event.sender {
            continue;
        }
        if let Some(o) = old_v.as_i64()
            && o >= sender_level
        {
            return deny(format!(
                "power levels: you cannot change the power level of {user} ({o}): it is not lower than yours ({have})"
            ));
        }
    }
    for (user, new_v) in new_users {
        if old_users.get(user) == Some(new_v) {
            continue;
        }
        if let Some(n) = new_v.as_i64()
            && n > sender_level
        {
            return deny(format!(
                "power levels: you cannot give {user} power level {n}: that is above your own ({have})"
            ));
        }
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use RoomVersion::{V10, V11, V12};
    use serde_json::json;
    use std::collections::HashMap;

    const ALL: &[RoomVersion] = &[V10, V11, V12];
    const PRE12: &[RoomVersion] = &[V10, V11];
    const ONLY12: &[RoomVersion] = &[V12];

    const ALICE: &str = "@alice:x"; // create sender (creator everywhere)
    const CO: &str = "@co:x"; // additional creator (a creator only in v12)
    const ADMIN: &str = "@admin:x"; // 100
    const ADMIN2: &str = "@admin2:x"; // 100
    const MOD: &str = "@mod:x"; // 50
    const MOD2: &str = "@mod2:x"; // 50
    const BOB: &str = "@bob:x"; // joined, 0
    const CAROL: &str = "@carol:x"; // never in the room
    const DAN: &str = "@dan:x"; // invited
    const KIM: &str = "@kim:x"; // knocked
    const LEO: &str = "@leo:x"; // left
    const EVE: &str = "@eve:x"; // banned

    #[derive(Default, Clone)]
    struct TestState {
        events: HashMap<(String, String), (String, Value)>,
    }

    impl RoomState for TestState {
        fn get(&self, event_type: &str, state_key: &str) -> Option<StateEvent<'_>> {
            self.events
                .get(&(event_type.to_owned(), state_key.to_owned()))
                .map(|(sender, content)| StateEvent { sender, content })
        }
    }

    impl TestState {
        fn set(&mut self, event_type: &str, state_key: &str, sender: &str, content: Value) {
            self.events.insert(
                (event_type.to_owned(), state_key.to_owned()),
                (sender.to_owned(), content),
            );
        }
        fn remove(&mut self, event_type: &str, state_key: &str) {
            self.events
                .remove(&(event_type.to_owned(), state_key.to_owned()));
        }
        fn member(&mut self, user: &str, membership: &str) {
            self.set(MEMBER, user, user, json!({ "membership": membership }));
        }
        fn join_rule(&mut self, rule: &str) {
            self.set(JOIN_RULES, "", ALICE, json!({ "join_rule": rule }));
        }
        /// Changes one top-level field of the current power levels.
        fn pl_field(&mut self, field: &str, value: Value) {
            let mut content = self.get(POWER_LEVELS, "").unwrap().content.clone();
            content[field] = value;
            self.set(POWER_LEVELS, "", ALICE, content);
        }
        fn pl_content(&self) -> Value {
            self.get(POWER_LEVELS, "").unwrap().content.clone()
        }
    }

    fn create_content(version: RoomVersion) -> Value {
        let mut c = json!({ "room_version": version.as_str(), "additional_creators": [CO] });
        if version == V10 {
            c["creator"] = json!(ALICE);
        }
        c
    }

    /// Only the create event.
    fn fresh_room(version: RoomVersion) -> TestState {
        let mut s = TestState::default();
        s.set(CREATE, "", ALICE, create_content(version));
        s
    }

    fn std_power_levels(version: RoomVersion) -> Value {
        let mut users = json!({ ADMIN: 100, ADMIN2: 100, MOD: 50, MOD2: 50 });
        if version != V12 {
            users[ALICE] = json!(100);
        }
        json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.power_levels": 50,
                "m.room.topic": 0,
                "m.room.tombstone": 100,
                "org.example.status": 0,
            },
            "state_default": 50,
            "events_default": 0,
            "ban": 50,
            "kick": 50,
            "invite": 0,
            "redact": 50,
            "notifications": { "room": 50 },
        })
    }

    /// A populated room with the given join rule.
    fn std_room(version: RoomVersion, rule: &str) -> TestState {
        let mut s = fresh_room(version);
        for u in [ALICE, CO, ADMIN, ADMIN2, MOD, MOD2, BOB] {
            s.member(u, "join");
        }
        s.set(MEMBER, DAN, MOD, json!({ "membership": "invite" }));
        s.member(KIM, "knock");
        s.member(LEO, "leave");
        s.set(MEMBER, EVE, MOD, json!({ "membership": "ban" }));
        s.set(POWER_LEVELS, "", ALICE, std_power_levels(version));
        s.join_rule(rule);
        s
    }

    fn member(m: &str) -> Value {
        json!({ "membership": m })
    }

    fn pl_with(version: RoomVersion, f: impl FnOnce(&mut Value)) -> Value {
        let mut c = std_power_levels(version);
        f(&mut c);
        c
    }

    type Setup = Box<dyn Fn(&mut TestState, RoomVersion)>;

    struct Case {
        name: &'static str,
        versions: &'static [RoomVersion],
        rule: &'static str,
        setup: Option<Setup>,
        event_type: &'static str,
        state_key: Option<&'static str>,
        sender: &'static str,
        content: Box<dyn Fn(RoomVersion) -> Value>,
        /// `None`: allowed; `Some(text)`: refused with a reason containing `text`.
        refused: Option<&'static str>,
    }

    #[allow(clippy::too_many_arguments)]
    fn case(
        name: &'static str,
        versions: &'static [RoomVersion],
        rule: &'static str,
        event_type: &'static str,
        state_key: Option<&'static str>,
        sender: &'static str,
        content: Value,
        refused: Option<&'static str>,
    ) -> Case {
        Case {
            name,
            versions,
            rule,
            setup: None,
            event_type,
            state_key,
            sender,
            content: Box::new(move |_| content.clone()),
            refused,
        }
    }

    fn mem(
        name: &'static str,
        versions: &'static [RoomVersion],
        rule: &'static str,
        sender: &'static str,
        target: &'static str,
        membership: &'static str,
        refused: Option<&'static str>,
    ) -> Case {
        case(
            name,
            versions,
            rule,
            MEMBER,
            Some(target),
            sender,
            member(membership),
            refused,
        )
    }

    /// `joiner` joins with `join_authorised_via_users_server` naming `authoriser`.
    fn authorised(
        name: &'static str,
        rule: &'static str,
        joiner: &'static str,
        authoriser: &'static str,
        refused: Option<&'static str>,
    ) -> Case {
        case(
            name,
            ALL,
            rule,
            MEMBER,
            Some(joiner),
            joiner,
            json!({ "membership": "join", AUTHORISING_USER: authoriser }),
            refused,
        )
    }

    fn with_setup(mut c: Case, f: impl Fn(&mut TestState, RoomVersion) + 'static) -> Case {
        c.setup = Some(Box::new(f));
        c
    }

    fn pl_case(
        name: &'static str,
        versions: &'static [RoomVersion],
        sender: &'static str,
        edit: impl Fn(&mut Value) + 'static,
        refused: Option<&'static str>,
    ) -> Case {
        Case {
            name,
            versions,
            rule: "invite",
            setup: None,
            event_type: POWER_LEVELS,
            state_key: Some(""),
            sender,
            content: Box::new(move |v| pl_with(v, &edit)),
            refused,
        }
    }

    fn run(cases: Vec<Case>) {
        let mut failures = Vec::new();
        for c in &cases {
            for &v in c.versions {
                let mut state = std_room(v, c.rule);
                if let Some(setup) = &c.setup {
                    setup(&mut state, v);
                }
                let content = (c.content)(v);
                let ev = NewEvent {
                    event_type: c.event_type,
                    state_key: c.state_key,
                    sender: c.sender,
                    content: &content,
                };
                let got = check(v, &ev, &state);
                let ok = match (&got, c.refused) {
                    (Ok(()), None) => true,
                    (Err(AuthError(msg)), Some(text)) => msg.contains(text),
                    _ => false,
                };
                if !ok {
                    failures.push(format!(
                        "{} [{v:?}]: expected {:?}, got {got:?}",
                        c.name, c.refused
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} failing case(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    // -----------------------------------------------------------------------

    #[test]
    #[rustfmt::skip]
    fn membership_transitions() {
        let ok = None;
        run(vec![
            // join, public
            mem("public: outsider joins", ALL, "public", CAROL, CAROL, "join", ok),
            mem("public: invited user joins", ALL, "public", DAN, DAN, "join", ok),
            mem("public: knocking user joins", ALL, "public", KIM, KIM, "join", ok),
            mem("public: user who left rejoins", ALL, "public", LEO, LEO, "join", ok),
            mem("public: member updates profile", ALL, "public", BOB, BOB, "join", ok),
            mem("public: banned user rejoins", ALL, "public", EVE, EVE, "join", Some("@eve:x is banned from this room")),
            mem("public: join someone else", ALL, "public", BOB, CAROL, "join", Some("cannot make @carol:x join")),
            // join, invite
            mem("invite: outsider joins", ALL, "invite", CAROL, CAROL, "join", Some("has not been invited")),
            mem("invite: invited user joins", ALL, "invite", DAN, DAN, "join", ok),
            mem("invite: member updates profile", ALL, "invite", BOB, BOB, "join", ok),
            mem("invite: knocker joins without invite", ALL, "invite", KIM, KIM, "join", Some("has not been invited")),
            mem("invite: user who left rejoins", ALL, "invite", LEO, LEO, "join", Some("has not been invited")),
            mem("invite: banned user", ALL, "invite", EVE, EVE, "join", Some("banned")),
            // join, knock
            mem("knock: outsider joins", ALL, "knock", CAROL, CAROL, "join", Some("has not been invited")),
            mem("knock: knocker joins without invite", ALL, "knock", KIM, KIM, "join", Some("has not been invited")),
            mem("knock: invited user joins", ALL, "knock", DAN, DAN, "join", ok),
            // join, restricted
            mem("restricted: outsider joins", ALL, "restricted", CAROL, CAROL, "join", Some("names no authorising user")),
            mem("restricted: invited user joins", ALL, "restricted", DAN, DAN, "join", ok),
            mem("knock_restricted: outsider joins", ALL, "knock_restricted", CAROL, CAROL, "join", Some("names no authorising user")),
            mem("knock_restricted: knocker joins", ALL, "knock_restricted", KIM, KIM, "join", Some("names no authorising user")),
            authorised("restricted: vouched for by a member who may invite", "restricted", CAROL, BOB, ok),
            authorised("knock_restricted: vouched for by a member who may invite", "knock_restricted", KIM, BOB, ok),
            authorised("restricted: user who left rejoins, vouched for", "restricted", LEO, ADMIN, ok),
            authorised("restricted: vouched for by someone not in the room", "restricted", CAROL, LEO, Some("@leo:x is not in the room")),
            authorised("restricted: vouched for by an invitee", "restricted", CAROL, DAN, Some("is not in the room")),
            with_setup(
                authorised("restricted: vouched for by a member who may not invite", "restricted", CAROL, BOB, Some("cannot invite")),
                |s, _| s.pl_field("invite", json!(50)),
            ),
            with_setup(
                authorised("restricted: vouched for by a moderator at the invite level", "restricted", CAROL, MOD, ok),
                |s, _| s.pl_field("invite", json!(50)),
            ),
            authorised("restricted: banned user, vouched for", "restricted", EVE, BOB, Some("banned")),
            authorised("invite rule ignores a voucher", "invite", CAROL, BOB, Some("has not been invited")),
            mem("knock_restricted: invited user joins", ALL, "knock_restricted", DAN, DAN, "join", ok),
            mem("knock_restricted: member profile", ALL, "knock_restricted", BOB, BOB, "join", ok),
            // join, unknown / missing rule
            mem("private join rule", ALL, "private", CAROL, CAROL, "join", Some("does not allow joining")),
            mem("private join rule, invited", ALL, "private", DAN, DAN, "join", Some("does not allow joining")),
            with_setup(
                mem("no join rules", ALL, "public", CAROL, CAROL, "join", Some("no join rules")),
                |s, _| s.remove(JOIN_RULES, ""),
            ),
            // invite
            mem("member invites outsider", ALL, "invite", BOB, CAROL, "invite", ok),
            mem("member re-invites invited user", ALL, "invite", BOB, DAN, "invite", ok),
            mem("member invites knocker", ALL, "invite", BOB, KIM, "invite", ok),
            mem("member invites user who left", ALL, "invite", BOB, LEO, "invite", ok),
            mem("invite joined user", ALL, "invite", BOB, MOD, "invite", Some("@mod:x is already in the room")),
            mem("invite banned user", ALL, "invite", MOD, EVE, "invite", Some("@eve:x is banned from this room")),
            mem("outsider invites", ALL, "public", CAROL, LEO, "invite", Some("@carol:x is not in the room")),
            mem("invited user invites", ALL, "invite", DAN, CAROL, "invite", Some("@dan:x is invited but has not joined")),
            mem("banned user invites", ALL, "invite", EVE, CAROL, "invite", Some("@eve:x is banned")),
            with_setup(
                mem("invite below invite level", ALL, "invite", BOB, CAROL, "invite", Some("you need power level 50 to invite users (you have 0)")),
                |s, _| s.pl_field("invite", json!(50)),
            ),
            with_setup(
                mem("invite at invite level", ALL, "invite", MOD, CAROL, "invite", ok),
                |s, _| s.pl_field("invite", json!(50)),
            ),
            case("third-party invite", ALL, "invite", MEMBER, Some(CAROL), MOD, json!({ "membership": "invite", "third_party_invite": { "display_name": "c", "signed": {} } }), Some("third-party invites are not supported")),
            // leave, own
            mem("member leaves", ALL, "invite", BOB, BOB, "leave", ok),
            mem("invitee rejects invite", ALL, "invite", DAN, DAN, "leave", ok),
            mem("knocker rescinds knock", ALL, "knock", KIM, KIM, "leave", ok),
            mem("outsider leaves", ALL, "invite", CAROL, CAROL, "leave", Some("@carol:x is not in the room")),
            mem("leave twice", ALL, "invite", LEO, LEO, "leave", Some("@leo:x is not in the room")),
            mem("banned user unbans self", ALL, "invite", EVE, EVE, "leave", Some("banned")),
            mem("creator leaves", ALL, "invite", ALICE, ALICE, "leave", ok),
            // kick
            mem("mod kicks member", ALL, "invite", MOD, BOB, "leave", ok),
            mem("mod kicks invitee (revokes invite)", ALL, "invite", MOD, DAN, "leave", ok),
            mem("mod kicks knocker (rejects knock)", ALL, "knock", MOD, KIM, "leave", ok),
            mem("mod kicks outsider", ALL, "invite", MOD, CAROL, "leave", ok),
            mem("member kicks member", ALL, "invite", BOB, MOD2, "leave", Some("you need power level 50 to kick users (you have 0)")),
            mem("kick with equal power", ALL, "invite", MOD, MOD2, "leave", Some("their power level (50) is not lower than yours (50)")),
            mem("kick higher power", ALL, "invite", MOD, ADMIN, "leave", Some("not lower than yours")),
            mem("admin kicks mod", ALL, "invite", ADMIN, MOD, "leave", ok),
            mem("invited user kicks", ALL, "invite", DAN, BOB, "leave", Some("@dan:x is invited but has not joined")),
            mem("outsider kicks", ALL, "public", CAROL, BOB, "leave", Some("@carol:x is not in the room")),
            with_setup(
                mem("kick level raised", ALL, "invite", MOD, BOB, "leave", Some("you need power level 60 to kick users (you have 50)")),
                |s, _| s.pl_field("kick", json!(60)),
            ),
            with_setup(
                mem("kick level one above sender", ALL, "invite", MOD, BOB, "leave", Some("you need power level 51 to kick users (you have 50)")),
                |s, _| s.pl_field("kick", json!(51)),
            ),
            with_setup(
                mem("ban level one above sender", ALL, "invite", MOD, BOB, "ban", Some("you need power level 51 to ban users (you have 50)")),
                |s, _| s.pl_field("ban", json!(51)),
            ),
            with_setup(
                mem("unban: ban level one above sender", ALL, "invite", MOD, EVE, "leave", Some("you need power level 51 to unban users (you have 50)")),
                |s, _| s.pl_field("ban", json!(51)),
            ),
            with_setup(
                mem("invite level one above sender", ALL, "invite", BOB, CAROL, "invite", Some("you need power level 1 to invite users (you have 0)")),
                |s, _| s.pl_field("invite", json!(1)),
            ),
            // unban
            mem("mod unbans", ALL, "invite", MOD, EVE, "leave", ok),
            mem("member unbans", ALL, "invite", BOB, EVE, "leave", Some("you need power level 50 to unban users (you have 0)")),
            with_setup(
                mem("unban needs ban level", ALL, "invite", MOD, EVE, "leave", Some("you need power level 60 to unban users (you have 50)")),
                |s, _| s.pl_field("ban", json!(60)),
            ),
            with_setup(
                mem("unban needs kick level too", ALL, "invite", MOD, EVE, "leave", Some("you need power level 60 to unban users (you have 50)")),
                |s, _| s.pl_field("kick", json!(60)),
            ),
            with_setup(
                mem("unban needs to outrank target", ALL, "invite", MOD, EVE, "leave", Some("you cannot unban @eve:x")),
                |s, _| {
                    let mut c = s.pl_content();
                    c["users"][EVE] = json!(50);
                    s.set(POWER_LEVELS, "", ALICE, c);
                },
            ),
            // ban
            mem("mod bans member", ALL, "invite", MOD, BOB, "ban", ok),
            mem("mod bans outsider", ALL, "invite", MOD, CAROL, "ban", ok),
            mem("mod bans invitee", ALL, "invite", MOD, DAN, "ban", ok),
            mem("mod re-bans banned user", ALL, "invite", MOD, EVE, "ban", ok),
            mem("member bans", ALL, "invite", BOB, CAROL, "ban", Some("you need power level 50 to ban users (you have 0)")),
            mem("ban equal power", ALL, "invite", MOD, MOD2, "ban", Some("their power level (50) is not lower than yours (50)")),
            mem("ban self", ALL, "invite", MOD, MOD, "ban", Some("not lower than yours")),
            mem("ban higher power", ALL, "invite", MOD, ADMIN, "ban", Some("not lower")),
            mem("invited user bans", ALL, "invite", DAN, CAROL, "ban", Some("@dan:x is invited but has not joined")),
            mem("banned user bans", ALL, "invite", EVE, BOB, "ban", Some("@eve:x is banned")),
            with_setup(
                mem("ban level raised", ALL, "invite", MOD, BOB, "ban", Some("you need power level 75 to ban users (you have 50)")),
                |s, _| s.pl_field("ban", json!(75)),
            ),
            // knock
            mem("outsider knocks", ALL, "knock", CAROL, CAROL, "knock", ok),
            mem("outsider knocks (knock_restricted)", ALL, "knock_restricted", CAROL, CAROL, "knock", ok),
            mem("user who left knocks", ALL, "knock", LEO, LEO, "knock", ok),
            mem("knocker knocks again", ALL, "knock", KIM, KIM, "knock", ok),
            mem("knock on invite-only room", ALL, "invite", CAROL, CAROL, "knock", Some("does not accept knocks")),
            mem("knock on public room", ALL, "public", CAROL, CAROL, "knock", Some("does not accept knocks")),
            mem("knock on restricted room", ALL, "restricted", CAROL, CAROL, "knock", Some("does not accept knocks")),
            mem("knock for someone else", ALL, "knock", BOB, CAROL, "knock", Some("cannot knock on behalf of @carol:x")),
            mem("invited user knocks", ALL, "knock", DAN, DAN, "knock", Some("already invited")),
            mem("member knocks", ALL, "knock", BOB, BOB, "knock", Some("already in the room")),
            mem("banned user knocks", ALL, "knock", EVE, EVE, "knock", Some("banned")),
            // malformed
            mem("unknown membership", ALL, "public", BOB, BOB, "foo", Some("unknown membership")),
            case("no membership", ALL, "public", MEMBER, Some(BOB), BOB, json!({}), Some("content.membership")),
            case("non-string membership", ALL, "public", MEMBER, Some(BOB), BOB, json!({ "membership": 1 }), Some("unknown membership")),
            case("member without state key", ALL, "public", MEMBER, None, BOB, member("join"), Some("need a state key")),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn creators_and_versions() {
        let ok = None;
        run(vec![
            // Creators in v12 are infinitely powerful and cannot be kicked or banned.
            mem("admin kicks create sender (v12)", ONLY12, "invite", ADMIN, ALICE, "leave", Some("room creators cannot be kicked")),
            mem("admin bans create sender (v12)", ONLY12, "invite", ADMIN, ALICE, "ban", Some("room creators cannot be banned")),
            mem("admin kicks additional creator (v12)", ONLY12, "invite", ADMIN, CO, "leave", Some("room creators cannot be kicked")),
            mem("creator kicks co-creator (v12)", ONLY12, "invite", ALICE, CO, "leave", Some("room creators cannot be kicked")),
            mem("creator bans admin (v12)", ONLY12, "invite", ALICE, ADMIN, "ban", ok),
            mem("co-creator kicks admin (v12)", ONLY12, "invite", CO, ADMIN, "leave", ok),
            // In v10/v11 the creator is just a user with level 100 and co is nobody special.
            mem("admin kicks creator (equal, v10/11)", PRE12, "invite", ADMIN, ALICE, "leave", Some("their power level (100) is not lower than yours (100)")),
            mem("creator bans admin (equal, v10/11)", PRE12, "invite", ALICE, ADMIN, "ban", Some("not lower")),
            mem("co kicks admin (v10/11)", PRE12, "invite", CO, ADMIN, "leave", Some("you need power level 50 to kick users (you have 0)")),
            mem("admin kicks co (v10/11)", PRE12, "invite", ADMIN, CO, "leave", ok),
            case("co sends state (v12)", ONLY12, "invite", "m.room.name", Some(""), CO, json!({"name": "n"}), ok),
            case("co sends state (v10/11)", PRE12, "invite", "m.room.name", Some(""), CO, json!({"name": "n"}), Some("you need power level 50 to send m.room.name (you have 0)")),
            case("creator sends tombstone (v12 infinite)", ONLY12, "invite", "m.room.tombstone", Some(""), ALICE, json!({"body": "b", "replacement_room": "!r"}), ok),
            with_setup(
                case("creator sends high-level event (v10/11)", PRE12, "invite", "m.room.tombstone", Some(""), ALICE, json!({"body": "b", "replacement_room": "!r"}), Some("you need power level 200 to send m.room.tombstone (you have 100)")),
                |s, _| {
                    let mut c = s.pl_content();
                    c["events"]["m.room.tombstone"] = json!(200);
                    s.set(POWER_LEVELS, "", ALICE, c);
                },
            ),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn non_member_events() {
        let ok = None;
        run(vec![
            case("member sends message", ALL, "invite", "m.room.message", None, BOB, json!({"body": "hi"}), ok),
            case("outsider sends message", ALL, "public", "m.room.message", None, CAROL, json!({}), Some("@carol:x is not in the room")),
            case("invited user sends message", ALL, "invite", "m.room.message", None, DAN, json!({}), Some("@dan:x is invited but has not joined the room")),
            case("knocker sends message", ALL, "knock", "m.room.message", None, KIM, json!({}), Some("@kim:x has knocked")),
            case("left user sends message", ALL, "invite", "m.room.message", None, LEO, json!({}), Some("@leo:x is not in the room")),
            case("banned user sends message", ALL, "invite", "m.room.message", None, EVE, json!({}), Some("@eve:x is banned from this room")),
            case("member sets name", ALL, "invite", "m.room.name", Some(""), BOB, json!({"name": "n"}), Some("you need power level 50 to send m.room.name (you have 0)")),
            case("mod sets name", ALL, "invite", "m.room.name", Some(""), MOD, json!({"name": "n"}), ok),
            case("member sets topic (events override)", ALL, "invite", "m.room.topic", Some(""), BOB, json!({"topic": "t"}), ok),
            case("mod sets tombstone", ALL, "invite", "m.room.tombstone", Some(""), MOD, json!({}), Some("you need power level 100 to send m.room.tombstone (you have 50)")),
            case("non-object content", ALL, "invite", "m.room.message", None, BOB, json!("x"), Some("must be a JSON object")),
            with_setup(
                case("events_default raised", ALL, "invite", "m.room.message", None, BOB, json!({}), Some("you need power level 10 to send m.room.message (you have 0)")),
                |s, _| s.pl_field("events_default", json!(10)),
            ),
            with_setup(
                case("state_default lowered", ALL, "invite", "m.room.name", Some(""), BOB, json!({}), ok),
                |s, _| s.pl_field("state_default", json!(0)),
            ),
            with_setup(
                case("users_default raised", ALL, "invite", "m.room.name", Some(""), BOB, json!({}), ok),
                |s, _| s.pl_field("users_default", json!(50)),
            ),
            // state keys that are user IDs
            case("own @ state key", ALL, "invite", "org.example.status", Some(BOB), BOB, json!({}), ok),
            case("other's @ state key", ALL, "invite", "org.example.status", Some(MOD), BOB, json!({}), Some("the state key @mod:x belongs to another user")),
            case("admin writes other's @ state key", ALL, "invite", "org.example.status", Some(BOB), ADMIN, json!({}), Some("belongs to another user")),
            case("creator writes other's @ state key", ALL, "invite", "org.example.status", Some(BOB), ALICE, json!({}), Some("belongs to another user")),
            case("non-@ state key", ALL, "invite", "org.example.status", Some("bob"), BOB, json!({}), ok),
            case("@ state key with suffix", ALL, "invite", "org.example.status", Some("@bob:x_device"), BOB, json!({}), Some("belongs to another user")),
            // redactions
            case("member redacts (auth rules ignore redact level)", ALL, "invite", "m.room.redaction", None, BOB, json!({"redacts": "$e"}), ok),
            with_setup(
                case("redaction event level", ALL, "invite", "m.room.redaction", None, BOB, json!({}), Some("you need power level 50 to send m.room.redaction (you have 0)")),
                |s, _| {
                    let mut c = s.pl_content();
                    c["events"]["m.room.redaction"] = json!(50);
                    s.set(POWER_LEVELS, "", ALICE, c);
                },
            ),
            // third-party invite state events
            case("m.room.third_party_invite by member", ALL, "invite", THIRD_PARTY_INVITE, Some("tok"), BOB, json!({}), ok),
            case("m.room.third_party_invite by outsider", ALL, "invite", THIRD_PARTY_INVITE, Some("tok"), CAROL, json!({}), Some("not in the room")),
            with_setup(
                case("m.room.third_party_invite below invite level", ALL, "invite", THIRD_PARTY_INVITE, Some("tok"), BOB, json!({}), Some("you need power level 50 to invite users")),
                |s, _| s.pl_field("invite", json!(50)),
            ),
            // create event in an existing room
            case("second create", ALL, "invite", CREATE, Some(""), ALICE, json!({"room_version": "12"}), Some("already exists")),
            // m.federate = false
            with_setup(
                case("m.federate false, foreign sender", ALL, "public", MEMBER, Some("@zed:y"), "@zed:y", member("join"), Some("does not federate")),
                |s, v| {
                    let mut c = create_content(v);
                    c["m.federate"] = json!(false);
                    s.set(CREATE, "", ALICE, c);
                },
            ),
            with_setup(
                case("m.federate false, local sender", ALL, "public", MEMBER, Some(CAROL), CAROL, member("join"), ok),
                |s, v| {
                    let mut c = create_content(v);
                    c["m.federate"] = json!(false);
                    s.set(CREATE, "", ALICE, c);
                },
            ),
            case("m.federate default, foreign sender", ALL, "public", MEMBER, Some("@zed:y"), "@zed:y", member("join"), ok),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn power_level_changes() {
        let ok = None;
        run(vec![
            // shape
            pl_case("unchanged", ALL, MOD, |_| {}, ok),
            pl_case("string level", ALL, ADMIN, |c| c["ban"] = json!("50"), Some("ban must be an integer")),
            pl_case("float level", ALL, ADMIN, |c| c["kick"] = json!(50.5), Some("kick must be an integer")),
            pl_case("float that looks integral", ALL, ADMIN, |c| c["kick"] = json!(50.0), Some("kick must be an integer")),
            pl_case("null level", ALL, ADMIN, |c| c["invite"] = Value::Null, Some("invite must be an integer")),
            pl_case("out of canonical range", ALL, ADMIN, |c| c["users_default"] = json!(1i64 << 53), Some("users_default must be an integer")),
            pl_case("events value string", ALL, ADMIN, |c| c["events"]["m.room.name"] = json!("50"), Some("events.m.room.name must be an integer")),
            pl_case("events not an object", ALL, ADMIN, |c| c["events"] = json!([]), Some("events must be an object")),
            pl_case("notifications value string", ALL, ADMIN, |c| c["notifications"]["room"] = json!("50"), Some("notifications.room must be an integer")),
            pl_case("users not an object", ALL, ADMIN, |c| c["users"] = json!(5), Some("users must be an object")),
            pl_case("users key not a user ID", ALL, ADMIN, |c| c["users"]["bob"] = json!(0), Some("\"bob\", which is not a valid user ID")),
            pl_case("users key bad server", ALL, ADMIN, |c| c["users"]["@bob:"] = json!(0), Some("not a valid user ID")),
            pl_case("users value string", ALL, ADMIN, |c| c["users"][BOB] = json!("10"), Some("the level of @bob:x must be an integer")),
            // v12: creators may not be listed
            pl_case("list create sender (v12)", ONLY12, ADMIN, |c| c["users"][ALICE] = json!(100), Some("@alice:x is a room creator")),
            pl_case("list additional creator (v12)", ONLY12, ADMIN, |c| c["users"][CO] = json!(0), Some("@co:x is a room creator")),
            pl_case("creator lists themself (v12)", ONLY12, ALICE, |c| c["users"][ALICE] = json!(100), Some("room creator")),
            pl_case("list co as ordinary user (v10/11)", PRE12, ADMIN, |c| c["users"][CO] = json!(50), ok),
            // sender's permission to send power levels
            pl_case("member sends power levels", ALL, BOB, |_| {}, Some("you need power level 50 to send m.room.power_levels (you have 0)")),
            // users
            pl_case("mod promotes member to own level", ALL, MOD, |c| c["users"][BOB] = json!(50), ok),
            pl_case("mod promotes member above own level", ALL, MOD, |c| c["users"][BOB] = json!(51), Some("you cannot give @bob:x power level 51")),
            pl_case("mod demotes equal", ALL, MOD, |c| c["users"][MOD2] = json!(0), Some("you cannot change the power level of @mod2:x (50)")),
            pl_case(
                "mod removes equal",
                ALL,
                MOD,
                |c| {
                    c["users"].as_object_mut().unwrap().remove(MOD2);
                },
                Some("@mod2:x"),
            ),
            pl_case("mod demotes higher", ALL, MOD, |c| c["users"][ADMIN] = json!(0), Some("@admin:x (100)")),
            pl_case("mod demotes self", ALL, MOD, |c| c["users"][MOD] = json!(10), ok),
            pl_case(
                "mod removes self",
                ALL,
                MOD,
                |c| {
                    c["users"].as_object_mut().unwrap().remove(MOD);
                },
                ok,
            ),
            pl_case("mod promotes self", ALL, MOD, |c| c["users"][MOD] = json!(60), Some("you cannot give @mod:x power level 60")),
            pl_case("admin promotes mod to 100", ALL, ADMIN, |c| c["users"][MOD] = json!(100), ok),
            pl_case("admin demotes mod", ALL, ADMIN, |c| c["users"][MOD] = json!(0), ok),
            pl_case("admin demotes admin2", ALL, ADMIN, |c| c["users"][ADMIN2] = json!(50), Some("@admin2:x (100)")),
            pl_case("admin demotes creator (v10/11)", PRE12, ADMIN, |c| c["users"][ALICE] = json!(50), Some("@alice:x (100)")),
            pl_case("creator above 100 (v12)", ONLY12, ALICE, |c| c["users"][ADMIN] = json!(1000), ok),
            pl_case("creator demotes admin (v12)", ONLY12, ALICE, |c| c["users"][ADMIN] = json!(0), ok),
            pl_case("creator above 100 (v10/11)", PRE12, ALICE, |c| c["users"][BOB] = json!(1000), Some("you cannot give @bob:x power level 1000")),
            pl_case("co-creator changes admins (v12)", ONLY12, CO, |c| c["users"][ADMIN2] = json!(0), ok),
            pl_case("co edits power levels (v10/11)", PRE12, CO, |c| c["users"][ADMIN2] = json!(0), Some("you need power level 50 to send m.room.power_levels")),
            // top-level fields
            pl_case("mod lowers kick", ALL, MOD, |c| c["kick"] = json!(40), ok),
            pl_case("mod raises ban above own", ALL, MOD, |c| c["ban"] = json!(60), Some("you cannot set ban to 60")),
            pl_case("mod raises users_default to own", ALL, MOD, |c| c["users_default"] = json!(50), ok),
            pl_case("mod raises users_default above own", ALL, MOD, |c| c["users_default"] = json!(51), Some("users_default to 51")),
            pl_case(
                "mod removes state_default (50)",
                ALL,
                MOD,
                |c| {
                    c.as_object_mut().unwrap().remove("state_default");
                },
                ok,
            ),
            pl_case(
                "mod adds field within level",
                ALL,
                MOD,
                |c| {
                    c.as_object_mut().unwrap().remove("invite");
                },
                ok,
            ),
            with_setup(
                pl_case(
                    "mod removes field above own",
                    ALL,
                    MOD,
                    |c| {
                        c.as_object_mut().unwrap().remove("redact");
                    },
                    Some("you cannot change redact: its current value 100"),
                ),
                |s, _| s.pl_field("redact", json!(100)),
            ),
            with_setup(
                pl_case("mod changes field above own", ALL, MOD, |c| c["redact"] = json!(50), Some("you cannot change redact")),
                |s, _| s.pl_field("redact", json!(100)),
            ),
            with_setup(
                pl_case("mod keeps field above own unchanged", ALL, MOD, |c| c["redact"] = json!(100), ok),
                |s, _| s.pl_field("redact", json!(100)),
            ),
            // events / notifications
            pl_case("mod adds event level at own", ALL, MOD, |c| c["events"]["m.room.name"] = json!(50), ok),
            pl_case("mod adds event level above own", ALL, MOD, |c| c["events"]["m.room.name"] = json!(60), Some("events.m.room.name to 60")),
            pl_case(
                "mod removes low event level",
                ALL,
                MOD,
                |c| {
                    c["events"].as_object_mut().unwrap().remove("m.room.topic");
                },
                ok,
            ),
            pl_case("mod lowers high event level", ALL, MOD, |c| c["events"]["m.room.tombstone"] = json!(50), Some("events.m.room.tombstone: its current value 100")),
            pl_case(
                "mod removes high event level",
                ALL,
                MOD,
                |c| {
                    c["events"]
                        .as_object_mut()
                        .unwrap()
                        .remove("m.room.tombstone");
                },
                Some("m.room.tombstone"),
            ),
            pl_case(
                "mod removes events entirely",
                ALL,
                MOD,
                |c| {
                    c.as_object_mut().unwrap().remove("events");
                },
                Some("m.room.tombstone"),
            ),
            pl_case("mod lowers @room level", ALL, MOD, |c| c["notifications"]["room"] = json!(0), ok),
            pl_case("mod raises @room level above own", ALL, MOD, |c| c["notifications"]["room"] = json!(70), Some("notifications.room to 70")),
            pl_case("admin lowers high event level", ALL, ADMIN, |c| c["events"]["m.room.tombstone"] = json!(50), ok),
        ]);
    }

    // -----------------------------------------------------------------------

    fn ev<'a>(t: &'a str, k: Option<&'a str>, sender: &'a str, content: &'a Value) -> NewEvent<'a> {
        NewEvent {
            event_type: t,
            state_key: k,
            sender,
            content,
        }
    }

    #[test]
    fn create_event() {
        let empty = TestState::default();
        for v in ALL.iter().copied() {
            let c = create_content(v);
            assert_eq!(
                check(v, &ev(CREATE, Some(""), ALICE, &c), &empty),
                Ok(()),
                "{v:?}"
            );
            let bad_key = check(v, &ev(CREATE, Some("x"), ALICE, &c), &empty);
            assert!(bad_key.unwrap_err().0.contains("empty state key"));
            let no_key = check(v, &ev(CREATE, None, ALICE, &c), &empty);
            assert!(no_key.is_err());

            let mut no_version = c.clone();
            no_version.as_object_mut().unwrap().remove("room_version");
            let e = check(v, &ev(CREATE, Some(""), ALICE, &no_version), &empty).unwrap_err();
            assert!(e.0.contains("room_version"), "{e}");

            let mut other = c.clone();
            other["room_version"] = json!("9");
            let e = check(v, &ev(CREATE, Some(""), ALICE, &other), &empty).unwrap_err();
            assert!(e.0.contains("does not match"), "{e}");
            other["room_version"] = json!(12);
            assert!(check(v, &ev(CREATE, Some(""), ALICE, &other), &empty).is_err());

            // A second create event.
            let existing = fresh_room(v);
            let e = check(v, &ev(CREATE, Some(""), ALICE, &c), &existing).unwrap_err();
            assert!(e.0.contains("already exists"));
        }

        // v10 requires `creator`; v11/v12 do not.
        let c = json!({ "room_version": "10" });
        let e = check(V10, &ev(CREATE, Some(""), ALICE, &c), &empty).unwrap_err();
        assert!(e.0.contains("creator"), "{e}");
        let c = json!({ "room_version": "10", "creator": 5 });
        assert!(check(V10, &ev(CREATE, Some(""), ALICE, &c), &empty).is_err());
        for v in [V11, V12] {
            let c = json!({ "room_version": v.as_str() });
            assert_eq!(check(v, &ev(CREATE, Some(""), ALICE, &c), &empty), Ok(()));
            // A leftover `creator` is harmless.
            let c = json!({ "room_version": v.as_str(), "creator": ALICE });
            assert_eq!(check(v, &ev(CREATE, Some(""), ALICE, &c), &empty), Ok(()));
        }

        // v12 validates additional_creators; v10/v11 ignore it.
        let bad: &[Value] = &[
            json!("@co:x"),
            json!(["co"]),
            json!(["@co:x", 5]),
            json!(["@co"]),
            json!(["@co:bad host"]),
            json!([format!("@{}:x", "a".repeat(260))]),
        ];
        for extra in bad {
            let mut c = create_content(V12);
            c["additional_creators"] = extra.clone();
            let e = check(V12, &ev(CREATE, Some(""), ALICE, &c), &empty);
            assert!(e.is_err(), "{extra} should be refused");
            for v in PRE12.iter().copied() {
                let mut c = create_content(v);
                c["additional_creators"] = extra.clone();
                assert_eq!(
                    check(v, &ev(CREATE, Some(""), ALICE, &c), &empty),
                    Ok(()),
                    "{v:?} {extra}"
                );
            }
        }
        let good = json!(["@co:x", "@d:example.org:8448", "@e:[::1]", "@f:1.2.3.4:80"]);
        let mut c = create_content(V12);
        c["additional_creators"] = good;
        assert_eq!(check(V12, &ev(CREATE, Some(""), ALICE, &c), &empty), Ok(()));
        let mut c = create_content(V12);
        c["additional_creators"] = json!([]);
        assert_eq!(check(V12, &ev(CREATE, Some(""), ALICE, &c), &empty), Ok(()));
    }

    #[test]
    fn no_create_event() {
        let empty = TestState::default();
        for v in ALL.iter().copied() {
            let c = json!({"body": "x"});
            let e = check(v, &ev("m.room.message", None, ALICE, &c), &empty).unwrap_err();
            assert!(e.0.contains("does not exist"), "{e}");
            let m = member("join");
            assert!(check(v, &ev(MEMBER, Some(ALICE), ALICE, &m), &empty).is_err());
        }
    }

    #[test]
    fn first_join_after_create() {
        let join = member("join");
        for v in ALL.iter().copied() {
            let s = fresh_room(v);
            assert_eq!(
                check(v, &ev(MEMBER, Some(ALICE), ALICE, &join), &s),
                Ok(()),
                "{v:?}"
            );
            // Nobody else can join yet (no join rules), not even an additional creator.
            assert!(check(v, &ev(MEMBER, Some(BOB), BOB, &join), &s).is_err());
            assert!(check(v, &ev(MEMBER, Some(CO), CO, &join), &s).is_err());
            // Nobody can join the creator in.
            assert!(check(v, &ev(MEMBER, Some(ALICE), BOB, &join), &s).is_err());
            // The creator cannot send anything else before joining.
            let name = json!({"name": "n"});
            let e = check(v, &ev("m.room.name", Some(""), ALICE, &name), &s).unwrap_err();
            assert_eq!(e.0, "@alice:x is not in the room");

            // Once the creator has left, the shortcut no longer applies.
            let mut s2 = s.clone();
            s2.member(ALICE, "leave");
            assert!(check(v, &ev(MEMBER, Some(ALICE), ALICE, &join), &s2).is_err());
        }
        // v10 uses content.creator, not the sender, for the creator.
        let mut s = TestState::default();
        s.set(
            CREATE,
            "",
            ALICE,
            json!({"room_version": "10", "creator": "@zed:x"}),
        );
        assert!(check(V10, &ev(MEMBER, Some(ALICE), ALICE, &join), &s).is_err());
        assert_eq!(
            check(V10, &ev(MEMBER, Some("@zed:x"), "@zed:x", &join), &s),
            Ok(())
        );
        assert_eq!(user_power_level(V10, &s, "@zed:x"), 100);
        assert_eq!(user_power_level(V10, &s, ALICE), 0);
        // ... while v11 ignores content.creator.
        let mut s = TestState::default();
        s.set(
            CREATE,
            "",
            ALICE,
            json!({"room_version": "11", "creator": "@zed:x"}),
        );
        assert_eq!(
            check(V11, &ev(MEMBER, Some(ALICE), ALICE, &join), &s),
            Ok(())
        );
        assert!(check(V11, &ev(MEMBER, Some("@zed:x"), "@zed:x", &join), &s).is_err());
        assert_eq!(user_power_level(V11, &s, ALICE), 100);
        assert_eq!(user_power_level(V11, &s, "@zed:x"), 0);
    }

    #[test]
    fn missing_power_levels() {
        for v in ALL.iter().copied() {
            let mut s = fresh_room(v);
            for u in [ALICE, CO, BOB] {
                s.member(u, "join");
            }
            s.join_rule("public");
            let creator_level = if v == V12 { CREATOR_POWER_LEVEL } else { 100 };
            assert_eq!(user_power_level(v, &s, ALICE), creator_level);
            assert_eq!(user_power_level(v, &s, BOB), 0);
            assert_eq!(
                user_power_level(v, &s, CO),
                if v == V12 { CREATOR_POWER_LEVEL } else { 0 }
            );
            assert_eq!(required_event_level(v, &s, "m.room.name", true), 50);
            assert_eq!(required_event_level(v, &s, "m.room.message", false), 0);
            assert_eq!(
                (
                    invite_level(&s),
                    kick_level(&s),
                    ban_level(&s),
                    redact_level(&s)
                ),
                (0, 50, 50, 50)
            );
            assert_eq!(notification_level(&s, "room"), 50);

            let name = json!({"name": "n"});
            assert_eq!(
                check(v, &ev("m.room.name", Some(""), ALICE, &name), &s),
                Ok(())
            );
            let e = check(v, &ev("m.room.name", Some(""), BOB, &name), &s).unwrap_err();
            assert_eq!(
                e.0,
                "you need power level 50 to send m.room.name (you have 0)"
            );
            let msg = json!({"body": "b"});
            assert_eq!(check(v, &ev("m.room.message", None, BOB, &msg), &s), Ok(()));
            let kick = member("leave");
            assert_eq!(check(v, &ev(MEMBER, Some(BOB), ALICE, &kick), &s), Ok(()));
            assert!(check(v, &ev(MEMBER, Some(ALICE), BOB, &kick), &s).is_err());
            assert_eq!(
                check(v, &ev(MEMBER, Some(CAROL), BOB, &member("invite")), &s),
                Ok(())
            );

            // First power levels event: only the shape is checked (and the v12 creator rule).
            let first = json!({"users": {BOB: 1000}, "state_default": 9000});
            assert_eq!(
                check(v, &ev(POWER_LEVELS, Some(""), ALICE, &first), &s),
                Ok(())
            );
            assert!(check(v, &ev(POWER_LEVELS, Some(""), BOB, &first), &s).is_err());
            let with_creator = json!({"users": {ALICE: 100}});
            let r = check(v, &ev(POWER_LEVELS, Some(""), ALICE, &with_creator), &s);
            assert_eq!(r.is_ok(), v != V12, "{v:?}: {r:?}");
            let bad = json!({"ban": "50"});
            assert!(check(v, &ev(POWER_LEVELS, Some(""), ALICE, &bad), &s).is_err());
        }
    }

    #[test]
    fn power_level_helpers() {
        for v in ALL.iter().copied() {
            let s = std_room(v, "invite");
            assert_eq!(user_power_level(v, &s, MOD), 50);
            assert_eq!(user_power_level(v, &s, ADMIN), 100);
            assert_eq!(user_power_level(v, &s, BOB), 0);
            assert_eq!(user_power_level(v, &s, CAROL), 0);
            assert_eq!(
                user_power_level(v, &s, ALICE),
                if v == V12 { CREATOR_POWER_LEVEL } else { 100 }
            );
            assert_eq!(
                user_power_level(v, &s, CO),
                if v == V12 { CREATOR_POWER_LEVEL } else { 0 }
            );
            assert_eq!(required_event_level(v, &s, "m.room.topic", true), 0);
            assert_eq!(required_event_level(v, &s, "m.room.tombstone", true), 100);
            assert_eq!(required_event_level(v, &s, "m.room.name", true), 50);
            assert_eq!(required_event_level(v, &s, "m.room.message", false), 0);
            assert_eq!(required_event_level(v, &s, "m.room.power_levels", true), 50);

            assert!(is_creator(v, &s, ALICE));
            assert_eq!(is_creator(v, &s, CO), v == V12);
            assert!(!is_creator(v, &s, ADMIN));
            assert_eq!(is_sole_creator(v, &s, ALICE), v != V12);
            let expected: Vec<String> = if v == V12 {
                vec![ALICE.into(), CO.into()]
            } else {
                vec![ALICE.into()]
            };
            assert_eq!(creators(v, &s), expected);

            assert_eq!(membership(&s, BOB), Some("join"));
            assert_eq!(membership(&s, EVE), Some("ban"));
            assert_eq!(membership(&s, CAROL), None);
            assert_eq!(join_rule(&s), Some("invite"));

            // Redactions.
            assert_eq!(may_redact(v, &s, BOB, BOB), Ok(()));
            assert_eq!(may_redact(v, &s, MOD, BOB), Ok(()));
            let e = may_redact(v, &s, BOB, MOD).unwrap_err();
            assert_eq!(
                e.0,
                "you need power level 50 to redact other users' events (you have 0)"
            );
        }
        // users_default applies to unlisted users.
        let mut s = std_room(V11, "invite");
        s.pl_field("users_default", json!(7));
        assert_eq!(user_power_level(V11, &s, CAROL), 7);
        assert_eq!(user_power_level(V11, &s, MOD), 50);
    }

    #[test]
    fn user_id_grammar() {
        for good in [
            "@a:x",
            "@alice:example.org",
            "@a:example.org:8448",
            "@a:[::1]",
            "@a:[1234:5678::abcd]:5678",
            "@a:1.2.3.4",
            "@Ünïcode:x",
            "@:x",
        ] {
            assert!(is_valid_user_id(good), "{good}");
        }
        for bad in [
            "a:x",
            "@a",
            "@a:",
            "@a:x:",
            "@a:x:123456",
            "@a:x:p",
            "@a:[::1",
            "@a:[zz]",
            "@a:ex ample",
            "@a\0b:x",
            "#a:x",
        ] {
            assert!(!is_valid_user_id(bad), "{bad}");
        }
        assert!(!is_valid_user_id(&format!("@{}:x", "a".repeat(253))));
        assert!(is_valid_user_id(&format!("@{}:x", "a".repeat(252))));
    }

    /// The sequence of events a homeserver sends when creating a room, then others joining.
    #[test]
    fn room_creation_flow() {
        for v in ALL.iter().copied() {
            let mut s = TestState::default();
            let send =
                |s: &mut TestState, t: &str, k: Option<&str>, sender: &str, content: Value| {
                    let r = check(v, &ev(t, k, sender, &content), s);
                    if r.is_ok()
                        && let Some(k) = k
                    {
                        s.set(t, k, sender, content);
                    }
                    r
                };
            let mut create = json!({ "room_version": v.as_str() });
            if v == V10 {
                create["creator"] = json!(ALICE);
            }
            send(&mut s, CREATE, Some(""), ALICE, create).unwrap();
            send(&mut s, MEMBER, Some(ALICE), ALICE, member("join")).unwrap();
            let mut pl = json!({ "users": {}, "events": { "m.room.tombstone": 150 } });
            if v != V12 {
                pl["users"][ALICE] = json!(100);
            }
            send(&mut s, POWER_LEVELS, Some(""), ALICE, pl).unwrap();
            send(
                &mut s,
                JOIN_RULES,
                Some(""),
                ALICE,
                json!({"join_rule": "invite"}),
            )
            .unwrap();
            send(
                &mut s,
                "m.room.history_visibility",
                Some(""),
                ALICE,
                json!({"history_visibility": "shared"}),
            )
            .unwrap();
            send(
                &mut s,
                "m.room.name",
                Some(""),
                ALICE,
                json!({"name": "Room"}),
            )
            .unwrap();

            // Bob cannot join uninvited; after an invite he can.
            assert!(send(&mut s, MEMBER, Some(BOB), BOB, member("join")).is_err());
            send(&mut s, MEMBER, Some(BOB), ALICE, member("invite")).unwrap();
            send(&mut s, MEMBER, Some(BOB), BOB, member("join")).unwrap();
            send(&mut s, "m.room.message", None, BOB, json!({"body": "hi"})).unwrap();
            assert!(
                send(
                    &mut s,
                    "m.room.name",
                    Some(""),
                    BOB,
                    json!({"name": "mine"})
                )
                .is_err()
            );

            // Alice bans Bob; he cannot come back until unbanned and re-invited.
            send(&mut s, MEMBER, Some(BOB), ALICE, member("ban")).unwrap();
            assert_eq!(
                send(&mut s, MEMBER, Some(BOB), BOB, member("join")),
                Err(AuthError("@bob:x is banned from this room".into()))
            );
            assert!(send(&mut s, MEMBER, Some(BOB), ALICE, member("invite")).is_err());
            send(&mut s, MEMBER, Some(BOB), ALICE, member("leave")).unwrap();
            assert!(send(&mut s, MEMBER, Some(BOB), BOB, member("join")).is_err());
            send(&mut s, MEMBER, Some(BOB), ALICE, member("invite")).unwrap();
            send(&mut s, MEMBER, Some(BOB), BOB, member("join")).unwrap();

            // Alice makes Bob a moderator; Bob can neither demote nor kick Alice.
            let mut pl = s.pl_content();
            pl["users"][BOB] = json!(50);
            send(&mut s, POWER_LEVELS, Some(""), ALICE, pl).unwrap();
            let mut pl = s.pl_content();
            if v == V12 {
                pl["users"][ALICE] = json!(0);
                let e = send(&mut s, POWER_LEVELS, Some(""), BOB, pl).unwrap_err();
                assert!(e.0.contains("room creator"), "{e}");
            } else {
                pl["users"][ALICE] = json!(0);
                let e = send(&mut s, POWER_LEVELS, Some(""), BOB, pl).unwrap_err();
                assert!(e.0.contains("@alice:x (100)"), "{e}");
            }
            assert!(send(&mut s, MEMBER, Some(ALICE), BOB, member("leave")).is_err());
            send(
                &mut s,
                "m.room.name",
                Some(""),
                BOB,
                json!({"name": "mine"}),
            )
            .unwrap();
            // Only the creator may send the tombstone.
            assert!(send(&mut s, "m.room.tombstone", Some(""), BOB, json!({})).is_err());
            let r = send(&mut s, "m.room.tombstone", Some(""), ALICE, json!({}));
            assert_eq!(r.is_ok(), v == V12, "{v:?}: {r:?}");
        }
    }
}

//! Lookups in a room's current state that other services need (membership, join rule, creators,
//! power levels) and the redaction permission. The authorization rules themselves are ruma's
//! (`service::auth_check`).
//!
//! Power level values are read as ruma reads them in room versions 1–9: an integer, or a string
//! holding one; from version 10 the rules only let integers into the state.

use serde_json::Value;

pub use crate::service::room_versions::RoomVersion;

/// A state event as the auth rules need it.
pub struct StateEvent<'a> {
    pub sender: &'a str,
    pub content: &'a Value,
}

/// Read access to the room's current state (type, state_key) -> event.
pub trait RoomState {
    fn get(&self, event_type: &str, state_key: &str) -> Option<StateEvent<'_>>;
}

pub use crate::service::auth_check::AuthError;

fn deny<T>(reason: impl Into<String>) -> Result<T, AuthError> {
    Err(AuthError(reason.into()))
}

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// The power level of room creators in room version 12 ("infinitely high").
pub const CREATOR_POWER_LEVEL: i64 = i64::MAX;

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

const CREATE: &str = "m.room.create";
const MEMBER: &str = "m.room.member";
const POWER_LEVELS: &str = "m.room.power_levels";
const JOIN_RULES: &str = "m.room.join_rules";
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
    if version.create_has_creator_field() {
        create
            .content
            .get("creator")
            .and_then(Value::as_str)
            .unwrap_or(create.sender)
    } else {
        create.sender
    }
}

/// The room creators under `version`.
///
/// * v1–v10: `content.creator` of `m.room.create`;
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

/// A power level value: an integer, or (room versions 1–9) a string holding one.
pub fn as_level(value: &Value) -> Option<i64> {
    match value {
        Value::String(_) => ruma::serde::deserialize_v1_powerlevel(value)
            .ok()
            .map(i64::from),
        _ => value.as_i64(),
    }
}

/// A top-level level field of the current power levels (or its default).
fn level_field(state: &dyn RoomState, field: &str, default: i64) -> i64 {
    power_levels_content(state)
        .and_then(|c| c.get(field))
        .and_then(as_level)
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
            .and_then(as_level)
            .unwrap_or_else(|| {
                content
                    .get("users_default")
                    .and_then(as_level)
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
        .and_then(as_level)
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
        .and_then(as_level)
        .unwrap_or(DEFAULT_NOTIFICATION)
}

/// Whether a redaction sent by `redactor` may take effect on an event sent by
/// `original_sender`: always for one's own events, otherwise only with at least
/// the *redact level*.
///
/// This is the client-facing rule for a single-server world (the spec's "same
/// server" condition is meant for federation and would let any local user redact
/// any other local user's events). The `m.room.redaction` event itself must first
/// pass the authorization rules (which apply `events["m.room.redaction"]` / `events_default`).
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

#[cfg(test)]
mod tests {
    use super::as_level;
    use serde_json::json;

    #[test]
    fn levels_are_integers_or_strings_holding_one() {
        assert_eq!(as_level(&json!(50)), Some(50));
        assert_eq!(as_level(&json!(-3)), Some(-3));
        assert_eq!(as_level(&json!("50")), Some(50));
        assert_eq!(as_level(&json!(" +7 ")), Some(7));
        assert_eq!(as_level(&json!("fifty")), None);
        assert_eq!(as_level(&json!(1.5)), None);
        assert_eq!(as_level(&json!(null)), None);
        assert_eq!(as_level(&json!([1])), None);
    }
}

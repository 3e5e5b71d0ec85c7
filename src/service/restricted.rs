//! Restricted rooms (join rules `restricted` and `knock_restricted`, room versions 8 and later):
//! the members of the rooms the join rules name may join without an invite, and this server then
//! vouches for the join by naming, in `join_authorised_via_users_server`, one of its users in the
//! room who may invite (Synapse: handlers/event_auth.py, `check_restricted_join_rules`,
//! `get_rooms_that_allow_join`, `get_user_which_could_invite`; handlers/room_member.py,
//! `_should_perform_remote_join`).

use std::collections::HashSet;

use serde_json::Value;

use crate::service::auth_rules::{self, RoomState, RoomVersion};
use crate::service::room_cache::RoomSnapshot;
use crate::{AppState, Error, Result, store};

/// Whether the room's join rule lets members of other rooms in.
pub fn is_restricted(state: &dyn RoomState) -> bool {
    matches!(
        auth_rules::join_rule(state),
        Some("restricted" | "knock_restricted")
    )
}

/// The rooms whose members may join: the `room_id`s of the `m.room_membership` conditions of the
/// join rules' `allow` list, when the room is restricted (none otherwise). Malformed entries are
/// skipped, as in Synapse.
pub fn allowed_room_ids(state: &dyn RoomState) -> Vec<String> {
    if !is_restricted(state) {
        return Vec::new();
    }
    let Some(rules) = state.get("m.room.join_rules", "") else {
        return Vec::new();
    };
    let Some(allow) = rules.content.get("allow").and_then(Value::as_array) else {
        return Vec::new();
    };
    allow
        .iter()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("m.room_membership"))
        .filter_map(|c| c.get("room_id").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// A joined user of this server who may invite (the creators of a v12 room always may): the first
/// of them in user ID order, for a stable choice.
pub fn user_which_could_invite(
    version: RoomVersion,
    room: &RoomSnapshot,
    server_name: &str,
) -> Option<String> {
    let need = auth_rules::invite_level(room);
    room.members_with("join")
        .filter(|user| user.split_once(':').map(|(_, s)| s) == Some(server_name))
        .find(|user| auth_rules::user_power_level(version, room, user) >= need)
        .map(str::to_owned)
}

/// Whether `user_id`'s joined rooms include one of the room's allowed rooms.
pub fn is_in_allowed_room(state: &dyn RoomState, joined_rooms: &HashSet<String>) -> bool {
    allowed_room_ids(state)
        .iter()
        .any(|room| joined_rooms.contains(room))
}

/// For a join by `user_id`: the user to name in `join_authorised_via_users_server`, or None when
/// the join needs no one to vouch for it (the room is not restricted, or the user is invited or
/// joined already). Refuses (403) a user in none of the allowed rooms, and (400
/// `M_UNABLE_TO_GRANT_JOIN`) a room where no local user may invite.
pub async fn authorise_join(
    state: &AppState,
    room: &RoomSnapshot,
    user_id: &str,
) -> Result<Option<String>> {
    if !is_restricted(room) || matches!(room.membership(user_id), Some("join" | "invite")) {
        return Ok(None);
    }
    let joined: HashSet<String> = store::rooms::joined_rooms(&state.db, user_id)
        .await?
        .into_iter()
        .collect();
    if !is_in_allowed_room(room, &joined) {
        return Err(Error::forbidden(
            "You do not belong to any of the required rooms/spaces to join this room.",
        ));
    }
    user_which_could_invite(room.version, room, state.server_name.as_str())
        .map(Some)
        .ok_or_else(|| {
            Error::unable_to_grant_join("Unable to find a user which could issue an invite")
        })
}

//! Room upgrades (`POST /rooms/{roomId}/upgrade`), as Synapse does them (synapse/handlers/room.py
//! `upgrade_room`, `_upgrade_room`, `clone_existing_room`, `_move_aliases_to_new_room`,
//! `_update_upgraded_room_pls`): a new room of the requested version whose create event names the
//! old one as its `predecessor`, with the old room's transferable state and bans; then the
//! `m.room.tombstone` in the old room, the local aliases moved over, the old room's power levels
//! restricted to moderators, and each local member's tags, `m.direct` and room push rules copied.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::service::auth::Requester;
use crate::service::auth_check::{self, EventFields, PduView};
use crate::service::auth_rules;
use crate::service::events::EventDraft;
use crate::service::room_cache::RoomSnapshot;
use crate::service::room_versions::RoomVersion;
use crate::service::writer::{Target, room_snapshot};
use crate::service::{account_data, push, room_versions, rooms};
use crate::{AppState, Error, Result, store};

/// The state Synapse copies into the new room (`clone_existing_room`'s `types_to_copy`; power
/// levels are handled on their own). Spaces also bring their `m.space.child` events.
const COPIED_STATE: [&str; 8] = [
    "m.room.join_rules",
    "m.room.name",
    "m.room.topic",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
];

/// Upgrades `room_id` to `new_version`; answers with the replacement room's ID.
/// `additional_creators` only counts for versions with privileged creators (v12).
pub async fn upgrade_room(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    new_version: &str,
    additional_creators: Option<Vec<String>>,
) -> Result<String> {
    let version = room_versions::parse(new_version).ok_or_else(|| {
        Error::unsupported_room_version(format!("Room version {new_version} is not supported"))
    })?;
    let extra_creators = match additional_creators {
        Some(users) if version.has_privileged_creators() => check_creators(users)?,
        _ => Vec::new(),
    };
    state.rate_limiter.create_room(requester)?;
    let me = requester.user_id.as_str();
    let old = room_snapshot(state, room_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    // The tombstone is what decides: refuse before anything is created.
    let tombstone = json!({"body": "This room has been replaced", "replacement_room": room_id});
    let probe = PduView::new(
        EventFields {
            event_id: None,
            room_id: Some(&old.room_id),
            sender: me,
            event_type: "m.room.tombstone",
            state_key: Some(""),
            prev_events: std::slice::from_ref(&old.head_event_id),
            redacts: None,
        },
        &tombstone,
        state.server_name.as_str(),
    )
    .map_err(|e| Error::forbidden(format!("You cannot upgrade this room: {e}")))?;
    auth_check::check(old.version, &probe, |t, k| old.entry(t, k).map(|e| &e.view))
        .map_err(|e| Error::forbidden(format!("You cannot upgrade this room: {e}")))?;

    let profile = store::users::get_user(&state.db, me).await?;
    let drafts = new_room_drafts(&old, version, me, &extra_creators, profile.as_ref());
    let is_public = store::rooms::is_public(&state.db, room_id)
        .await?
        .unwrap_or(false);
    let room_id_new = (!version.has_privileged_creators()).then(|| {
        format!(
            "!{}:{}",
            crate::service::auth::random_string(18),
            state.server_name
        )
    });
    let target = Target::New {
        version,
        room_id: room_id_new,
        is_public,
        aliases: Vec::new(),
    };
    let new_room = state.writer.submit(target, drafts, None).await?.room_id;

    let tombstone = json!({"body": "This room has been replaced", "replacement_room": new_room});
    submit(state, room_id, "m.room.tombstone", me, tombstone).await?;
    if is_public {
        store::rooms::set_public(&state.db, room_id, false).await?;
    }
    store::rooms::move_aliases(&state.db, room_id, &new_room).await?;
    if let Some(alias) = old.entry("m.room.canonical_alias", "") {
        let (left, _) = split_canonical_alias(&alias.content, state.server_name.as_str());
        if let Err(e) = submit(state, room_id, "m.room.canonical_alias", me, left).await {
            tracing::warn!(room_id, error = %e, "could not update the old room's aliases");
        }
    }
    if let Some(restricted) = restricted_power_levels(old.entry("m.room.power_levels", "")) {
        // As Synapse: the upgrade stands even if the old room's levels cannot be changed.
        if let Err(e) = submit(state, room_id, "m.room.power_levels", me, restricted).await {
            tracing::warn!(room_id, error = %e, "could not restrict the old room's power levels");
        }
    }
    for user in old.members_with("join") {
        if let Err(e) = copy_user_state(state, user, room_id, &new_room).await {
            tracing::warn!(user, error = %e, "could not copy tags and push rules to the new room");
        }
    }
    Ok(new_room)
}

/// `additional_creators` must be user IDs (Synapse's `check_valid_additional_creators`).
fn check_creators(users: Vec<String>) -> Result<Vec<String>> {
    for user in &users {
        if !auth_rules::is_valid_user_id(user) {
            return Err(Error::bad_json(format!(
                "additional_creators: {user} is not a user ID"
            )));
        }
    }
    Ok(users)
}

async fn submit(
    state: &AppState,
    room_id: &str,
    event_type: &str,
    sender: &str,
    content: Value,
) -> Result<()> {
    let draft = EventDraft::new(event_type, Some(""), sender, content);
    state
        .writer
        .submit(Target::Existing(room_id.to_owned()), vec![draft], None)
        .await?;
    Ok(())
}

/// The new room's events, in order: create, the upgrader's join, power levels (the upgrader raised
/// as far as needed to send the rest), the copied state, the canonical alias, the bans, and the
/// final power levels when they differ from the first.
fn new_room_drafts(
    old: &RoomSnapshot,
    version: RoomVersion,
    me: &str,
    extra_creators: &[String],
    profile: Option<&store::users::UserRow>,
) -> Vec<EventDraft> {
    let draft = |t: &str, k: &str, content: Value| EventDraft::new(t, Some(k), me, content);
    let old_create = old.entry("m.room.create", "").map(|e| &e.content);
    let create = create_content(old, old_create, version, me, extra_creators);
    let mut drafts = vec![
        draft("m.room.create", "", create),
        draft(
            "m.room.member",
            me,
            rooms::member_content("join", profile, None),
        ),
    ];
    let old_power = old.entry("m.room.power_levels", "").map(|e| &e.content);
    let (initial, last) = new_power_levels(old, old_power, version, me, extra_creators);
    drafts.push(draft("m.room.power_levels", "", Value::Object(initial)));
    for event_type in COPIED_STATE {
        if let Some(e) = old.entry(event_type, "") {
            drafts.push(draft(event_type, "", e.content.clone()));
        }
    }
    let is_space = old_create.and_then(|c| c.get("type")) == Some(&json!("m.space"));
    if is_space && let Some(children) = old.state.get("m.space.child") {
        let mut children: Vec<(&String, &Arc<_>)> = children.iter().collect();
        children.sort_by(|a, b| a.0.cmp(b.0));
        for (key, e) in children {
            // An emptied child event took the room out of the space.
            if e.content.as_object().is_some_and(|c| !c.is_empty()) {
                drafts.push(draft("m.space.child", key, e.content.clone()));
            }
        }
    }
    if let Some(alias) = old.entry("m.room.canonical_alias", "") {
        let server = me.split_once(':').map(|(_, s)| s).unwrap_or_default();
        let (_, moved) = split_canonical_alias(&alias.content, server);
        drafts.push(draft("m.room.canonical_alias", "", moved));
    }
    for user in old.members_with("ban") {
        if let Some(ban) = old.entry("m.room.member", user) {
            drafts.push(draft("m.room.member", user, ban.content.clone()));
        }
    }
    if let Some(last) = last {
        drafts.push(draft("m.room.power_levels", "", Value::Object(last)));
    }
    drafts
}

/// Synapse's `_calculate_upgraded_room_creation_content`: the version, the predecessor, the
/// additional creators, and the old room's `m.federate: false` and `type`. Where the room ID is not
/// derived from the create event, `predecessor.event_id` is the old room's last event.
fn create_content(
    old: &RoomSnapshot,
    old_create: Option<&Value>,
    version: RoomVersion,
    me: &str,
    extra_creators: &[String],
) -> Value {
    let mut predecessor = json!({"room_id": old.room_id});
    if !version.has_privileged_creators() {
        predecessor["event_id"] = json!(old.head_event_id);
    }
    let mut content = json!({"room_version": version.as_str(), "predecessor": predecessor});
    if version.create_has_creator_field() {
        content["creator"] = json!(me);
    }
    if !extra_creators.is_empty() {
        content["additional_creators"] = json!(extra_creators);
    }
    if let Some(old_create) = old_create {
        if old_create.get("m.federate") == Some(&json!(false)) {
            content["m.federate"] = json!(false);
        }
        if let Some(room_type) = old_create.get("type") {
            content["type"] = room_type.clone();
        }
    }
    content
}

/// The new room's power levels: the old room's (Synapse's `clone_existing_room` and
/// `_update_upgraded_room_pls`). The first version raises the upgrader to the highest level the
/// copied state needs (state_default, ban, any event level); the second, sent last, is the old
/// room's levels, present only when it differs. Creators of a v12 room are left out of `users`;
/// a creator of an old v12 room upgrading to an older version gets the highest level the levels
/// name (at least 100), so that they keep every power they had, the tombstone's included, where
/// Synapse leaves them at `users_default`.
fn new_power_levels(
    old: &RoomSnapshot,
    old_power: Option<&Value>,
    version: RoomVersion,
    me: &str,
    extra_creators: &[String],
) -> (Map<String, Value>, Option<Map<String, Value>>) {
    let mut last = match old_power {
        Some(Value::Object(p)) => integer_levels(p),
        _ => rooms::default_power_levels(version, me, "private_chat", &[]),
    };
    let users = last
        .entry("users")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut users = users;
    if version.has_privileged_creators() {
        users.remove(me);
        for creator in extra_creators {
            users.remove(creator);
        }
    } else if old.version.has_privileged_creators() && auth_rules::is_creator(old.version, old, me)
    {
        users.insert(me.to_owned(), json!(highest_level(&last, &users).max(100)));
    }
    last.insert("users".into(), Value::Object(users));
    if version.has_privileged_creators() {
        return (last, None);
    }
    let level = |key: &str, default: i64| last.get(key).and_then(Value::as_i64).unwrap_or(default);
    let events_max = last
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.values().filter_map(Value::as_i64).max())
        .unwrap_or(0);
    let needed = level("state_default", 50)
        .max(level("ban", 50))
        .max(events_max);
    let mine = last["users"]
        .get(me)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| level("users_default", 0));
    if mine >= needed {
        return (last, None);
    }
    let mut initial = last.clone();
    initial["users"][me] = json!(needed);
    (initial, Some(last))
}

/// The highest level `levels` name: a user's, an event type's or a top-level field's.
fn highest_level(levels: &Map<String, Value>, users: &Map<String, Value>) -> i64 {
    let events = levels.get("events").and_then(Value::as_object);
    users
        .values()
        .chain(events.into_iter().flat_map(|e| e.values()))
        .chain(levels.values())
        .filter_map(auth_rules::as_level)
        .max()
        .unwrap_or(0)
}

/// Power levels with every level an integer, as v10+ rooms require: levels held in strings (room
/// versions 1–9 allow them) are converted, and values that are no level at all dropped (Synapse's
/// `copy_and_fixup_power_levels_contents`).
fn integer_levels(content: &Map<String, Value>) -> Map<String, Value> {
    const MAPS: [&str; 3] = ["users", "events", "notifications"];
    let mut out = Map::new();
    for (key, value) in content {
        if MAPS.contains(&key.as_str()) {
            let Some(map) = value.as_object() else {
                continue;
            };
            let levels: Map<String, Value> = map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), json!(auth_rules::as_level(v)?))))
                .collect();
            out.insert(key.clone(), Value::Object(levels));
        } else if value.is_number() || value.is_string() {
            if let Some(level) = auth_rules::as_level(value) {
                out.insert(key.clone(), json!(level));
            }
        } else {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

/// The old room's power levels with `invite` and `events_default` raised to moderator level
/// (`max(users_default + 1, 50)`), or None when they already are.
fn restricted_power_levels(
    current: Option<&Arc<crate::service::room_cache::StateEntry>>,
) -> Option<Value> {
    let mut content = current?.content.as_object()?.clone();
    let users_default = content
        .get("users_default")
        .and_then(auth_rules::as_level)
        .unwrap_or(0);
    let restricted = (users_default + 1).max(50);
    let mut updated = false;
    for key in ["invite", "events_default"] {
        if content.get(key).and_then(auth_rules::as_level).unwrap_or(0) < restricted {
            content.insert(key.into(), json!(restricted));
            updated = true;
        }
    }
    updated.then_some(Value::Object(content))
}

/// Splits a canonical alias content into what stays in the old room and what moves to the new
/// one: the aliases of this server move (they now point to the new room), the others stay.
fn split_canonical_alias(content: &Value, server: &str) -> (Value, Value) {
    let local = |alias: &str| alias.rsplit_once(':').is_some_and(|(_, s)| s == server);
    let mut left = content.as_object().cloned().unwrap_or_default();
    let mut moved = Map::new();
    if let Some(alias) = content.get("alias").and_then(Value::as_str)
        && local(alias)
    {
        moved.insert("alias".into(), json!(alias));
        left.remove("alias");
    }
    if let Some(alt) = content.get("alt_aliases").and_then(Value::as_array)
        && !alt.is_empty()
    {
        let (mine, others): (Vec<&Value>, Vec<&Value>) =
            alt.iter().partition(|a| a.as_str().is_some_and(local));
        moved.insert("alt_aliases".into(), json!(mine));
        if others.is_empty() {
            left.remove("alt_aliases");
        } else {
            left.insert("alt_aliases".into(), json!(others));
        }
    }
    (Value::Object(left), Value::Object(moved))
}

/// Synapse's `copy_user_state_on_room_upgrade` for one user: the old room's tags, its place in
/// `m.direct`, and the enabled push rules that name the old room.
async fn copy_user_state(state: &AppState, user: &str, old: &str, new: &str) -> Result<()> {
    account_data::update(state, user, "", "m.direct", |current| {
        let Some(mut direct) = current.and_then(|c| serde_json::from_str::<Value>(&c).ok()) else {
            return Ok(None);
        };
        let Some(map) = direct.as_object_mut() else {
            return Ok(None);
        };
        for rooms in map.values_mut().filter_map(Value::as_array_mut) {
            let has = |id: &str| rooms.iter().any(|r| r.as_str() == Some(id));
            if has(old) && !has(new) {
                rooms.push(json!(new));
                return Ok(Some(direct.to_string()));
            }
        }
        Ok(None)
    })
    .await?;
    if let Some(tags) = store::account_data::get(&state.db, user, old, "m.tag").await?
        && serde_json::from_str::<Value>(&tags).ok().and_then(|v| {
            v.get("tags")
                .and_then(Value::as_object)
                .map(|t| !t.is_empty())
        }) == Some(true)
    {
        account_data::update(state, user, new, "m.tag", |current| {
            let mut merged: Map<String, Value> = current
                .and_then(|c| serde_json::from_str(&c).ok())
                .unwrap_or_default();
            let old_tags: Value = serde_json::from_str(&tags).map_err(Error::internal)?;
            let into = merged
                .entry("tags")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| Error::internal("m.tag tags is not an object"))?;
            for (tag, content) in old_tags["tags"].as_object().into_iter().flatten() {
                into.insert(tag.clone(), content.clone());
            }
            Ok(Some(Value::Object(merged).to_string()))
        })
        .await?;
    }
    push::copy_room_rules(state, user, old, new).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_room_levels_restricted_to_moderators() {
        let entry = |content: Value| {
            Arc::new(
                crate::service::room_cache::StateEntry::new(
                    "$e".into(),
                    "m.room.power_levels",
                    "",
                    "@a:x".into(),
                    content,
                )
                .unwrap(),
            )
        };
        let r = restricted_power_levels(Some(&entry(json!({"invite": 0}))));
        assert_eq!(r.unwrap(), json!({"invite": 50, "events_default": 50}));
        let r = restricted_power_levels(Some(&entry(json!({"users_default": 60}))));
        assert_eq!(
            r.unwrap(),
            json!({"users_default": 60, "invite": 61, "events_default": 61})
        );
        let r = restricted_power_levels(Some(&entry(json!({"invite": 50, "events_default": 70}))));
        assert!(r.is_none());
        assert!(restricted_power_levels(None).is_none());
    }

    #[test]
    fn string_levels_become_integers() {
        let old = json!({"ban": "60", "kick": 50, "users": {"@a:x": "100", "@b:x": "nope"},
                         "events": {"m.room.name": " 20 "}, "notifications": {"room": "5"},
                         "historical": 100, "extra": {"k": "v"}});
        let fixed = integer_levels(old.as_object().unwrap());
        assert_eq!(
            Value::Object(fixed),
            json!({"ban": 60, "kick": 50, "users": {"@a:x": 100}, "events": {"m.room.name": 20},
                   "notifications": {"room": 5}, "historical": 100, "extra": {"k": "v"}})
        );
    }

    #[test]
    fn canonical_alias_local_aliases_move() {
        let content = json!({"alias": "#a:x", "alt_aliases": ["#b:x", "#c:y"], "extra": 1});
        let (left, moved) = split_canonical_alias(&content, "x");
        assert_eq!(left, json!({"alt_aliases": ["#c:y"], "extra": 1}));
        assert_eq!(moved, json!({"alias": "#a:x", "alt_aliases": ["#b:x"]}));
        let (left, moved) = split_canonical_alias(&json!({"alias": "#a:x"}), "x");
        assert_eq!((left, moved), (json!({}), json!({"alias": "#a:x"})));
    }
}

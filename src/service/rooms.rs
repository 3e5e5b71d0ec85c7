//! Room operations: creating rooms, membership changes, state changes.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::service::auth::{Requester, random_string};
use crate::service::auth_rules;
use crate::service::events::EventDraft;
use crate::service::rate_limit::UserAction;
use crate::service::room_versions::RoomVersion;
use crate::service::writer::{Committed, Target, room_snapshot};
use crate::service::{guests, message_validation, restricted, room_versions};
use crate::{AppState, Error, Result, store};

/// The body of POST /createRoom.
#[derive(Debug, Default, Deserialize)]
pub struct CreateRoomRequest {
    pub visibility: Option<String>,
    pub room_alias_name: Option<String>,
    pub name: Option<Value>,
    pub topic: Option<Value>,
    #[serde(default)]
    pub invite: Vec<String>,
    #[serde(default)]
    pub invite_3pid: Vec<Value>,
    pub room_version: Option<String>,
    pub creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    pub initial_state: Vec<InitialStateEvent>,
    pub preset: Option<String>,
    #[serde(default)]
    pub is_direct: bool,
    pub power_level_content_override: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
pub struct InitialStateEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub state_key: String,
    pub content: Value,
}

pub async fn create_room(
    state: &AppState,
    requester: &Requester,
    req: CreateRoomRequest,
) -> Result<String> {
    let creator = requester.user_id.as_str();
    let version_name = req
        .room_version
        .clone()
        .unwrap_or_else(|| state.config.default_room_version.clone());
    let version = room_versions::parse(&version_name).ok_or_else(|| {
        Error::unsupported_room_version(format!("Room version {version_name} is not supported"))
    })?;
    if !req.invite_3pid.is_empty() {
        return Err(Error::invalid_param(
            "Third-party invites (invite_3pid) are not supported",
        ));
    }
    state.rate_limiter.create_room(requester)?;
    let visibility = req.visibility.as_deref().unwrap_or("private");
    if !matches!(visibility, "public" | "private") {
        return Err(Error::invalid_param(
            "visibility must be \"public\" or \"private\"",
        ));
    }
    let preset = match req.preset.as_deref() {
        Some(p @ ("private_chat" | "trusted_private_chat" | "public_chat")) => p,
        Some(other) => return Err(Error::invalid_param(format!("Unknown preset {other}"))),
        None if visibility == "public" => "public_chat",
        None => "private_chat",
    };
    let mut invitees = Vec::new();
    // Other servers' users are invited once the room exists (their servers sign the invites).
    let mut remote_invitees = Vec::new();
    // As Synapse: a shadow-banned user's room is made, its invites silently left out.
    let invite = if requester.is_shadow_banned {
        &[][..]
    } else {
        &req.invite[..]
    };
    for user in invite {
        let user_id = ruma::UserId::parse(user)
            .map_err(|_| Error::invalid_param(format!("{user} is not a user ID")))?;
        if user_id.server_name() != state.server_name {
            if !state.config.federation_enabled() {
                return Err(Error::forbidden(
                    "Federation is disabled: only local users can be invited",
                ));
            }
            if !remote_invitees.contains(&user_id) {
                remote_invitees.push(user_id.clone());
            }
        }
        if !invitees.contains(user) {
            invitees.push(user.clone());
        }
    }
    let alias = match &req.room_alias_name {
        Some(local) => {
            if local.is_empty() || local.contains(':') || local.chars().any(char::is_whitespace) {
                return Err(Error::matrix(
                    axum_status(400),
                    "M_INVALID_PARAM",
                    "Invalid room_alias_name",
                ));
            }
            let alias = format!("#{local}:{}", state.server_name);
            if ruma::RoomAliasId::parse(&alias).is_err() {
                return Err(Error::invalid_param("Invalid room_alias_name"));
            }
            if store::rooms::resolve_alias(&state.db, &alias)
                .await?
                .is_some()
            {
                return Err(Error::room_in_use("Room alias already taken"));
            }
            Some(alias)
        }
        None => None,
    };
    let profile = store::users::get_user(&state.db, creator).await?;

    let mut drafts = Vec::new();
    // 1. m.room.create
    let mut create = req.creation_content.clone().unwrap_or_default();
    create.insert("room_version".into(), json!(version_name));
    if version.create_has_creator_field() {
        create.insert("creator".into(), json!(creator));
    } else {
        create.remove("creator");
    }
    if version.has_privileged_creators() && preset == "trusted_private_chat" && !invitees.is_empty()
    {
        let mut extra: Vec<Value> = create
            .get("additional_creators")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for user in &invitees {
            if !extra.iter().any(|v| v == user) {
                extra.push(json!(user));
            }
        }
        create.insert("additional_creators".into(), Value::Array(extra));
    }
    drafts.push(EventDraft::new(
        "m.room.create",
        Some(""),
        creator,
        Value::Object(create),
    ));
    // 2. the creator joins
    drafts.push(EventDraft::new(
        "m.room.member",
        Some(creator),
        creator,
        member_content("join", profile.as_ref(), None),
    ));
    // 3. power levels
    let mut power = default_power_levels(version, creator, preset, &invitees);
    if let Some(overrides) = &req.power_level_content_override {
        for (k, v) in overrides {
            power.insert(k.clone(), v.clone());
        }
    }
    drafts.push(EventDraft::new(
        "m.room.power_levels",
        Some(""),
        creator,
        Value::Object(power),
    ));
    // 4. canonical alias
    if let Some(alias) = &alias {
        drafts.push(EventDraft::new(
            "m.room.canonical_alias",
            Some(""),
            creator,
            json!({"alias": alias}),
        ));
    }
    // 5. the preset's state
    let (join_rule, guest_access) = match preset {
        "public_chat" => ("public", "forbidden"),
        _ => ("invite", "can_join"),
    };
    drafts.push(EventDraft::new(
        "m.room.join_rules",
        Some(""),
        creator,
        json!({"join_rule": join_rule}),
    ));
    drafts.push(EventDraft::new(
        "m.room.history_visibility",
        Some(""),
        creator,
        json!({"history_visibility": "shared"}),
    ));
    drafts.push(EventDraft::new(
        "m.room.guest_access",
        Some(""),
        creator,
        json!({"guest_access": guest_access}),
    ));
    // 6. initial_state
    for event in &req.initial_state {
        if matches!(event.event_type.as_str(), "m.room.create" | "m.room.member") {
            return Err(Error::invalid_room_state(format!(
                "{} cannot be set in initial_state",
                event.event_type
            )));
        }
        let Value::Object(content) = &event.content else {
            return Err(Error::invalid_room_state(format!(
                "initial_state {} content must be an object",
                event.event_type
            )));
        };
        let mut content = content.clone();
        message_validation::validate_state_content(&event.event_type, &content)
            .map_err(|e| Error::invalid_room_state(e.0))?;
        if state.config.messages.sanitize_html {
            message_validation::sanitize_content(&event.event_type, &mut content);
        }
        drafts.push(EventDraft::new(
            &event.event_type,
            Some(&event.state_key),
            creator,
            Value::Object(content),
        ));
    }
    // 7. name and topic
    if let Some(name) = &req.name {
        let name = name
            .as_str()
            .ok_or_else(|| Error::bad_json("name must be a string"))?;
        drafts.push(EventDraft::new(
            "m.room.name",
            Some(""),
            creator,
            json!({"name": name}),
        ));
    }
    if let Some(topic) = &req.topic {
        let topic = topic
            .as_str()
            .ok_or_else(|| Error::bad_json("topic must be a string"))?;
        drafts.push(EventDraft::new(
            "m.room.topic",
            Some(""),
            creator,
            json!({"topic": topic, "m.topic": {"m.text": [{"body": topic}]}}),
        ));
    }
    // 8. invites
    for user in invitees
        .iter()
        .filter(|u| !remote_invitees.iter().any(|r| r.as_str() == u.as_str()))
    {
        let invitee = store::users::get_user(&state.db, user).await?;
        if invitee.as_ref().is_none_or(|u| u.deactivated) {
            return Err(Error::not_found(format!("Unknown user {user}")));
        }
        let mut content = member_content("invite", invitee.as_ref(), None);
        if req.is_direct {
            content["is_direct"] = json!(true);
        }
        drafts.push(EventDraft::new(
            "m.room.member",
            Some(user),
            creator,
            content,
        ));
    }

    let room_id = if version.room_id_from_create() {
        None
    } else {
        Some(format!("!{}:{}", random_string(18), state.server_name))
    };
    let target = Target::New {
        version,
        room_id,
        is_public: visibility == "public",
        aliases: alias.into_iter().collect(),
    };
    let committed = state.writer.submit(target, drafts, None).await?;
    // As Synapse: a refused remote invite fails the request (the room stays).
    for user in &remote_invitees {
        let mut content = member_content("invite", None, None);
        if req.is_direct {
            content["is_direct"] = json!(true);
        }
        crate::service::federation::invite::invite_remote(
            state,
            creator,
            &committed.room_id,
            user,
            content,
        )
        .await?;
    }
    Ok(committed.room_id)
}

fn axum_status(code: u16) -> axum::http::StatusCode {
    axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::BAD_REQUEST)
}

/// Synapse's defaults, which clients expect: moderators at 50, admins at 100, invites open to all
/// members of private rooms.
pub(crate) fn default_power_levels(
    version: RoomVersion,
    creator: &str,
    preset: &str,
    invitees: &[String],
) -> Map<String, Value> {
    let mut users = Map::new();
    if !version.has_privileged_creators() {
        users.insert(creator.into(), json!(100));
        if preset == "trusted_private_chat" {
            for user in invitees {
                users.insert(user.clone(), json!(100));
            }
        }
    }
    let tombstone = if version.has_privileged_creators() {
        150
    } else {
        100
    };
    let invite = if preset == "public_chat" { 50 } else { 0 };
    let Value::Object(map) = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": tombstone,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": invite,
        "historical": 100,
    }) else {
        unreachable!()
    };
    map
}

/// A member event's content with the user's profile, as clients expect to find it.
pub fn member_content(
    membership: &str,
    profile: Option<&store::users::UserRow>,
    reason: Option<&str>,
) -> Value {
    let mut given = Map::new();
    if let Some(reason) = reason {
        given.insert("reason".into(), json!(reason));
    }
    member_content_with(membership, profile, given)
}

/// A member event's content from what the client sent (a reason, a per-room profile, any other
/// keys: Synapse keeps them all): `membership` is forced, and the user's profile fills in
/// `displayname` and `avatar_url` where the client left them out.
pub fn member_content_with(
    membership: &str,
    profile: Option<&store::users::UserRow>,
    mut content: Map<String, Value>,
) -> Value {
    // Only a resident server vouches for a restricted join; Synapse strips this key from clients.
    content.remove("join_authorised_via_users_server");
    content.insert("membership".into(), json!(membership));
    if let Some(p) = profile {
        if let (false, Some(name)) = (content.contains_key("displayname"), &p.displayname) {
            content.insert("displayname".into(), json!(name));
        }
        if let (false, Some(url)) = (content.contains_key("avatar_url"), &p.avatar_url) {
            content.insert("avatar_url".into(), json!(url));
        }
    }
    Value::Object(content)
}

/// The keys of a client-supplied member content that the spec types: `reason` a string, a
/// per-room `displayname` and `avatar_url` strings (or null) within Synapse's length limits.
pub fn check_member_keys(content: &Map<String, Value>) -> Result<()> {
    if content.get("reason").is_some_and(|r| !r.is_string()) {
        return Err(Error::bad_json("reason must be a string"));
    }
    for (key, max) in [("displayname", 256), ("avatar_url", 1000)] {
        match content.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.chars().count() <= max => {}
            Some(Value::String(_)) => {
                return Err(Error::bad_json(format!("{key} is too long (max {max})")));
            }
            Some(_) => return Err(Error::bad_json(format!("{key} must be a string"))),
        }
    }
    Ok(())
}

/// A room ID or alias, resolved to a local room.
pub async fn resolve_room(state: &AppState, room_id_or_alias: &str) -> Result<String> {
    if room_id_or_alias.starts_with('#') {
        let alias = ruma::RoomAliasId::parse(room_id_or_alias)
            .map_err(|_| Error::invalid_param(format!("{room_id_or_alias} is not a room alias")))?;
        if alias.server_name() != state.server_name {
            if !state.config.federation_enabled() {
                return Err(Error::not_found(
                    "Federation is disabled: cannot resolve remote aliases",
                ));
            }
            let (room_id, _) =
                crate::service::directory::alias_servers(state, room_id_or_alias).await?;
            return Ok(room_id);
        }
        return store::rooms::resolve_alias(&state.db, room_id_or_alias)
            .await?
            .ok_or_else(|| Error::not_found("Room alias not found"));
    }
    if !room_id_or_alias.starts_with('!') || ruma::RoomId::parse(room_id_or_alias).is_err() {
        return Err(Error::invalid_param(format!(
            "{room_id_or_alias} is not a room ID or alias"
        )));
    }
    Ok(room_id_or_alias.to_owned())
}

/// Fails with 404 (unknown room) or 403 (a remote room we cannot join without federation).
async fn require_room(state: &AppState, room_id: &str) -> Result<()> {
    if store::rooms::room_version(&state.db, room_id)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let remote = room_id
        .split_once(':')
        .is_some_and(|(_, server)| server != state.server_name.as_str());
    if remote {
        Err(Error::forbidden(
            "This room is on another server, and this server is not in it",
        ))
    } else {
        Err(Error::not_found("Unknown room"))
    }
}

/// A membership change by `sender` for `target`: `action` is a membership, or `kick` or `unban`
/// (both a `leave`; a kick applies only to a member, an invitee or a knocker, as in Synapse's
/// `RoomMemberHandler.update_membership_locked`, synapse/handlers/room_member.py).
pub async fn change_membership(
    state: &AppState,
    sender: &Requester,
    room_id: &str,
    target: &str,
    action: &str,
    reason: Option<&str>,
) -> Result<Committed> {
    let membership = match action {
        "kick" | "unban" => "leave",
        other => other,
    };
    require_room(state, room_id).await?;
    if state.config.federation_enabled()
        && let Some(done) = across_servers(state, sender, room_id, target, action, reason).await?
    {
        return Ok(done);
    }
    let profile = member_profile(state, sender, room_id, target, membership).await?;
    if membership == "invite" && sender.is_shadow_banned {
        // As Synapse: a shadow-banned user's invite seems to succeed and reaches no one.
        return Ok(Committed {
            room_id: room_id.to_owned(),
            event_ids: vec![crate::service::auth::fake_event_id()],
            deduplicated: false,
        });
    }
    let content = member_content(membership, profile.as_ref(), reason);
    let checks = MemberChecks {
        kick: action == "kick",
        ..MemberChecks::default()
    };
    submit_member(state, sender, room_id, target, content, checks).await
}

/// The membership changes another server must take part in: an invite of its user (which it
/// signs), and a local user's rejection of its invite to a room this server is not in. `None`
/// for every other change.
async fn across_servers(
    state: &AppState,
    sender: &Requester,
    room_id: &str,
    target: &str,
    action: &str,
    reason: Option<&str>,
) -> Result<Option<Committed>> {
    use crate::service::federation::invite;
    let me = sender.user_id.as_str();
    if action == "leave" && target == me {
        return match invite::pending_remote_invite(state, room_id, me).await? {
            Some(pending) => invite::reject(state, me, room_id, &pending, reason)
                .await
                .map(Some),
            None => Ok(None),
        };
    }
    let target_id = ruma::UserId::parse(target)
        .map_err(|_| Error::invalid_param(format!("{target} is not a user ID")))?;
    if action != "invite" || target_id.server_name() == state.server_name {
        return Ok(None);
    }
    state.rate_limiter.invite(sender, room_id, target)?;
    let content = member_content("invite", None, reason);
    invite::invite_remote(state, me, room_id, &target_id, content)
        .await
        .map(Some)
}

/// What the writer checks of a member event under the room lock (see `EventDraft`).
#[derive(Default)]
struct MemberChecks {
    /// The target is still a member, an invitee or a knocker.
    kick: bool,
    /// The room still lets guests join.
    guest_join: bool,
}

/// Submits a member event with the `checks` the writer makes under the room lock.
async fn submit_member(
    state: &AppState,
    sender: &Requester,
    room_id: &str,
    target: &str,
    content: Value,
    checks: MemberChecks,
) -> Result<Committed> {
    let mut draft = EventDraft::new(
        "m.room.member",
        Some(target),
        sender.user_id.as_str(),
        content,
    );
    draft.kick = checks.kick;
    draft.guest_join = checks.guest_join;
    state
        .writer
        .submit(Target::Existing(room_id.to_owned()), vec![draft], None)
        .await
}

/// The target's profile for the memberships that carry one (join, invite, knock); refuses remote
/// and unknown targets of those, and rate-limits invites.
async fn member_profile(
    state: &AppState,
    sender: &Requester,
    room_id: &str,
    target: &str,
    membership: &str,
) -> Result<Option<store::users::UserRow>> {
    let target_id = ruma::UserId::parse(target)
        .map_err(|_| Error::invalid_param(format!("{target} is not a user ID")))?;
    if !matches!(membership, "join" | "invite" | "knock") {
        return Ok(None);
    }
    if target_id.server_name() != state.server_name {
        return Err(Error::forbidden(
            "Federation is disabled: only local users can be invited",
        ));
    }
    let user = store::users::get_user(&state.db, target).await?;
    if user.as_ref().is_none_or(|u| u.deactivated) {
        return Err(Error::not_found(format!("Unknown user {target}")));
    }
    if membership == "invite" {
        state.rate_limiter.invite(sender, room_id, target)?;
    }
    Ok(user)
}

/// Joins a room. `content` is what the client asked to put in its member event (see
/// `member_content_with`).
pub async fn join(
    state: &AppState,
    requester: &Requester,
    room_id_or_alias: &str,
    content: Map<String, Value>,
) -> Result<String> {
    join_via(state, requester, room_id_or_alias, &[], content).await
}

/// Joins a room, asking the `via` servers (or the room ID's server) when it is on other servers
/// and this one is not in it.
pub async fn join_via(
    state: &AppState,
    requester: &Requester,
    room_id_or_alias: &str,
    via: &[String],
    content: Map<String, Value>,
) -> Result<String> {
    let mut via = via.to_vec();
    let room_id = if room_id_or_alias.starts_with('#') && state.config.federation_enabled() {
        let (room_id, servers) =
            crate::service::directory::alias_servers(state, room_id_or_alias).await?;
        via.extend(servers);
        room_id
    } else {
        resolve_room(state, room_id_or_alias).await?
    };
    if !state.config.federation_enabled() {
        return enter(state, requester, &room_id, "join", content).await;
    }
    let Some(servers) = join_servers(state, &room_id, requester.user_id.as_str(), &via).await?
    else {
        return enter(state, requester, &room_id, "join", content).await;
    };
    check_member_keys(&content)?;
    if store::admin_jobs::is_blocked(&state.db, &room_id).await? {
        return Err(Error::forbidden(
            "This room has been blocked on this server",
        ));
    }
    state.rate_limiter.user(UserAction::Join, requester)?;
    let profile = store::users::get_user(&state.db, requester.user_id.as_str()).await?;
    let content = member_content_with("join", profile.as_ref(), content);
    let Value::Object(content) = content else {
        return Err(Error::internal("member content is not an object"));
    };
    crate::service::federation::join::join_remote(
        state,
        requester.user_id.as_str(),
        &room_id,
        &servers,
        content,
    )
    .await?;
    Ok(room_id)
}

/// The servers to join `room_id` through when this server is not in it: the server of `user`'s
/// inviter (when invited from another server), the `via` servers, the room ID's server, then the
/// servers this server last knew in the room. `None` when this server is in the room — or knows
/// its whole state and nobody is in it anywhere (a local room everyone left) —: joined here.
async fn join_servers(
    state: &AppState,
    room_id: &str,
    user: &str,
    via: &[String],
) -> Result<Option<Vec<ruma::OwnedServerName>>> {
    let room = room_snapshot(state, room_id).await?;
    if room
        .as_ref()
        .is_some_and(|r| crate::service::federation::invite::is_inside(state, r))
    {
        return Ok(None);
    }
    let mut candidates: Vec<String> = Vec::new();
    if let Some(invite) = room.as_ref().and_then(|r| r.entry("m.room.member", user))
        && invite.content["membership"] == "invite"
        && let Some((_, server)) = invite.sender.split_once(':')
    {
        candidates.push(server.to_owned());
    }
    candidates.extend(via.iter().cloned());
    if let Some(server) = ruma::RoomId::parse(room_id)
        .ok()
        .and_then(|r| r.server_name().map(ToString::to_string))
    {
        candidates.push(server);
    }
    if let Some(room) = &room {
        candidates.extend(room.member_lists().join_servers.iter().cloned());
    }
    let mut servers: Vec<ruma::OwnedServerName> = Vec::new();
    for candidate in candidates {
        if let Ok(server) = ruma::OwnedServerName::try_from(candidate)
            && server != state.server_name
            && !servers.contains(&server)
        {
            servers.push(server);
        }
    }
    let whole_state = room
        .as_ref()
        .is_some_and(|r| r.entry("m.room.create", "").is_some());
    if servers.is_empty() && whole_state {
        return Ok(None);
    }
    Ok(Some(servers))
}

/// Asks to be let in to a room whose join rule is `knock` (or `knock_restricted`); the authorization
/// rules refuse other rooms, and members, invitees and banned users.
pub async fn knock(
    state: &AppState,
    requester: &Requester,
    room_id_or_alias: &str,
    reason: Option<&str>,
) -> Result<String> {
    let mut content = Map::new();
    if let Some(reason) = reason {
        content.insert("reason".into(), json!(reason));
    }
    enter(state, requester, room_id_or_alias, "knock", content).await
}

/// The requester's own `join` or `knock`; answers with the room's ID.
async fn enter(
    state: &AppState,
    requester: &Requester,
    room_id_or_alias: &str,
    membership: &str,
    given: Map<String, Value>,
) -> Result<String> {
    check_member_keys(&given)?;
    let room_id = resolve_room(state, room_id_or_alias).await?;
    // An admin blocked the room (Synapse's room deletion with `block`): nobody here joins it.
    if store::admin_jobs::is_blocked(&state.db, &room_id).await? {
        return Err(Error::forbidden(
            "This room has been blocked on this server",
        ));
    }
    require_room(state, &room_id).await?;
    let me = requester.user_id.as_str();
    let profile = member_profile(state, requester, &room_id, me, membership).await?;
    let mut content = member_content_with(membership, profile.as_ref(), given);
    if requester.is_guest
        && let Value::Object(map) = &mut content
    {
        guests::mark_member_content(map);
    }
    let snapshot = room_snapshot(state, &room_id).await?;
    if membership == "join"
        && let Some(snapshot) = &snapshot
        && let Some(by) = restricted::authorise_join(state, snapshot, me).await?
    {
        content[auth_rules::AUTHORISING_USER] = json!(by);
    }
    // Joining again with the same content is a no-op that answers with the room, as in Synapse
    // (room_member.py); new content (a per-room name, say) is a new member event.
    let current = snapshot.as_ref().and_then(|s| s.entry("m.room.member", me));
    if let Some(current) = current
        && membership == "join"
        && current.sender == me
        && current.content == content
    {
        return Ok(room_id);
    }
    if membership == "join" && current.is_none_or(|c| c.content["membership"] != "join") {
        state.rate_limiter.user(UserAction::Join, requester)?;
    }
    let checks = MemberChecks {
        guest_join: requester.is_guest && membership == "join",
        ..MemberChecks::default()
    };
    submit_member(state, requester, &room_id, me, content, checks).await?;
    Ok(room_id)
}

pub async fn forget(state: &AppState, requester: &Requester, room_id: &str) -> Result<()> {
    let me = requester.user_id.as_str();
    match store::rooms::membership(&state.db, room_id, me).await? {
        None => Err(Error::not_found("You have never been in this room")),
        Some(m) if m == "join" || m == "invite" || m == "knock" => Err(Error::unknown(
            "You must leave the room before forgetting it",
        )),
        Some(_) => {
            store::rooms::forget(&state.db, room_id, me).await?;
            Ok(())
        }
    }
}

/// PUT /rooms/{roomId}/state/{type}/{stateKey}. Re-sending the current content is de-duplicated.
pub async fn set_state(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    mut content: Map<String, Value>,
) -> Result<String> {
    require_room(state, room_id).await?;
    message_validation::validate_state_content(event_type, &content)
        .map_err(|e| Error::bad_json(e.0))?;
    if state.config.messages.sanitize_html {
        message_validation::sanitize_content(event_type, &mut content);
    }
    state.rate_limiter.user(UserAction::Message, requester)?;
    if requester.is_shadow_banned {
        return Ok(crate::service::auth::fake_event_id());
    }
    let sender = requester.user_id.as_str();
    if event_type == "m.room.canonical_alias" {
        check_canonical_alias(state, room_id, &content).await?;
    }
    if let Some(snapshot) = room_snapshot(state, room_id).await?
        && let Some(current) = snapshot.entry(event_type, state_key)
        && current.sender == sender
        && current.content == Value::Object(content.clone())
    {
        return Ok(current.event_id.clone());
    }
    let mut draft = EventDraft::new(
        event_type,
        Some(state_key),
        sender,
        Value::Object(content.clone()),
    );
    // A guest's join sent as a member state event is a join all the same: the room's guest access
    // decides, in the writer, as for /join (Synapse routes it through `update_membership`).
    draft.guest_join = requester.is_guest
        && event_type == "m.room.member"
        && content.get("membership").and_then(Value::as_str) == Some("join");
    let committed = state
        .writer
        .submit(Target::Existing(room_id.to_owned()), vec![draft], None)
        .await?;
    if event_type == "m.room.guest_access" {
        guests::after_guest_access_change(state, room_id, &content).await?;
    }
    committed
        .event_ids
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("no event"))
}

/// The spec: aliases in m.room.canonical_alias must exist and point to this room (M_BAD_ALIAS).
async fn check_canonical_alias(
    state: &AppState,
    room_id: &str,
    content: &Map<String, Value>,
) -> Result<()> {
    let mut aliases: Vec<&str> = Vec::new();
    if let Some(alias) = content.get("alias") {
        aliases.push(
            alias
                .as_str()
                .ok_or_else(|| Error::bad_json("alias must be a string"))?,
        );
    }
    if let Some(alt) = content.get("alt_aliases") {
        let alt = alt
            .as_array()
            .ok_or_else(|| Error::bad_json("alt_aliases must be an array"))?;
        for a in alt {
            aliases.push(
                a.as_str()
                    .ok_or_else(|| Error::bad_json("alt_aliases must hold strings"))?,
            );
        }
    }
    for alias in aliases {
        if ruma::RoomAliasId::parse(alias).is_err() {
            return Err(Error::invalid_param(format!("{alias} is not a room alias")));
        }
        if store::rooms::resolve_alias(&state.db, alias)
            .await?
            .as_deref()
            != Some(room_id)
        {
            return Err(Error::matrix(
                axum_status(400),
                "M_BAD_ALIAS",
                format!("{alias} does not point to this room"),
            ));
        }
    }
    Ok(())
}

/// Makes `user_id` leave (or decline the invites of) every room, e.g. on deactivation.
pub async fn leave_all_rooms(state: &AppState, user_id: &str) -> Result<()> {
    for row in store::rooms::memberships_of(&state.db, user_id).await? {
        if !matches!(row.membership.as_str(), "join" | "invite" | "knock") {
            continue;
        }
        if row.membership == "invite" && state.config.federation_enabled() {
            use crate::service::federation::invite;
            if let Some(pending) =
                invite::pending_remote_invite(state, &row.room_id, user_id).await?
            {
                if let Err(e) = invite::reject(state, user_id, &row.room_id, &pending, None).await {
                    tracing::warn!(room_id = %row.room_id, error = %e, "could not reject an invite");
                }
                continue;
            }
        }
        let draft = EventDraft::new(
            "m.room.member",
            Some(user_id),
            user_id,
            json!({"membership": "leave"}),
        );
        // A room the user cannot leave (already gone by the time the writer runs) is not an error here.
        if let Err(e) = state
            .writer
            .submit(Target::Existing(row.room_id.clone()), vec![draft], None)
            .await
        {
            tracing::warn!(room_id = %row.room_id, error = %e, "could not leave room");
        }
    }
    Ok(())
}

/// The position up to which the user may read the room's state: now if joined (or the room is
/// world-readable), their leave if they left; 403 if they never were in it.
async fn state_horizon(state: &AppState, requester: &Requester, room_id: &str) -> Result<i64> {
    if store::rooms::room_version(&state.db, room_id)
        .await?
        .is_none()
    {
        return Err(Error::forbidden("You are not allowed to view this room"));
    }
    let mut conn = state.db.acquire().await?;
    let vis = crate::service::visibility::Visibility::load(
        &mut conn,
        room_id,
        requester.user_id.as_str(),
    )
    .await?;
    if !vis.may_read_room() {
        return Err(Error::forbidden("You are not allowed to view this room"));
    }
    let upto = store::stream::current(&state.db).await?;
    Ok(vis.state_horizon(upto))
}

fn viewer(requester: &Requester) -> crate::service::timeline::Viewer<'_> {
    crate::service::timeline::Viewer {
        user_id: requester.user_id.as_str(),
        device_id: Some(requester.device_id.as_str()),
    }
}

/// GET /rooms/{roomId}/state.
pub async fn full_state(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
) -> Result<Vec<Box<serde_json::value::RawValue>>> {
    let at = state_horizon(state, requester, room_id).await?;
    let rows =
        store::events::state_at(&state.db, room_id, at, store::events::Members::Included).await?;
    Ok(crate::service::timeline::render_plain(
        &rows,
        viewer(requester),
    ))
}

/// GET /rooms/{roomId}/state/{type}/{key}: the content, or the whole event with `format=event`.
pub async fn state_event(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    whole_event: bool,
) -> Result<Value> {
    let at = state_horizon(state, requester, room_id).await?;
    let rows =
        store::events::state_at(&state.db, room_id, at, store::events::Members::Included).await?;
    let row = rows
        .into_iter()
        .find(|r| r.event_type == event_type && r.state_key.as_deref() == Some(state_key))
        .ok_or_else(|| Error::not_found(format!("No {event_type} state with key {state_key:?}")))?;
    // State events get no bundled aggregations (as in Synapse's relations handler), and are served
    // as they are whoever sent them (erasure applies to timelines).
    let rendered =
        crate::service::timeline::render_plain(std::slice::from_ref(&row), viewer(requester));
    let event: Value = serde_json::from_str(rendered[0].get()).map_err(Error::internal)?;
    Ok(if whole_event {
        event
    } else {
        event["content"].clone()
    })
}

/// GET /rooms/{roomId}/members with `at`, `membership` and `not_membership`.
pub async fn members(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    at: Option<&str>,
    membership: Option<&str>,
    not_membership: Option<&str>,
) -> Result<Vec<Box<serde_json::value::RawValue>>> {
    let horizon = state_horizon(state, requester, room_id).await?;
    let at = match at {
        Some(token) => crate::service::messages::parse_position(token)
            .ok_or_else(|| Error::invalid_param("Invalid `at` token"))?
            .min(horizon),
        None => horizon,
    };
    let rows: Vec<_> =
        store::events::state_at(&state.db, room_id, at, store::events::Members::Included)
            .await?
            .into_iter()
            .filter(|r| r.event_type == "m.room.member")
            .filter(|r| {
                let m = serde_json::from_str::<Value>(&r.client_json)
                    .ok()
                    .and_then(|v| v["content"]["membership"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                membership.is_none_or(|want| want == m) && not_membership.is_none_or(|not| not != m)
            })
            .collect();
    Ok(crate::service::timeline::render_plain(
        &rows,
        viewer(requester),
    ))
}

/// GET /rooms/{roomId}/joined_members: only for members.
pub async fn joined_members(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
) -> Result<Value> {
    let snapshot = room_snapshot(state, room_id)
        .await?
        .ok_or_else(|| Error::forbidden("You are not in this room"))?;
    if snapshot.membership(requester.user_id.as_str()) != Some("join") {
        return Err(Error::forbidden("You are not in this room"));
    }
    let mut joined = Map::new();
    for user in snapshot.members_with("join") {
        let content = &snapshot
            .entry("m.room.member", user)
            .expect("listed member")
            .content;
        // Each field only when the member event sets it to a string: the schema has no null.
        let mut member = Map::new();
        for (field, key) in [
            ("display_name", "displayname"),
            ("avatar_url", "avatar_url"),
        ] {
            if let Some(value @ Value::String(_)) = content.get(key) {
                member.insert(field.to_owned(), value.clone());
            }
        }
        joined.insert(user.to_owned(), Value::Object(member));
    }
    Ok(json!({ "joined": joined }))
}

/// GET /joined_rooms.
pub async fn joined_rooms(state: &AppState, requester: &Requester) -> Result<Vec<String>> {
    Ok(store::rooms::joined_rooms(&state.db, requester.user_id.as_str()).await?)
}

/// GET /rooms/{roomId}/aliases: for those who may see the room's state.
pub async fn local_aliases(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
) -> Result<Vec<String>> {
    state_horizon(state, requester, room_id).await?;
    Ok(store::rooms::aliases_of(&state.db, room_id).await?)
}

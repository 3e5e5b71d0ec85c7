//! Profiles: display name and avatar, propagated to the user's member events in every joined room.

use serde_json::{Value, json};

use crate::service::auth::Requester;
use crate::service::events::EventDraft;
use crate::service::writer::{Target, room_snapshot};
use crate::{AppState, Error, Result, store};

const MAX_DISPLAYNAME: usize = 256;
const MAX_AVATAR_URL: usize = 1000;

pub async fn get_profile(state: &AppState, user_id: &str) -> Result<Value> {
    if let Ok(user) = ruma::UserId::parse(user_id)
        && user.server_name() != state.server_name
        && state.config.federation_enabled()
    {
        return remote_profile(state, user).await;
    }
    let user = store::users::get_user(&state.db, user_id)
        .await?
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    let mut profile = json!({});
    if let Some(name) = user.displayname {
        profile["displayname"] = json!(name);
    }
    if let Some(url) = user.avatar_url {
        profile["avatar_url"] = json!(url);
    }
    Ok(profile)
}

/// Another server's user's profile, asked of that server (`GET /query/profile`); an error there
/// is a 404 here, as in Synapse.
async fn remote_profile(state: &AppState, user: ruma::OwnedUserId) -> Result<Value> {
    use ruma::api::federation::query::get_profile_information::v1 as query;
    let server = user.server_name().to_owned();
    let answer = state
        .federation
        .send(&server, query::Request::new(user))
        .await
        .map_err(|e| {
            tracing::info!(%server, error = %e, "remote profile query failed");
            Error::not_found("Profile not found")
        })?;
    Ok(Value::Object(
        answer.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    DisplayName,
    AvatarUrl,
}

impl Field {
    pub fn parse(key: &str) -> Option<Self> {
        match key {
            "displayname" => Some(Self::DisplayName),
            "avatar_url" => Some(Self::AvatarUrl),
            _ => None,
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::DisplayName => "displayname",
            Self::AvatarUrl => "avatar_url",
        }
    }
}

/// Sets (or with `None` clears) a profile field, then updates the member event in each joined room
/// so that old messages keep the old name (prev_content) and new ones show the new.
pub async fn set_field(
    state: &AppState,
    requester: &Requester,
    user_id: &str,
    field: Field,
    value: Option<String>,
) -> Result<()> {
    if requester.user_id.as_str() != user_id {
        return Err(Error::forbidden("You can only change your own profile"));
    }
    if let Some(v) = &value {
        match field {
            Field::DisplayName if v.chars().count() > MAX_DISPLAYNAME => {
                return Err(Error::invalid_param(format!(
                    "displayname is longer than {MAX_DISPLAYNAME} characters"
                )));
            }
            // Any string, as Synapse (handlers/profile.py set_avatar_url) checks only the length:
            // clients do send other URIs than mxc://.
            Field::AvatarUrl if v.chars().count() > MAX_AVATAR_URL => {
                return Err(Error::invalid_param(format!(
                    "avatar_url is longer than {MAX_AVATAR_URL} characters"
                )));
            }
            _ => {}
        }
    }
    let value = value.filter(|v| !v.is_empty());
    match field {
        Field::DisplayName => {
            store::users::set_displayname(&state.db, user_id, value.as_deref()).await?
        }
        Field::AvatarUrl => {
            store::users::set_avatar_url(&state.db, user_id, value.as_deref()).await?
        }
    }
    for room_id in store::rooms::joined_rooms(&state.db, user_id).await? {
        let Some(snapshot) = room_snapshot(state, &room_id).await? else {
            continue;
        };
        let Some(current) = snapshot.entry("m.room.member", user_id) else {
            continue;
        };
        let mut content = current.content.clone();
        if content[field.key()].as_str() == value.as_deref() {
            continue;
        }
        match &value {
            Some(v) => content[field.key()] = json!(v),
            None => {
                if let Some(map) = content.as_object_mut() {
                    map.remove(field.key());
                }
            }
        }
        let draft = EventDraft::new("m.room.member", Some(user_id), user_id, content);
        if let Err(e) = state
            .writer
            .submit(Target::Existing(room_id.clone()), vec![draft], None)
            .await
        {
            // One room refusing (say, power levels forbid member changes) must not block the rest.
            tracing::warn!(%room_id, error = %e, "profile change not propagated");
        }
    }
    Ok(())
}

//! Guest accounts (the spec's guest access module): registration with a numeric user ID, the
//! upgrade to a full account keeping that ID, who may join which room, and making guests leave a
//! room that stops allowing them. Which endpoints a guest may call is the API's business
//! (`api::auth::GuestAllowed`).

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::error::OnConstraint;
use crate::service::accounts::{self, Session, SessionRequest};
use crate::service::auth::{self, ClientInfo};
use crate::service::events::EventDraft;
use crate::service::room_cache::StateEntry;
use crate::service::writer::Target;
use crate::{AppState, Error, Result, store};

/// How many taken numbers guest registration skips before it gives up (Synapse tries 10 too).
const MAX_TAKEN_NUMBERS: usize = 10;

/// One `POST /register?kind=guest`: the spec lets a guest choose nothing but its device's name.
pub struct GuestRequest {
    pub initial_device_display_name: Option<String>,
    pub ip: Option<IpAddr>,
}

/// Registers a guest (when `registration.allow_guest_access` is on) and logs it in. Its localpart
/// is the next number and also its display name, as Synapse does.
pub async fn register(state: &AppState, request: GuestRequest) -> Result<Session> {
    if !state.config.registration.allow_guest_access {
        return Err(Error::guest_access_forbidden("Guest access is disabled"));
    }
    let user_id = create_guest(state).await?;
    let session = SessionRequest {
        device_id: None,
        initial_device_display_name: request.initial_device_display_name,
        ip: request.ip.map(|ip| ip.to_string()),
        refreshable: false,
    };
    accounts::open_session(state, &user_id, session).await
}

async fn create_guest(state: &AppState) -> Result<String> {
    for _ in 0..MAX_TAKEN_NUMBERS {
        let number = store::users::next_guest_number(&state.db)
            .await?
            .to_string();
        let user_id = format!("@{number}:{}", state.server_name);
        let inserted = store::users::insert_guest(&state.db, &user_id, &number)
            .await
            .on_constraint("users_pkey", || Error::user_in_use("taken"));
        match inserted {
            Ok(()) => return Ok(user_id),
            Err(e) if e.errcode() == "M_USER_IN_USE" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::internal("no free guest user ID"))
}

/// The guest a registration with `guest_access_token` upgrades: the token's owner, who must be a
/// guest and, if the request names a user (the spec asks clients to give the guest's localpart),
/// be that user. 403 `M_FORBIDDEN` otherwise, as Synapse (handlers/register.py `check_username`).
pub async fn upgrading(state: &AppState, token: &str, username: Option<&str>) -> Result<String> {
    let owner = auth::authenticate(state, token, ClientInfo::default()).await?;
    let named = username.map(|name| {
        let name = name.to_lowercase();
        match name.strip_prefix('@') {
            Some(_) => name,
            None => format!("@{name}:{}", state.server_name),
        }
    });
    if !owner.is_guest || named.is_some_and(|n| n != owner.user_id.as_str()) {
        return Err(Error::forbidden(
            "Cannot register taken user ID without valid guest credentials for that user",
        ));
    }
    Ok(owner.user_id.to_string())
}

/// Whether a guest may join a room whose `m.room.guest_access` event is `guest_access`: only when
/// it is `can_join` (403 `M_FORBIDDEN` otherwise, as Synapse's `_can_guest_join`).
pub fn check_may_join(guest_access: Option<&Arc<StateEntry>>) -> Result<()> {
    if guest_access.is_some_and(|e| e.content["guest_access"] == "can_join") {
        Ok(())
    } else {
        Err(Error::forbidden("Guest access not allowed"))
    }
}

/// Marks a guest's own member event, as Synapse does (`kind: guest`).
pub fn mark_member_content(content: &mut Map<String, Value>) {
    content.insert("kind".into(), json!("guest"));
}

/// After a change of `m.room.guest_access` to anything but `can_join`: every local guest joined to
/// or invited into the room leaves it (its own leave, as Synapse's `kick_guest_users`, so power
/// levels do not matter). A leave that fails is logged and the others still go.
pub async fn after_guest_access_change(
    state: &AppState,
    room_id: &str,
    content: &Map<String, Value>,
) -> Result<()> {
    if content.get("guest_access").and_then(Value::as_str) == Some("can_join") {
        return Ok(());
    }
    for guest in store::rooms::guest_members(&state.db, room_id).await? {
        let draft = EventDraft::new(
            "m.room.member",
            Some(&guest),
            &guest,
            json!({"membership": "leave"}),
        );
        if let Err(e) = state
            .writer
            .submit(Target::Existing(room_id.to_owned()), vec![draft], None)
            .await
        {
            tracing::warn!(%room_id, %guest, error = %e, "could not make a guest leave");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_access(value: &str) -> Arc<StateEntry> {
        Arc::new(
            StateEntry::new(
                "$e".into(),
                "m.room.guest_access",
                "",
                "@a:x".into(),
                json!({ "guest_access": value }),
            )
            .unwrap(),
        )
    }

    #[test]
    fn only_can_join_lets_guests_in() {
        assert!(check_may_join(None).is_err());
        assert!(check_may_join(Some(&guest_access("forbidden"))).is_err());
        assert!(check_may_join(Some(&guest_access("CAN_JOIN"))).is_err());
        assert!(check_may_join(Some(&guest_access("can_join"))).is_ok());
    }

    #[test]
    fn the_member_content_says_guest() {
        let mut content = Map::new();
        mark_member_content(&mut content);
        assert_eq!(content["kind"], "guest");
    }
}

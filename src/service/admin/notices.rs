//! Server notices (Synapse's send_server_notice): a message from the server to one user, sent by
//! the notices user (`[server_notices]`) into a room of that user's own, created on first use,
//! tagged `m.server_notice` as the spec's server notices module says.

use serde_json::{Map, Value, json};

use super::{acting_as, local_user};
use crate::service::events::EventDraft;
use crate::service::rooms::{self, CreateRoomRequest};
use crate::service::writer::{Target, TxnKey};
use crate::store::admin_jobs;
use crate::{AppState, Error, Result, store};

/// A notice to send.
#[derive(Debug, Clone)]
pub struct Notice {
    pub user_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub content: Map<String, Value>,
}

/// Who sent a notice with a transaction ID (`PUT …/send_server_notice/{txnId}`): a retry of the
/// same admin's device with the same ID answers the first notice's event ID and sends nothing, as
/// Synapse's transaction cache does.
#[derive(Debug, Clone)]
pub struct NoticeTxn {
    pub admin: String,
    pub device_id: String,
    pub txn_id: String,
}

/// Sends the notice and returns its event ID.
pub async fn send(state: &AppState, notice: Notice, txn: Option<NoticeTxn>) -> Result<String> {
    let config = &state.config.server_notices;
    let Some(localpart) = &config.system_mxid_localpart else {
        return Err(Error::unknown(
            "Server notices are not enabled on this server",
        ));
    };
    let user_id = local_user(state, &notice.user_id)
        .map_err(|_| Error::unknown("Server notices can only be sent to local users"))?;
    let recipient = store::users::get_user(&state.db, &user_id).await?;
    if recipient.is_none_or(|u| u.deactivated || u.is_guest) {
        return Err(Error::not_found("Unknown user"));
    }
    let system = system_user(state, localpart).await?;
    let room_id = notice_room(state, &system, &user_id).await?;
    let draft = EventDraft::new(
        &notice.event_type,
        notice.state_key.as_deref(),
        &system,
        Value::Object(notice.content),
    );
    let txn = txn.map(|t| TxnKey {
        user_id: t.admin,
        device_id: t.device_id,
        scope: r#"["send_server_notice"]"#.to_owned(),
        txn_id: t.txn_id,
    });
    let committed = state
        .writer
        .submit(Target::Existing(room_id), vec![draft], txn)
        .await?;
    committed
        .event_ids
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("the notice was not stored"))
}

/// The notices user, created (without a password: it cannot log in) on first use.
async fn system_user(state: &AppState, localpart: &str) -> Result<String> {
    let user_id = format!("@{localpart}:{}", state.server_name);
    if store::users::get_user(&state.db, &user_id).await?.is_none() {
        match crate::service::accounts::create_user(state, &user_id, None, false, None).await {
            Ok(()) => {}
            // Another notice created it meanwhile.
            Err(e) if e.errcode() == "M_USER_IN_USE" => {}
            Err(e) => return Err(e),
        }
        let name = state.config.server_notices.system_mxid_display_name.clone();
        store::users::set_displayname(&state.db, &user_id, Some(&name)).await?;
    }
    Ok(user_id)
}

/// The user's notices room: the recorded one while the user is in it or invited, else a new one
/// (a user who left gets a fresh room, as Synapse).
async fn notice_room(state: &AppState, system: &str, user_id: &str) -> Result<String> {
    if let Some(room_id) = admin_jobs::notice_room(&state.db, user_id).await? {
        let membership = store::rooms::membership(&state.db, &room_id, user_id).await?;
        if matches!(membership.as_deref(), Some("join" | "invite")) {
            return Ok(room_id);
        }
    }
    let requester = acting_as(system)?;
    let mut power = Map::new();
    power.insert("users_default".into(), json!(-10));
    let create = CreateRoomRequest {
        name: Some(json!(state.config.server_notices.room_name)),
        preset: Some("private_chat".into()),
        invite: vec![user_id.to_owned()],
        power_level_content_override: Some(power),
        ..Default::default()
    };
    let room_id = rooms::create_room(state, &requester, create).await?;
    admin_jobs::set_notice_room(&state.db, user_id, &room_id).await?;
    let tag = crate::service::account_data::set_tag(
        state,
        user_id,
        user_id,
        &room_id,
        "m.server_notice",
        Some(Map::new()),
    )
    .await;
    if let Err(e) = tag {
        tracing::warn!(%room_id, error = %e, "could not tag the server notices room");
    }
    Ok(room_id)
}

//! Local users' typing notices, public read receipts and presence, sent as EDUs to the other
//! servers with members in the room (presence: in any room the user is in), queued in the
//! background: the client's request does not wait for it; at most `queue::MAX_EDUS_QUEUEING` at
//! once, beyond which they are dropped. Each carries a key, so a newer notice, receipt or presence
//! of the same user (in the same room) replaces the one still waiting.

use ruma::{OwnedServerName, UserId};
use serde_json::{Value, json};

use super::queue::Edu;
use crate::service::writer;
use crate::{AppState, store};

/// Queues `edu` for the other servers with joined members in `room_id`, if `user_id` is local.
fn to_room(state: &AppState, room_id: &str, user_id: &str, edu: Edu) {
    if !state.config.federation_enabled()
        || !UserId::parse(user_id).is_ok_and(|u| u.server_name() == state.server_name)
    {
        return;
    }
    let Some(permit) = state.outbox.edu_permit() else {
        return;
    };
    let state = state.clone();
    let room_id = room_id.to_owned();
    tokio::spawn(async move {
        let _permit = permit;
        let Ok(Some(room)) = writer::room_snapshot(&state, &room_id).await else {
            return;
        };
        let servers: Vec<OwnedServerName> = room
            .member_lists()
            .join_servers
            .iter()
            .filter_map(|s| OwnedServerName::try_from(s.as_str()).ok())
            .filter(|s| *s != state.server_name)
            .collect();
        enqueue(&state, &servers, edu).await;
    });
}

async fn enqueue(state: &AppState, servers: &[OwnedServerName], edu: Edu) {
    if servers.is_empty() {
        return;
    }
    if let Err(e) = state.outbox.enqueue_edus(servers, &[edu]).await {
        tracing::warn!(error = %e, "queueing an EDU failed");
    }
}

/// `m.presence` for a local user's presence change (`update`: the presence event's content), to
/// the other servers sharing a room with them.
pub fn presence(state: &AppState, user_id: &str, mut update: Value) {
    if !state.config.federation_enabled()
        || !UserId::parse(user_id).is_ok_and(|u| u.server_name() == state.server_name)
    {
        return;
    }
    let Some(permit) = state.outbox.edu_permit() else {
        return;
    };
    update["user_id"] = json!(user_id);
    let edu = Edu {
        body: json!({"edu_type": "m.presence", "content": {"push": [update]}}),
        key: Some(format!("m.presence {user_id}")),
    };
    let state = state.clone();
    let user_id = user_id.to_owned();
    tokio::spawn(async move {
        let _permit = permit;
        let own = state.server_name.as_str();
        match store::rooms::servers_sharing_a_room(&state.db, &user_id, own).await {
            Ok(servers) => {
                let servers: Vec<OwnedServerName> = servers
                    .into_iter()
                    .filter_map(|s| OwnedServerName::try_from(s).ok())
                    .collect();
                enqueue(&state, &servers, edu).await;
            }
            Err(e) => tracing::warn!(error = %e, "finding where a presence change goes failed"),
        }
    });
}

/// `m.typing` for a local user's typing notice.
pub fn typing(state: &AppState, room_id: &str, user_id: &str, typing: bool) {
    let edu = Edu {
        body: json!({
            "edu_type": "m.typing",
            "content": {"room_id": room_id, "user_id": user_id, "typing": typing},
        }),
        key: Some(format!("m.typing {room_id} {user_id}")),
    };
    to_room(state, room_id, user_id, edu);
}

/// `m.receipt` for a local user's public read receipt.
pub fn receipt(
    state: &AppState,
    room_id: &str,
    user_id: &str,
    event_id: &str,
    thread_id: Option<&str>,
    ts: i64,
) {
    let mut data = json!({ "ts": ts });
    if let Some(thread) = thread_id {
        data["thread_id"] = json!(thread);
    }
    let edu = Edu {
        body: json!({
            "edu_type": "m.receipt",
            "content": {room_id: {"m.read": {user_id: {"event_ids": [event_id], "data": data}}}},
        }),
        key: Some(format!(
            "m.receipt {room_id} {user_id} {}",
            thread_id.unwrap_or("")
        )),
    };
    to_room(state, room_id, user_id, edu);
}

//! EDUs received in a transaction: `m.typing`, `m.receipt` and `m.presence` about users of the
//! sending server, applied through the same services as local ones (so the notifier wakes local
//! clients). Others, and EDUs about other servers' users, are ignored, as Synapse does.

use ruma::ServerName;
use ruma::serde::Raw;
use serde_json::Value;

use super::inbound::user_of;
use crate::AppState;
use crate::service::{presence, receipts, typing};

/// Applies what can be applied of `edus` from `origin`; a bad EDU is logged and skipped.
pub async fn apply(
    state: &AppState,
    origin: &ServerName,
    edus: &[Raw<ruma::api::federation::transactions::edu::Edu>],
) {
    for edu in edus {
        let Ok(edu) = serde_json::from_str::<Value>(edu.json().get()) else {
            continue;
        };
        let content = &edu["content"];
        let outcome = match edu["edu_type"].as_str() {
            Some("m.typing") => apply_typing(state, origin, content).await,
            Some("m.receipt") => apply_receipts(state, origin, content).await,
            Some("m.presence") => apply_presence(state, origin, content).await,
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            tracing::info!(%origin, error = %e, "ignored an EDU");
        }
    }
}

async fn apply_typing(state: &AppState, origin: &ServerName, content: &Value) -> crate::Result<()> {
    let (Some(room_id), Some(user_id)) = (content["room_id"].as_str(), content["user_id"].as_str())
    else {
        return Ok(());
    };
    if !user_of(user_id, origin) {
        return Ok(());
    }
    let typing = content["typing"].as_bool().unwrap_or(false);
    typing::set_typing(state, user_id, user_id, room_id, typing, None, false).await
}

async fn apply_receipts(
    state: &AppState,
    origin: &ServerName,
    content: &Value,
) -> crate::Result<()> {
    let Some(rooms) = content.as_object() else {
        return Ok(());
    };
    for (room_id, by_type) in rooms {
        let Some(users) = by_type["m.read"].as_object() else {
            continue;
        };
        for (user_id, receipt) in users.iter().filter(|(u, _)| user_of(u, origin)) {
            let thread = receipt["data"].get("thread_id");
            for event_id in receipt["event_ids"].as_array().into_iter().flatten() {
                if let Some(event_id) = event_id.as_str() {
                    receipts::post(state, user_id, room_id, "m.read", event_id, thread).await?;
                }
            }
        }
    }
    Ok(())
}

async fn apply_presence(
    state: &AppState,
    origin: &ServerName,
    content: &Value,
) -> crate::Result<()> {
    for update in content["push"].as_array().into_iter().flatten() {
        let (Some(user_id), Some(presence)) =
            (update["user_id"].as_str(), update["presence"].as_str())
        else {
            continue;
        };
        if user_of(user_id, origin) {
            let status = update["status_msg"].as_str();
            presence::set_status(state, user_id, user_id, presence, status).await?;
        }
    }
    Ok(())
}

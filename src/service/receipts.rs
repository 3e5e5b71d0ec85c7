//! Read receipts (m.read, m.read.private, threaded or not) and the fully-read marker.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use sqlx::PgConnection;

use crate::service::{account_data, notifier, writer};
use crate::store::receipts::NewReceipt;
use crate::{AppState, Error, Result, store};

pub const RECEIPT_TYPES: [&str; 3] = ["m.read", "m.read.private", "m.fully_read"];

/// POST /receipt: `thread_id` None for an unthreaded receipt.
pub async fn post(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    receipt_type: &str,
    event_id: &str,
    thread_id: Option<&Value>,
) -> Result<()> {
    if !RECEIPT_TYPES.contains(&receipt_type) {
        return Err(Error::invalid_param(format!(
            "Unknown receipt type {receipt_type}"
        )));
    }
    let thread_id = match thread_id {
        None => None,
        Some(Value::String(t)) if !t.is_empty() => Some(t.as_str()),
        Some(_) => {
            return Err(Error::invalid_param(
                "thread_id field must be a non-empty string",
            ));
        }
    };
    if receipt_type == "m.fully_read" {
        if thread_id.is_some() {
            return Err(Error::invalid_param(
                "thread_id is not allowed for m.fully_read",
            ));
        }
        return set_fully_read(state, user_id, room_id, event_id).await;
    }
    set_receipt(state, user_id, room_id, receipt_type, event_id, thread_id).await
}

/// POST /read_markers.
pub async fn read_markers(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    body: &Map<String, Value>,
) -> Result<()> {
    let field = |name: &str| -> Result<Option<String>> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::bad_json(format!("{name} must be an event ID"))),
        }
    };
    let (fully_read, read, private) = (
        field("m.fully_read")?,
        field("m.read")?,
        field("m.read.private")?,
    );
    check_joined(state, user_id, room_id).await?;
    if let Some(event_id) = fully_read {
        set_fully_read(state, user_id, room_id, &event_id).await?;
    }
    if let Some(event_id) = read {
        set_receipt(state, user_id, room_id, "m.read", &event_id, None).await?;
    }
    if let Some(event_id) = private {
        set_receipt(state, user_id, room_id, "m.read.private", &event_id, None).await?;
    }
    Ok(())
}

async fn check_joined(state: &AppState, user_id: &str, room_id: &str) -> Result<()> {
    let snapshot = writer::room_snapshot(state, room_id).await?;
    if snapshot.as_ref().and_then(|s| s.membership(user_id)) != Some("join") {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    Ok(())
}

/// The receipted event's stream position; it must be in the room.
async fn event_in_room(state: &AppState, room_id: &str, event_id: &str) -> Result<i64> {
    match store::receipts::event_position(&state.db, event_id).await? {
        Some((room, position)) if room == room_id => Ok(position),
        _ => Err(Error::not_found("Event not found in this room")),
    }
}

async fn set_fully_read(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    event_id: &str,
) -> Result<()> {
    check_joined(state, user_id, room_id).await?;
    event_in_room(state, room_id, event_id).await?;
    let content = json!({ "event_id": event_id }).to_string();
    account_data::set(state, user_id, room_id, "m.fully_read", &content).await
}

async fn set_receipt(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    receipt_type: &str,
    event_id: &str,
    thread_id: Option<&str>,
) -> Result<()> {
    check_joined(state, user_id, room_id).await?;
    let event_stream = event_in_room(state, room_id, event_id).await?;
    let receipt = NewReceipt {
        room_id,
        user_id,
        receipt_type,
        thread_id: thread_id.unwrap_or(""),
        event_id,
        event_stream,
        ts: store::now_ms(),
    };
    let mut tx = state.db.begin().await?;
    let position = store::stream::advance(&mut tx, 1).await?;
    if !store::receipts::upsert(&mut tx, &receipt, position).await? {
        // An older receipt than the stored one: nothing changes (and no position is used).
        tx.rollback().await?;
        return Ok(());
    }
    // Room members see the receipt; the reader's own unread counts change.
    let keys = [room_id.to_owned(), user_id.to_owned()];
    store::stream::notify(&mut *tx, notifier::CHANNEL, &state.notifier.payload(&keys)).await?;
    tx.commit().await?;
    state
        .notifier
        .committed(position, keys.iter().map(String::as_str));
    if receipt_type == "m.read" {
        crate::service::federation::outbound_edus::receipt(
            state, room_id, user_id, event_id, thread_id, receipt.ts,
        );
    }
    Ok(())
}

/// m.receipt ephemeral events (one per room) for receipts in (since, upto] in these rooms; private receipts only the user's own.
pub async fn for_sync(
    db: &mut PgConnection,
    user_id: &str,
    rooms: &[String],
    since: i64,
    upto: i64,
) -> Result<HashMap<String, Value>> {
    let rows = store::receipts::changed(db, user_id, rooms, since, upto).await?;
    let mut contents: HashMap<String, Map<String, Value>> = HashMap::new();
    for row in rows {
        let mut receipt = json!({ "ts": row.ts });
        if !row.thread_id.is_empty() {
            receipt["thread_id"] = json!(row.thread_id);
        }
        let content = contents.entry(row.room_id).or_default();
        let by_type = content.entry(row.event_id).or_insert_with(|| json!({}));
        let by_user = by_type.as_object_mut().and_then(|m| {
            m.entry(row.receipt_type)
                .or_insert_with(|| json!({}))
                .as_object_mut()
        });
        if let Some(by_user) = by_user {
            // A user with both a threaded and an unthreaded receipt on one event: keep the unthreaded one.
            if row.thread_id.is_empty() || !by_user.contains_key(&row.user_id) {
                by_user.insert(row.user_id, receipt);
            }
        }
    }
    Ok(contents
        .into_iter()
        .map(|(room, content)| (room, json!({ "type": "m.receipt", "content": content })))
        .collect())
}

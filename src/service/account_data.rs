//! Account data, global and per room, including tags (room account data m.tag).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use sqlx::PgConnection;

use crate::service::notifier;
use crate::{AppState, Error, Result, store};

/// Types the server controls: clients change them through their own APIs (MSC4010).
const SERVER_CONTROLLED: [&str; 2] = ["m.fully_read", "m.push_rules"];

fn check_owner(requester: &str, user_id: &str) -> Result<()> {
    if requester != user_id {
        return Err(Error::forbidden(
            "Cannot access account data of other users",
        ));
    }
    Ok(())
}

async fn check_room(state: &AppState, user_id: &str, room_id: &str) -> Result<()> {
    if !room_id.starts_with('!') || ruma::RoomId::parse(room_id).is_err() {
        return Err(Error::invalid_param(format!(
            "{room_id} is not a valid room ID"
        )));
    }
    if store::account_data::membership(&state.db, user_id, room_id)
        .await?
        .is_none()
    {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    Ok(())
}

/// Validates a client's PUT body: a JSON object, kept byte for byte.
pub fn parse_content(body: &[u8]) -> Result<String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::not_json(format!("Content not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::bad_json("Content must be a JSON object"));
    }
    let text = std::str::from_utf8(body).map_err(|_| Error::not_json("Content is not UTF-8"))?;
    Ok(text.trim().to_owned())
}

/// PUT by a client. `room_id` '' is global.
pub async fn set_by_client(
    state: &AppState,
    requester: &str,
    user_id: &str,
    room_id: &str,
    data_type: &str,
    content: &str,
) -> Result<()> {
    check_owner(requester, user_id)?;
    if !room_id.is_empty() {
        check_room(state, user_id, room_id).await?;
    }
    if SERVER_CONTROLLED.contains(&data_type) {
        return Err(Error::matrix(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            format!("Cannot set {data_type} through this API"),
        ));
    }
    set(state, user_id, room_id, data_type, content).await
}

/// DELETE by a client (MSC3391): the content becomes {}, which /sync reports as a deletion.
pub async fn delete_by_client(
    state: &AppState,
    requester: &str,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> Result<()> {
    check_owner(requester, user_id)?;
    if !room_id.is_empty() {
        check_room(state, user_id, room_id).await?;
    }
    if SERVER_CONTROLLED.contains(&data_type) {
        return Err(Error::matrix(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            format!("Cannot delete {data_type} through this API"),
        ));
    }
    match store::account_data::get(&state.db, user_id, room_id, data_type).await? {
        Some(content) if !is_empty_object(&content) => {
            set(state, user_id, room_id, data_type, "{}").await
        }
        // Nothing to delete: nothing for /sync to report either.
        _ => Ok(()),
    }
}

fn is_empty_object(content: &str) -> bool {
    serde_json::from_str::<Map<String, Value>>(content).is_ok_and(|m| m.is_empty())
}

/// GET by a client: the stored JSON text. Deleted ({}) and unset types are M_NOT_FOUND.
pub async fn get_by_client(
    state: &AppState,
    requester: &str,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> Result<String> {
    check_owner(requester, user_id)?;
    if !room_id.is_empty() {
        check_room(state, user_id, room_id).await?;
    }
    if room_id.is_empty() && data_type == "m.push_rules" {
        let rules = crate::service::push::rules_for(state, user_id).await?;
        return Ok(json!({ "global": crate::service::push::ruleset_json(&rules) }).to_string());
    }
    match store::account_data::get(&state.db, user_id, room_id, data_type).await? {
        Some(content) if !is_empty_object(&content) => Ok(content),
        _ => Err(Error::not_found("Account data not found")),
    }
}

/// Stores account data (any type: the server's own writers use this directly) and wakes the user's syncs.
pub async fn set(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    data_type: &str,
    content: &str,
) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let position = store::stream::advance(&mut tx, 1).await?;
    store::account_data::put(&mut tx, user_id, room_id, data_type, content, position).await?;
    commit_and_wake(state, tx, position, user_id, room_id, data_type).await
}

/// Read-modify-write of one account data entry under a lock. `change` gets the current content
/// (None when unset) and returns the new one, or None to leave it as it is.
pub async fn update(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    data_type: &str,
    change: impl FnOnce(Option<String>) -> Result<Option<String>>,
) -> Result<()> {
    let mut tx = state.db.begin().await?;
    store::account_data::lock_key(&mut tx, user_id, room_id, data_type).await?;
    let current = store::account_data::get_for_update(&mut tx, user_id, room_id, data_type).await?;
    let Some(new) = change(current)? else {
        return Ok(());
    };
    let position = store::stream::advance(&mut tx, 1).await?;
    store::account_data::put(&mut tx, user_id, room_id, data_type, &new, position).await?;
    commit_and_wake(state, tx, position, user_id, room_id, data_type).await
}

async fn commit_and_wake(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    position: i64,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> Result<()> {
    let keys = [user_id.to_owned()];
    // Rulesets and ignore lists are kept in memory; every process must forget this user's.
    let push_rules_changed = room_id.is_empty()
        && (data_type == "m.push_rules" || data_type == crate::service::ignore::IGNORED_USER_LIST);
    let payload = if push_rules_changed {
        state.notifier.push_rules_payload(&keys, user_id)
    } else {
        state.notifier.payload(&keys)
    };
    store::stream::notify(&mut *tx, notifier::CHANNEL, &payload).await?;
    tx.commit().await?;
    if push_rules_changed {
        state.push_rules.forget(user_id);
        state.ignored.forget(user_id);
    }
    state.notifier.committed(position, [user_id]);
    Ok(())
}

/// Global and per-room account data events ({"type", "content"}) changed in (since, upto]; since = 0 means all.
/// On a full sync (since = 0) m.push_rules is always present, with the server defaults if the user never changed them.
pub async fn for_sync(
    db: &mut PgConnection,
    user_id: &str,
    since: i64,
    upto: i64,
) -> Result<(Vec<Value>, HashMap<String, Vec<Value>>)> {
    let rows = store::account_data::changed(db, user_id, since, upto).await?;
    let mut global = Vec::new();
    let mut rooms: HashMap<String, Vec<Value>> = HashMap::new();
    let mut saw_push_rules = false;
    for row in rows {
        if row.room_id.is_empty() && row.data_type == "m.push_rules" {
            saw_push_rules = true;
            // Served normalised: the stored rules merged over the current server defaults.
            let rules = crate::service::push::normalise(user_id, Some(&row.content))?;
            global.push(json!({"type": "m.push_rules", "content": {"global": crate::service::push::ruleset_json(&rules)}}));
            continue;
        }
        let content: Value = serde_json::from_str(&row.content).map_err(Error::internal)?;
        let event = json!({"type": row.data_type, "content": content});
        if row.room_id.is_empty() {
            global.push(event);
        } else {
            rooms.entry(row.room_id).or_default().push(event);
        }
    }
    if since == 0 && !saw_push_rules {
        let rules = crate::service::push::normalise(user_id, None)?;
        global.push(json!({"type": "m.push_rules", "content": {"global": crate::service::push::ruleset_json(&rules)}}));
    }
    Ok((global, rooms))
}

/// GET .../tags: {"tags": {...}}.
pub async fn tags(
    state: &AppState,
    requester: &str,
    user_id: &str,
    room_id: &str,
) -> Result<Value> {
    check_owner(requester, user_id)?;
    check_room(state, user_id, room_id).await?;
    let content = store::account_data::get(&state.db, user_id, room_id, "m.tag").await?;
    let tags = content
        .and_then(|c| serde_json::from_str::<Value>(&c).ok())
        .and_then(|v| v.get("tags").cloned())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    Ok(json!({ "tags": tags }))
}

/// PUT (Some(body)) or DELETE (None) one tag.
pub async fn set_tag(
    state: &AppState,
    requester: &str,
    user_id: &str,
    room_id: &str,
    tag: &str,
    body: Option<Map<String, Value>>,
) -> Result<()> {
    check_owner(requester, user_id)?;
    check_room(state, user_id, room_id).await?;
    if tag.len() > 255 {
        return Err(Error::invalid_param("Tag names are at most 255 bytes"));
    }
    if body
        .as_ref()
        .and_then(|b| b.get("order"))
        .is_some_and(|order| !order.is_number())
    {
        return Err(Error::bad_json("order must be a number"));
    }
    update(state, user_id, room_id, "m.tag", |current| {
        let mut content: Map<String, Value> = current
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default();
        let mut tags = match content.remove("tags") {
            Some(Value::Object(tags)) => tags,
            _ => Map::new(),
        };
        match body {
            Some(body) => {
                tags.insert(tag.to_owned(), Value::Object(body));
            }
            None => {
                if tags.remove(tag).is_none() {
                    return Ok(None);
                }
            }
        }
        content.insert("tags".into(), Value::Object(tags));
        Ok(Some(Value::Object(content).to_string()))
    })
    .await
}

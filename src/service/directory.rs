//! Room aliases, the public room directory and the user directory.

use serde_json::{Value, json};

use crate::service::auth::Requester;
use crate::service::auth_rules;
use crate::service::events::EventDraft;
use crate::service::writer::{Target, room_snapshot};
use crate::{AppState, Error, Result, store};

fn parse_local_alias(state: &AppState, alias: &str) -> Result<()> {
    let parsed = ruma::RoomAliasId::parse(alias)
        .map_err(|_| Error::invalid_param(format!("{alias} is not a room alias")))?;
    if parsed.server_name() != state.server_name {
        return Err(Error::invalid_param("Room alias must be on this server"));
    }
    Ok(())
}

pub async fn resolve_alias(state: &AppState, alias: &str) -> Result<Value> {
    let (room_id, servers) = alias_servers(state, alias).await?;
    Ok(json!({"room_id": room_id, "servers": servers}))
}

/// An alias's room and the servers to join it through: a local alias from the database (this
/// server first, then the others with members in the room), another server's alias asked of
/// that server (`GET /query/directory`).
pub async fn alias_servers(state: &AppState, alias: &str) -> Result<(String, Vec<String>)> {
    let parsed = ruma::RoomAliasId::parse(alias)
        .map_err(|_| Error::invalid_param(format!("{alias} is not a room alias")))?;
    if parsed.server_name() != state.server_name {
        if !state.config.federation_enabled() {
            return Err(Error::not_found(format!("Room alias {alias} not found")));
        }
        return remote_alias(state, parsed).await;
    }
    let room_id = store::rooms::resolve_alias(&state.db, alias)
        .await?
        .ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
    let mut servers = vec![state.server_name.to_string()];
    if let Some(room) = room_snapshot(state, &room_id).await? {
        let mut others: Vec<String> = room
            .members_with("join")
            .filter_map(|u| Some(ruma::UserId::parse(u).ok()?.server_name().to_string()))
            .filter(|s| *s != state.server_name.as_str())
            .collect();
        others.sort_unstable();
        others.dedup();
        servers.extend(others);
    }
    Ok((room_id, servers))
}

async fn remote_alias(
    state: &AppState,
    alias: ruma::OwnedRoomAliasId,
) -> Result<(String, Vec<String>)> {
    use ruma::api::federation::query::get_room_information::v1 as query;
    let server = alias.server_name().to_owned();
    let answer = state
        .federation
        .send(&server, query::Request::new(alias.clone()))
        .await
        .map_err(|e| {
            tracing::info!(%server, error = %e, "remote alias query failed");
            Error::not_found(format!("Room alias {alias} not found"))
        })?;
    let mut servers: Vec<String> = answer.servers.iter().map(ToString::to_string).collect();
    if servers.is_empty() {
        servers.push(server.to_string());
    }
    Ok((answer.room_id.to_string(), servers))
}

pub async fn create_alias(
    state: &AppState,
    requester: &Requester,
    alias: &str,
    room_id: &str,
) -> Result<()> {
    parse_local_alias(state, alias)?;
    if store::rooms::room_version(&state.db, room_id)
        .await?
        .is_none()
    {
        return Err(Error::not_found("Unknown room"));
    }
    let mut conn = state.db.acquire().await?;
    if !store::rooms::insert_alias(
        &mut conn,
        alias,
        room_id,
        requester.user_id.as_str(),
        store::now_ms(),
    )
    .await?
    {
        return Err(Error::matrix(
            axum::http::StatusCode::CONFLICT,
            "M_UNKNOWN",
            "Room alias already exists",
        ));
    }
    Ok(())
}

/// The alias's creator, a room member with power to change the canonical alias, or a server admin.
pub async fn delete_alias(state: &AppState, requester: &Requester, alias: &str) -> Result<()> {
    parse_local_alias(state, alias)?;
    let (room_id, creator) = store::rooms::alias_creator(&state.db, alias)
        .await?
        .ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
    let me = requester.user_id.as_str();
    let allowed = creator == me || requester.is_admin || {
        match room_snapshot(state, &room_id).await? {
            Some(s) => {
                auth_rules::user_power_level(s.version, &*s, me)
                    >= auth_rules::required_event_level(
                        s.version,
                        &*s,
                        "m.room.canonical_alias",
                        true,
                    )
            }
            None => false,
        }
    };
    if !allowed {
        return Err(Error::forbidden("You may not delete this alias"));
    }
    store::rooms::delete_alias(&state.db, alias).await?;
    drop_from_canonical_alias(state, requester, &room_id, alias).await
}

/// After an alias is deleted, takes it out of the room's `m.room.canonical_alias` (its `alias`, or
/// its `alt_aliases`) so that clients stop showing it. The event is sent by the deleting user; when
/// they may not send it, the alias stays deleted and the state is left alone, as in Synapse
/// (handlers/directory.py, `_update_canonical_alias`).
async fn drop_from_canonical_alias(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    alias: &str,
) -> Result<()> {
    let Some(snapshot) = room_snapshot(state, room_id).await? else {
        return Ok(());
    };
    let Some(current) = snapshot.entry("m.room.canonical_alias", "") else {
        return Ok(());
    };
    let Some(content) = without_alias(&current.content, alias) else {
        return Ok(());
    };
    let sender = requester.user_id.as_str();
    let draft = EventDraft::new("m.room.canonical_alias", Some(""), sender, content);
    match state
        .writer
        .submit(Target::Existing(room_id.to_owned()), vec![draft], None)
        .await
    {
        Ok(_) => Ok(()),
        Err(Error::Matrix { status, .. }) if status == axum::http::StatusCode::FORBIDDEN => {
            tracing::info!(%room_id, %alias, "deleted alias left in m.room.canonical_alias");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The canonical alias content without `alias`; None when it does not name it. An `alt_aliases`
/// that is not an array is left as it is; one left empty is removed.
fn without_alias(content: &Value, alias: &str) -> Option<Value> {
    let mut content = content.as_object()?.clone();
    let mut changed = false;
    if content.get("alias").and_then(Value::as_str) == Some(alias) {
        content.remove("alias");
        changed = true;
    }
    if let Some(Value::Array(alt)) = content.get_mut("alt_aliases")
        && alt.iter().any(|a| a.as_str() == Some(alias))
    {
        alt.retain(|a| a.as_str() != Some(alias));
        changed = true;
        if alt.is_empty() {
            content.remove("alt_aliases");
        }
    }
    changed.then_some(Value::Object(content))
}

pub async fn get_visibility(state: &AppState, room_id: &str) -> Result<Value> {
    let public = store::rooms::is_public(&state.db, room_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    Ok(json!({"visibility": if public { "public" } else { "private" }}))
}

/// Publishing needs the power to change the room's canonical alias (moderators and up).
pub async fn set_visibility(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    visibility: &str,
) -> Result<()> {
    let public = match visibility {
        "public" => true,
        "private" => false,
        _ => {
            return Err(Error::invalid_param(
                "visibility must be \"public\" or \"private\"",
            ));
        }
    };
    let snapshot = room_snapshot(state, room_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let me = requester.user_id.as_str();
    let level = auth_rules::user_power_level(snapshot.version, &*snapshot, me);
    let needed = auth_rules::required_event_level(
        snapshot.version,
        &*snapshot,
        "m.room.canonical_alias",
        true,
    );
    if !requester.is_admin && (snapshot.membership(me) != Some("join") || level < needed) {
        return Err(Error::forbidden(
            "You may not change this room's directory visibility",
        ));
    }
    store::rooms::set_public(&state.db, room_id, public).await?;
    Ok(())
}

/// One entry of /publicRooms, from the room's current state.
async fn public_room_entry(state: &AppState, room_id: &str, joined: i64) -> Result<Option<Value>> {
    let Some(s) = room_snapshot(state, room_id).await? else {
        return Ok(None);
    };
    let text = |t: &str, k: &str| {
        s.entry(t, "")
            .and_then(|e| e.content[k].as_str().map(str::to_owned))
    };
    let mut entry = json!({
        "room_id": room_id,
        "num_joined_members": joined,
        "world_readable": text("m.room.history_visibility", "history_visibility").as_deref() == Some("world_readable"),
        "guest_can_join": text("m.room.guest_access", "guest_access").as_deref() == Some("can_join"),
        "join_rule": text("m.room.join_rules", "join_rule").unwrap_or_else(|| "invite".into()),
    });
    for (key, event_type, field) in [
        ("name", "m.room.name", "name"),
        ("topic", "m.room.topic", "topic"),
        ("avatar_url", "m.room.avatar", "url"),
        ("canonical_alias", "m.room.canonical_alias", "alias"),
        ("room_type", "m.room.create", "type"),
    ] {
        if let Some(v) = text(event_type, field) {
            entry[key] = json!(v);
        }
    }
    Ok(Some(entry))
}

/// Keyset pagination over (member count desc, room ID): a token names the last room of a page, so
/// pages stay stable while rooms come and go.
pub async fn public_rooms(
    state: &AppState,
    limit: Option<i64>,
    since: Option<&str>,
    search: Option<&str>,
) -> Result<Value> {
    // As Synapse: an empty `since` is the first page.
    let since = since.filter(|s| !s.is_empty());
    let rows = store::rooms::public_rooms(&state.db).await?;
    let total = rows.len();
    let term = search.map(str::to_lowercase).filter(|t| !t.is_empty());
    let mut entries = Vec::new();
    for row in rows {
        if let Some(entry) = public_room_entry(state, &row.room_id, row.joined).await? {
            let matches = term.as_ref().is_none_or(|t| {
                ["name", "topic", "canonical_alias", "room_id"]
                    .iter()
                    .any(|k| {
                        entry[*k]
                            .as_str()
                            .is_some_and(|v| v.to_lowercase().contains(t.as_str()))
                    })
            });
            if matches {
                entries.push(((row.joined, row.room_id), entry));
            }
        }
    }
    let key_of = |token: &str| -> Result<(i64, String, bool)> {
        // Client text: no byte-index slicing (an empty or non-ASCII token must not panic).
        let invalid = || Error::invalid_param("Invalid since token");
        let (forward, rest) = match (token.strip_prefix('n'), token.strip_prefix('p')) {
            (Some(rest), _) => (true, rest),
            (_, Some(rest)) => (false, rest),
            _ => return Err(invalid()),
        };
        let (joined, room) = rest.split_once('_').ok_or_else(invalid)?;
        let joined = joined.parse().map_err(|_| invalid())?;
        Ok((joined, room.to_owned(), forward))
    };
    // Sort key: joined desc, room asc. "after k" means strictly later in that order.
    let later = |a: &(i64, String), b: &(i64, String)| a.0 < b.0 || (a.0 == b.0 && a.1 > b.1);
    let limit = limit.unwrap_or(100).clamp(1, 500) as usize;
    let (page, has_prev, has_next): (Vec<_>, bool, bool) = match since {
        None => {
            let more = entries.len() > limit;
            (entries.into_iter().take(limit).collect(), false, more)
        }
        Some(token) => {
            let (joined, room, forward) = key_of(token)?;
            let key = (joined, room);
            if forward {
                let rest: Vec<_> = entries
                    .into_iter()
                    .filter(|(k, _)| later(k, &key))
                    .collect();
                let more = rest.len() > limit;
                (rest.into_iter().take(limit).collect(), true, more)
            } else {
                let before: Vec<_> = entries
                    .into_iter()
                    .filter(|(k, _)| later(&key, k))
                    .collect();
                let skip = before.len().saturating_sub(limit);
                (before.into_iter().skip(skip).collect(), skip > 0, true)
            }
        }
    };
    let mut out = json!({
        "chunk": page.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        "total_room_count_estimate": total,
    });
    if has_next && let Some(((j, r), _)) = page.last() {
        out["next_batch"] = json!(format!("n{j}_{r}"));
    }
    if has_prev && let Some(((j, r), _)) = page.first() {
        out["prev_batch"] = json!(format!("p{j}_{r}"));
    }
    Ok(out)
}

/// POST /user_directory/search.
pub async fn search_users(
    state: &AppState,
    requester: &Requester,
    term: &str,
    limit: Option<i64>,
) -> Result<Value> {
    let limit = limit.unwrap_or(10).clamp(1, 100);
    let pattern = format!(
        "%{}%",
        term.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let rows = store::users::search_directory(
        &state.db,
        requester.user_id.as_str(),
        &pattern,
        state.config.directory.search_all_users,
        limit + 1,
    )
    .await?;
    let limited = rows.len() as i64 > limit;
    let results: Vec<Value> = rows
        .into_iter()
        .take(limit as usize)
        .map(|u| {
            // Unset fields are left out: the schema has no null.
            let mut user = json!({"user_id": u.user_id});
            if let Some(name) = u.displayname {
                user["display_name"] = json!(name);
            }
            if let Some(url) = u.avatar_url {
                user["avatar_url"] = json!(url);
            }
            user
        })
        .collect();
    Ok(json!({"results": results, "limited": limited}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_alias_drops_main_and_alt() {
        let a = "#a:x";
        let c = json!({"alias": a, "alt_aliases": [a, "#b:x"]});
        assert_eq!(without_alias(&c, a), Some(json!({"alt_aliases": ["#b:x"]})));
        let c = json!({"alias": "#b:x", "alt_aliases": [a]});
        assert_eq!(without_alias(&c, a), Some(json!({"alias": "#b:x"})));
        assert_eq!(without_alias(&json!({"alias": "#b:x"}), a), None);
        assert_eq!(without_alias(&json!({"alt_aliases": "junk"}), a), None);
    }
}

//! Spaces and room previews: the space hierarchy (`GET /v1/rooms/{roomId}/hierarchy`) and room
//! summaries (`GET /v1/room_summary/{roomIdOrAlias}`), as Synapse's handlers/room_summary.py does
//! them. Rooms on other servers cannot be looked into without federation: a child room this server
//! does not know is left out of the hierarchy (Synapse would ask the `via` servers), and a summary
//! of one is 404.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::service::auth::{Requester, random_string};
use crate::service::auth_rules::{self, RoomState};
use crate::service::room_cache::RoomSnapshot;
use crate::service::writer::room_snapshot;
use crate::service::{restricted, rooms};
use crate::store::events::EventRow;
use crate::store::hierarchy::HierarchySessionRow;
use crate::{AppState, Error, Result, store};

/// Rooms per hierarchy page: the default and the most a client may ask for (Synapse's MAX_ROOMS).
pub const MAX_ROOMS_PER_PAGE: usize = 50;

/// How long a hierarchy pagination token stays good (Synapse: five minutes).
pub const SESSION_VALIDITY_MS: i64 = 5 * 60 * 1000;

/// The parameters of GET /rooms/{roomId}/hierarchy.
#[derive(Debug, Default)]
pub struct HierarchyRequest<'a> {
    /// Only children whose `m.space.child` says `"suggested": true`.
    pub suggested_only: bool,
    /// How deep to go: 0 is the room alone, 1 its children, and so on; None: all the way.
    pub max_depth: Option<i64>,
    /// Rooms per page (at most `MAX_ROOMS_PER_PAGE`).
    pub limit: Option<i64>,
    /// A `next_batch` of an earlier page.
    pub from: Option<&'a str>,
}

/// A room still to visit in a hierarchy walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct QueueEntry {
    room_id: String,
    /// Hops from the room the walk started at.
    depth: i64,
}

/// Where a walk stands: the rooms still to visit (the next one last) and those already visited.
struct Walk {
    queue: Vec<QueueEntry>,
    processed: HashSet<String>,
}

/// GET /rooms/{roomId}/hierarchy: a depth-first page of the space tree under `room_id`, of the
/// rooms the requester may preview.
pub async fn hierarchy(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    req: HierarchyRequest<'_>,
) -> Result<Value> {
    if ruma::RoomId::parse(room_id).is_err() {
        return Err(Error::invalid_param(format!("{room_id} is not a room ID")));
    }
    if req.max_depth.is_some_and(|d| d < 0) {
        return Err(Error::invalid_param(
            "max_depth must be a non-negative integer",
        ));
    }
    let limit = match req.limit {
        None => MAX_ROOMS_PER_PAGE,
        Some(l) if l <= 0 => return Err(Error::invalid_param("limit must be a positive integer")),
        Some(l) => usize::try_from(l).map_or(MAX_ROOMS_PER_PAGE, |l| l.min(MAX_ROOMS_PER_PAGE)),
    };
    let user = requester.user_id.as_str();
    let joined = joined_rooms(state, user).await?;
    let root = room_snapshot(state, room_id).await?;
    if !root
        .as_ref()
        .is_some_and(|r| may_preview(&**r, Some(user), &joined))
    {
        return Err(Error::forbidden(
            "You cannot view this room: it is unknown, or you are not in it and it cannot be previewed",
        ));
    }
    let mut walk = match req.from {
        Some(token) => resume(state, token, user, room_id, &req).await?,
        None => Walk {
            queue: vec![QueueEntry {
                room_id: room_id.to_owned(),
                depth: 0,
            }],
            processed: HashSet::new(),
        },
    };
    let rooms = next_page(state, user, &joined, &mut walk, &req, limit).await?;
    let mut answer = json!({ "rooms": rooms });
    if !walk.queue.is_empty() {
        answer["next_batch"] = json!(save(state, user, room_id, &req, walk).await?);
    }
    Ok(answer)
}

/// Visits rooms from the queue until `limit` rooms are shown or none are left.
async fn next_page(
    state: &AppState,
    user: &str,
    joined: &HashSet<String>,
    walk: &mut Walk,
    req: &HierarchyRequest<'_>,
    limit: usize,
) -> Result<Vec<Value>> {
    let mut rooms = Vec::new();
    while rooms.len() < limit
        && let Some(entry) = walk.queue.pop()
    {
        if !walk.processed.insert(entry.room_id.clone()) {
            continue;
        }
        // Unknown here (another server's, without federation) or not for this user: left out.
        let Some(room) = room_snapshot(state, &entry.room_id).await? else {
            continue;
        };
        if !may_preview(&*room, Some(user), joined) {
            continue;
        }
        let mut chunk = summary_fields(&room);
        let children = if chunk.get("room_type").and_then(Value::as_str) == Some("m.space") {
            let rows =
                store::events::current_state_of_type(&state.db, &room.room_id, "m.space.child")
                    .await?;
            children_state(&rows, req.suggested_only)
        } else {
            Vec::new()
        };
        if req.max_depth.is_none_or(|max| entry.depth < max) {
            // Reversed: the first child is visited next.
            walk.queue.extend(children.iter().rev().filter_map(|child| {
                Some(QueueEntry {
                    room_id: child["state_key"].as_str()?.to_owned(),
                    depth: entry.depth + 1,
                })
            }));
        }
        chunk.insert("children_state".into(), Value::Array(children));
        rooms.push(Value::Object(chunk));
    }
    // Rooms already shown are not visited again: a queue of nothing else has no next page.
    walk.queue.retain(|e| !walk.processed.contains(&e.room_id));
    Ok(rooms)
}

/// The walk a `from` token left off, when it was handed to this requester for this room and these
/// parameters, and has not expired.
async fn resume(
    state: &AppState,
    token: &str,
    user: &str,
    room_id: &str,
    req: &HierarchyRequest<'_>,
) -> Result<Walk> {
    let unknown = || Error::invalid_param("Unknown pagination token");
    let session = store::hierarchy::get(&state.db, token)
        .await?
        .ok_or_else(unknown)?;
    if session.user_id != user
        || session.room_id != room_id
        || session.suggested_only != req.suggested_only
        || session.max_depth != req.max_depth
        || session.created_ts < store::now_ms() - SESSION_VALIDITY_MS
    {
        return Err(unknown());
    }
    let queue: Vec<QueueEntry> = serde_json::from_value(session.queue).map_err(Error::internal)?;
    Ok(Walk {
        queue,
        processed: session.processed.into_iter().collect(),
    })
}

/// Keeps what is left of the walk under a new token.
async fn save(
    state: &AppState,
    user: &str,
    room_id: &str,
    req: &HierarchyRequest<'_>,
    walk: Walk,
) -> Result<String> {
    let token = random_string(24);
    let mut processed: Vec<String> = walk.processed.into_iter().collect();
    processed.sort_unstable();
    let row = HierarchySessionRow {
        user_id: user.to_owned(),
        room_id: room_id.to_owned(),
        suggested_only: req.suggested_only,
        max_depth: req.max_depth,
        queue: serde_json::to_value(&walk.queue).map_err(Error::internal)?,
        processed,
        created_ts: store::now_ms(),
    };
    store::hierarchy::insert(&state.db, &token, &row).await?;
    Ok(token)
}

/// Deletes expired hierarchy pagination sessions.
pub async fn prune_sessions(state: &AppState) -> Result<u64> {
    let cutoff = store::now_ms() - SESSION_VALIDITY_MS;
    Ok(store::hierarchy::prune(&state.db, cutoff).await?)
}

/// GET /room_summary/{roomIdOrAlias}: the room's summary, with the requester's membership (`leave`
/// when they have none) when there is one. 404 for rooms unknown here and rooms the requester may
/// not preview; without a requester, only rooms anyone may preview.
pub async fn summary(
    state: &AppState,
    requester: Option<&Requester>,
    room_id_or_alias: &str,
) -> Result<Value> {
    let room_id = rooms::resolve_room(state, room_id_or_alias).await?;
    let not_found = || Error::not_found("Room not found or is not accessible");
    let room = room_snapshot(state, &room_id)
        .await?
        .ok_or_else(not_found)?;
    let user = requester.map(|r| r.user_id.as_str());
    let joined = match user {
        Some(user) if restricted::is_restricted(&*room) => joined_rooms(state, user).await?,
        _ => HashSet::new(),
    };
    if !may_preview(&*room, user, &joined) {
        return Err(not_found());
    }
    let mut summary = summary_fields(&room);
    if let Some(user) = user {
        let membership = room.membership(user).unwrap_or("leave");
        summary.insert("membership".into(), json!(membership));
    }
    Ok(Value::Object(summary))
}

async fn joined_rooms(state: &AppState, user: &str) -> Result<HashSet<String>> {
    Ok(store::rooms::joined_rooms(&state.db, user)
        .await?
        .into_iter()
        .collect())
}

/// Whether `user` (None: someone without an account) may see a room's summary: the room can be
/// joined or knocked on by anyone, or is world-readable, or the user is joined or invited, or the
/// room is restricted and the user is in one of its allowed rooms (`joined` are the user's
/// rooms). Synapse: `_is_local_room_accessible`.
pub fn may_preview(room: &dyn RoomState, user: Option<&str>, joined: &HashSet<String>) -> bool {
    if matches!(
        auth_rules::join_rule(room),
        Some("public" | "knock" | "knock_restricted")
    ) {
        return true;
    }
    let history = room
        .get("m.room.history_visibility", "")
        .and_then(|e| e.content.get("history_visibility")?.as_str());
    if history == Some("world_readable") {
        return true;
    }
    let Some(user) = user else {
        return false;
    };
    matches!(auth_rules::membership(room, user), Some("join" | "invite"))
        || restricted::is_in_allowed_room(room, joined)
}

/// The spec's room summary fields (`RoomSummary`) from the room's current state; fields with no
/// value are left out, never null.
fn summary_fields(room: &RoomSnapshot) -> Map<String, Value> {
    let text = |event_type: &str, key: &str| {
        room.entry(event_type, "")
            .and_then(|e| e.content.get(key)?.as_str().map(str::to_owned))
    };
    let mut fields = Map::new();
    fields.insert("room_id".into(), json!(room.room_id));
    fields.insert("room_version".into(), json!(room.version.as_str()));
    fields.insert(
        "num_joined_members".into(),
        json!(room.member_lists().join.len()),
    );
    let history = text("m.room.history_visibility", "history_visibility");
    fields.insert(
        "world_readable".into(),
        json!(history.as_deref() == Some("world_readable")),
    );
    let guests = text("m.room.guest_access", "guest_access");
    fields.insert(
        "guest_can_join".into(),
        json!(guests.as_deref() == Some("can_join")),
    );
    let topic = text("m.room.topic", "topic").or_else(|| {
        room.entry("m.room.topic", "")
            .and_then(|e| plain_topic(&e.content))
    });
    for (key, value) in [
        ("name", text("m.room.name", "name")),
        ("topic", topic),
        ("canonical_alias", text("m.room.canonical_alias", "alias")),
        ("avatar_url", text("m.room.avatar", "url")),
        ("join_rule", text("m.room.join_rules", "join_rule")),
        ("room_type", text("m.room.create", "type")),
        ("encryption", text("m.room.encryption", "algorithm")),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            fields.insert(key.into(), json!(value));
        }
    }
    let allowed = restricted::allowed_room_ids(room);
    if !allowed.is_empty() {
        fields.insert("allowed_room_ids".into(), json!(allowed));
    }
    fields
}

/// The `text/plain` representation in a topic's `m.topic` block (a mimetype left out means plain
/// text), for a topic event without a `topic` string.
fn plain_topic(content: &Value) -> Option<String> {
    content
        .get("m.topic")?
        .get("m.text")?
        .as_array()?
        .iter()
        .find(|t| t.get("mimetype").is_none_or(|m| m == "text/plain"))
        .and_then(|t| t.get("body")?.as_str().map(str::to_owned))
}

/// A space's `m.space.child` events as stripped state with `origin_server_ts`: only those with a
/// valid `via` (a non-empty list of strings: without one the room is no longer a child), only
/// suggested ones if asked, in the spec's order (a valid `order` first, by `order`; then by
/// `origin_server_ts`; then by room ID).
fn children_state(rows: &[EventRow], suggested_only: bool) -> Vec<Value> {
    let mut children: Vec<(ChildOrder, Value)> = rows
        .iter()
        .filter_map(|row| {
            let event: Value = serde_json::from_str(&row.client_json).ok()?;
            let content = event.get("content")?;
            let state_key = row.state_key.as_deref()?;
            if !has_valid_via(content)
                || (suggested_only && content.get("suggested") != Some(&Value::Bool(true)))
            {
                return None;
            }
            let order = ChildOrder {
                order: valid_order(content).map(str::to_owned),
                ts: row.origin_server_ts,
                room_id: state_key.to_owned(),
            };
            let stripped = json!({
                "type": row.event_type,
                "state_key": state_key,
                "content": content,
                "sender": row.sender,
                "origin_server_ts": row.origin_server_ts,
            });
            Some((order, stripped))
        })
        .collect();
    children.sort_by(|a, b| a.0.key().cmp(&b.0.key()));
    children.into_iter().map(|(_, v)| v).collect()
}

/// What orders a space's children.
struct ChildOrder {
    order: Option<String>,
    ts: i64,
    room_id: String,
}

impl ChildOrder {
    /// Children with a valid `order` come first.
    fn key(&self) -> (bool, Option<&str>, i64, &str) {
        (
            self.order.is_none(),
            self.order.as_deref(),
            self.ts,
            &self.room_id,
        )
    }
}

fn has_valid_via(content: &Value) -> bool {
    content
        .get("via")
        .and_then(Value::as_array)
        .is_some_and(|via| !via.is_empty() && via.iter().all(Value::is_string))
}

/// `order` when it is a string of at most 50 characters between U+0020 and U+007E.
fn valid_order(content: &Value) -> Option<&str> {
    content
        .get("order")?
        .as_str()
        .filter(|o| o.len() <= 50 && o.chars().all(|c| ('\x20'..='\x7e').contains(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::auth_rules::StateEvent;
    use std::collections::HashMap;

    fn child(ts: i64, room: &str, content: Value) -> EventRow {
        let mut row = EventRow::example(ts, "m.space.child", Some(room));
        row.origin_server_ts = ts;
        row.client_json = json!({ "content": content }).to_string();
        row
    }

    fn order_of(rows: &[EventRow], suggested_only: bool) -> Vec<String> {
        children_state(rows, suggested_only)
            .iter()
            .map(|c| c["state_key"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn children_follow_the_spec_example_order() {
        let via = json!(["example.org"]);
        let rows = vec![
            child(
                1640341000000,
                "!b:example.org",
                json!({"order": " ", "via": via}),
            ),
            child(
                1640141000000,
                "!a:example.org",
                json!({"order": "aaaa", "via": via}),
            ),
            child(
                1640841000000,
                "!c:example.org",
                json!({"order": "first", "via": via}),
            ),
            child(1640641000000, "!e:example.org", json!({"via": via})),
            child(1640741000000, "!d:example.org", json!({"via": via})),
        ];
        assert_eq!(
            order_of(&rows, false),
            [
                "!b:example.org",
                "!a:example.org",
                "!c:example.org",
                "!e:example.org",
                "!d:example.org"
            ]
        );
    }

    #[test]
    fn ties_and_invalid_orders() {
        let via = json!(["x"]);
        let rows = vec![
            // Same order, same ts: by room ID.
            child(5, "!z:x", json!({"order": "a", "via": via})),
            child(5, "!y:x", json!({"order": "a", "via": via})),
            // Same order: by ts.
            child(3, "!w:x", json!({"order": "a", "via": via})),
            // Invalid orders count as none: after all valid ones, by ts.
            child(1, "!long:x", json!({"order": "a".repeat(51), "via": via})),
            child(2, "!ctrl:x", json!({"order": "\u{7f}", "via": via})),
            child(0, "!num:x", json!({"order": 5, "via": via})),
        ];
        assert_eq!(
            order_of(&rows, false),
            ["!w:x", "!y:x", "!z:x", "!num:x", "!long:x", "!ctrl:x"]
        );
    }

    #[test]
    fn children_need_a_via_and_suggested_only_keeps_suggested() {
        let rows = vec![
            child(1, "!nvia:x", json!({})),
            child(2, "!empty:x", json!({"via": []})),
            child(3, "!bad:x", json!({"via": [1]})),
            child(4, "!ok:x", json!({"via": ["x"]})),
            child(5, "!sugg:x", json!({"via": ["x"], "suggested": true})),
            child(6, "!strsugg:x", json!({"via": ["x"], "suggested": "true"})),
        ];
        assert_eq!(order_of(&rows, false), ["!ok:x", "!sugg:x", "!strsugg:x"]);
        assert_eq!(order_of(&rows, true), ["!sugg:x"]);
        let stripped = &children_state(&rows, true)[0];
        assert_eq!(
            stripped,
            &json!({"type": "m.space.child", "state_key": "!sugg:x", "sender": "@a:x",
                    "origin_server_ts": 5, "content": {"via": ["x"], "suggested": true}})
        );
    }

    #[derive(Default)]
    struct State(HashMap<(String, String), Value>);

    impl RoomState for State {
        fn get(&self, event_type: &str, state_key: &str) -> Option<StateEvent<'_>> {
            self.0
                .get(&(event_type.to_owned(), state_key.to_owned()))
                .map(|content| StateEvent {
                    sender: "@a:x",
                    content,
                })
        }
    }

    fn room(join_rule: &str, history: &str, members: &[(&str, &str)]) -> State {
        let mut s = State::default();
        let mut set = |t: &str, k: &str, c: Value| s.0.insert((t.into(), k.into()), c);
        set(
            "m.room.join_rules",
            "",
            json!({"join_rule": join_rule, "allow": [
                {"type": "m.room_membership", "room_id": "!space:x"},
                {"type": "m.other", "room_id": "!other:x"},
                {"type": "m.room_membership"},
            ]}),
        );
        set(
            "m.room.history_visibility",
            "",
            json!({"history_visibility": history}),
        );
        for (user, m) in members {
            set("m.room.member", user, json!({"membership": m}));
        }
        s
    }

    #[test]
    fn who_may_preview_a_room() {
        let none = HashSet::new();
        let in_space: HashSet<String> = ["!space:x".to_owned()].into();
        let in_other: HashSet<String> = ["!other:x".to_owned()].into();
        let members = [
            ("@in:x", "join"),
            ("@inv:x", "invite"),
            ("@gone:x", "leave"),
            ("@ban:x", "ban"),
        ];
        for rule in ["public", "knock", "knock_restricted"] {
            assert!(
                may_preview(&room(rule, "shared", &[]), None, &none),
                "{rule}"
            );
        }
        assert!(may_preview(
            &room("invite", "world_readable", &[]),
            None,
            &none
        ));
        let private = room("invite", "shared", &members);
        assert!(!may_preview(&private, None, &none));
        assert!(may_preview(&private, Some("@in:x"), &none));
        assert!(may_preview(&private, Some("@inv:x"), &none));
        assert!(!may_preview(&private, Some("@gone:x"), &none));
        assert!(!may_preview(&private, Some("@ban:x"), &none));
        assert!(
            !may_preview(&private, Some("@new:x"), &in_space),
            "invite rule: no allow list"
        );
        let restricted = room("restricted", "shared", &members);
        assert!(may_preview(&restricted, Some("@new:x"), &in_space));
        assert!(
            !may_preview(&restricted, Some("@new:x"), &in_other),
            "not an m.room_membership condition"
        );
        assert!(!may_preview(&restricted, Some("@new:x"), &none));
        assert!(!may_preview(&restricted, None, &in_space));
        assert_eq!(restricted::allowed_room_ids(&restricted), ["!space:x"]);
        assert!(restricted::allowed_room_ids(&private).is_empty());
    }
}

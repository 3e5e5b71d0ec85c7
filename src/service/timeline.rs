//! Serving events to clients: the stored client JSON plus an `unsigned` section made for the viewer
//! (age, local echo, previous state, redaction, bundled aggregations).

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sqlx::PgConnection;

use crate::service::erasure::Erasure;
use crate::store::events::EventRow;
use crate::{Error, Result, store};

/// Who is looking: local echo (`transaction_id`) is for the sending device only.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub user_id: &'a str,
    pub device_id: Option<&'a str>,
}

/// Bundled aggregations per event ID, as `unsigned.m.relations` wants them.
pub type Aggregations = HashMap<String, Value>;

pub fn render(
    row: &EventRow,
    viewer: Viewer<'_>,
    now: i64,
    aggregations: &Aggregations,
) -> Box<RawValue> {
    let mut unsigned = Map::new();
    unsigned.insert("age".into(), json!((now - row.origin_server_ts).max(0)));
    if let (Some(device), Some(txn)) = (&row.device_id, &row.txn_id)
        && row.sender == viewer.user_id
        && viewer.device_id == Some(device.as_str())
    {
        unsigned.insert("transaction_id".into(), json!(txn));
    }
    if let Some(extra) = row
        .state_unsigned
        .as_deref()
        .and_then(|s| serde_json::from_str::<Map<String, Value>>(s).ok())
    {
        unsigned.extend(extra);
    }
    if let Some(because) = row
        .redacted_because
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    {
        unsigned.insert("redacted_because".into(), because);
    }
    if let Some(relations) = aggregations.get(&row.event_id) {
        unsigned.insert("m.relations".into(), relations.clone());
    }
    splice_unsigned(&row.client_json, &Value::Object(unsigned))
}

/// Appends `"unsigned": …` to a stored client event without re-parsing it.
fn splice_unsigned(client_json: &str, unsigned: &Value) -> Box<RawValue> {
    let body = client_json.trim_end();
    let text = match body.strip_suffix('}') {
        Some(head) if head.trim_end().ends_with('{') => format!("{head}\"unsigned\":{unsigned}}}"),
        Some(head) => format!("{head},\"unsigned\":{unsigned}}}"),
        None => client_json.to_owned(),
    };
    RawValue::from_string(text)
        .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"))
}

/// Renders rows of the timeline with their bundled aggregations (one query for the whole batch),
/// erased senders' events pruned as `erasure` decides.
pub async fn render_all(
    conn: &mut PgConnection,
    erasure: &mut Erasure,
    mut rows: Vec<EventRow>,
    viewer: Viewer<'_>,
) -> Result<Vec<Box<RawValue>>> {
    erasure.prune(&mut *conn, &mut rows).await?;
    let refs: Vec<&EventRow> = rows.iter().collect();
    let aggregations = aggregations_for(conn, erasure, &refs, viewer).await?;
    let now = store::now_ms();
    Ok(rows
        .iter()
        .map(|r| render(r, viewer, now, &aggregations))
        .collect())
}

/// `render_all` on a connection of its own, through the viewer's erasure rules: for endpoints that
/// render one list of events.
pub async fn render_for(
    state: &crate::AppState,
    rows: Vec<EventRow>,
    viewer: Viewer<'_>,
) -> Result<Vec<Box<RawValue>>> {
    let mut conn = state.db.acquire().await?;
    let mut erasure = Erasure::for_viewer(state, &mut conn, viewer.user_id).await?;
    render_all(&mut conn, &mut erasure, rows, viewer).await
}

/// Renders rows without bundled aggregations: for state, which relations do not decorate.
pub fn render_plain(rows: &[EventRow], viewer: Viewer<'_>) -> Vec<Box<RawValue>> {
    let now = store::now_ms();
    let none = Aggregations::new();
    rows.iter().map(|r| render(r, viewer, now, &none)).collect()
}

/// The spec's bundled aggregations: the latest edit (`m.replace`), thread summaries (`m.thread`) and
/// references (`m.reference`). `rows` have been through `erasure`, which also prunes the related
/// events served here; an event served pruned gets no edit (nor does one whose edit is pruned).
pub async fn aggregations_for(
    conn: &mut PgConnection,
    erasure: &mut Erasure,
    rows: &[&EventRow],
    viewer: Viewer<'_>,
) -> Result<Aggregations> {
    let ids: Vec<String> = rows
        .iter()
        .filter(|r| r.redacted_because.is_none())
        .map(|r| r.event_id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(Aggregations::new());
    }
    let rel_types = vec![
        "m.replace".to_owned(),
        "m.thread".to_owned(),
        "m.reference".to_owned(),
    ];
    let mut related = store::events::relations_of(&mut *conn, &ids, &rel_types).await?;
    if related.is_empty() {
        return Ok(Aggregations::new());
    }
    erasure.prune(conn, &mut related).await?;
    let senders: HashMap<&str, &str> = rows
        .iter()
        .map(|r| (r.event_id.as_str(), r.sender.as_str()))
        .collect();
    let now = store::now_ms();
    let none = Aggregations::new();
    let mut out: HashMap<String, Map<String, Value>> = HashMap::new();
    for rel in &related {
        let content: Value = serde_json::from_str::<Value>(&rel.client_json)
            .ok()
            .and_then(|v| v.get("content").cloned())
            .unwrap_or(Value::Null);
        let relates = &content["m.relates_to"];
        let (Some(target), Some(rel_type)) =
            (relates["event_id"].as_str(), relates["rel_type"].as_str())
        else {
            continue;
        };
        let entry = out.entry(target.to_owned()).or_default();
        match rel_type {
            // Only the original sender's edits count; the newest wins (rows come oldest first).
            "m.replace"
                if senders.get(target) == Some(&rel.sender.as_str())
                    && !erasure.is_pruned(target)
                    && !erasure.is_pruned(&rel.event_id) =>
            {
                let rendered: Value = serde_json::from_str(render(rel, viewer, now, &none).get())
                    .map_err(Error::internal)?;
                entry.insert("m.replace".into(), rendered);
            }
            "m.thread" => {
                let rendered: Value = serde_json::from_str(render(rel, viewer, now, &none).get())
                    .map_err(Error::internal)?;
                let thread = entry
                    .entry("m.thread")
                    .or_insert_with(|| json!({"count": 0, "current_user_participated": false}));
                thread["count"] = json!(thread["count"].as_i64().unwrap_or(0) + 1);
                thread["latest_event"] = rendered;
                if rel.sender == viewer.user_id || senders.get(target) == Some(&viewer.user_id) {
                    thread["current_user_participated"] = json!(true);
                }
            }
            "m.reference" => {
                let refs = entry
                    .entry("m.reference")
                    .or_insert_with(|| json!({"chunk": []}));
                if let Some(chunk) = refs["chunk"].as_array_mut() {
                    chunk.push(json!({"event_id": rel.event_id}));
                }
            }
            _ => {}
        }
    }
    Ok(out
        .into_iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(k, m)| (k, Value::Object(m)))
        .collect())
}

/// Keys of `unsigned` the legacy (v1) client format also puts at the top level, as Synapse does.
const V1_TOP_LEVEL: [&str; 6] = [
    "age",
    "redacted_because",
    "replaces_state",
    "prev_content",
    "invite_room_state",
    "knock_room_state",
];

/// The legacy client event format of `/events`, `/events/{eventId}` and `/initialSync` (Synapse's
/// `ClientV1`): the client event with `room_id`, plus `user_id` (the sender) and some `unsigned`
/// keys copied to the top level.
pub fn to_v1_format(event: &RawValue) -> Box<RawValue> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(event.get()) else {
        return event.to_owned();
    };
    if let Some(sender) = map.get("sender").filter(|s| !s.is_null()).cloned() {
        map.insert("user_id".into(), sender);
    }
    let copied: Vec<(String, Value)> = match map.get("unsigned") {
        Some(Value::Object(unsigned)) => V1_TOP_LEVEL
            .iter()
            .filter_map(|k| unsigned.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect(),
        _ => Vec::new(),
    };
    map.extend(copied);
    RawValue::from_string(Value::Object(map).to_string()).unwrap_or_else(|_| event.to_owned())
}

/// `event_fields` applied to a list of events (nothing to do without it).
pub fn with_fields(events: Vec<Box<RawValue>>, fields: Option<&[String]>) -> Vec<Box<RawValue>> {
    match fields {
        Some(fields) => events.iter().map(|e| keep_fields(e, fields)).collect(),
        None => events,
    }
}

/// Removes everything but `fields` (dotted paths, `\.` escapes a dot) from an event: `event_fields`.
pub fn keep_fields(event: &RawValue, fields: &[String]) -> Box<RawValue> {
    let Ok(Value::Object(source)) = serde_json::from_str::<Value>(event.get()) else {
        return event.to_owned();
    };
    let mut out = Map::new();
    for field in fields {
        let path = split_field_path(field);
        copy_path(&source, &mut out, &path);
    }
    RawValue::from_string(Value::Object(out).to_string()).unwrap_or_else(|_| event.to_owned())
}

fn split_field_path(field: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    parts.last_mut().expect("non-empty").push(next);
                }
            }
            '.' => parts.push(String::new()),
            c => parts.last_mut().expect("non-empty").push(c),
        }
    }
    parts
}

fn copy_path(source: &Map<String, Value>, out: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(value) = source.get(first) else {
        return;
    };
    if rest.is_empty() {
        out.insert(first.clone(), value.clone());
    } else if let Value::Object(inner) = value {
        let slot = out
            .entry(first.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(slot) = slot {
            copy_path(inner, slot, rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_unsigned_into_stored_json() {
        let raw = splice_unsigned(
            r#"{"type":"m.room.message","content":{}}"#,
            &json!({"age": 5}),
        );
        let v: Value = serde_json::from_str(raw.get()).unwrap();
        assert_eq!(v["unsigned"]["age"], 5);
        assert_eq!(v["type"], "m.room.message");
    }

    #[test]
    fn v1_format_adds_user_id_and_lifts_unsigned_keys() {
        let event = RawValue::from_string(
            r#"{"type":"m.room.topic","room_id":"!r:x","sender":"@a:x","content":{},"unsigned":{"age":3,"prev_content":{"topic":"t"},"transaction_id":"x"}}"#.into(),
        )
        .unwrap();
        let v: Value = serde_json::from_str(to_v1_format(&event).get()).unwrap();
        assert_eq!(v["user_id"], "@a:x");
        assert_eq!(v["age"], 3);
        assert_eq!(v["prev_content"], json!({"topic": "t"}));
        assert_eq!(v["room_id"], "!r:x");
        assert!(v.get("transaction_id").is_none());
        assert_eq!(v["unsigned"]["transaction_id"], "x");
    }

    #[test]
    fn event_fields_keep_only_named_paths() {
        let event = RawValue::from_string(
            r#"{"type":"t","content":{"body":"b","x.y":1,"z":2},"sender":"@a:b"}"#.into(),
        )
        .unwrap();
        let kept = keep_fields(
            &event,
            &["type".into(), "content.body".into(), "content.x\\.y".into()],
        );
        let v: Value = serde_json::from_str(kept.get()).unwrap();
        assert_eq!(v, json!({"type": "t", "content": {"body": "b", "x.y": 1}}));
    }
}

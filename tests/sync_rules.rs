//! /sync as the spec's sync rules say: a profile change is not a new join, a room joined since the
//! token comes whole, a gap's state changes all arrive, `limit: 0`, inline and stored filters alike,
//! the presence of new room mates, and /messages continuing from a sync token.

use serde_json::{Value, json};

use crate::common::*;
use crate::messaging::send_ok;
use crate::rooms::{create_room, join};
use crate::sync::{long_poll, next_batch, sync, sync_token, upload_filter};
use crate::sync_contents::types;

fn filter(value: Value) -> String {
    format!("filter={}", enc(&value.to_string()))
}

/// The (type, state_key) of each event.
fn keys(events: &Value) -> Vec<(String, String)> {
    events.as_array().map_or(vec![], |events| {
        events
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    e["state_key"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    })
}

async fn set_state(user: &User, room: &str, event_type: &str, content: Value) {
    user.put(
        &format!("/rooms/{}/state/{event_type}/", enc(room)),
        content,
    )
    .await
    .ok();
}

async fn leave(user: &User, room: &str) {
    user.post(&format!("/rooms/{}/leave", enc(room)), json!({}))
        .await
        .ok();
}

#[tokio::test]
async fn a_profile_change_syncs_as_that_member_event_alone() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "Lounge"})).await;
    join(&bob, &room).await;
    for n in 0..3 {
        send_ok(&alice, &room, &format!("m{n}")).await;
    }
    let since_alice = sync_token(&alice, "").await;
    let since_bob = sync_token(&bob, "").await;
    alice
        .put(
            &format!("/profile/{}/displayname", enc(&alice.user_id)),
            json!({"displayname": "Alice Liddell"}),
        )
        .await
        .ok();
    // For the user who changed it (her membership moved) and for a room mate alike.
    for (user, since) in [(&alice, since_alice), (&bob, since_bob)] {
        let s = sync(user, &format!("since={since}")).await;
        let joined = &s["rooms"]["join"][&room];
        assert_eq!(
            keys(&joined["timeline"]["events"]),
            vec![("m.room.member".to_owned(), alice.user_id.clone())],
            "{} got {s}",
            user.user_id
        );
        assert_eq!(
            joined["timeline"]["events"][0]["content"]["displayname"],
            "Alice Liddell"
        );
        assert_eq!(joined["timeline"]["limited"], false, "{s}");
        assert_eq!(joined["state"]["events"], json!([]), "{s}");
    }

    // A long poll woken by the change says the same (the memory path leaves state to the database).
    let since = sync_token(&alice, "").await;
    let waiting = long_poll(&alice, &since, "");
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    alice
        .put(
            &format!("/profile/{}/avatar_url", enc(&alice.user_id)),
            json!({"avatar_url": "mxc://test.local/abc"}),
        )
        .await
        .ok();
    let s = waiting.await.unwrap();
    let joined = &s["rooms"]["join"][&room];
    assert_eq!(
        keys(&joined["timeline"]["events"]),
        vec![("m.room.member".to_owned(), alice.user_id.clone())],
        "{s}"
    );
    assert_eq!(joined["state"]["events"], json!([]), "{s}");
}

#[tokio::test]
async fn a_room_joined_since_the_token_comes_whole_under_every_history_visibility() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    for visibility in ["shared", "joined", "invited"] {
        let room = create_room(&alice, json!({"preset": "public_chat", "name": visibility})).await;
        set_state(
            &alice,
            &room,
            "m.room.history_visibility",
            json!({"history_visibility": visibility}),
        )
        .await;
        send_ok(&alice, &room, "before").await;
        let since = sync_token(&bob, "").await;
        join(&bob, &room).await;
        // A short timeline: the state before it is the rest of the room's state.
        let s = sync(
            &bob,
            &format!(
                "since={since}&{}",
                filter(json!({"room": {"timeline": {"limit": 2}}}))
            ),
        )
        .await;
        let joined = &s["rooms"]["join"][&room];
        let state = types(&joined["state"]["events"]);
        for wanted in ["m.room.create", "m.room.name", "m.room.history_visibility"] {
            assert!(
                state.contains(&wanted),
                "{visibility}: {wanted} missing: {s}"
            );
        }
        // Bob's own join is current state: it is in the timeline, whatever the visibility.
        let timeline = keys(&joined["timeline"]["events"]);
        assert_eq!(
            timeline.last(),
            Some(&("m.room.member".to_owned(), bob.user_id.clone())),
            "{visibility}: {s}"
        );
    }
}

#[tokio::test]
async fn a_room_joined_and_left_within_the_window_comes_whole_in_leave() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "Brief"})).await;
    for n in 0..3 {
        send_ok(&alice, &room, &format!("m{n}")).await;
    }
    let since = sync_token(&bob, "").await;
    join(&bob, &room).await;
    send_ok(&alice, &room, "while bob was there").await;
    leave(&bob, &room).await;
    let s = sync(
        &bob,
        &format!(
            "since={since}&{}",
            filter(json!({"room": {"include_leave": true, "timeline": {"limit": 3}}}))
        ),
    )
    .await;
    let left = &s["rooms"]["leave"][&room];
    let state = types(&left["state"]["events"]);
    for wanted in ["m.room.create", "m.room.name", "m.room.join_rules"] {
        assert!(state.contains(&wanted), "{wanted} missing: {s}");
    }
    let timeline = keys(&left["timeline"]["events"]);
    let own = ("m.room.member".to_owned(), bob.user_id.clone());
    // The latest events up to the leave: the join, the message, the leave.
    assert_eq!(
        timeline,
        vec![
            own.clone(),
            ("m.room.message".to_owned(), String::new()),
            own
        ],
        "{s}"
    );
}

#[tokio::test]
async fn a_gapped_lazy_loading_sync_carries_every_state_change_of_the_gap() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let lazy = |limit: i64| {
        filter(json!({"room": {"timeline": {"limit": limit},
                               "state": {"lazy_load_members": true}}}))
    };
    let since = sync_token(&bob, &lazy(10)).await;
    // In the gap: Carol comes and goes, the room is renamed.
    join(&carol, &room).await;
    set_state(&alice, &room, "m.room.name", json!({"name": "Renamed"})).await;
    leave(&carol, &room).await;
    for n in 0..4 {
        send_ok(&alice, &room, &format!("m{n}")).await;
    }
    let s = sync(&bob, &format!("since={since}&{}", lazy(2))).await;
    let joined = &s["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{s}");
    let state = keys(&joined["state"]["events"]);
    assert!(
        state.contains(&("m.room.name".to_owned(), String::new())),
        "{s}"
    );
    let carols: Vec<&Value> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state_key"] == carol.user_id.as_str())
        .collect();
    assert_eq!(carols.len(), 1, "Carol's leave is a change of the gap: {s}");
    assert_eq!(carols[0]["content"]["membership"], "leave");
}

#[tokio::test]
async fn a_timeline_limit_of_zero_returns_no_events_and_says_limited() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    send_ok(&alice, &room, "hello").await;
    let zero = filter(json!({"room": {"timeline": {"limit": 0}}}));
    let s = sync(&alice, &zero).await;
    let timeline = &s["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["events"], json!([]), "{s}");
    assert_eq!(timeline["limited"], true, "{s}");
    // The state is still there: the room is known.
    assert!(
        types(&s["rooms"]["join"][&room]["state"]["events"]).contains(&"m.room.create"),
        "{s}"
    );
    let since = next_batch(&s);
    send_ok(&alice, &room, "again").await;
    let s = sync(&alice, &format!("since={since}&{zero}")).await;
    let events = &s["rooms"]["join"][&room]["timeline"]["events"];
    assert!(events.is_null() || *events == json!([]), "{s}");
}

/// A response without what differs between two syncs of the same moment.
fn comparable(mut s: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(unsigned)) = map.get_mut("unsigned") {
                    unsigned.remove("age");
                }
                map.remove("last_active_ago");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut s);
    s
}

/// Where two values differ: (path, left, right).
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, Value, Value)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (l, r) = (
                    &x.get(key).cloned().unwrap_or(Value::Null),
                    &y.get(key).cloned().unwrap_or(Value::Null),
                );
                diff(&format!("{path}.{key}"), l, r, out);
            }
        }
        _ if a != b => out.push((path.to_owned(), a.clone(), b.clone())),
        _ => {}
    }
}

#[tokio::test]
async fn an_inline_filter_behaves_as_the_same_filter_uploaded() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "F"})).await;
    for n in 0..3 {
        send_ok(&alice, &room, &format!("m{n}")).await;
    }
    for body in [
        json!({"room": {"timeline": {"limit": 0}}}),
        json!({"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}}),
        json!({"room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 1}}}),
        json!({"event_fields": ["type", "content.body"], "presence": {"types": []}}),
    ] {
        let id = upload_filter(&alice, body.clone()).await;
        let uploaded = sync(&alice, &format!("filter={id}")).await;
        let inline = sync(&alice, &filter(body.clone())).await;
        let mut differences = Vec::new();
        diff(
            "",
            &comparable(inline),
            &comparable(uploaded),
            &mut differences,
        );
        assert!(differences.is_empty(), "{body}: {differences:?}");
    }
}

#[tokio::test]
async fn the_presence_of_new_room_mates_comes_with_the_room() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    // Alice is online, long before Bob shares a room with her.
    sync(&alice, "set_presence=online").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let since = sync_token(&bob, "").await;
    join(&bob, &room).await;
    let s = sync(&bob, &format!("since={since}")).await;
    assert!(s["rooms"]["join"].get(&room).is_some(), "{s}");
    let alices: Vec<&Value> = s["presence"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["sender"] == alice.user_id.as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(alices.len(), 1, "{s}");
    assert_eq!(alices[0]["content"]["presence"], "online");

    // Alice, in turn, learns Bob's presence with his join.
    let s = sync(&alice, "").await;
    let since = next_batch(&s);
    let carol = app.register("carol").await;
    sync(&carol, "set_presence=online").await;
    let since_after_presence = sync_token(&alice, &format!("since={since}")).await;
    join(&carol, &room).await;
    let s = sync(&alice, &format!("since={since_after_presence}")).await;
    let carols = s["presence"]["events"].as_array().map_or(0, |events| {
        events
            .iter()
            .filter(|e| e["sender"] == carol.user_id.as_str())
            .count()
    });
    assert_eq!(carols, 1, "{s}");
}

async fn messages(user: &User, room: &str, query: &str) -> Value {
    user.get(&format!("/rooms/{}/messages?{query}", enc(room)))
        .await
        .ok()
}

#[tokio::test]
async fn messages_continue_from_a_sync_token_with_end_while_more_may_follow() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    for n in 0..3 {
        send_ok(&alice, &room, &format!("m{n}")).await;
    }
    // next_batch (s{position}_{typing}) is a /messages token.
    let token = sync_token(&alice, "").await;
    assert!(token.contains('_'), "{token}");
    let page = messages(&alice, &room, &format!("dir=b&limit=2&from={token}")).await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), 2, "{page}");
    assert!(page["end"].is_string(), "{page}");

    // A page of nothing still continues.
    let page = messages(&alice, &room, &format!("dir=b&limit=0&from={token}")).await;
    assert_eq!(page["chunk"], json!([]));
    assert!(page["end"].is_string(), "{page}");

    // Forwards, the room goes on: from the end of the last events, later ones follow.
    let page = messages(&alice, &room, "dir=f&limit=50&from=s0").await;
    let end = page["end"]
        .as_str()
        .unwrap_or_else(|| panic!("forwards, more may follow: {page}"))
        .to_owned();
    send_ok(&alice, &room, "later").await;
    let page = messages(&alice, &room, &format!("dir=f&limit=50&from={end}")).await;
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["later"], "{page}");
    // Forwards from a sync token: what came after it.
    let page = messages(&alice, &room, &format!("dir=f&from={token}")).await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), 1, "{page}");
}

//! What each part of a /sync response carries, read through real responses: the state delta
//! before a limited timeline, `full_state`, every filter field outside the timeline's basics,
//! presence, to-device messages, device lists, fallback keys and unread thread counts.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::e2ee::one_time_keys;
use crate::ephemeral::start_typing;
use crate::messaging::send_ok;
use crate::rooms::{create_room, join};
use crate::sync::{bodies, next_batch, sync, sync_token, timeline};

fn filter(value: Value) -> String {
    format!("filter={}", enc(&value.to_string()))
}

/// The `type`s of a list of events, in order.
pub(crate) fn types(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default()
}

async fn set_state(user: &User, room: &str, event_type: &str, content: Value) {
    user.put(
        &format!("/rooms/{}/state/{event_type}/", enc(room)),
        content,
    )
    .await
    .ok();
}

async fn two_in_a_room(app: &TestApp) -> (User, User, String) {
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    (alice, bob, room)
}

#[tokio::test]
async fn a_limited_incremental_sync_puts_the_state_changes_before_the_timeline() {
    let app = spawn_app().await;
    let (alice, bob, room) = two_in_a_room(&app).await;
    let since = sync_token(&bob, "").await;
    set_state(&alice, &room, "m.room.name", json!({"name": "Renamed"})).await;
    for n in 0..4 {
        send_ok(&alice, &room, &format!("m{n}")).await;
    }
    let s = sync(
        &bob,
        &format!(
            "since={since}&{}",
            filter(json!({"room": {"timeline": {"limit": 2}}}))
        ),
    )
    .await;
    let joined = &s["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{s}");
    assert_eq!(bodies(&joined["timeline"]["events"]), vec!["m2", "m3"]);
    // The rename happened in the gap: it is in the state, which holds only what changed.
    assert_eq!(
        types(&joined["state"]["events"]),
        vec!["m.room.name"],
        "{s}"
    );
    assert_eq!(joined["state"]["events"][0]["content"]["name"], "Renamed");

    // Unlimited, the same change is in the timeline and not repeated in the state.
    let since = next_batch(&s);
    set_state(&alice, &room, "m.room.topic", json!({"topic": "New"})).await;
    let s = sync(&bob, &format!("since={since}")).await;
    let joined = &s["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], false);
    assert_eq!(types(&joined["timeline"]["events"]), vec!["m.room.topic"]);
    assert_eq!(joined["state"]["events"], json!([]), "{s}");
}

#[tokio::test]
async fn a_room_joined_since_the_token_comes_with_its_whole_state() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "Lounge"})).await;
    for n in 0..3 {
        send_ok(&alice, &room, &format!("m{n}")).await;
    }
    let since = sync_token(&bob, "").await;
    join(&bob, &room).await;
    let s = sync(
        &bob,
        &format!(
            "since={since}&{}",
            filter(json!({"room": {"timeline": {"limit": 1}}}))
        ),
    )
    .await;
    let joined = &s["rooms"]["join"][&room];
    let state = types(&joined["state"]["events"]);
    for wanted in ["m.room.create", "m.room.name", "m.room.join_rules"] {
        assert!(state.contains(&wanted), "{wanted} missing: {s}");
    }
    let last = &joined["timeline"]["events"][0];
    assert_eq!(last["type"], "m.room.member");
    assert_eq!(last["state_key"], bob.user_id.as_str());
}

#[tokio::test]
async fn full_state_sends_the_whole_state_of_rooms_without_news() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"name": "Quiet"})).await;
    let since = sync_token(&alice, "").await;
    let s = sync(&alice, &format!("since={since}")).await;
    assert!(s["rooms"]["join"].get(&room).is_none(), "{s}");
    let s = sync(&alice, &format!("since={since}&full_state=true")).await;
    let state = types(&s["rooms"]["join"][&room]["state"]["events"]);
    assert!(state.contains(&"m.room.create"), "{s}");
    assert!(state.contains(&"m.room.name"), "{s}");
    assert!(state.contains(&"m.room.member"), "{s}");
}

#[tokio::test]
async fn timeline_and_state_filters_select_by_type_and_sender() {
    let app = spawn_app().await;
    let (alice, bob, room) = two_in_a_room(&app).await;
    send_ok(&alice, &room, "from alice").await;
    send_ok(&bob, &room, "from bob").await;
    alice
        .put(
            &format!("/rooms/{}/send/org.example.custom/c1", enc(&room)),
            json!({"k": 1}),
        )
        .await
        .ok();
    let in_room = |s: &Value| s["rooms"]["join"][&room].clone();

    let s = sync(
        &bob,
        &filter(json!({"room": {"timeline": {"senders": [alice.user_id], "types": ["m.room.message"]}}})),
    )
    .await;
    assert_eq!(
        bodies(&in_room(&s)["timeline"]["events"]),
        vec!["from alice"]
    );

    let s = sync(
        &bob,
        &filter(json!({"room": {"timeline": {"not_senders": [alice.user_id]}}})),
    )
    .await;
    let events = in_room(&s)["timeline"]["events"].clone();
    assert!(!events.as_array().unwrap().is_empty(), "{s}");
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["sender"] == bob.user_id.as_str()),
        "{s}"
    );

    let s = sync(
        &bob,
        &filter(json!({"room": {"timeline": {"not_types": ["m.room.message", "m.room.member"]}}})),
    )
    .await;
    let joined = in_room(&s);
    let timeline_types = types(&joined["timeline"]["events"]);
    assert!(timeline_types.contains(&"org.example.custom"), "{s}");
    assert!(
        !timeline_types
            .iter()
            .any(|t| *t == "m.room.message" || *t == "m.room.member"),
        "{s}"
    );

    // State: members only, and only Bob's; then everything but members.
    let s = sync(
        &bob,
        &filter(json!({"room": {"timeline": {"limit": 1}, "state": {"types": ["m.room.member"], "senders": [bob.user_id]}}})),
    )
    .await;
    let state = in_room(&s)["state"]["events"].clone();
    assert_eq!(types(&state), vec!["m.room.member"], "{s}");
    assert_eq!(state[0]["state_key"], bob.user_id.as_str());
    let s = sync(
        &bob,
        &filter(
            json!({"room": {"timeline": {"limit": 1}, "state": {"not_types": ["m.room.member"]}}}),
        ),
    )
    .await;
    let joined = in_room(&s);
    let state = types(&joined["state"]["events"]);
    assert!(state.contains(&"m.room.create"), "{s}");
    assert!(!state.contains(&"m.room.member"), "{s}");
}

#[tokio::test]
async fn a_state_limit_keeps_the_latest_state() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    set_state(&alice, &room, "m.room.name", json!({"name": "N"})).await;
    set_state(&alice, &room, "m.room.topic", json!({"topic": "T"})).await;
    send_ok(&alice, &room, "after the state").await;
    let s = sync(
        &alice,
        &filter(json!({"room": {"timeline": {"limit": 1}, "state": {"limit": 2}}})),
    )
    .await;
    let state = types(&s["rooms"]["join"][&room]["state"]["events"]);
    assert_eq!(state, vec!["m.room.name", "m.room.topic"], "{s}");
    let s = sync(&alice, &filter(json!({"room": {"timeline": {"limit": 1}}}))).await;
    assert!(types(&s["rooms"]["join"][&room]["state"]["events"]).len() > 2);
    // Lazy loading: the members the timeline needs come whatever the limit.
    let s = sync(
        &alice,
        &filter(json!({"room": {"timeline": {"limit": 1}, "state": {"limit": 1, "lazy_load_members": true}}})),
    )
    .await;
    let state = types(&s["rooms"]["join"][&room]["state"]["events"]);
    assert_eq!(state, vec!["m.room.topic", "m.room.member"], "{s}");
}

#[tokio::test]
async fn ephemeral_and_account_data_filters_select_types_and_limits() {
    let app = spawn_app().await;
    let (alice, bob, room) = two_in_a_room(&app).await;
    let before = sync_token(&bob, "").await;
    let event_id = send_ok(&alice, &room, "read me").await;
    alice
        .post(
            &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event_id)),
            json!({}),
        )
        .await
        .ok();
    start_typing(&alice, &room, 30000).await;
    for (data_type, n) in [("org.example.a", 1), ("org.example.b", 2)] {
        bob.put(
            &format!("/user/{}/account_data/{data_type}", enc(&bob.user_id)),
            json!({"n": n}),
        )
        .await
        .ok();
        bob.put(
            &format!(
                "/user/{}/rooms/{}/account_data/{data_type}",
                enc(&bob.user_id),
                enc(&room)
            ),
            json!({"n": n}),
        )
        .await
        .ok();
    }
    // The sorted types of a list in a sync with this filter: `part` of the room, or "global"
    // account data.
    let listed = async |query: String, part: &str| -> Vec<String> {
        let s = sync(&bob, &query).await;
        let events = match part {
            "global" => &s["account_data"]["events"],
            room_part => &s["rooms"]["join"][&room][room_part]["events"],
        };
        let mut found: Vec<String> = types(events).into_iter().map(str::to_owned).collect();
        found.sort();
        found
    };

    // Ephemeral events: types, then a limit.
    assert_eq!(
        listed(String::new(), "ephemeral").await,
        ["m.receipt", "m.typing"]
    );
    let only_typing = filter(json!({"room": {"ephemeral": {"types": ["m.typing"]}}}));
    assert_eq!(listed(only_typing, "ephemeral").await, ["m.typing"]);
    let no_typing = filter(json!({"room": {"ephemeral": {"not_types": ["m.typing"]}}}));
    assert_eq!(listed(no_typing, "ephemeral").await, ["m.receipt"]);
    let one = filter(json!({"room": {"ephemeral": {"limit": 1}}}));
    assert_eq!(listed(one, "ephemeral").await.len(), 1);

    // Global account data (which also holds the push rules).
    let ours = filter(json!({"account_data": {"types": ["org.example.*"]}}));
    assert_eq!(
        listed(ours, "global").await,
        ["org.example.a", "org.example.b"]
    );
    let not_a = filter(json!({"account_data": {"not_types": ["org.example.a", "m.push_rules"]}}));
    assert_eq!(listed(not_a, "global").await, ["org.example.b"]);
    let one = filter(json!({"account_data": {"limit": 1}}));
    assert_eq!(listed(one, "global").await.len(), 1);

    // The room's account data.
    let only_b = filter(json!({"room": {"account_data": {"types": ["org.example.b"]}}}));
    assert_eq!(listed(only_b, "account_data").await, ["org.example.b"]);
    let one = filter(json!({"room": {"account_data": {"limit": 1}}}));
    assert_eq!(listed(one, "account_data").await.len(), 1);
    assert_eq!(listed(String::new(), "account_data").await.len(), 2);

    // Of changes, a limit keeps the latest.
    let limited =
        filter(json!({"account_data": {"limit": 1}, "room": {"account_data": {"limit": 1}}}));
    let s = sync(&bob, &format!("since={before}&{limited}")).await;
    assert_eq!(
        types(&s["account_data"]["events"]),
        ["org.example.b"],
        "{s}"
    );
    let room_data = &s["rooms"]["join"][&room]["account_data"]["events"];
    assert_eq!(types(room_data), ["org.example.b"], "{s}");
}

#[tokio::test]
async fn presence_reaches_room_mates_and_set_presence_is_honoured() {
    let app = spawn_app().await;
    let (alice, bob, _room) = two_in_a_room(&app).await;
    let since = sync_token(&alice, "").await;
    // Bob's client syncs as "unavailable": that is his presence, and Alice's sync says so.
    sync(&bob, "set_presence=unavailable").await;
    let s = sync(&alice, &format!("since={since}")).await;
    let bobs: Vec<&Value> = s["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"] == bob.user_id.as_str())
        .collect();
    assert_eq!(bobs.len(), 1, "{s}");
    assert_eq!(bobs[0]["type"], "m.presence");
    assert_eq!(bobs[0]["content"]["presence"], "unavailable");

    // A status set explicitly arrives with its message.
    let since = next_batch(&s);
    bob.put(
        &format!("/presence/{}/status", enc(&bob.user_id)),
        json!({"presence": "online", "status_msg": "back"}),
    )
    .await
    .ok();
    let s = sync(&alice, &format!("since={since}")).await;
    let content = &s["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sender"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("bob's presence: {s}"))["content"];
    assert_eq!(content["presence"], "online");
    assert_eq!(content["status_msg"], "back");

    // The presence filter: by sender, and none at all.
    let s = sync(
        &alice,
        &filter(json!({"presence": {"not_senders": [bob.user_id]}})),
    )
    .await;
    assert!(
        s["presence"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["sender"] != bob.user_id.as_str()),
        "{s}"
    );
    let s = sync(&alice, &filter(json!({"presence": {"types": []}}))).await;
    assert_eq!(s["presence"]["events"], json!([]));
    let s = sync(&alice, "").await;
    assert!(
        s["presence"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["sender"] == bob.user_id.as_str()),
        "{s}"
    );

    // A client syncing as "offline" does not make its user online.
    let carol = app.register("carol").await;
    sync(&carol, "set_presence=offline").await;
    let status = carol
        .get(&format!("/presence/{}/status", enc(&carol.user_id)))
        .await
        .ok();
    assert_eq!(status["presence"], "offline");
}

#[tokio::test]
async fn to_device_messages_come_until_the_next_token_acknowledges_them() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let since = sync_token(&bob, "").await;
    let body = json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"secret": 1}}}});
    alice
        .put("/sendToDevice/org.example.key/t1", body)
        .await
        .ok();
    let expected =
        json!([{"sender": alice.user_id, "type": "org.example.key", "content": {"secret": 1}}]);
    let first = sync(&bob, &format!("since={since}")).await;
    assert_eq!(first["to_device"]["events"], expected);
    // Not acknowledged yet: the same token brings it again.
    let again = sync(&bob, &format!("since={since}")).await;
    assert_eq!(again["to_device"]["events"], expected);
    // The next token acknowledges it: gone for good, even from the old token.
    let after = sync(&bob, &format!("since={}", next_batch(&first))).await;
    assert_eq!(after["to_device"]["events"], json!([]));
    let old = sync(&bob, &format!("since={since}")).await;
    assert_eq!(old["to_device"]["events"], json!([]));
}

#[tokio::test]
async fn device_lists_name_room_mates_that_changed_and_left() {
    let app = spawn_app().await;
    let (alice, bob, room) = two_in_a_room(&app).await;
    let since = sync_token(&bob, "").await;
    let localpart = alice.user_id[1..].split(':').next().unwrap().to_owned();
    alice
        .post(
            "/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": "correct horse"}),
        )
        .await
        .ok();
    let s = sync(&bob, &format!("since={since}")).await;
    assert_eq!(s["device_lists"]["changed"], json!([alice.user_id]), "{s}");
    assert_eq!(s["device_lists"]["left"], json!([]));

    // A new display name is part of the device's published keys: a change too.
    let since = next_batch(&s);
    alice
        .put(
            &format!("/devices/{}", enc(&alice.device_id)),
            json!({"display_name": "Work laptop"}),
        )
        .await
        .ok();
    let s = sync(&bob, &format!("since={since}")).await;
    assert_eq!(s["device_lists"]["changed"], json!([alice.user_id]), "{s}");

    let since = next_batch(&s);
    alice
        .post(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await
        .ok();
    let s = sync(&bob, &format!("since={since}")).await;
    assert_eq!(s["device_lists"]["left"], json!([alice.user_id]), "{s}");
    // A sync with nothing new says nothing.
    let s = sync(&bob, &format!("since={}", next_batch(&s))).await;
    assert_eq!(s["device_lists"]["changed"], json!([]));
    assert_eq!(s["device_lists"]["left"], json!([]));
}

#[tokio::test]
async fn key_counts_and_unused_fallback_key_types_come_with_every_sync() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let s = sync(&alice, "").await;
    assert_eq!(s["device_unused_fallback_key_types"], json!([]), "{s}");
    let fallback =
        json!({"signed_curve25519:F1": {"key": "fallback-1", "fallback": true, "signatures": {}}});
    alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": one_time_keys("A", 2), "fallback_keys": fallback}),
        )
        .await
        .ok();
    let s = sync(&alice, &format!("since={}", next_batch(&s))).await;
    assert_eq!(
        s["device_unused_fallback_key_types"],
        json!(["signed_curve25519"]),
        "{s}"
    );
    assert_eq!(s["device_one_time_keys_count"]["signed_curve25519"], 2);
    // Claims use the one-time keys, then the fallback key.
    let claim = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    for _ in 0..3 {
        bob.post("/keys/claim", claim.clone()).await.ok();
    }
    let s = sync(&alice, &format!("since={}", next_batch(&s))).await;
    assert_eq!(s["device_unused_fallback_key_types"], json!([]), "{s}");
    assert_eq!(
        s["device_one_time_keys_count"]["signed_curve25519"]
            .as_i64()
            .unwrap_or(0),
        0
    );
}

#[tokio::test]
async fn thread_notifications_are_counted_apart_when_the_filter_asks() {
    let app = spawn_app().await;
    let (alice, bob, room) = two_in_a_room(&app).await;
    let root = send_ok(&alice, &room, "root").await;
    alice
        .put(
            &format!("/rooms/{}/send/m.room.message/thread1", enc(&room)),
            json!({"msgtype": "m.text", "body": "in the thread",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
        )
        .await
        .ok();
    let per_thread = filter(json!({"room": {"timeline": {"unread_thread_notifications": true}}}));
    let s = sync(&bob, &per_thread).await;
    let joined = &s["rooms"]["join"][&room];
    assert_eq!(
        joined["unread_notifications"]["notification_count"], 1,
        "{s}"
    );
    assert_eq!(
        joined["unread_thread_notifications"][&root]["notification_count"], 1,
        "{s}"
    );
    // Without asking, one count covers both.
    let s = sync(&bob, "").await;
    let joined = &s["rooms"]["join"][&room];
    assert_eq!(
        joined["unread_notifications"]["notification_count"], 2,
        "{s}"
    );
    assert!(
        joined
            .get("unread_thread_notifications")
            .is_none_or(|t| t.as_object().is_some_and(|t| t.is_empty())),
        "{s}"
    );
    // Reading the thread clears its count only.
    let reply = timeline(&s, &room)["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.post(
        &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&reply)),
        json!({"thread_id": root}),
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = sync(&bob, &per_thread).await;
    let joined = &s["rooms"]["join"][&room];
    assert_eq!(
        joined["unread_notifications"]["notification_count"], 1,
        "{s}"
    );
    assert!(
        joined["unread_thread_notifications"]
            .get(&root)
            .is_none_or(|t| t["notification_count"] == 0),
        "{s}"
    );
}

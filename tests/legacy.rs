//! The deprecated endpoints still in the spec, as bots and scripts call them: GET /events (long
//! poll, `from`, `timeout`, `limit`, peeking with `room_id`), GET /events/{eventId},
//! GET /initialSync (`limit`, `archived`), GET /rooms/{roomId}/initialSync (joined, left, peeked)
//! and POST /rooms/{roomId}/send/{eventType} without a transaction ID.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::erasure::{assert_intact, assert_redacted, erased_history, pick};
use crate::messaging::send_ok;
use crate::rooms::{create_room, join};

/// GET /events with this query.
async fn events(user: &User, query: &str) -> Value {
    user.get(&format!("/events?{query}")).await.ok()
}

/// The `end` of an initial sync: the stream token to follow /events from.
async fn stream_token(user: &User) -> String {
    user.get("/initialSync?limit=0").await.ok()["end"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap().to_owned()
}

/// The IDs of the room events (those with an `event_id`) of a chunk.
fn ids(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect()
}

fn room_info<'a>(sync: &'a Value, room: &str) -> Option<&'a Value> {
    sync["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == room)
}

async fn leave(user: &User, room: &str) {
    user.post(&format!("/rooms/{}/leave", enc(room)), json!({}))
        .await
        .ok();
}

async fn set_history_visibility(user: &User, room: &str, setting: &str) {
    user.put(
        &format!("/rooms/{}/state/m.room.history_visibility", enc(room)),
        json!({"history_visibility": setting}),
    )
    .await
    .ok();
}

#[tokio::test]
async fn events_long_poll_wakes_on_a_message_from_another_user() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    let from = stream_token(&bob).await;
    let poll = {
        let bob = bob.clone();
        let from = from.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = events(&bob, &format!("from={}&timeout=20000", enc(&from))).await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = send_ok(&alice, &room, "wake up").await;
    let sent_at = Instant::now();
    let (r, _) = poll.await.unwrap();
    assert!(
        sent_at.elapsed() < Duration::from_secs(3),
        "woken late: {:?}",
        sent_at.elapsed()
    );
    assert_eq!(ids(&r["chunk"]), [sent]);
    // The legacy format: the client event with its room and `user_id`, `age` at the top level.
    let event = &r["chunk"][0];
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["user_id"], alice.user_id.as_str());
    assert_eq!(event["content"]["body"], "wake up");
    assert!(event["age"].is_i64(), "{event}");
    assert_eq!(r["start"], from.as_str());
    assert_ne!(r["end"], from.as_str());
    // `end` goes on after it: nothing more.
    let next = events(&bob, &format!("from={}&timeout=0", enc(&str_of(&r, "end")))).await;
    assert_eq!(ids(&next["chunk"]), Vec::<String>::new());
}

/// A room mate's presence change wakes a waiting /events (which carries presence), as it wakes a
/// /sync that wants presence: room mates' presence is announced under the rooms' presence keys.
#[tokio::test]
async fn events_long_poll_wakes_on_a_room_mate_s_presence() {
    let app = spawn_app().await;
    let (alice, bob, _room) = crate::messaging::joined_pair(&app).await;
    let from = stream_token(&bob).await;
    let poll = {
        let bob = bob.clone();
        tokio::spawn(
            async move { events(&bob, &format!("from={}&timeout=8000", enc(&from))).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice
        .put(
            &format!("/presence/{}/status", enc(&alice.user_id)),
            json!({"presence": "unavailable", "status_msg": "lunch"}),
        )
        .await
        .ok();
    let changed_at = Instant::now();
    let r = poll.await.unwrap();
    assert!(
        changed_at.elapsed() < Duration::from_secs(4),
        "woken late: {:?} {r}",
        changed_at.elapsed()
    );
    assert!(
        r["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.presence"
                && e["content"]["user_id"] == alice.user_id.as_str()
                && e["content"]["presence"] == "unavailable"),
        "{r}"
    );
}

#[tokio::test]
async fn events_timeout_returns_an_empty_chunk_at_from() {
    let app = spawn_app().await;
    let (_alice, bob, _room) = crate::messaging::joined_pair(&app).await;
    let from = stream_token(&bob).await;
    let started = Instant::now();
    let r = events(&bob, &format!("from={}&timeout=400", enc(&from))).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(380),
        "returned after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "returned after {waited:?}");
    assert_eq!(r["chunk"], json!([]));
    assert_eq!(r["start"], from.as_str());
    assert_eq!(r["end"], from.as_str());
}

#[tokio::test]
async fn events_from_a_token_returns_what_came_since_in_order() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    send_ok(&alice, &room, "before").await;
    let from = stream_token(&bob).await;
    let one = send_ok(&alice, &room, "one").await;
    let two = send_ok(&bob, &room, "two").await;
    let r = events(&bob, &format!("from={}&timeout=0", enc(&from))).await;
    assert_eq!(ids(&r["chunk"]), [one, two]);
    // The token is a /sync token: /sync goes on from it with nothing new.
    let s = bob
        .get(&format!(
            "/sync?since={}&timeout=0",
            enc(&str_of(&r, "end"))
        ))
        .await
        .ok();
    assert!(
        s["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{s}"
    );
}

#[tokio::test]
async fn events_limit_pages_the_stream() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    let from = stream_token(&bob).await;
    let sent = [
        send_ok(&alice, &room, "1").await,
        send_ok(&alice, &room, "2").await,
        send_ok(&alice, &room, "3").await,
    ];
    let first = events(&bob, &format!("from={}&timeout=0&limit=2", enc(&from))).await;
    assert_eq!(ids(&first["chunk"]), sent[..2].to_vec());
    let end = str_of(&first, "end");
    let rest = events(&bob, &format!("from={}&timeout=0&limit=2", enc(&end))).await;
    assert_eq!(ids(&rest["chunk"]), sent[2..].to_vec());
}

#[tokio::test]
async fn events_without_from_start_now() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    send_ok(&alice, &room, "old news").await;
    let r = events(&bob, "timeout=0").await;
    assert_eq!(ids(&r["chunk"]), Vec::<String>::new());
    assert_eq!(r["start"], r["end"]);
}

#[tokio::test]
async fn events_refuse_a_bad_token_or_timeout() {
    let app = spawn_app().await;
    let bob = app.register("bob").await;
    bob.get("/events?from=garbage&timeout=0")
        .await
        .expect_err(400, "M_INVALID_PARAM");
    bob.get("/events?timeout=soon")
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn events_bring_typing_receipts_presence_and_account_data() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    let from = stream_token(&bob).await;
    let sent = send_ok(&alice, &room, "read me").await;
    bob.post(
        &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&sent)),
        json!({}),
    )
    .await
    .ok();
    alice
        .put(
            &format!("/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id)),
            json!({"typing": true, "timeout": 30000}),
        )
        .await
        .ok();
    bob.put(
        &format!("/user/{}/account_data/org.example.x", enc(&bob.user_id)),
        json!({"k": 1}),
    )
    .await
    .ok();
    bob.put(
        &format!("/user/{}/rooms/{}/tags/u.x", enc(&bob.user_id), enc(&room)),
        json!({}),
    )
    .await
    .ok();
    let r = events(&bob, &format!("from={}&timeout=0", enc(&from))).await;
    let chunk = r["chunk"].as_array().unwrap();
    assert!(
        chunk
            .iter()
            .any(|e| e["type"] == "org.example.x" && e["content"]["k"] == 1),
        "{chunk:?}"
    );
    assert!(
        chunk
            .iter()
            .any(|e| e["type"] == "m.tag" && e["room_id"] == room.as_str()),
        "{chunk:?}"
    );
    let of_type = |t: &str| chunk.iter().find(|e| e["type"] == t).cloned();
    let typing = of_type("m.typing").expect("typing");
    assert_eq!(typing["room_id"], room.as_str());
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));
    let receipt = of_type("m.receipt").expect("receipt");
    assert_eq!(receipt["room_id"], room.as_str());
    assert!(
        receipt["content"][&sent]["m.read"][&bob.user_id].is_object(),
        "{receipt}"
    );
    // Synapse's presence format in the stream: the user in the content.
    if let Some(presence) = of_type("m.presence") {
        assert!(presence["content"]["user_id"].is_string(), "{presence}");
    }
}

#[tokio::test]
async fn peeking_events_on_a_world_readable_room() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let eve = app.register("eve").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    set_history_visibility(&alice, &room, "world_readable").await;
    let from = stream_token(&eve).await;
    let poll = {
        let eve = eve.clone();
        let query = format!("from={}&timeout=20000&room_id={}", enc(&from), enc(&room));
        tokio::spawn(async move { events(&eve, &query).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = send_ok(&alice, &room, "for all to see").await;
    let r = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the peek was not woken")
        .unwrap();
    assert_eq!(ids(&r["chunk"]), [sent]);
    assert_eq!(r["chunk"][0]["room_id"], room.as_str());
}

#[tokio::test]
async fn peeking_events_on_a_room_not_world_readable_is_403() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let eve = app.register("eve").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    eve.get(&format!("/events?timeout=0&room_id={}", enc(&room)))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // A member may name their own room.
    alice
        .get(&format!("/events?timeout=0&room_id={}", enc(&room)))
        .await
        .ok();
}

#[tokio::test]
async fn event_by_id_is_served_as_the_room_event_endpoint_serves_it() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    let eve = app.register("eve").await;
    let sent = send_ok(&alice, &room, "hello").await;
    let event = bob.get(&format!("/events/{}", enc(&sent))).await.ok();
    assert_eq!(event["event_id"], sent.as_str());
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["user_id"], alice.user_id.as_str());
    assert_eq!(event["content"]["body"], "hello");
    eve.get(&format!("/events/{}", enc(&sent)))
        .await
        .expect_err(404, "M_NOT_FOUND");
    bob.get(&format!("/events/{}", enc("$nope")))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn initial_sync_lists_rooms_with_messages_state_and_account_data() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    let public = create_room(&bob, json!({"visibility": "public"})).await;
    let invited = create_room(&alice, json!({})).await;
    alice
        .post(
            &format!("/rooms/{}/invite", enc(&invited)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    let sent: Vec<String> = vec![
        send_ok(&alice, &room, "1").await,
        send_ok(&alice, &room, "2").await,
        send_ok(&alice, &room, "3").await,
    ];
    bob.put(
        &format!(
            "/user/{}/rooms/{}/tags/u.work",
            enc(&bob.user_id),
            enc(&room)
        ),
        json!({"order": 0.5}),
    )
    .await
    .ok();
    bob.put(
        &format!(
            "/user/{}/account_data/org.example.config",
            enc(&bob.user_id)
        ),
        json!({"k": "v"}),
    )
    .await
    .ok();
    bob.post(
        &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&sent[2])),
        json!({}),
    )
    .await
    .ok();

    let s = bob.get("/initialSync?limit=2").await.ok();
    let joined = room_info(&s, &room).expect("joined room");
    assert_eq!(joined["membership"], "join");
    assert_eq!(joined["visibility"], "private");
    assert_eq!(ids(&joined["messages"]["chunk"]), sent[1..].to_vec());
    assert_eq!(joined["messages"]["chunk"][0]["room_id"], room.as_str());
    assert!(joined["messages"]["start"].is_string() && joined["messages"]["end"].is_string());
    let state = joined["state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
    );
    assert!(
        joined["account_data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["u.work"].is_object())
    );
    assert_eq!(room_info(&s, &public).unwrap()["visibility"], "public");
    let invite = room_info(&s, &invited).expect("invited room");
    assert_eq!(invite["membership"], "invite");
    assert_eq!(invite["inviter"], alice.user_id.as_str());
    assert_eq!(invite["invite"]["content"]["membership"], "invite");
    assert!(
        s["account_data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example.config")
    );
    assert!(s["presence"].is_array());
    let receipts = s["receipts"].as_array().unwrap();
    assert!(
        receipts.iter().any(|r| r["room_id"] == room.as_str()
            && r["content"][&sent[2]]["m.read"][&bob.user_id].is_object()),
        "{receipts:?}"
    );
    // `end` is a stream token for /events.
    let later = send_ok(&alice, &room, "later").await;
    let r = events(&bob, &format!("from={}&timeout=0", enc(&str_of(&s, "end")))).await;
    assert_eq!(ids(&r["chunk"]), [later]);
    // The messages' `start` pages back with /messages.
    let page = bob
        .get(&format!(
            "/rooms/{}/messages?dir=b&limit=1&from={}",
            enc(&room),
            enc(joined["messages"]["start"].as_str().unwrap())
        ))
        .await
        .ok();
    assert_eq!(ids(&page["chunk"]), sent[..1].to_vec());
}

#[tokio::test]
async fn initial_sync_archived_includes_left_rooms_up_to_the_leave() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    let seen = send_ok(&alice, &room, "seen").await;
    leave(&bob, &room).await;
    send_ok(&alice, &room, "after the leave").await;
    let s = bob.get("/initialSync").await.ok();
    assert!(room_info(&s, &room).is_none(), "{s}");
    let s = bob.get("/initialSync?archived=true").await.ok();
    let left = room_info(&s, &room).expect("left room");
    assert_eq!(left["membership"], "leave");
    let chunk = left["messages"]["chunk"].as_array().unwrap();
    let last = chunk.last().unwrap();
    assert_eq!(last["type"], "m.room.member");
    assert_eq!(last["state_key"], bob.user_id.as_str());
    assert!(ids(&left["messages"]["chunk"]).contains(&seen));
    assert!(
        chunk
            .iter()
            .all(|e| e["content"]["body"] != "after the leave")
    );
    bob.get("/initialSync?archived=maybe")
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn room_initial_sync_of_a_joined_room() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    let sent = send_ok(&alice, &room, "hi").await;
    let r = bob
        .get(&format!("/rooms/{}/initialSync?limit=1", enc(&room)))
        .await
        .ok();
    assert_eq!(r["room_id"], room.as_str());
    assert_eq!(r["membership"], "join");
    assert_eq!(ids(&r["messages"]["chunk"]), [sent]);
    assert!(
        r["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.join_rules")
    );
    assert_eq!(r["visibility"], "private");
    assert!(r["messages"]["start"].is_string() && r["messages"]["end"].is_string());
}

#[tokio::test]
async fn room_initial_sync_refuses_what_is_not_a_room_id() {
    let app = spawn_app().await;
    let bob = app.register("bob").await;
    bob.get(&format!("/rooms/{}/initialSync", enc("#alias:example.org")))
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn room_initial_sync_of_a_left_room_stops_at_the_leave() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    let seen = send_ok(&alice, &room, "seen").await;
    leave(&bob, &room).await;
    send_ok(&alice, &room, "after the leave").await;
    alice
        .put(
            &format!("/rooms/{}/state/m.room.topic", enc(&room)),
            json!({"topic": "changed after"}),
        )
        .await
        .ok();
    let r = bob
        .get(&format!("/rooms/{}/initialSync", enc(&room)))
        .await
        .ok();
    assert_eq!(r["membership"], "leave");
    let chunk = r["messages"]["chunk"].as_array().unwrap();
    assert_eq!(chunk.last().unwrap()["state_key"], bob.user_id.as_str());
    assert!(ids(&r["messages"]["chunk"]).contains(&seen));
    assert!(
        chunk
            .iter()
            .all(|e| e["content"]["body"] != "after the leave")
    );
    let state = r["state"].as_array().unwrap();
    assert!(
        state.iter().all(|e| e["type"] != "m.room.topic"),
        "state after the leave: {state:?}"
    );
    let own = state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap();
    assert_eq!(own["content"]["membership"], "leave");
}

#[tokio::test]
async fn room_initial_sync_peeks_into_world_readable_rooms_only() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let eve = app.register("eve").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    send_ok(&alice, &room, "shared with members only").await;
    eve.get(&format!("/rooms/{}/initialSync", enc(&room)))
        .await
        .expect_err(403, "M_FORBIDDEN");
    set_history_visibility(&alice, &room, "world_readable").await;
    let sent = send_ok(&alice, &room, "hello").await;
    let r = eve
        .get(&format!("/rooms/{}/initialSync", enc(&room)))
        .await
        .ok();
    assert!(r.get("membership").is_none(), "{r}");
    let chunk = r["messages"]["chunk"].as_array().unwrap();
    assert!(ids(&r["messages"]["chunk"]).contains(&sent));
    // What was sent while the room was not world-readable stays hidden (Synapse's peeking rule).
    assert!(
        chunk
            .iter()
            .all(|e| e["content"]["body"] != "shared with members only")
    );
    assert!(!r["state"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn legacy_endpoints_hide_history_before_a_joined_only_join() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    set_history_visibility(&alice, &room, "joined").await;
    let from = stream_token(&bob).await;
    let before = send_ok(&alice, &room, "before").await;
    join(&bob, &room).await;
    let after = send_ok(&alice, &room, "after").await;
    let s = bob.get("/initialSync").await.ok();
    let seen = ids(&room_info(&s, &room).unwrap()["messages"]["chunk"]);
    assert!(seen.contains(&after) && !seen.contains(&before), "{seen:?}");
    let r = bob
        .get(&format!("/rooms/{}/initialSync", enc(&room)))
        .await
        .ok();
    let seen = ids(&r["messages"]["chunk"]);
    assert!(seen.contains(&after) && !seen.contains(&before), "{seen:?}");
    let r = events(&bob, &format!("from={}&timeout=0&limit=50", enc(&from))).await;
    let seen = ids(&r["chunk"]);
    assert!(seen.contains(&after) && !seen.contains(&before), "{seen:?}");
    bob.get(&format!("/events/{}", enc(&before)))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn events_leave_out_ignored_users() {
    let app = spawn_app().await;
    let (alice, bob, room) = crate::messaging::joined_pair(&app).await;
    let carol = app.register("carol").await;
    join(&carol, &room).await;
    bob.put(
        &format!(
            "/user/{}/account_data/m.ignored_user_list",
            enc(&bob.user_id)
        ),
        json!({"ignored_users": {carol.user_id.clone(): {}}}),
    )
    .await
    .ok();
    let from = stream_token(&bob).await;
    send_ok(&carol, &room, "noise").await;
    let wanted = send_ok(&alice, &room, "signal").await;
    let r = events(&bob, &format!("from={}&timeout=0", enc(&from))).await;
    assert_eq!(ids(&r["chunk"]), [wanted]);
}

#[tokio::test]
async fn post_send_without_txn_creates_a_new_event_each_time() {
    let app = spawn_app().await;
    let (alice, _bob, room) = crate::messaging::joined_pair(&app).await;
    let path = format!("/rooms/{}/send/m.room.message", enc(&room));
    let body = json!({"msgtype": "m.text", "body": "again"});
    let first = alice.post(&path, body.clone()).await.ok();
    let second = alice.post(&path, body).await.ok();
    let (first, second) = (str_of(&first, "event_id"), str_of(&second, "event_id"));
    assert_ne!(first, second);
    for id in [&first, &second] {
        let event = alice
            .get(&format!("/rooms/{}/event/{}", enc(&room), enc(id)))
            .await
            .ok();
        assert_eq!(event["content"]["body"], "again");
        assert!(event["unsigned"].get("transaction_id").is_none(), "{event}");
    }
}

#[tokio::test]
async fn post_send_without_txn_validates_as_put_does() {
    let app = spawn_app().await;
    let (alice, _bob, room) = crate::messaging::joined_pair(&app).await;
    let path = format!("/rooms/{}/send/m.room.message", enc(&room));
    alice
        .post(&path, json!({"msgtype": "m.text"}))
        .await
        .expect_err(400, "M_BAD_JSON");
    alice
        .post(&path, json!({"msgtype": "m.text", "body": 5}))
        .await
        .expect_err(400, "M_BAD_JSON");
}

#[tokio::test]
async fn legacy_endpoints_serve_erased_messages_redacted_to_later_joiners_only() {
    let app = spawn_app().await;
    let (bob, carol, room, sent) = erased_history(&app, true).await;
    let room_messages = |user: &User| {
        let path = format!("/rooms/{}/initialSync?limit=50", enc(&room));
        let user = user.clone();
        async move { user.get(&path).await.ok()["messages"]["chunk"].clone() }
    };
    assert_redacted(&pick(&room_messages(&carol).await, &sent));
    assert_intact(&pick(&room_messages(&bob).await, &sent));
    let all = carol.get("/initialSync?limit=50").await.ok();
    assert_redacted(&pick(
        &room_info(&all, &room).unwrap()["messages"]["chunk"],
        &sent,
    ));
    let one = |user: &User| {
        let path = format!("/events/{}", enc(&sent[0]));
        let user = user.clone();
        async move { user.get(&path).await.ok() }
    };
    assert_redacted(&[&one(&carol).await]);
    assert_intact(&[&one(&bob).await]);
}

//! /sync: initial and incremental, limited timelines and gapless prev_batch, invites, leaves,
//! summaries, filters, lazy loading, long polling, races and several processes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::ephemeral::start_typing;
use crate::messaging::send_ok;
use crate::rooms::{create_room, join};

pub(crate) async fn sync(user: &User, query: &str) -> Value {
    user.get(&format!("/sync?{query}")).await.ok()
}

pub(crate) fn next_batch(s: &Value) -> String {
    s["next_batch"].as_str().unwrap().to_owned()
}

/// Stores `filter` for `user` and returns its ID.
pub(crate) async fn upload_filter(user: &User, filter: Value) -> String {
    let path = format!("/user/{}/filter", enc(&user.user_id));
    user.post(&path, filter).await.ok()["filter_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The `next_batch` of a sync: where the next one starts.
pub(crate) async fn sync_token(user: &User, query: &str) -> String {
    next_batch(&sync(user, query).await)
}

pub(crate) fn timeline<'a>(s: &'a Value, room: &str) -> &'a Value {
    &s["rooms"]["join"][room]["timeline"]
}

/// The last timeline event of `room` in the response's `rooms.leave` (the leave, kick or ban).
#[track_caller]
pub(crate) fn last_left_event(s: &Value, room: &str) -> Value {
    s["rooms"]["leave"][room]["timeline"]["events"]
        .as_array()
        .and_then(|events| events.last().cloned())
        .unwrap_or_else(|| panic!("{room} is not in rooms.leave: {s}"))
}

pub(crate) fn event_ids(events: &Value) -> Vec<String> {
    events.as_array().map_or(vec![], |a| {
        a.iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    })
}

pub(crate) fn bodies(events: &Value) -> Vec<String> {
    events.as_array().map_or(vec![], |a| {
        a.iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    })
}

#[tokio::test]
async fn initial_sync_has_state_and_timeline_and_a_token() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"name": "Room"})).await;
    send_ok(&alice, &room, "hello").await;
    let s = sync(&alice, "").await;
    assert!(s["next_batch"].is_string());
    let joined = &s["rooms"]["join"][&room];
    assert_eq!(
        bodies(&joined["timeline"]["events"]).last().unwrap(),
        "hello"
    );
    let all: Vec<&Value> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(joined["timeline"]["events"].as_array().unwrap())
        .collect();
    assert!(all.iter().any(|e| e["type"] == "m.room.create"));
    assert!(all.iter().any(|e| e["type"] == "m.room.name"));
    // Present and empty until their features land.
    for key in ["account_data", "presence", "to_device"] {
        assert!(s[key]["events"].is_array(), "{key}");
    }
    assert!(s["device_lists"]["changed"].is_array());
    assert!(s["device_one_time_keys_count"].is_object());
}

#[tokio::test]
async fn incremental_sync_returns_only_new_events() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    send_ok(&alice, &room, "old").await;
    let s1 = sync(&alice, "").await;
    let since = s1["next_batch"].as_str().unwrap();
    send_ok(&alice, &room, "new").await;
    let s2 = sync(&alice, &format!("since={since}")).await;
    assert_eq!(bodies(&timeline(&s2, &room)["events"]), vec!["new"]);
    assert_eq!(timeline(&s2, &room)["limited"], false);
    // Nothing new: the room is absent.
    let s3 = sync(
        &alice,
        &format!("since={}", s2["next_batch"].as_str().unwrap()),
    )
    .await;
    assert!(s3["rooms"]["join"].get(&room).is_none(), "{s3}");
}

#[tokio::test]
async fn limited_timeline_prev_batch_continues_without_gap_or_overlap() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let s1 = sync(&alice, "").await;
    let since = next_batch(&s1);
    let mut sent = Vec::new();
    for i in 0..15 {
        sent.push(send_ok(&alice, &room, &format!("m{i}")).await);
    }
    let filter = enc(&json!({"room": {"timeline": {"limit": 5}}}).to_string());
    let s2 = sync(&alice, &format!("since={since}&filter={filter}")).await;
    let tl = timeline(&s2, &room);
    assert_eq!(tl["limited"], true);
    assert_eq!(event_ids(&tl["events"]), sent[10..].to_vec());
    let prev = tl["prev_batch"].as_str().unwrap();
    let page = alice
        .get(&format!(
            "/rooms/{}/messages?dir=b&limit=5&from={prev}",
            enc(&room)
        ))
        .await
        .ok();
    let mut back = event_ids(&page["chunk"]);
    back.reverse();
    assert_eq!(back, sent[5..10].to_vec());

    // The same from an initial sync, and paging on from /messages' own `end` to the room's start.
    let s3 = sync(&alice, &format!("filter={filter}")).await;
    let tl = timeline(&s3, &room);
    assert_eq!(tl["limited"], true);
    assert_eq!(event_ids(&tl["events"]), sent[10..].to_vec());
    let mut from = tl["prev_batch"].as_str().unwrap().to_owned();
    let mut earlier: Vec<String> = Vec::new();
    loop {
        let page = alice
            .get(&format!(
                "/rooms/{}/messages?dir=b&limit=4&from={from}",
                enc(&room)
            ))
            .await
            .ok();
        earlier.extend(event_ids(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    earlier.reverse();
    // Before the messages: the room's creation events, each once.
    let created = earlier.len() - 10;
    assert_eq!(earlier[created..], sent[..10]);
    let unique: HashSet<&String> = earlier.iter().collect();
    assert_eq!(unique.len(), earlier.len(), "no event twice");
}

#[tokio::test]
async fn invites_leaves_kicks_and_bans_appear_in_the_right_section() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"name": "Secret"})).await;
    let since = sync_token(&bob, "").await;
    alice
        .post(
            &format!("/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    let s = sync(&bob, &format!("since={since}")).await;
    let invite_state = &s["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        invite_state
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Secret")
    );
    assert!(
        invite_state
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.get("event_id").is_none()),
        "stripped state"
    );
    let since = next_batch(&s);
    bob.post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await
        .ok();
    let s = sync(&bob, &format!("since={since}")).await;
    assert!(
        s["rooms"]["join"].get(&room).is_some(),
        "a new join is a full room"
    );
    let since = next_batch(&s);
    let last = send_ok(&alice, &room, "last words").await;
    alice
        .post(
            &format!("/rooms/{}/kick", enc(&room)),
            json!({"user_id": bob.user_id, "reason": "bye"}),
        )
        .await
        .ok();
    send_ok(&alice, &room, "after the kick").await;
    let s = sync(&bob, &format!("since={since}")).await;
    let left = &s["rooms"]["leave"][&room];
    let tl = event_ids(&left["timeline"]["events"]);
    assert!(tl.contains(&last));
    let final_event = last_left_event(&s, &room);
    assert_eq!(final_event["content"]["membership"], "leave");
    assert_eq!(final_event["content"]["reason"], "bye");
    assert!(!bodies(&left["timeline"]["events"]).contains(&"after the kick".to_owned()));
    assert!(s["rooms"]["join"].get(&room).is_none());
    // A ban shows up the same way.
    bob.post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    let since = next_batch(&s);
    alice
        .post(
            &format!("/rooms/{}/ban", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    let s = sync(&bob, &format!("since={since}")).await;
    let last = last_left_event(&s, &room);
    assert_eq!(last["content"]["membership"], "ban");
}

#[tokio::test]
async fn summary_counts_members_and_names_heroes() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id, carol.user_id]})).await;
    bob.post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await
        .ok();
    let s = sync(&alice, "").await;
    let summary = &s["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.joined_member_count"], 2);
    assert_eq!(summary["m.invited_member_count"], 1);
    let heroes: Vec<&str> = summary["m.heroes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(heroes, vec![bob.user_id.as_str(), carol.user_id.as_str()]);
    // A named room needs no heroes.
    let named = create_room(&alice, json!({"name": "Named"})).await;
    let s = sync(&alice, "").await;
    assert!(
        s["rooms"]["join"][&named]["summary"]
            .get("m.heroes")
            .is_none()
    );
}

#[tokio::test]
async fn filters_select_rooms_types_and_fields() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room_a = create_room(&alice, json!({})).await;
    let room_b = create_room(&alice, json!({})).await;
    send_ok(&alice, &room_a, "a").await;
    alice
        .put(
            &format!("/rooms/{}/send/org.example.x/1", enc(&room_a)),
            json!({"k": 1}),
        )
        .await
        .ok();
    // rooms / not_rooms
    let f = enc(&json!({"room": {"rooms": [room_a]}}).to_string());
    let s = sync(&alice, &format!("filter={f}")).await;
    assert!(s["rooms"]["join"].get(&room_b).is_none());
    assert!(s["rooms"]["join"].get(&room_a).is_some());
    let f = enc(&json!({"room": {"not_rooms": [room_a]}}).to_string());
    let s = sync(&alice, &format!("filter={f}")).await;
    assert!(s["rooms"]["join"].get(&room_a).is_none());
    assert!(s["rooms"]["join"].get(&room_b).is_some());
    // timeline types, state types
    let f = enc(&json!({"room": {"timeline": {"types": ["org.example.x"]}, "state": {"types": ["m.room.create"]}}}).to_string());
    let s = sync(&alice, &format!("filter={f}")).await;
    let joined = &s["rooms"]["join"][&room_a];
    let types = |events: &Value| -> Vec<String> {
        events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(types(&joined["timeline"]["events"]), vec!["org.example.x"]);
    assert_eq!(types(&joined["state"]["events"]), vec!["m.room.create"]);
    // event_fields
    let f = enc(&json!({"event_fields": ["type", "content.body"], "room": {"rooms": [room_a], "timeline": {"types": ["m.room.message"]}}}).to_string());
    let s = sync(&alice, &format!("filter={f}")).await;
    let e = &s["rooms"]["join"][&room_a]["timeline"]["events"][0];
    assert_eq!(
        e,
        &json!({"type": "m.room.message", "content": {"body": "a"}})
    );
    // A stored filter by ID.
    let id = upload_filter(&alice, json!({"room": {"rooms": [room_b]}})).await;
    let stored = alice
        .get(&format!("/user/{}/filter/{id}", enc(&alice.user_id)))
        .await
        .ok();
    assert_eq!(stored["room"]["rooms"], json!([room_b]));
    let s = sync(&alice, &format!("filter={id}")).await;
    assert!(s["rooms"]["join"].get(&room_a).is_none());
    assert!(s["rooms"]["join"].get(&room_b).is_some());
    alice
        .get("/sync?filter=999999")
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .get("/sync?filter=%7Bbroken")
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

/// Stored filters are parsed once and shared, but a filter ID stays its owner's: another user
/// naming it gets 404, before and after the owner's syncs used it.
#[tokio::test]
async fn a_stored_filter_id_is_only_its_owners() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let id = upload_filter(&alice, json!({"room": {"timeline": {"limit": 1}}})).await;
    let path = format!("/sync?filter={id}");
    bob.get(&path).await.expect_err(404, "M_NOT_FOUND");
    for _ in 0..2 {
        alice.get(&path).await.ok();
    }
    bob.get(&path).await.expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn include_leave_shows_rooms_left_before_the_initial_sync() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    alice
        .post(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await
        .ok();
    let s = sync(&alice, "").await;
    assert!(s["rooms"]["leave"].get(&room).is_none());
    let f = enc(&json!({"room": {"include_leave": true}}).to_string());
    let s = sync(&alice, &format!("filter={f}")).await;
    assert!(s["rooms"]["leave"].get(&room).is_some());
}

#[tokio::test]
async fn lazy_loading_sends_only_needed_members() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let mut others = Vec::new();
    for i in 0..4 {
        let u = app.register(&format!("member{i}")).await;
        join(&u, &room).await;
        others.push(u);
    }
    for i in 0..12 {
        send_ok(&alice, &room, &format!("filler {i}")).await;
    }
    send_ok(&others[0], &room, "from member0").await;
    let f = enc(
        &json!({"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": true}}})
            .to_string(),
    );
    let s = sync(&others[3], &format!("filter={f}")).await;
    let members: HashSet<String> = s["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    let expected: HashSet<String> = [&alice.user_id, &others[0].user_id, &others[3].user_id]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(members, expected);
    let since = next_batch(&s);
    // Already sent members are not repeated...
    send_ok(&alice, &room, "again").await;
    let s = sync(&others[3], &format!("filter={f}&since={since}")).await;
    let repeated: Vec<&Value> = s["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .collect();
    assert!(repeated.is_empty(), "{repeated:?}");
    // ...unless redundant members are asked for.
    let since = next_batch(&s);
    send_ok(&alice, &room, "once more").await;
    let f2 = enc(&json!({"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": true, "include_redundant_members": true}}}).to_string());
    let s = sync(&others[3], &format!("filter={f2}&since={since}")).await;
    assert!(
        s["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["state_key"] == alice.user_id.as_str())
    );
    // Without lazy loading, every member is there.
    let s = sync(&others[3], "").await;
    let all: Vec<&Value> = s["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .collect();
    assert_eq!(all.len(), 5);
}

#[tokio::test]
async fn long_poll_times_out_empty_and_wakes_on_events() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let since = sync_token(&bob, "").await;
    let t = Instant::now();
    let s = sync(&bob, &format!("since={since}&timeout=500")).await;
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "returned early: {s}"
    );
    assert!(s["rooms"]["join"].as_object().unwrap().is_empty());
    // A message wakes the waiting sync well before its timeout.
    let waiter = {
        let bob = bob.clone();
        let since = since.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let s = sync(&bob, &format!("since={since}&timeout=10000")).await;
            (t.elapsed(), s)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_ok(&alice, &room, "wake up").await;
    let (elapsed, s) = waiter.await.unwrap();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(bodies(&timeline(&s, &room)["events"]), vec!["wake up"]);
    // An invite to a new room wakes too.
    let since = next_batch(&s);
    let waiter = {
        let bob = bob.clone();
        tokio::spawn(async move { sync(&bob, &format!("since={since}&timeout=10000")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let room2 = create_room(&alice, json!({"invite": [bob.user_id]})).await;
    let s = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();
    assert!(s["rooms"]["invite"].get(&room2).is_some());
}

#[tokio::test]
async fn bad_since_tokens_are_refused_cleanly() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .get("/sync?since=garbage")
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .get("/sync?timeout=soon")
        .await
        .expect_err(400, "M_INVALID_PARAM");
    // A token from the future gets a full resync, not an error.
    let room = create_room(&alice, json!({})).await;
    let s = sync(&alice, "since=s999999999_0").await;
    assert!(s["rooms"]["join"].get(&room).is_some());
}

#[tokio::test]
async fn incremental_syncs_see_every_event_exactly_once_under_concurrent_writes() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room_a = create_room(&alice, json!({"preset": "public_chat"})).await;
    let room_b = create_room(&alice, json!({"preset": "public_chat"})).await;
    let mut senders = Vec::new();
    for i in 0..4 {
        let u = app.register(&format!("sender{i}")).await;
        join(&u, &room_a).await;
        join(&u, &room_b).await;
        senders.push(u);
    }
    let mut since = sync_token(&alice, "").await;
    let mut tasks = Vec::new();
    for (n, u) in senders.iter().enumerate() {
        let (u, a, b) = (u.clone(), room_a.clone(), room_b.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                let room = if i % 2 == 0 { &a } else { &b };
                ids.push(send_ok(&u, room, &format!("{n}:{i}")).await);
            }
            ids
        }));
    }
    let f = enc(&json!({"room": {"timeline": {"limit": 1000}}}).to_string());
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = false;
    while Instant::now() < deadline {
        let s = sync(&alice, &format!("since={since}&timeout=200&filter={f}")).await;
        for room in [&room_a, &room_b] {
            assert_ne!(timeline(&s, room)["limited"], true);
            seen.extend(event_ids(&timeline(&s, room)["events"]));
        }
        since = next_batch(&s);
        if done {
            break;
        }
        done = tasks.iter().all(|t| t.is_finished());
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was delivered twice");
    for id in &sent {
        assert!(unique.contains(id), "event {id} was skipped");
    }
}

#[tokio::test]
async fn two_instances_behave_as_one_server() {
    let app_a = spawn_app().await;
    let app_b = spawn_peer(&app_a).await;
    let alice = app_a.register("alice").await;
    let bob_on_b = app_b.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob_on_b, &room).await;
    // Alice's sync on A sees Bob's join, made through B.
    let s = sync(&alice, "").await;
    assert!(
        s["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["state_key"] == bob_on_b.user_id.as_str())
    );
    // A sync waiting on B is woken by a send through A, within moments.
    let since = sync_token(&bob_on_b, "").await;
    let waiter = {
        let bob = bob_on_b.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let s = sync(&bob, &format!("since={since}&timeout=10000")).await;
            (t.elapsed(), s)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_ok(&alice, &room, "across processes").await;
    let (elapsed, s) = waiter.await.unwrap();
    assert!(elapsed < Duration::from_secs(3), "woken after {elapsed:?}");
    assert_eq!(
        bodies(&timeline(&s, &room)["events"]),
        vec!["across processes"]
    );
    // Both processes write to the same room alternately; state caches stay correct.
    let alice_on_b = app_b.as_user(&alice);
    alice_on_b
        .put(
            &format!("/rooms/{}/state/m.room.name", enc(&room)),
            json!({"name": "via B"}),
        )
        .await
        .ok();
    let name = alice
        .get(&format!("/rooms/{}/state/m.room.name", enc(&room)))
        .await
        .ok();
    assert_eq!(name["name"], "via B");
    for i in 0..10 {
        let user = if i % 2 == 0 { &alice } else { &bob_on_b };
        send_ok(user, &room, &format!("alt {i}")).await;
    }
    // Power levels changed on B are enforced on A (no stale cache).
    alice_on_b
        .put(
            &format!("/rooms/{}/state/m.room.power_levels", enc(&room)),
            json!({"users": {}, "events_default": 50, "state_default": 50}),
        )
        .await
        .ok();
    let bob_on_a = app_a.as_user(&bob_on_b);
    crate::messaging::send(
        &bob_on_a,
        &room,
        json!({"msgtype": "m.text", "body": "muted"}),
        "muted",
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    // A token from one process works on the other.
    let s_a = sync(&alice, "").await;
    let since = s_a["next_batch"].as_str().unwrap();
    send_ok(&alice, &room, "after token").await;
    let s_b = sync(&alice_on_b, &format!("since={since}")).await;
    assert_eq!(
        bodies(&timeline(&s_b, &room)["events"]),
        vec!["after token"]
    );
}

#[tokio::test]
async fn a_room_joined_through_another_process_is_listened_to_there() {
    let app_a = spawn_app().await;
    let app_b = spawn_peer(&app_a).await;
    let alice = app_a.register("alice").await;
    let bob_on_b = app_b.register("bob").await;
    let bob_on_a = app_a.as_user(&bob_on_b);
    let first = create_room(&alice, json!({"preset": "public_chat"})).await;
    let second = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob_on_b, &first).await;
    let since = sync_token(&bob_on_b, "").await;
    // B learns Bob's rooms while he waits there; the join through A must make it learn again.
    let waiter = long_poll(&bob_on_b, &since, "");
    tokio::time::sleep(Duration::from_millis(300)).await;
    join(&bob_on_a, &second).await;
    let s = waiter.await.unwrap();
    assert!(s["rooms"]["join"].get(&second).is_some(), "{s}");
    let since = next_batch(&s);
    let waiter = long_poll(&bob_on_b, &since, "");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    send_ok(&alice, &second, "in the new room").await;
    let s = waiter.await.unwrap();
    let elapsed = sent.elapsed();
    assert!(elapsed < Duration::from_secs(3), "woken after {elapsed:?}");
    assert_eq!(
        bodies(&timeline(&s, &second)["events"]),
        vec!["in the new room"]
    );
}

#[tokio::test]
async fn a_long_poll_behind_a_change_outside_the_timeline_answers_at_once() {
    let app_a = spawn_app().await;
    let app_b = spawn_peer(&app_a).await;
    let alice = app_a.register("alice").await;
    let alice_on_b = app_b.as_user(&alice);
    let since = sync_token(&alice, "").await;
    let data_path = format!("/user/{}/account_data/org.example.k", enc(&alice.user_id));
    alice.put(&data_path, json!({"n": 1})).await.ok();
    // Account data is no event the process keeps in memory: a long poll from before it, here or
    // on another process once that has heard of it, must see the news rather than wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for user in [&alice, &alice_on_b] {
        let asked = Instant::now();
        let s = long_poll(user, &since, "").await.unwrap();
        let elapsed = asked.elapsed();
        assert!(
            elapsed < Duration::from_secs(3),
            "answered after {elapsed:?}"
        );
        let types: Vec<&str> = s["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["type"].as_str())
            .collect();
        assert!(types.contains(&"org.example.k"), "{s}");
    }
}

#[tokio::test]
async fn m_direct_round_trips_through_sync_for_both_users() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(
        &alice,
        json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id]}),
    )
    .await;
    // Both clients write m.direct themselves; the server stores exactly what they send.
    let alice_map = json!({bob.user_id.clone(): [room.clone()]});
    let bob_map = json!({alice.user_id.clone(): [room.clone()]});
    let since_a = sync_token(&alice, "").await;
    let invite = sync(&bob, "").await;
    let since_b = next_batch(&invite);
    assert!(invite["rooms"]["invite"].get(&room).is_some());
    bob.post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await
        .ok();
    alice
        .put(
            &format!("/user/{}/account_data/m.direct", enc(&alice.user_id)),
            alice_map.clone(),
        )
        .await
        .ok();
    bob.put(
        &format!("/user/{}/account_data/m.direct", enc(&bob.user_id)),
        bob_map.clone(),
    )
    .await
    .ok();
    for (user, since, expected) in [(&alice, since_a, alice_map), (&bob, since_b, bob_map)] {
        let s = sync(user, &format!("since={since}")).await;
        let direct: Vec<&Value> = s["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.direct")
            .collect();
        assert_eq!(direct.len(), 1, "exactly once");
        assert_eq!(direct[0]["content"], expected);
        // Not repeated by the next sync.
        let again = sync(
            user,
            &format!("since={}", s["next_batch"].as_str().unwrap()),
        )
        .await;
        assert!(
            again["account_data"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["type"] != "m.direct")
        );
    }
}

#[tokio::test]
async fn receipts_typing_and_room_account_data_arrive_through_sync() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let event = send_ok(&alice, &room, "read me").await;
    let since = sync_token(&alice, "").await;
    bob.post(
        &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event)),
        json!({}),
    )
    .await
    .ok();
    start_typing(&bob, &room, 30000).await;
    let s = sync(&alice, &format!("since={since}")).await;
    let ephemeral = s["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let receipt = ephemeral
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("receipt");
    assert!(
        receipt["content"][&event]["m.read"]
            .get(&bob.user_id)
            .is_some(),
        "{receipt}"
    );
    let typing = ephemeral
        .iter()
        .find(|e| e["type"] == "m.typing")
        .expect("typing");
    assert_eq!(typing["content"]["user_ids"], json!([bob.user_id]));
    // A private receipt reaches only its author.
    let since = next_batch(&s);
    let since_b = sync_token(&bob, "").await;
    let later = send_ok(&alice, &room, "private").await;
    bob.post(
        &format!(
            "/rooms/{}/receipt/m.read.private/{}",
            enc(&room),
            enc(&later)
        ),
        json!({}),
    )
    .await
    .ok();
    let s = sync(&alice, &format!("since={since}")).await;
    let leaked = s["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["content"].to_string().contains("m.read.private"));
    assert!(!leaked, "{s}");
    let s = sync(&bob, &format!("since={since_b}")).await;
    assert!(
        s["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"].to_string().contains("m.read.private"))
    );
    // Room account data (tags) lands in the room.
    let since = next_batch(&s);
    bob.put(
        &format!(
            "/user/{}/rooms/{}/tags/m.favourite",
            enc(&bob.user_id),
            enc(&room)
        ),
        json!({"order": 0.5}),
    )
    .await
    .ok();
    let s = sync(&bob, &format!("since={since}")).await;
    let data = s["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap();
    assert!(
        data.iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["m.favourite"]["order"] == 0.5),
        "{s}"
    );
}

#[tokio::test]
async fn unread_counts_follow_messages_mentions_and_receipts() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    send_ok(&alice, &room, "one").await;
    crate::messaging::send(
        &alice,
        &room,
        json!({"msgtype": "m.notice", "body": "bot"}),
        "notice",
    )
    .await
    .ok();
    let mention =
        json!({"msgtype": "m.text", "body": "hey bob", "m.mentions": {"user_ids": [bob.user_id]}});
    let last = crate::messaging::send(&alice, &room, mention, "mention")
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = sync(&bob, "").await;
    let unread = &s["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(
        unread["notification_count"], 2,
        "notices do not count: {unread}"
    );
    assert_eq!(unread["highlight_count"], 1);
    let since = next_batch(&s);
    bob.post(
        &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&last)),
        json!({}),
    )
    .await
    .ok();
    let s = sync(&bob, &format!("since={since}")).await;
    let unread = &s["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(unread["notification_count"], 0, "{s}");
    assert_eq!(unread["highlight_count"], 0);
}

#[tokio::test]
async fn typing_comes_with_new_messages_and_typing_elsewhere_does_not() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let elsewhere = create_room(&carol, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let since = sync_token(&bob, "").await;
    // Typing in a room Bob is not in, then a message: the message alone.
    start_typing(&carol, &elsewhere, 20000).await;
    send_ok(&alice, &room, "first").await;
    let s = sync(&bob, &format!("since={since}")).await;
    assert_eq!(bodies(&timeline(&s, &room)["events"]), vec!["first"]);
    assert_eq!(s["rooms"]["join"][&room]["ephemeral"]["events"], json!([]));
    // Typing in his room, then a message: both in one response.
    let since = next_batch(&s);
    start_typing(&alice, &room, 20000).await;
    send_ok(&alice, &room, "second").await;
    let s = sync(&bob, &format!("since={since}")).await;
    assert_eq!(bodies(&timeline(&s, &room)["events"]), vec!["second"]);
    let ephemeral = &s["rooms"]["join"][&room]["ephemeral"]["events"];
    assert_eq!(ephemeral[0]["type"], "m.typing", "{s}");
    assert_eq!(
        ephemeral[0]["content"]["user_ids"],
        json!([alice.user_id.clone()])
    );
}

// ---- Syncs answered from memory (a long poll woken by new messages) ----

/// Starts a long poll of `user` from `since`; the caller then makes the change that should wake it.
pub(crate) fn long_poll(user: &User, since: &str, query: &str) -> tokio::task::JoinHandle<Value> {
    let user = user.clone();
    let query = format!("since={since}&timeout=10000&{query}");
    tokio::spawn(async move { sync(&user, &query).await })
}

/// A long poll of `user` from `since`, woken by `sender`'s message `body` in `room`.
async fn woken_by_message(
    user: &User,
    since: &str,
    query: &str,
    sender: &User,
    room: &str,
    body: &str,
) -> Value {
    let waiting = long_poll(user, since, query);
    tokio::time::sleep(Duration::from_millis(150)).await;
    send_ok(sender, room, body).await;
    waiting.await.unwrap()
}

/// A sync response without what depends on the moment and the process that made it: `age`, and
/// the typing clock in `next_batch` (each process keeps its own).
fn comparable(mut s: Value) -> Value {
    if let Some(token) = s["next_batch"].as_str() {
        s["next_batch"] = json!(token.split('_').next().unwrap());
    }
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(unsigned)) = map.get_mut("unsigned") {
                    unsigned.remove("age");
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut s);
    s
}

#[tokio::test]
async fn a_woken_sync_answers_exactly_as_the_database_would() {
    // Process A wrote the messages and answers from memory; process B, sharing the database, has
    // nothing in memory and reads everything. Both must say the same.
    let app_a = spawn_app().await;
    let app_b = spawn_peer(&app_a).await;
    let alice = app_a.register("alice").await;
    let bob = app_a.register("bob").await;
    let carol = app_a.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    for user in [&bob, &carol] {
        join(user, &room).await;
    }
    // Redundant members: which members a device already has is remembered per process.
    let filter = enc(&json!({"presence": {"types": []},
                "room": {"state": {"lazy_load_members": true, "include_redundant_members": true},
                         "timeline": {"limit": 5}}})
    .to_string());
    let query = format!("filter={filter}");
    let mut since_bob = sync_token(&bob, &query).await;
    let mut since_alice = sync_token(&alice, &query).await;
    // Local echo for the sender's device, unread counts that grow, the senders' member events.
    for (sender, body) in [(&alice, "one"), (&alice, "two"), (&carol, "three")] {
        let bob_waiting = long_poll(&bob, &since_bob, &query);
        let alice_waiting = long_poll(&alice, &since_alice, &query);
        tokio::time::sleep(Duration::from_millis(200)).await;
        sender
            .put(
                &format!("/rooms/{}/send/m.room.message/t-{body}", enc(&room)),
                json!({"msgtype": "m.text", "body": body, "format": "org.matrix.custom.html",
                       "formatted_body": format!("<b>{body}</b>")}),
            )
            .await
            .ok();
        for (user, waiting, since) in [
            (&bob, bob_waiting, &mut since_bob),
            (&alice, alice_waiting, &mut since_alice),
        ] {
            let from_memory = waiting.await.unwrap();
            assert_eq!(bodies(&timeline(&from_memory, &room)["events"]), vec![body]);
            let from_database = sync(&app_b.as_user(user), &format!("since={since}&{query}")).await;
            assert_eq!(
                comparable(from_memory.clone()),
                comparable(from_database),
                "{} after {body}",
                user.user_id
            );
            *since = next_batch(&from_memory);
        }
    }
}

#[tokio::test]
async fn unread_counts_stay_right_across_woken_syncs_and_receipts() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let mut since = sync_token(&bob, "").await;
    let counts =
        |s: &Value| s["rooms"]["join"][&room]["unread_notifications"]["notification_count"].clone();
    let mut ids = Vec::new();
    for (i, expected) in [1, 2, 3].into_iter().enumerate() {
        let waiting = long_poll(&bob, &since, "");
        tokio::time::sleep(Duration::from_millis(150)).await;
        ids.push(send_ok(&alice, &room, &format!("m{i}")).await);
        let s = waiting.await.unwrap();
        assert_eq!(counts(&s), json!(expected), "{s}");
        since = next_batch(&s);
    }
    // Reading up to the second message leaves one unread.
    bob.post(
        &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&ids[1])),
        json!({}),
    )
    .await
    .ok();
    let s = sync(&bob, &format!("since={since}")).await;
    since = next_batch(&s);
    assert_eq!(counts(&s), json!(1), "{s}");
    let s = woken_by_message(&bob, &since, "", &alice, &room, "m3").await;
    assert_eq!(counts(&s), json!(2), "{s}");
}

#[tokio::test]
async fn a_woken_sync_reports_one_time_keys_claimed_meanwhile() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    bob.post(
        "/keys/upload",
        json!({"one_time_keys": crate::e2ee::one_time_keys("B", 3)}),
    )
    .await
    .ok();
    let otks = |s: &Value| s["device_one_time_keys_count"]["signed_curve25519"].clone();
    let s = sync(&bob, "").await;
    assert_eq!(otks(&s), json!(3));
    let mut since = next_batch(&s);
    // A woken sync first (its counts are then remembered), then a claim, then another wake-up.
    let s = woken_by_message(&bob, &since, "", &alice, &room, "before the claim").await;
    assert_eq!(otks(&s), json!(3));
    since = next_batch(&s);
    alice
        .post(
            "/keys/claim",
            json!({"one_time_keys": {bob.user_id.clone(): {bob.device_id.clone(): "signed_curve25519"}}}),
        )
        .await
        .ok();
    let s = woken_by_message(&bob, &since, "", &alice, &room, "after the claim").await;
    assert_eq!(otks(&s), json!(2), "{s}");
}

#[tokio::test]
async fn a_woken_sync_brings_the_members_a_lazy_loading_client_lacks() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&carol, &room).await;
    join(&bob, &room).await;
    let filter = enc(&json!({"presence": {"types": []},
                "room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 1}}})
    .to_string());
    let query = format!("filter={filter}");
    let mut since = sync_token(&bob, &query).await;
    let members = |s: &Value| -> Vec<String> {
        s["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .map(|e| e["state_key"].as_str().unwrap().to_owned())
            .collect()
    };
    for (sender, expected) in [
        (&carol, vec![carol.user_id.clone()]),
        (&alice, vec![alice.user_id.clone()]),
        (&alice, vec![]),
        (&carol, vec![]),
    ] {
        let s = woken_by_message(&bob, &since, &query, sender, &room, "hi").await;
        assert_eq!(members(&s), expected, "{s}");
        since = next_batch(&s);
    }
}

/// A member event this process did not write (another process did) is read for the first woken
/// sync that needs it and then served to every other from memory: each lazy-loading poll woken by
/// the sender's message carries it, the same as the database gives.
#[tokio::test]
async fn woken_lazy_loading_syncs_share_a_member_event_written_elsewhere() {
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    peer.as_user(&bob)
        .post(&format!("/join/{}", enc(&room)), json!({}))
        .await
        .ok();
    let mut readers = Vec::new();
    for i in 0..12 {
        let reader = app.register(&format!("reader{i}")).await;
        join(&reader, &room).await;
        readers.push(reader);
    }
    send_ok(&alice, &room, "the last word before").await;
    let filter = enc(&json!({"presence": {"types": []},
                "room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 1}}})
    .to_string());
    let query = format!("filter={filter}");
    let mut polls = Vec::new();
    for reader in &readers {
        let since = sync_token(reader, &query).await;
        polls.push(long_poll(reader, &since, &query));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bob_here = app.as_user(&bob);
    send_ok(&bob_here, &room, "hello from bob").await;
    let expected = bob_here
        .get(&format!(
            "/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(&bob.user_id)
        ))
        .await
        .ok();
    for poll in polls {
        let s = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .expect("woken")
            .unwrap();
        let state = s["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .unwrap();
        let bobs: Vec<&Value> = state
            .iter()
            .filter(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
            .collect();
        assert_eq!(bobs.len(), 1, "{s}");
        assert_eq!(bobs[0]["content"], expected, "{s}");
        assert_eq!(bobs[0]["sender"], bob.user_id.as_str());
    }
}

#[tokio::test]
async fn event_format_federation_serves_the_pdus() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"name": "Formats"})).await;
    let event_id = send_ok(&alice, &room, "as a PDU").await;
    let federation = enc(&json!({"event_format": "federation"}).to_string());
    let client = enc(&json!({"event_format": "client"}).to_string());
    let pdu_keys = [
        "auth_events",
        "prev_events",
        "depth",
        "hashes",
        "signatures",
    ];
    let s = sync(&alice, &format!("filter={federation}")).await;
    let joined = &s["rooms"]["join"][&room];
    let message = joined["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == event_id.as_str())
        .unwrap();
    for key in pdu_keys {
        assert!(message.get(key).is_some(), "{key} missing: {message}");
    }
    assert_eq!(message["content"]["body"], "as a PDU");
    assert!(
        message["unsigned"]["transaction_id"].is_string(),
        "{message}"
    );
    let every_event = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(joined["timeline"]["events"].as_array().unwrap());
    for event in every_event {
        assert!(event["prev_events"].is_array(), "{event}");
    }
    // Incremental syncs too; and the client format (the default) has none of it.
    let since = s["next_batch"].as_str().unwrap();
    send_ok(&alice, &room, "later").await;
    let s = sync(&alice, &format!("since={since}&filter={federation}")).await;
    assert!(
        timeline(&s, &room)["events"][0]["signatures"].is_object(),
        "{s}"
    );
    let s = sync(&alice, &format!("filter={client}")).await;
    for event in timeline(&s, &room)["events"].as_array().unwrap() {
        for key in pdu_keys {
            assert!(
                event.get(key).is_none(),
                "{key} in the client format: {event}"
            );
        }
    }
}

/// Spec "Ignoring Users"; Synapse's filter_events_for_client drops non-state events of ignored
/// senders. Invites from them are not shown either.
#[tokio::test]
async fn events_and_invites_from_ignored_users_are_left_out() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let ignore = |users: Value| {
        let path = format!(
            "/user/{}/account_data/m.ignored_user_list",
            enc(&alice.user_id)
        );
        let alice = &alice;
        async move {
            alice
                .put(&path, json!({ "ignored_users": users }))
                .await
                .ok();
        }
    };
    ignore(json!({ bob.user_id.clone(): {} })).await;
    let since = sync_token(&alice, "").await;
    send_ok(&bob, &room, "from bob").await;
    send_ok(&alice, &room, "from alice").await;
    // Incremental (the in-memory path serves it when it can).
    let s = sync(&alice, &format!("since={since}&timeout=0")).await;
    assert_eq!(bodies(&timeline(&s, &room)["events"]), ["from alice"]);
    // Initial: Bob's join (state) stays, his message goes.
    let s = sync(&alice, "").await;
    let events = &timeline(&s, &room)["events"];
    assert_eq!(bodies(events), ["from alice"]);
    let bob_join = events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.room.member" && e["state_key"] == json!(bob.user_id));
    assert!(bob_join, "state events of ignored users stay: {events}");
    // /messages.
    let m = alice
        .get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(&room)))
        .await
        .ok();
    assert_eq!(bodies(&m["chunk"]), ["from alice"]);
    // Invites, in incremental and initial syncs.
    let since = sync_token(&alice, "").await;
    let bobs_room = create_room(&bob, json!({"invite": [alice.user_id]})).await;
    let s = sync(&alice, &format!("since={since}&timeout=0")).await;
    assert!(s["rooms"]["invite"].get(&bobs_room).is_none(), "{s}");
    let s = sync(&alice, "").await;
    assert!(s["rooms"]["invite"].get(&bobs_room).is_none(), "{s}");
    // The list changes: the next sync follows it.
    ignore(json!({})).await;
    let s = sync(&alice, "").await;
    assert_eq!(
        bodies(&timeline(&s, &room)["events"]),
        ["from bob", "from alice"]
    );
    assert!(s["rooms"]["invite"].get(&bobs_room).is_some(), "{s}");
}

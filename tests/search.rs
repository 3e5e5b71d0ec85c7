//! Server-side search (POST /search): keys, filters, ordering, paging, context, state, groups,
//! highlights, counts, visibility, redaction, errors.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::common::*;
use crate::messaging::send_ok;
use crate::rooms::{create_room, join};

async fn search_resp(user: &User, criteria: Value, next_batch: Option<&str>) -> Resp {
    let path = match next_batch {
        Some(token) => format!("/search?next_batch={}", enc(token)),
        None => "/search".to_owned(),
    };
    user.post(
        &path,
        json!({"search_categories": {"room_events": criteria}}),
    )
    .await
}

/// `room_events` of a successful search.
async fn search(user: &User, criteria: Value) -> Value {
    search_page(user, criteria, None).await
}

async fn search_page(user: &User, criteria: Value, next_batch: Option<&str>) -> Value {
    search_resp(user, criteria, next_batch).await.ok()["search_categories"]["room_events"].clone()
}

fn result_ids(room_events: &Value) -> Vec<String> {
    room_events["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["event_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn put_state(user: &User, room: &str, event_type: &str, content: Value) -> String {
    user.put(&format!("/rooms/{}/state/{event_type}", enc(room)), content)
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn send_event(
    user: &User,
    room: &str,
    event_type: &str,
    content: Value,
    txn: &str,
) -> String {
    user.put(
        &format!("/rooms/{}/send/{event_type}/{txn}", enc(room)),
        content,
    )
    .await
    .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn search_covers_body_name_and_topic_and_keys_narrow_it() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"topic": "all about zebras"})).await;
    let name = put_state(
        &alice,
        &room,
        "m.room.name",
        json!({"name": "Zebra crossing"}),
    )
    .await;
    let message = send_ok(&alice, &room, "I saw a zebra today").await;
    let all = search(&alice, json!({"search_term": "zebra"})).await;
    let found: HashSet<String> = result_ids(&all).into_iter().collect();
    assert_eq!(found.len(), 3, "{all}");
    assert!(found.contains(&name) && found.contains(&message));
    assert_eq!(all["count"], 3);
    let bodies = search(
        &alice,
        json!({"search_term": "zebra", "keys": ["content.body"]}),
    )
    .await;
    assert_eq!(result_ids(&bodies), vec![message]);
    let names = search(
        &alice,
        json!({"search_term": "zebra", "keys": ["content.name"]}),
    )
    .await;
    assert_eq!(result_ids(&names), vec![name]);
    let topics = search(
        &alice,
        json!({"search_term": "zebra", "keys": ["content.topic"]}),
    )
    .await;
    assert_eq!(result_ids(&topics).len(), 1);
    assert_eq!(
        topics["results"][0]["result"]["type"], "m.room.topic",
        "{topics}"
    );
    let none = search(&alice, json!({"search_term": "giraffe"})).await;
    assert_eq!(none["count"], 0);
    assert_eq!(result_ids(&none), Vec::<String>::new());
}

#[tokio::test]
async fn search_applies_the_room_event_filter() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let one = create_room(&alice, json!({"preset": "public_chat"})).await;
    let two = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &one).await;
    join(&bob, &two).await;
    let a1 = send_ok(&alice, &one, "kiwi from alice").await;
    let b1 = send_ok(&bob, &one, "kiwi from bob").await;
    let a2 = send_ok(&alice, &two, "kiwi again").await;
    let named = put_state(&alice, &two, "m.room.name", json!({"name": "kiwi room"})).await;
    let ids = |v: &Value| result_ids(v).into_iter().collect::<HashSet<_>>();
    let set = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
    let f = |filter: Value| json!({"search_term": "kiwi", "filter": filter});
    assert_eq!(
        ids(&search(&bob, f(json!({"rooms": [one]}))).await),
        set(&[&a1, &b1])
    );
    assert_eq!(
        ids(&search(&bob, f(json!({"not_rooms": [one]}))).await),
        set(&[&a2, &named])
    );
    assert_eq!(
        ids(&search(&bob, f(json!({"senders": [bob.user_id]}))).await),
        set(&[&b1])
    );
    assert_eq!(
        ids(&search(&bob, f(json!({"not_senders": [bob.user_id]}))).await),
        set(&[&a1, &a2, &named])
    );
    assert_eq!(
        ids(&search(&bob, f(json!({"types": ["m.room.name"]}))).await),
        set(&[&named])
    );
    assert_eq!(
        ids(&search(&bob, f(json!({"not_types": ["m.room.n*"]}))).await),
        set(&[&a1, &b1, &a2])
    );
    let limited = search(&bob, f(json!({"limit": 2}))).await;
    assert_eq!(result_ids(&limited).len(), 2);
    assert_eq!(limited["count"], 4);
    assert!(limited["next_batch"].is_string(), "{limited}");
}

#[tokio::test]
async fn search_orders_by_rank_or_by_recent() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let strong = send_ok(&alice, &room, "mango mango mango, mango everywhere").await;
    let weak = send_ok(&alice, &room, "a mango and many other fruits besides it").await;
    let newest = send_ok(
        &alice,
        &room,
        "one more mango with lots of other words around",
    )
    .await;
    let by_rank = search(&alice, json!({"search_term": "mango"})).await;
    assert_eq!(result_ids(&by_rank)[0], strong, "{by_rank}");
    let ranks: Vec<f64> = by_rank["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_f64().unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
    let recent = search(
        &alice,
        json!({"search_term": "mango", "order_by": "recent"}),
    )
    .await;
    assert_eq!(result_ids(&recent), vec![newest, weak, strong]);
}

/// Pages through every result of both orders: each result once, none missing, count on each page.
#[tokio::test]
async fn search_pages_without_repeats_or_gaps() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let mut sent = HashSet::new();
    for i in 0..23 {
        // Several texts per rank, so that ties (broken by position) are crossed by page ends.
        let body = format!("pear {}", "pear ".repeat(i % 3)) + &"word ".repeat(i % 4);
        sent.insert(send_ok(&alice, &room, &body).await);
    }
    for order in ["rank", "recent"] {
        let criteria = json!({"search_term": "pear", "order_by": order, "filter": {"limit": 5}});
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = search_page(&alice, criteria.clone(), token.as_deref()).await;
            assert_eq!(page["count"], 23, "{page}");
            seen.extend(result_ids(&page));
            match page["next_batch"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 23, "{order}: {seen:?}");
        assert_eq!(
            seen.iter().cloned().collect::<HashSet<_>>(),
            sent,
            "{order}"
        );
    }
}

#[tokio::test]
async fn search_event_context_has_neighbours_and_historical_profiles() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    alice
        .put(
            &format!("/profile/{}/displayname", enc(&alice.user_id)),
            json!({"displayname": "Old Alice"}),
        )
        .await
        .ok();
    let b1 = send_ok(&alice, &room, "before one").await;
    let b2 = send_ok(&alice, &room, "before two").await;
    send_ok(&alice, &room, "the papaya is here").await;
    let a1 = send_ok(&alice, &room, "after one").await;
    alice
        .put(
            &format!("/profile/{}/displayname", enc(&alice.user_id)),
            json!({"displayname": "New Alice"}),
        )
        .await
        .ok();
    let criteria = json!({
        "search_term": "papaya",
        "event_context": {"before_limit": 2, "after_limit": 1, "include_profile": true},
    });
    let found = search(&alice, criteria).await;
    let context = &found["results"][0]["context"];
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&context["events_before"]), vec![b2, b1], "{context}");
    assert_eq!(ids(&context["events_after"]), vec![a1]);
    assert!(context["start"].is_string() && context["end"].is_string());
    assert_eq!(
        context["profile_info"][&alice.user_id]["displayname"], "Old Alice",
        "{context}"
    );
    let plain = search(&alice, json!({"search_term": "papaya"})).await;
    assert!(plain["results"][0].get("context").is_none(), "{plain}");
}

#[tokio::test]
async fn search_include_state_gives_the_current_state_of_result_rooms() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"name": "Fruit"})).await;
    let other = create_room(&alice, json!({})).await;
    send_ok(&alice, &room, "lychee").await;
    send_ok(&alice, &other, "nothing to see").await;
    let found = search(
        &alice,
        json!({"search_term": "lychee", "include_state": true}),
    )
    .await;
    let state = found["state"].as_object().expect("state");
    assert_eq!(state.keys().collect::<Vec<_>>(), vec![&room], "{found}");
    let types: HashSet<&str> = state[&room]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains("m.room.create") && types.contains("m.room.name"),
        "{types:?}"
    );
    let without = search(&alice, json!({"search_term": "lychee"})).await;
    assert!(without.get("state").is_none());
}

#[tokio::test]
async fn search_groups_by_room_and_sender_with_paging_inside_a_group() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let one = create_room(&alice, json!({"preset": "public_chat"})).await;
    let two = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &one).await;
    join(&bob, &two).await;
    let mut in_one = Vec::new();
    for i in 0..3 {
        in_one.push(send_ok(&alice, &one, &format!("plum {i}")).await);
    }
    let bobs = send_ok(&bob, &two, "plum from bob").await;
    let criteria = json!({
        "search_term": "plum",
        "order_by": "recent",
        "filter": {"limit": 2},
        "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
    });
    let first = search(&alice, criteria.clone()).await;
    // Newest first: bob's in room two, then alice's last in room one.
    let rooms = &first["groups"]["room_id"];
    assert_eq!(rooms[&two]["results"], json!([bobs]), "{first}");
    assert!(
        rooms[&two].get("next_batch").is_none(),
        "room two has no more: {first}"
    );
    assert_eq!(rooms[&one]["results"], json!([in_one[2]]));
    let senders = &first["groups"]["sender"];
    assert_eq!(senders[&bob.user_id]["results"], json!([bobs]));
    assert!(senders[&bob.user_id].get("next_batch").is_none());
    let token = rooms[&one]["next_batch"]
        .as_str()
        .expect("room one has more");
    let rest = search_page(&alice, criteria.clone(), Some(token)).await;
    assert_eq!(
        result_ids(&rest),
        vec![in_one[1].clone(), in_one[0].clone()],
        "{rest}"
    );
    assert!(rest["next_batch"].is_null(), "{rest}");
    let alices = senders[&alice.user_id]["next_batch"].as_str().unwrap();
    let rest = search_page(&alice, criteria, Some(alices)).await;
    assert_eq!(
        result_ids(&rest),
        vec![in_one[1].clone(), in_one[0].clone()]
    );
}

#[tokio::test]
async fn search_highlights_the_matched_words() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    send_ok(&alice, &room, "Alice RUNS every morning").await;
    let found = search(&alice, json!({"search_term": "running"})).await;
    assert_eq!(found["count"], 1, "stemmed: {found}");
    assert_eq!(found["highlights"], json!(["runs"]));
}

#[tokio::test]
async fn search_sees_only_joined_rooms_and_visible_history() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    // Never joined (public, even world-readable): not searched.
    let never = create_room(&alice, json!({"preset": "public_chat"})).await;
    put_state(
        &alice,
        &never,
        "m.room.history_visibility",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    send_ok(&alice, &never, "quince never").await;
    // Left: not searched any more, not even what was sent while joined (as Synapse).
    let left = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &left).await;
    send_ok(&alice, &left, "quince while joined").await;
    bob.post(&format!("/rooms/{}/leave", enc(&left)), json!({}))
        .await
        .ok();
    // Joined later with history_visibility joined: only what came after the join.
    let late = create_room(&alice, json!({"preset": "public_chat"})).await;
    put_state(
        &alice,
        &late,
        "m.room.history_visibility",
        json!({"history_visibility": "joined"}),
    )
    .await;
    send_ok(&alice, &late, "quince before the join").await;
    join(&bob, &late).await;
    let after = send_ok(&alice, &late, "quince after the join").await;
    let found = search(&bob, json!({"search_term": "quince"})).await;
    assert_eq!(result_ids(&found), vec![after], "{found}");
    assert_eq!(found["count"], 1);
    // Alice, in every room, finds all four.
    assert_eq!(
        search(&alice, json!({"search_term": "quince"})).await["count"],
        4
    );
}

#[tokio::test]
async fn redacted_and_encrypted_events_are_not_found() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let secret = send_ok(&alice, &room, "the durian password").await;
    let kept = send_ok(&alice, &room, "durian is fine").await;
    alice
        .put(
            &format!("/rooms/{}/redact/{}/r1", enc(&room), enc(&secret)),
            json!({}),
        )
        .await
        .ok();
    send_event(
        &alice,
        &room,
        "m.room.encrypted",
        json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "durian", "body": "durian",
               "sender_key": "k", "session_id": "s", "device_id": "D"}),
        "e1",
    )
    .await;
    let found = search(&alice, json!({"search_term": "durian"})).await;
    assert_eq!(result_ids(&found), vec![kept], "{found}");
    assert_eq!(found["count"], 1);
    let password = search(&alice, json!({"search_term": "password"})).await;
    assert_eq!(password["count"], 0, "{password}");
}

#[tokio::test]
async fn search_refuses_bad_requests() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bad = |c: Value| search_resp(&alice, c, None);
    bad(json!({"keys": ["content.body"]}))
        .await
        .expect_err(400, "M_MISSING_PARAM");
    bad(json!({"search_term": "x", "order_by": "oldest"}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    bad(json!({"search_term": "x", "keys": ["content.msgtype"]}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    bad(json!({"search_term": "x", "groupings": {"group_by": [{"key": "type"}]}}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    bad(json!({"search_term": 5}))
        .await
        .expect_err(400, "M_BAD_JSON");
    search_resp(&alice, json!({"search_term": "x"}), Some("garbage"))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .post("/search", json!({}))
        .await
        .expect_err(400, "M_BAD_JSON");
    // No room_events category: nothing to answer.
    let empty = alice
        .post("/search", json!({"search_categories": {}}))
        .await
        .ok();
    assert_eq!(empty, json!({"search_categories": {}}));
}

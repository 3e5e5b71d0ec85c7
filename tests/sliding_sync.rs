//! Sliding sync (MSC4186): `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`,
//! the way matrix-rust-sdk (Element X) drives it: lists with ranges over the rooms ordered by
//! recency, room subscriptions, extensions, and a `pos` that carries the connection on.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::e2ee::one_time_keys;
use crate::messaging::send_ok;
use crate::rooms::{create_room, join};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync request; `pos` and `timeout` go in the query.
async fn ss(user: &User, pos: Option<&str>, timeout: Option<u64>, body: Value) -> Resp {
    let mut query = Vec::new();
    if let Some(pos) = pos {
        query.push(format!("pos={}", enc(pos)));
    }
    if let Some(t) = timeout {
        query.push(format!("timeout={t}"));
    }
    let path = if query.is_empty() {
        PATH.to_owned()
    } else {
        format!("{PATH}?{}", query.join("&"))
    };
    user.request(Method::POST, &path, Some(body)).await
}

async fn ss_ok(user: &User, pos: Option<&str>, body: Value) -> Value {
    ss(user, pos, None, body).await.ok()
}

/// A list named "all" over `range` with `timeline_limit` and `required_state`.
fn list(range: (u64, u64), timeline_limit: u64, required_state: Value) -> Value {
    json!({"lists": {"all": {
        "ranges": [[range.0, range.1]],
        "timeline_limit": timeline_limit,
        "required_state": required_state,
    }}})
}

fn pos(v: &Value) -> String {
    v["pos"].as_str().expect("pos").to_owned()
}

/// The rooms of a response ordered by bump_stamp, newest first.
fn by_recency(v: &Value) -> Vec<String> {
    let mut rooms: Vec<(&String, i64)> = v["rooms"]
        .as_object()
        .map(|r| {
            r.iter()
                .map(|(id, room)| (id, room["bump_stamp"].as_i64().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    rooms.sort_by_key(|r| std::cmp::Reverse(r.1));
    rooms.into_iter().map(|(id, _)| id.clone()).collect()
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn state_keys(room: &Value) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = room["required_state"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap().to_owned(),
                        e["state_key"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

/// `n` rooms of Alice's, each with one message, created oldest first.
async fn rooms_with_messages(alice: &User, n: usize) -> Vec<String> {
    let mut rooms = Vec::new();
    for i in 0..n {
        let room = create_room(
            alice,
            json!({"name": format!("room {i}"), "preset": "public_chat"}),
        )
        .await;
        send_ok(alice, &room, &format!("hello {i}")).await;
        rooms.push(room);
    }
    rooms
}

#[tokio::test]
async fn versions_advertise_simplified_sliding_sync() {
    let app = spawn_app().await;
    let v = app.get("/_matrix/client/versions").await.ok();
    assert_eq!(
        v["unstable_features"]["org.matrix.simplified_msc3575"],
        true
    );
    // Native support: no proxy for clients to look for.
    let wk = app.get("/.well-known/matrix/client").await.ok();
    assert!(wk.get("org.matrix.msc3575.proxy").is_none(), "{wk}");
}

#[tokio::test]
async fn a_list_shows_the_newest_rooms_in_its_range_and_counts_them_all() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let rooms = rooms_with_messages(&alice, 3).await;
    let mut body = list((0, 1), 1, json!([]));
    body["txn_id"] = json!("tx1");
    let v = ss_ok(&alice, None, body).await;
    assert_eq!(v["txn_id"], "tx1");
    assert_eq!(v["lists"]["all"]["count"], 3);
    assert_eq!(by_recency(&v), [rooms[2].clone(), rooms[1].clone()]);
    let newest = &v["rooms"][&rooms[2]];
    assert_eq!(newest["initial"], true);
    assert_eq!(bodies(newest), ["hello 2"]);
}

#[tokio::test]
async fn a_message_moves_its_room_into_the_range() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let rooms = rooms_with_messages(&alice, 3).await;
    let body = list((0, 1), 1, json!([]));
    let first = ss_ok(&alice, None, body.clone()).await;
    assert!(first["rooms"].get(&rooms[0]).is_none());
    // The oldest room gets a message: it is now the newest, and comes whole (the client never had it).
    send_ok(&alice, &rooms[0], "bump").await;
    let v = ss_ok(&alice, Some(&pos(&first)), body.clone()).await;
    assert_eq!(by_recency(&v), [rooms[0].clone()]);
    assert_eq!(v["rooms"][&rooms[0]]["initial"], true);
    assert_eq!(bodies(&v["rooms"][&rooms[0]]), ["bump"]);
    assert_eq!(v["lists"]["all"]["count"], 3);
    // A state event does not bump: the order stays.
    alice
        .put(
            &format!("/rooms/{}/state/m.room.topic/", enc(&rooms[1])),
            json!({"topic": "t"}),
        )
        .await
        .ok();
    let again = ss_ok(&alice, None, list((0, 0), 1, json!([]))).await;
    assert_eq!(by_recency(&again), [rooms[0].clone()]);
}

#[tokio::test]
async fn a_room_comes_with_its_fields() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    alice
        .put(
            "/profile/{}/displayname"
                .replace("{}", &enc(&alice.user_id))
                .as_str(),
            json!({"displayname": "Alice A"}),
        )
        .await;
    // Unnamed, with an avatar, Bob joined and Carol invited.
    let room = create_room(&alice, json!({"invite": [carol.user_id, bob.user_id]})).await;
    join(&bob, &room).await;
    alice
        .put(
            &format!("/rooms/{}/state/m.room.avatar/", enc(&room)),
            json!({"url": "mxc://example.org/avatar"}),
        )
        .await
        .ok();
    for i in 0..3 {
        send_ok(&alice, &room, &format!("m{i}")).await;
    }
    // Bob mentions Alice by name: a highlight.
    send_ok(&bob, &room, "hey Alice A").await;
    let v = ss_ok(&bob, None, list((0, 0), 2, json!([["m.room.avatar", ""]]))).await;
    let r = &v["rooms"][&room];
    assert_eq!(r["initial"], true);
    assert!(r.get("name").is_none(), "{r}");
    assert_eq!(r["avatar"], "mxc://example.org/avatar");
    let heroes: Vec<&str> = r["heroes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["user_id"].as_str().unwrap())
        .collect();
    assert!(heroes.contains(&alice.user_id.as_str()), "{r}");
    assert!(!heroes.contains(&bob.user_id.as_str()), "{r}");
    assert_eq!(r["joined_count"], 2);
    assert_eq!(r["invited_count"], 1);
    assert_eq!(bodies(r), ["m2", "hey Alice A"]);
    assert_eq!(r["limited"], true);
    assert!(r["prev_batch"].is_string());
    assert_eq!(r["num_live"], 0);
    assert!(r["bump_stamp"].is_u64());
    assert_eq!(r["is_dm"], false);
    assert_eq!(state_keys(r), [("m.room.avatar".to_owned(), String::new())]);
    // prev_batch continues the timeline backwards through /messages.
    let older = alice
        .get(&format!(
            "/rooms/{}/messages?dir=b&limit=1&from={}",
            enc(&room),
            r["prev_batch"].as_str().unwrap()
        ))
        .await
        .ok();
    assert_eq!(older["chunk"][0]["content"]["body"], "m1");
    // Alice's view: unread counts count Bob's mention.
    let a = ss_ok(&alice, None, list((0, 0), 1, json!([]))).await;
    let r = &a["rooms"][&room];
    assert_eq!(r["notification_count"], 1, "{r}");
    assert_eq!(r["highlight_count"], 1, "{r}");
    // A named room has its name and no heroes.
    let named = create_room(&alice, json!({"name": "The Room"})).await;
    let n = ss_ok(&alice, None, list((0, 0), 1, json!([]))).await;
    assert_eq!(n["rooms"][&named]["name"], "The Room");
    assert!(n["rooms"][&named].get("heroes").is_none());
}

#[tokio::test]
async fn required_state_wildcards_me_and_lazy_members() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "topic": "t"})).await;
    join(&bob, &room).await;
    join(&carol, &room).await;
    send_ok(&bob, &room, "from bob").await;
    let s = |rs: Value| list((0, 0), 1, rs);
    let me = ss_ok(&carol, None, s(json!([["m.room.member", "$ME"]]))).await;
    assert_eq!(
        state_keys(&me["rooms"][&room]),
        [("m.room.member".to_owned(), carol.user_id.clone())]
    );
    let lazy = ss_ok(&carol, None, s(json!([["m.room.member", "$LAZY"]]))).await;
    let keys = state_keys(&lazy["rooms"][&room]);
    assert!(
        keys.contains(&("m.room.member".to_owned(), bob.user_id.clone())),
        "{keys:?}"
    );
    assert!(
        !keys.contains(&("m.room.member".to_owned(), alice.user_id.clone())),
        "{keys:?}"
    );
    let members = ss_ok(&carol, None, s(json!([["m.room.member", "*"]]))).await;
    assert_eq!(state_keys(&members["rooms"][&room]).len(), 3);
    let all = ss_ok(&carol, None, s(json!([["*", "*"]]))).await;
    let keys = state_keys(&all["rooms"][&room]);
    for t in [
        "m.room.create",
        "m.room.topic",
        "m.room.power_levels",
        "m.room.join_rules",
    ] {
        assert!(keys.iter().any(|(k, _)| k == t), "{t} missing: {keys:?}");
    }
    assert_eq!(keys.iter().filter(|(t, _)| t == "m.room.member").count(), 3);
    let any_type = ss_ok(&carol, None, s(json!([["*", ""]]))).await;
    let keys = state_keys(&any_type["rooms"][&room]);
    assert!(
        keys.iter().all(|(_, k)| k.is_empty()) && keys.len() >= 4,
        "{keys:?}"
    );
}

#[tokio::test]
async fn list_filters_select_rooms() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let plain = create_room(&alice, json!({})).await;
    let encrypted = create_room(
        &alice,
        json!({"initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;
    let space = create_room(&alice, json!({"creation_content": {"type": "m.space"}})).await;
    let dm = create_room(&alice, json!({"is_direct": true})).await;
    alice
        .put(
            &format!("/user/{}/account_data/m.direct", enc(&alice.user_id)),
            json!({(bob.user_id.clone()): [dm.clone()]}),
        )
        .await
        .ok();
    let invited = create_room(&bob, json!({"invite": [alice.user_id]})).await;
    let rooms_for = async |filters: Value| -> Vec<String> {
        let body =
            json!({"lists": {"f": {"ranges": [[0, 20]], "timeline_limit": 0, "filters": filters}}});
        let v = ss_ok(&alice, None, body).await;
        let mut ids: Vec<String> = v["rooms"].as_object().unwrap().keys().cloned().collect();
        ids.sort();
        assert_eq!(v["lists"]["f"]["count"], ids.len());
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(rooms_for(json!({"is_dm": true})).await, vec![dm.clone()]);
    assert!(!rooms_for(json!({"is_dm": false})).await.contains(&dm));
    assert_eq!(
        rooms_for(json!({"is_encrypted": true})).await,
        vec![encrypted.clone()]
    );
    assert_eq!(
        rooms_for(json!({"is_invite": true})).await,
        vec![invited.clone()]
    );
    assert_eq!(
        rooms_for(json!({"room_types": ["m.space"]})).await,
        vec![space.clone()]
    );
    assert_eq!(
        rooms_for(json!({"room_types": [null]})).await,
        sorted(vec![
            plain.clone(),
            encrypted.clone(),
            dm.clone(),
            invited.clone()
        ])
    );
    assert!(
        !rooms_for(json!({"not_room_types": ["m.space"]}))
            .await
            .contains(&space)
    );
}

#[tokio::test]
async fn an_invite_comes_with_its_invite_state() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(
        &bob,
        json!({"name": "Invited here", "invite": [alice.user_id]}),
    )
    .await;
    let v = ss_ok(&alice, None, list((0, 5), 5, json!([["*", "*"]]))).await;
    let r = &v["rooms"][&room];
    let types: Vec<&str> = r["invite_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"m.room.name") && types.contains(&"m.room.member"),
        "{r}"
    );
    assert_eq!(r["name"], "Invited here");
    assert!(
        r.get("timeline").is_none(),
        "an invitee sees no timeline: {r}"
    );
}

#[tokio::test]
async fn room_subscriptions_send_rooms_outside_the_lists() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let rooms = rooms_with_messages(&alice, 2).await;
    let not_mine = create_room(&bob, json!({})).await;
    let mut body = list((0, 0), 1, json!([]));
    body["room_subscriptions"] = json!({
        (rooms[0].clone()): {"timeline_limit": 5, "required_state": [["m.room.name", ""]]},
        (not_mine.clone()): {"timeline_limit": 5},
    });
    let v = ss_ok(&alice, None, body).await;
    let sub = &v["rooms"][&rooms[0]];
    assert_eq!(state_keys(sub), [("m.room.name".to_owned(), String::new())]);
    assert!(bodies(sub).contains(&"hello 0".to_owned()));
    assert!(v["rooms"].get(&rooms[1]).is_some());
    assert!(
        v["rooms"].get(&not_mine).is_none(),
        "a room the user is not in"
    );
}

#[tokio::test]
async fn with_a_pos_only_changes_come() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let rooms = rooms_with_messages(&alice, 2).await;
    join(&bob, &rooms[1]).await;
    let body = list(
        (0, 5),
        10,
        json!([["m.room.topic", ""], ["m.room.member", "$LAZY"]]),
    );
    let first = ss_ok(&alice, None, body.clone()).await;
    // Nothing happened: no rooms.
    let quiet = ss_ok(&alice, Some(&pos(&first)), body.clone()).await;
    assert!(quiet.get("rooms").is_none(), "{quiet}");
    send_ok(&bob, &rooms[1], "new").await;
    alice
        .put(
            &format!("/rooms/{}/state/m.room.topic/", enc(&rooms[1])),
            json!({"topic": "changed"}),
        )
        .await
        .ok();
    let v = ss_ok(&alice, Some(&pos(&quiet)), body.clone()).await;
    assert_eq!(v["rooms"].as_object().unwrap().len(), 1, "{v}");
    let r = &v["rooms"][&rooms[1]];
    assert!(r.get("initial").is_none(), "{r}");
    assert_eq!(bodies(r), ["new"]);
    assert_eq!(r["timeline"].as_array().unwrap().len(), 2);
    assert_eq!(r["num_live"], 2);
    assert!(r.get("limited").is_none() || r["limited"] == false);
    let keys = state_keys(r);
    assert!(
        keys.contains(&("m.room.topic".to_owned(), String::new())),
        "{keys:?}"
    );
    assert!(
        keys.contains(&("m.room.member".to_owned(), bob.user_id.clone())),
        "{keys:?}"
    );
    // The same pos again (a retried request) still works and gives the same changes.
    let retried = ss_ok(&alice, Some(&pos(&quiet)), body.clone()).await;
    assert_eq!(bodies(&retried["rooms"][&rooms[1]]), ["new"]);
    // A changed config sends the room whole again.
    let bigger = ss_ok(&alice, Some(&pos(&v)), list((0, 5), 20, json!([]))).await;
    assert_eq!(bigger["rooms"][&rooms[0]]["initial"], true);
}

#[tokio::test]
async fn an_unknown_or_expired_pos_is_m_unknown_pos() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let body = list((0, 5), 1, json!([]));
    ss(&alice, Some("nonsense"), None, body.clone())
        .await
        .expect_err(400, "M_UNKNOWN_POS");
    ss(&alice, Some("999999"), None, body.clone())
        .await
        .expect_err(400, "M_UNKNOWN_POS");
    // A pos belongs to its connection.
    let mut with_conn = body.clone();
    with_conn["conn_id"] = json!("room-list");
    let first = ss_ok(&alice, None, with_conn.clone()).await;
    ss(&alice, Some(&pos(&first)), None, body.clone())
        .await
        .expect_err(400, "M_UNKNOWN_POS");
    ss_ok(&alice, Some(&pos(&first)), with_conn.clone()).await;
    // Unused for more than a week: expired.
    sqlx::query("UPDATE sliding_sync_positions SET last_used_ts = 0")
        .execute(&app.db)
        .await
        .unwrap();
    ss(&alice, Some(&pos(&first)), None, with_conn.clone())
        .await
        .expect_err(400, "M_UNKNOWN_POS");
    // Starting over without a pos forgets the connection's old positions.
    let second = ss_ok(&alice, None, with_conn.clone()).await;
    let third = ss_ok(&alice, None, with_conn.clone()).await;
    ss(&alice, Some(&pos(&second)), None, with_conn)
        .await
        .expect_err(400, "M_UNKNOWN_POS");
    assert_ne!(pos(&second), pos(&third));
}

#[tokio::test]
async fn positions_kept_per_connection_are_bounded() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let body = list((0, 5), 1, json!([]));
    let first = ss_ok(&alice, None, body.clone()).await;
    // The client retries the first pos over and over, each time with something new.
    for i in 0..12 {
        send_ok(&alice, &room, &format!("m{i}")).await;
        ss_ok(&alice, Some(&pos(&first)), body.clone()).await;
    }
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM sliding_sync_positions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(kept <= 6, "{kept} positions kept");
}

#[tokio::test]
async fn a_long_poll_wakes_on_a_message_and_times_out_with_the_same_pos() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let body = list((0, 5), 5, json!([]));
    let first = ss_ok(&bob, None, body.clone()).await;
    let p = pos(&first);
    // Nothing happens: the poll waits its timeout, then answers with the same pos.
    let started = Instant::now();
    let idle = ss(&bob, Some(&p), Some(500), body.clone()).await.ok();
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(pos(&idle), p);
    assert!(idle.get("rooms").is_none());
    // A message wakes it at once.
    let waiting = {
        let bob = bob.clone();
        let (p, body) = (p.clone(), body.clone());
        tokio::spawn(async move { ss(&bob, Some(&p), Some(20_000), body).await.ok() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    let started = Instant::now();
    send_ok(&alice, &room, "wake up").await;
    let v = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("not woken")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(bodies(&v["rooms"][&room]), ["wake up"]);
    assert_eq!(v["rooms"][&room]["num_live"], 1);
}

#[tokio::test]
async fn a_pos_works_on_another_process_sharing_the_database() {
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let body = list((0, 5), 5, json!([]));
    let first = ss_ok(&alice, None, body.clone()).await;
    let on_peer = peer.as_user(&alice);
    // A long poll on the peer, woken by a message sent through the first process.
    let waiting = {
        let on_peer = on_peer.clone();
        let (p, body) = (pos(&first), body.clone());
        tokio::spawn(async move { ss(&on_peer, Some(&p), Some(20_000), body).await.ok() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_ok(&alice, &room, "across").await;
    let v = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("not woken")
        .unwrap();
    assert_eq!(bodies(&v["rooms"][&room]), ["across"]);
    assert!(v["rooms"][&room].get("initial").is_none());
    // And its pos works back on the first process.
    send_ok(&on_peer, &room, "back").await;
    let back = ss_ok(&alice, Some(&pos(&v)), body).await;
    assert_eq!(bodies(&back["rooms"][&room]), ["back"]);
}

#[tokio::test]
async fn a_room_left_comes_with_its_leave() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let body = list((0, 5), 5, json!([]));
    let first = ss_ok(&bob, None, body.clone()).await;
    bob.post(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await
        .ok();
    send_ok(&alice, &room, "after the leave").await;
    let v = ss_ok(&bob, Some(&pos(&first)), body.clone()).await;
    let timeline = v["rooms"][&room]["timeline"].as_array().unwrap().clone();
    let last = timeline.last().unwrap();
    assert_eq!(last["type"], "m.room.member");
    assert_eq!(last["content"]["membership"], "leave");
    assert!(!bodies(&v["rooms"][&room]).contains(&"after the leave".to_owned()));
    // Once seen, the room is gone from the list.
    let after = ss_ok(&bob, Some(&pos(&v)), body).await;
    assert!(after.get("rooms").is_none_or(|r| r.get(&room).is_none()));
}

#[tokio::test]
async fn to_device_extension_delivers_and_acknowledges() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let body = json!({"messages": {(bob.user_id.clone()): {(bob.device_id.clone()): {"n": 1}}}});
    alice.put("/sendToDevice/m.test/t1", body).await.ok();
    let req = json!({"extensions": {"to_device": {"enabled": true}}});
    let v = ss_ok(&bob, None, req.clone()).await;
    let td = &v["extensions"]["to_device"];
    assert_eq!(td["events"][0]["content"]["n"], 1);
    assert_eq!(td["events"][0]["sender"], alice.user_id);
    let since = td["next_batch"].as_str().unwrap().to_owned();
    // Without the since, they come again; with it, they are acknowledged.
    let again = ss_ok(&bob, None, req.clone()).await;
    assert_eq!(
        again["extensions"]["to_device"]["events"][0]["content"]["n"],
        1
    );
    let acked = ss_ok(
        &bob,
        None,
        json!({"extensions": {"to_device": {"enabled": true, "since": since}}}),
    )
    .await;
    assert!(
        acked["extensions"]["to_device"].get("events").is_none(),
        "{acked}"
    );
    ss(
        &bob,
        None,
        None,
        json!({"extensions": {"to_device": {"enabled": true, "since": "x"}}}),
    )
    .await
    .expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn e2ee_extension_counts_keys_and_reports_device_changes() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": one_time_keys("A", 3)}),
        )
        .await
        .ok();
    let req = json!({"extensions": {"e2ee": {"enabled": true}}});
    let v = ss_ok(&alice, None, req.clone()).await;
    let e = &v["extensions"]["e2ee"];
    assert_eq!(
        e["device_one_time_keys_count"]["signed_curve25519"], 3,
        "{e}"
    );
    assert_eq!(e["device_unused_fallback_key_types"], json!([]));
    // Bob's new device is a device list change for Alice.
    bob.app
        .http
        .post(format!("{}/_matrix/client/v3/login", bob.app.base_url))
        .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    let after = ss_ok(&alice, Some(&pos(&v)), req).await;
    let changed = after["extensions"]["e2ee"]["device_lists"]["changed"].clone();
    assert!(
        changed.as_array().unwrap().contains(&json!(bob.user_id)),
        "{after}"
    );
}

#[tokio::test]
async fn account_data_extension_sends_global_and_listed_rooms_data() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let rooms = rooms_with_messages(&alice, 2).await;
    let uid = enc(&alice.user_id);
    alice
        .put(
            &format!("/user/{uid}/account_data/org.example.global"),
            json!({"g": 1}),
        )
        .await
        .ok();
    for room in &rooms {
        alice
            .put(
                &format!(
                    "/user/{uid}/rooms/{}/account_data/org.example.room",
                    enc(room)
                ),
                json!({"r": room}),
            )
            .await
            .ok();
    }
    // Only the newest room is in the list's range.
    let mut req = list((0, 0), 1, json!([]));
    req["extensions"] = json!({"account_data": {"enabled": true, "lists": ["all"]}});
    let v = ss_ok(&alice, None, req.clone()).await;
    let ad = &v["extensions"]["account_data"];
    assert!(
        ad["global"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example.global"),
        "{ad}"
    );
    assert_eq!(ad["rooms"][&rooms[1]][0]["content"]["r"], json!(rooms[1]));
    assert!(ad["rooms"].get(&rooms[0]).is_none(), "{ad}");
    // Incremental: only what changed.
    alice
        .put(
            &format!("/user/{uid}/account_data/org.example.later"),
            json!({"l": 1}),
        )
        .await
        .ok();
    let after = ss_ok(&alice, Some(&pos(&v)), req).await;
    let global = after["extensions"]["account_data"]["global"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(global.len(), 1, "{global:?}");
    assert_eq!(global[0]["type"], "org.example.later");
}

#[tokio::test]
async fn receipts_and_typing_extensions() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let event = send_ok(&alice, &room, "read me").await;
    let mut req = list((0, 5), 1, json!([]));
    req["extensions"] = json!({"receipts": {"enabled": true}, "typing": {"enabled": true}});
    let first = ss_ok(&alice, None, req.clone()).await;
    bob.post(
        &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event)),
        json!({}),
    )
    .await
    .ok();
    bob.put(
        &format!("/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id)),
        json!({"typing": true, "timeout": 30000}),
    )
    .await
    .ok();
    let v = ss(&alice, Some(&pos(&first)), Some(5000), req).await.ok();
    let ext = &v["extensions"];
    assert!(
        ext["receipts"]["rooms"][&room]["content"][&event]["m.read"]
            .get(&bob.user_id)
            .is_some(),
        "{ext}"
    );
    // Typing may come in this response or the next; it came with the receipt here when both were
    // made before the look.
    assert_eq!(
        ext["typing"]["rooms"][&room]["content"]["user_ids"],
        json!([bob.user_id]),
        "{ext}"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    ss(
        &alice,
        None,
        None,
        json!({"lists": {"a": {"ranges": "no"}}}),
    )
    .await
    .expect_err(400, "M_BAD_JSON");
    ss(&alice, None, None, json!({"conn_id": "x".repeat(300)}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    // Ranges past the end and reversed ranges are just empty.
    let v = ss_ok(
        &alice,
        None,
        json!({"lists": {"a": {"ranges": [[5, 2], [100, 200]], "timeline_limit": 1}}}),
    )
    .await;
    assert_eq!(v["lists"]["a"]["count"], 0);
    let unauth = app.request(Method::POST, PATH, None, Some(json!({}))).await;
    unauth.expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn spaces_filter_lists_the_children_of_joined_spaces() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let space = create_room(&alice, json!({"creation_content": {"type": "m.space"}})).await;
    let child = create_room(&alice, json!({})).await;
    let removed = create_room(&alice, json!({})).await;
    let outside = create_room(&alice, json!({})).await;
    let server = alice.user_id.split_once(':').unwrap().1.to_owned();
    for (room, content) in [
        (&child, json!({"via": [server]})),
        // A child event without `via` is a removed child.
        (&removed, json!({})),
    ] {
        alice
            .put(
                &format!("/rooms/{}/state/m.space.child/{}", enc(&space), enc(room)),
                content,
            )
            .await
            .ok();
    }
    // A space Alice is not in names `outside`: ignored.
    let bobs_space = create_room(&bob, json!({"creation_content": {"type": "m.space"}})).await;
    bob.put(
        &format!(
            "/rooms/{}/state/m.space.child/{}",
            enc(&bobs_space),
            enc(&outside)
        ),
        json!({"via": [server]}),
    )
    .await
    .ok();
    let rooms_for = async |filters: Value| -> Vec<String> {
        let body =
            json!({"lists": {"f": {"ranges": [[0, 20]], "timeline_limit": 0, "filters": filters}}});
        let v = ss_ok(&alice, None, body).await;
        let ids: Vec<String> = v["rooms"]
            .as_object()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(v["lists"]["f"]["count"], ids.len(), "{v}");
        ids
    };
    assert_eq!(
        rooms_for(json!({"spaces": [space]})).await,
        vec![child.clone()]
    );
    assert!(rooms_for(json!({"spaces": [bobs_space]})).await.is_empty());
    assert_eq!(
        rooms_for(json!({"spaces": ["!unknown:localhost", space]})).await,
        vec![child.clone()]
    );
    // With the other filters: the children that are not spaces.
    assert_eq!(
        rooms_for(json!({"spaces": [space], "not_room_types": ["m.space"]})).await,
        [child]
    );
}

#[tokio::test]
async fn tags_and_not_tags_filter_by_the_users_room_tags() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let favourite = create_room(&alice, json!({})).await;
    let both = create_room(&alice, json!({})).await;
    let plain = create_room(&alice, json!({})).await;
    let tag = async |room: &str, tag: &str| {
        alice
            .put(
                &format!(
                    "/user/{}/rooms/{}/tags/{tag}",
                    enc(&alice.user_id),
                    enc(room)
                ),
                json!({"order": 0.5}),
            )
            .await
            .ok();
    };
    tag(&favourite, "m.favourite").await;
    tag(&both, "m.favourite").await;
    tag(&both, "u.work").await;
    let rooms_for = async |filters: Value| -> Vec<String> {
        let body =
            json!({"lists": {"f": {"ranges": [[0, 20]], "timeline_limit": 0, "filters": filters}}});
        let v = ss_ok(&alice, None, body).await;
        let mut ids: Vec<String> = v["rooms"]
            .as_object()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        assert_eq!(v["lists"]["f"]["count"], ids.len(), "{v}");
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        rooms_for(json!({"tags": ["m.favourite"]})).await,
        sorted(vec![favourite.clone(), both.clone()])
    );
    assert_eq!(
        rooms_for(json!({"not_tags": ["m.favourite"]})).await,
        vec![plain.clone()]
    );
    // not_tags wins over tags.
    assert_eq!(
        rooms_for(json!({"tags": ["m.favourite"], "not_tags": ["u.work"]})).await,
        vec![favourite.clone()]
    );
    assert!(rooms_for(json!({"tags": ["u.nothing"]})).await.is_empty());
    // A list without the filters still has every room.
    assert_eq!(rooms_for(json!({})).await.len(), 3);
    // The wrong shape is the client's fault.
    let body = json!({"lists": {"f": {"ranges": [[0, 1]], "timeline_limit": 0,
                                      "filters": {"tags": "m.favourite"}}}});
    ss(&alice, None, None, body)
        .await
        .expect_err(400, "M_BAD_JSON");
}

#[tokio::test]
async fn a_knocked_room_is_listed_with_the_knock() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = crate::knocking::knock_room(&alice).await;
    crate::knocking::knock(&bob, &room, Some("let me in"))
        .await
        .ok();
    let v = ss_ok(&bob, None, list((0, 5), 5, json!([]))).await;
    let r = &v["rooms"][&room];
    let own = r["invite_state"]
        .as_array()
        .unwrap_or_else(|| panic!("no invite_state: {v}"))
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("no own member event: {r}"))
        .clone();
    assert_eq!(own["content"]["membership"], "knock");
    assert!(
        r.get("timeline").is_none(),
        "a knocker sees no timeline: {r}"
    );
    assert_eq!(v["lists"]["all"]["count"], 1);
}

#[tokio::test]
async fn rooms_kicked_or_banned_from_are_listed_on_a_new_connection() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let kicked = create_room(&alice, json!({"preset": "public_chat"})).await;
    let banned = create_room(&alice, json!({"preset": "public_chat"})).await;
    let left = create_room(&alice, json!({"preset": "public_chat"})).await;
    for room in [&kicked, &banned, &left] {
        join(&bob, room).await;
    }
    for (room, action) in [(&kicked, "kick"), (&banned, "ban")] {
        alice
            .post(
                &format!("/rooms/{}/{action}", enc(room)),
                json!({"user_id": bob.user_id}),
            )
            .await
            .ok();
    }
    bob.post(&format!("/rooms/{}/leave", enc(&left)), json!({}))
        .await
        .ok();
    // Banned without ever joining: not listed (the MSC), nor any of the room's history shown.
    let never_joined = create_room(&alice, json!({"preset": "public_chat"})).await;
    send_ok(&alice, &never_joined, "not for bob").await;
    alice
        .post(
            &format!("/rooms/{}/ban", enc(&never_joined)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    let v = ss_ok(&bob, None, list((0, 5), 5, json!([]))).await;
    assert!(v["rooms"].get(&never_joined).is_none(), "{v}");
    for (room, membership) in [(&kicked, "leave"), (&banned, "ban")] {
        let timeline = v["rooms"][room]["timeline"].as_array().unwrap();
        let last = timeline.last().unwrap();
        assert_eq!(last["content"]["membership"], membership, "{v}");
        assert_eq!(last["sender"], alice.user_id.as_str());
    }
    assert!(v["rooms"].get(&left).is_none(), "left on their own: {v}");
    assert_eq!(v["lists"]["all"]["count"], 2);
}

/// Ignores what differs between two equivalent responses: `pos`, and `unsigned.age`.
fn comparable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("age");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    v.as_object_mut().unwrap().remove("pos");
    strip(&mut v);
    v
}

#[tokio::test]
async fn a_woken_long_poll_answers_from_memory_as_the_database_would() {
    let (app, metrics) = crate::operations::metrics_app().await;
    let peer = spawn_peer(&app).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"name": "Chat", "preset": "public_chat"})).await;
    let unnamed = create_room(&alice, json!({"preset": "public_chat"})).await;
    for user in [&bob, &carol] {
        join(user, &room).await;
        join(user, &unnamed).await;
    }
    let mut body = list(
        (0, 9),
        2,
        json!([["m.room.member", "$LAZY"], ["m.room.name", ""]]),
    );
    body["extensions"] = json!({"to_device": {"enabled": true}, "typing": {"enabled": true},
                                "receipts": {"enabled": true}, "account_data": {"enabled": true}});
    let woken = |text: &str, source| {
        crate::operations::sample(text, "axon_sliding_sync_woken_total", &[("source", source)])
            .unwrap_or(0.0)
    };
    let mut p = pos(&ss_ok(&bob, None, body.clone()).await);
    // A message, a mention (unread counts and highlights), a message in the room without a name
    // (heroes), and one from a sender whose member event is not in memory yet (lazy members).
    let rounds: [(&User, &str, &str); 4] = [
        (&alice, &room, "one"),
        (&carol, &room, "bob: look"),
        (&carol, &unnamed, "hi"),
        (&alice, &unnamed, "two"),
    ];
    for (sender, room, text) in rounds {
        let before = crate::operations::scrape(&metrics).await;
        let waiting = {
            let (bob, p, body) = (bob.clone(), p.clone(), body.clone());
            tokio::spawn(async move { ss(&bob, Some(&p), Some(20_000), body).await.ok() })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut content = json!({"msgtype": "m.text", "body": text});
        if text.starts_with("bob") {
            content["m.mentions"] = json!({"user_ids": [bob.user_id]});
        }
        sender
            .put(
                &format!("/rooms/{}/send/m.room.message/t-{text}", enc(room)),
                content,
            )
            .await
            .ok();
        let from_memory = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("not woken")
            .unwrap();
        let after = crate::operations::scrape(&metrics).await;
        assert!(
            woken(&after, "memory") > woken(&before, "memory"),
            "{from_memory}"
        );
        // The peer has nothing in memory: it reads the same from the database.
        let from_database = ss_ok(&peer.as_user(&bob), Some(&p), body.clone()).await;
        assert_eq!(
            comparable(from_memory.clone()),
            comparable(from_database),
            "after {text}"
        );
        p = pos(&from_memory);
    }
}

//! Instant messaging: sending, validation, sanitisation, idempotency, local echo, redaction,
//! relations, history and its visibility.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::rooms::{create_room, join};

pub async fn send(user: &User, room: &str, content: Value, txn: &str) -> Resp {
    user.put(
        &format!("/rooms/{}/send/m.room.message/{}", enc(room), enc(txn)),
        content,
    )
    .await
}

pub async fn send_ok(user: &User, room: &str, body: &str) -> String {
    let txn = format!("t{}", axon::service::auth::random_string(10));
    send(user, room, json!({"msgtype": "m.text", "body": body}), &txn)
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn get_event(user: &User, room: &str, event_id: &str) -> Resp {
    user.get(&format!("/rooms/{}/event/{}", enc(room), enc(event_id)))
        .await
}

async fn messages(user: &User, room: &str, query: &str) -> Value {
    user.get(&format!("/rooms/{}/messages?{query}", enc(room)))
        .await
        .ok()
}

fn ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Alice's public room with Bob joined.
pub(crate) async fn joined_pair(app: &TestApp) -> (User, User, String) {
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    (alice, bob, room)
}

#[tokio::test]
async fn every_msgtype_is_stored_and_served_unchanged() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let contents = [
        json!({"msgtype": "m.text", "body": "hello", "x.custom": {"nested": [1, 2, 3]}}),
        json!({"msgtype": "m.emote", "body": "waves"}),
        json!({"msgtype": "m.notice", "body": "beep"}),
        json!({"msgtype": "m.image", "body": "cat.png", "url": "mxc://test.local/abc", "info": {"w": 10, "h": 20, "mimetype": "image/png", "size": 100}}),
        json!({"msgtype": "m.file", "body": "doc.pdf", "filename": "doc.pdf", "url": "mxc://test.local/def", "info": {"size": 5}}),
        json!({"msgtype": "m.audio", "body": "a.ogg", "url": "mxc://test.local/ghi", "info": {"duration": 1000}}),
        json!({"msgtype": "m.video", "body": "v.mp4", "url": "mxc://test.local/jkl", "info": {"duration": 1000, "w": 1, "h": 1}}),
        json!({"msgtype": "m.location", "body": "here", "geo_uri": "geo:51.5,-0.1"}),
        json!({"msgtype": "m.server_notice", "body": "notice", "server_notice_type": "m.server_notice.usage_limit_reached"}),
        json!({"msgtype": "org.example.custom", "body": "custom", "extra": true}),
        json!({"msgtype": "m.text", "body": "**b**", "format": "org.matrix.custom.html", "formatted_body": "<b>b</b>"}),
    ];
    for (i, content) in contents.iter().enumerate() {
        let id = send(&alice, &room, content.clone(), &format!("m{i}"))
            .await
            .ok()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let event = get_event(&alice, &room, &id).await.ok();
        assert_eq!(&event["content"], content, "msgtype {}", content["msgtype"]);
        assert_eq!(event["type"], "m.room.message");
        assert_eq!(event["sender"], alice.user_id);
    }
}

#[tokio::test]
async fn invalid_messages_are_refused_with_m_bad_json_naming_the_key() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let cases = [
        (json!({"msgtype": "m.text"}), "body"),
        (json!({"msgtype": "m.text", "body": 5}), "body"),
        (json!({"body": "no type"}), "msgtype"),
        (json!({"msgtype": 1, "body": "x"}), "msgtype"),
        (
            json!({"msgtype": "m.text", "body": "x", "format": "org.matrix.custom.html", "formatted_body": 3}),
            "formatted_body",
        ),
        (
            json!({"msgtype": "m.image", "body": "x", "url": "https://example.org/a.png"}),
            "url",
        ),
        (
            json!({"msgtype": "m.image", "body": "x", "url": "mxc://a/b", "info": "big"}),
            "info",
        ),
        (json!({"msgtype": "m.location", "body": "x"}), "geo_uri"),
    ];
    for (i, (content, key)) in cases.iter().enumerate() {
        let r = send(&alice, &room, content.clone(), &format!("bad{i}")).await;
        r.expect_err(400, "M_BAD_JSON");
        assert!(
            r.body["error"].as_str().unwrap().contains(key),
            "{content} -> {}",
            r.body
        );
    }
    // Not JSON at all, and not an object.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/nj",
        enc(&room)
    );
    app.raw(Method::PUT, &path, Some(&alice.token), b"{nope".to_vec())
        .await
        .expect_err(400, "M_NOT_JSON");
    app.raw(Method::PUT, &path, Some(&alice.token), b"[1]".to_vec())
        .await
        .expect_err(400, "M_BAD_JSON");
    // Floats and out-of-range integers are not canonical JSON.
    send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "x", "n": 1.5}),
        "float",
    )
    .await
    .expect_err(400, "M_BAD_JSON");
    send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "x", "n": 9007199254740992i64}),
        "big",
    )
    .await
    .expect_err(400, "M_BAD_JSON");
    // Nothing was stored by the refusals.
    let page = messages(&alice, &room, "dir=b&limit=50").await;
    assert!(
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "m.room.message")
    );
}

#[tokio::test]
async fn other_event_types_are_not_message_validated() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    for t in [
        "m.room.message.feedback",
        "org.example.thing",
        "m.room.encrypted",
    ] {
        let r = alice
            .put(
                &format!("/rooms/{}/send/{t}/x", enc(&room)),
                json!({"anything": [1]}),
            )
            .await
            .ok();
        let event = get_event(&alice, &room, r["event_id"].as_str().unwrap())
            .await
            .ok();
        assert_eq!(event["type"], t);
        assert_eq!(event["content"], json!({"anything": [1]}));
    }
}

#[tokio::test]
async fn oversized_event_is_m_too_large() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let r = send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "x".repeat(70_000)}),
        "huge",
    )
    .await;
    r.expect_err(413, "M_TOO_LARGE");
}

#[tokio::test]
async fn formatted_body_is_sanitised_before_storing() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let html = r#"<b>hi</b><script>alert(1)</script><a href="javascript:alert(1)">x</a><img src="https://evil/x.png" onerror="alert(1)">"#;
    let content = json!({"msgtype": "m.text", "body": "hi", "format": "org.matrix.custom.html", "formatted_body": html});
    let id = send(&alice, &room, content, "xss").await.ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = get_event(&alice, &room, &id).await.ok()["content"]["formatted_body"]
        .as_str()
        .unwrap()
        .to_owned();
    for bad in ["<script", "javascript:", "onerror", "https://evil"] {
        assert!(!stored.contains(bad), "{bad} survived: {stored}");
    }
    assert!(stored.contains("<b>hi</b>"), "{stored}");
    // Allowed HTML is untouched, byte for byte.
    let clean = r#"<p>Hello <em>world</em> <code class="language-rust">fn</code></p>"#;
    let content = json!({"msgtype": "m.text", "body": "x", "format": "org.matrix.custom.html", "formatted_body": clean});
    let id = send(&alice, &room, content, "clean").await.ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get_event(&alice, &room, &id).await.ok()["content"]["formatted_body"],
        clean
    );
}

#[tokio::test]
async fn sanitising_can_be_switched_off() {
    let mut config = test_config();
    config.messages.sanitize_html = false;
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let html = "<b>x</b><script>1</script>";
    let content = json!({"msgtype": "m.text", "body": "x", "format": "org.matrix.custom.html", "formatted_body": html});
    let id = send(&alice, &room, content, "raw").await.ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get_event(&alice, &room, &id).await.ok()["content"]["formatted_body"],
        html
    );
}

#[tokio::test]
async fn txn_retry_returns_the_same_event_and_creates_nothing() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let first = send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "one"}),
        "txn1",
    )
    .await
    .ok();
    let again = send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "one"}),
        "txn1",
    )
    .await
    .ok();
    let other_content = send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "different"}),
        "txn1",
    )
    .await
    .ok();
    assert_eq!(first["event_id"], again["event_id"]);
    assert_eq!(first["event_id"], other_content["event_id"]);
    let page = messages(&alice, &room, "dir=b&limit=50").await;
    let count = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .count();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn txn_scope_is_device_and_endpoint() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let room2 = create_room(&alice, json!({})).await;
    let base = send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "a"}),
        "same",
    )
    .await
    .ok()["event_id"]
        .clone();
    // Another room: a different transaction.
    let other_room = send(
        &alice,
        &room2,
        json!({"msgtype": "m.text", "body": "a"}),
        "same",
    )
    .await
    .ok()["event_id"]
        .clone();
    assert_ne!(base, other_room);
    // Another event type: a different transaction.
    let other_type = alice
        .put(
            &format!("/rooms/{}/send/org.example.t/same", enc(&room)),
            json!({"a": 1}),
        )
        .await
        .ok()["event_id"]
        .clone();
    assert_ne!(base, other_type);
    // Another device of the same user: a different transaction.
    let login = app
        .request(Method::POST, "/_matrix/client/v3/login", None, Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "correct horse"})))
        .await
        .ok();
    let alice2 = User {
        token: login["access_token"].as_str().unwrap().into(),
        device_id: login["device_id"].as_str().unwrap().into(),
        ..alice.clone()
    };
    let other_device = send(
        &alice2,
        &room,
        json!({"msgtype": "m.text", "body": "a"}),
        "same",
    )
    .await
    .ok()["event_id"]
        .clone();
    assert_ne!(base, other_device);
    // The r0 path is the same endpoint.
    let r0 = alice
        .put(
            &format!(
                "/_matrix/client/r0/rooms/{}/send/m.room.message/same",
                enc(&room)
            ),
            json!({"msgtype": "m.text", "body": "a"}),
        )
        .await
        .ok();
    assert_eq!(r0["event_id"], base);
}

#[tokio::test]
async fn txn_survives_a_restart() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let before = send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "a"}),
        "persist",
    )
    .await
    .ok();
    // A new process on the same database: nothing is remembered in memory.
    let restarted = spawn_peer(&app).await;
    let alice_again = restarted.as_user(&alice);
    let after = send(
        &alice_again,
        &room,
        json!({"msgtype": "m.text", "body": "a"}),
        "persist",
    )
    .await
    .ok();
    assert_eq!(before["event_id"], after["event_id"]);
}

#[tokio::test]
async fn racing_retries_create_one_event() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let peer = spawn_peer(&app).await;
    let alice_b = peer.as_user(&alice);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (user, room) = (
            if i % 2 == 0 {
                alice.clone()
            } else {
                alice_b.clone()
            },
            room.clone(),
        );
        tasks.push(tokio::spawn(async move {
            send(
                &user,
                &room,
                json!({"msgtype": "m.text", "body": "race"}),
                "racer",
            )
            .await
            .ok()["event_id"]
                .clone()
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let page = messages(&alice, &room, "dir=b&limit=50").await;
    assert_eq!(
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["content"]["body"] == "race")
            .count(),
        1
    );
}

#[tokio::test]
async fn transaction_id_is_visible_to_the_sending_device_only() {
    let app = spawn_app().await;
    let (alice, bob, room) = joined_pair(&app).await;
    let login = app
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "user": "alice", "password": "correct horse"})),
        )
        .await
        .ok();
    let alice_phone = User {
        token: login["access_token"].as_str().unwrap().into(),
        device_id: login["device_id"].as_str().unwrap().into(),
        ..alice.clone()
    };
    let id = send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "echo"}),
        "echo-txn",
    )
    .await
    .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let txn_of = |e: &Value| e["unsigned"]["transaction_id"].clone();
    let find = |events: &Value| {
        events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_id"] == id.as_str())
            .cloned()
            .unwrap()
    };
    // /event
    assert_eq!(
        txn_of(&get_event(&alice, &room, &id).await.ok()),
        "echo-txn"
    );
    assert_eq!(
        txn_of(&get_event(&alice_phone, &room, &id).await.ok()),
        Value::Null
    );
    assert_eq!(txn_of(&get_event(&bob, &room, &id).await.ok()), Value::Null);
    // /messages
    for (user, expected) in [
        (&alice, json!("echo-txn")),
        (&alice_phone, Value::Null),
        (&bob, Value::Null),
    ] {
        let page = messages(user, &room, "dir=b&limit=5").await;
        assert_eq!(txn_of(&find(&page["chunk"])), expected);
        // /context
        let ctx = user
            .get(&format!("/rooms/{}/context/{}", enc(&room), enc(&id)))
            .await
            .ok();
        assert_eq!(txn_of(&ctx["event"]), expected);
        // /sync
        let sync = user.get("/sync").await.ok();
        assert_eq!(
            txn_of(&find(&sync["rooms"]["join"][&room]["timeline"]["events"])),
            expected
        );
    }
}

#[tokio::test]
async fn concurrent_senders_get_one_linear_order() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let mut users = vec![alice.clone()];
    for i in 0..4 {
        let u = app.register(&format!("user{i}")).await;
        join(&u, &room).await;
        users.push(u);
    }
    let mut tasks = Vec::new();
    for (n, user) in users.iter().enumerate() {
        let (user, room) = (user.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..10 {
                mine.push(
                    send(
                        &user,
                        &room,
                        json!({"msgtype": "m.text", "body": format!("{n}-{i}")}),
                        &format!("c{i}"),
                    )
                    .await
                    .ok()["event_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            mine
        }));
    }
    let mut per_sender = Vec::new();
    for t in tasks {
        per_sender.push(t.await.unwrap());
    }
    // Every reader sees the same order, and each sender's messages appear in the order sent.
    let order_a = ids(&messages(&alice, &room, "dir=f&limit=200").await["chunk"]);
    let order_b = ids(&messages(&users[3], &room, "dir=f&limit=200").await["chunk"]);
    assert_eq!(order_a, order_b);
    for mine in per_sender {
        let positions: Vec<usize> = mine
            .iter()
            .map(|id| order_a.iter().position(|x| x == id).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "sender order broken: {positions:?}"
        );
    }
    // prev_events chain: each event's depth is one more than the previous.
    let events = messages(&alice, &room, "dir=f&limit=200").await;
    assert_eq!(events["chunk"].as_array().unwrap().len(), order_a.len());
}

#[tokio::test]
async fn pagination_tokens_walk_every_event_once_both_ways() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(send_ok(&alice, &room, &format!("m{i}")).await);
    }
    // Backwards from the end, 7 at a time.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let q = match &from {
            Some(f) => format!("dir=b&limit=7&from={f}"),
            None => "dir=b&limit=7".into(),
        };
        let page = messages(&alice, &room, &q).await;
        seen.extend(ids(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    let messages_seen: Vec<&String> = seen.iter().filter(|id| sent.contains(id)).collect();
    assert_eq!(messages_seen.len(), 25);
    // Forwards from the start gives the reverse order.
    let mut forward = Vec::new();
    let mut from = "s0".to_owned();
    loop {
        let page = messages(&alice, &room, &format!("dir=f&limit=6&from={from}")).await;
        forward.extend(ids(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    let mut backward = seen.clone();
    backward.reverse();
    assert_eq!(forward, backward);
}

#[tokio::test]
async fn messages_filter_by_type_and_sender() {
    let app = spawn_app().await;
    let (alice, bob, room) = joined_pair(&app).await;
    send_ok(&alice, &room, "from alice").await;
    send_ok(&bob, &room, "from bob").await;
    alice
        .put(
            &format!("/rooms/{}/send/org.example.x/1", enc(&room)),
            json!({"url": "mxc://a/b"}),
        )
        .await
        .ok();
    let f = enc(&json!({"types": ["m.room.message"], "senders": [bob.user_id]}).to_string());
    let page = messages(&alice, &room, &format!("dir=b&filter={f}")).await;
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 1);
    assert_eq!(chunk[0]["content"]["body"], "from bob");
    let f = enc(&json!({"not_types": ["m.room.*"]}).to_string());
    let page = messages(&alice, &room, &format!("dir=b&filter={f}")).await;
    assert!(
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "org.example.x")
    );
    let f = enc(&json!({"contains_url": true}).to_string());
    let page = messages(&alice, &room, &format!("dir=b&filter={f}")).await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), 1);
    // Bad parameters are 400s.
    alice
        .get(&format!("/rooms/{}/messages?dir=x", enc(&room)))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .get(&format!(
            "/rooms/{}/messages?dir=b&from=garbage",
            enc(&room)
        ))
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn historical_display_names_page_by_page() {
    let app = spawn_app().await;
    let (alice, bob, room) = joined_pair(&app).await;
    alice
        .put(
            &format!("/profile/{}/displayname", enc(&alice.user_id)),
            json!({"displayname": "Old Alice"}),
        )
        .await
        .ok();
    for i in 0..5 {
        send_ok(&alice, &room, &format!("old {i}")).await;
    }
    alice
        .put(
            &format!("/profile/{}/displayname", enc(&alice.user_id)),
            json!({"displayname": "New Alice"}),
        )
        .await
        .ok();
    for i in 0..5 {
        send_ok(&alice, &room, &format!("new {i}")).await;
    }
    let f = enc(&json!({"lazy_load_members": true, "types": ["m.room.message"]}).to_string());
    let name_in = |page: &Value| -> String {
        page["state"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["state_key"] == alice.user_id.as_str())
            .map(|e| e["content"]["displayname"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let newer = messages(&bob, &room, &format!("dir=b&limit=5&filter={f}")).await;
    assert!(
        newer["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["content"]["body"].as_str().unwrap().starts_with("new"))
    );
    assert_eq!(name_in(&newer), "New Alice");
    let end = newer["end"].as_str().unwrap();
    let older = messages(&bob, &room, &format!("dir=b&limit=5&filter={f}&from={end}")).await;
    assert!(
        older["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["content"]["body"].as_str().unwrap().starts_with("old"))
    );
    assert_eq!(name_in(&older), "Old Alice");
}

#[tokio::test]
async fn redaction_rules() {
    let app = spawn_app().await;
    let (alice, bob, room) = joined_pair(&app).await;
    let mine = send_ok(&bob, &room, "bob's secret").await;
    let alices = send_ok(&alice, &room, "alice's").await;
    // Bob (power 0) cannot redact Alice's event; he can redact his own.
    bob.put(
        &format!("/rooms/{}/redact/{}/r1", enc(&room), enc(&alices)),
        json!({}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    let redaction = bob
        .put(
            &format!("/rooms/{}/redact/{}/r2", enc(&room), enc(&mine)),
            json!({"reason": "oops"}),
        )
        .await
        .ok();
    let event = get_event(&alice, &room, &mine).await.ok();
    assert_eq!(event["content"], json!({}), "{event}");
    assert_eq!(
        event["unsigned"]["redacted_because"]["event_id"],
        redaction["event_id"]
    );
    assert_eq!(
        event["unsigned"]["redacted_because"]["content"]["reason"],
        "oops"
    );
    assert_eq!(event["event_id"], mine.as_str());
    // The room creator (power 100) may redact Bob's events.
    let bobs = send_ok(&bob, &room, "spam").await;
    alice
        .put(
            &format!("/rooms/{}/redact/{}/r3", enc(&room), enc(&bobs)),
            json!({}),
        )
        .await
        .ok();
    // Unknown event: 404.
    alice
        .put(&format!("/rooms/{}/redact/$nope/r4", enc(&room)), json!({}))
        .await
        .expect_err(404, "M_NOT_FOUND");
    // The redaction is idempotent by txn too.
    let again = bob
        .put(
            &format!("/rooms/{}/redact/{}/r2", enc(&room), enc(&mine)),
            json!({"reason": "oops"}),
        )
        .await
        .ok();
    assert_eq!(again["event_id"], redaction["event_id"]);
}

#[tokio::test]
async fn relations_and_bundled_aggregations() {
    let app = spawn_app().await;
    let (alice, bob, room) = joined_pair(&app).await;
    let root = send_ok(&alice, &room, "root").await;
    let edit = json!({"msgtype": "m.text", "body": "* root edited", "m.new_content": {"msgtype": "m.text", "body": "root edited"},
                      "m.relates_to": {"rel_type": "m.replace", "event_id": root}});
    let edit_id = send(&alice, &room, edit, "edit").await.ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reaction = bob
        .put(
            &format!("/rooms/{}/send/m.reaction/re1", enc(&room)),
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}),
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut thread_ids = Vec::new();
    for i in 0..3 {
        let content = json!({"msgtype": "m.text", "body": format!("in thread {i}"), "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
        thread_ids.push(
            send(&bob, &room, content, &format!("th{i}")).await.ok()["event_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let event = get_event(&alice, &room, &root).await.ok();
    let rel = &event["unsigned"]["m.relations"];
    assert_eq!(rel["m.replace"]["event_id"], edit_id.as_str(), "{event}");
    assert_eq!(rel["m.thread"]["count"], 3);
    assert_eq!(
        rel["m.thread"]["latest_event"]["event_id"],
        thread_ids[2].as_str()
    );
    assert_eq!(rel["m.thread"]["current_user_participated"], true);
    // /relations, all and by type, paginated.
    let all = alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/relations/{}",
            enc(&room),
            enc(&root)
        ))
        .await
        .ok();
    assert_eq!(all["chunk"].as_array().unwrap().len(), 5);
    let page = alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/relations/{}/m.thread?limit=2",
            enc(&room),
            enc(&root)
        ))
        .await
        .ok();
    assert_eq!(
        ids(&page["chunk"]),
        vec![thread_ids[2].clone(), thread_ids[1].clone()]
    );
    let next = page["next_batch"].as_str().unwrap();
    let page2 = alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/relations/{}/m.thread?limit=2&from={next}",
            enc(&room),
            enc(&root)
        ))
        .await
        .ok();
    assert_eq!(ids(&page2["chunk"]), vec![thread_ids[0].clone()]);
    assert!(page2.get("next_batch").is_none());
    let reactions = alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/relations/{}/m.annotation/m.reaction",
            enc(&room),
            enc(&root)
        ))
        .await
        .ok();
    assert_eq!(ids(&reactions["chunk"]), vec![reaction]);
    // /threads lists the root.
    let threads = alice
        .get(&format!("/_matrix/client/v1/rooms/{}/threads", enc(&room)))
        .await
        .ok();
    assert_eq!(ids(&threads["chunk"]), vec![root.clone()]);
    // An edit by someone else is not bundled as the replacement.
    let fake = json!({"msgtype": "m.text", "body": "* hacked", "m.new_content": {"msgtype": "m.text", "body": "hacked"},
                      "m.relates_to": {"rel_type": "m.replace", "event_id": root}});
    send(&bob, &room, fake, "fake").await.ok();
    let event = get_event(&alice, &room, &root).await.ok();
    assert_eq!(
        event["unsigned"]["m.relations"]["m.replace"]["event_id"],
        edit_id.as_str()
    );
}

#[tokio::test]
async fn context_returns_surrounding_events_and_state() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"name": "ctx"})).await;
    let mut sent = Vec::new();
    for i in 0..9 {
        sent.push(send_ok(&alice, &room, &format!("c{i}")).await);
    }
    let ctx = alice
        .get(&format!(
            "/rooms/{}/context/{}?limit=4",
            enc(&room),
            enc(&sent[4])
        ))
        .await
        .ok();
    assert_eq!(ctx["event"]["event_id"], sent[4].as_str());
    assert_eq!(
        ids(&ctx["events_before"]),
        vec![sent[3].clone(), sent[2].clone()]
    );
    assert_eq!(
        ids(&ctx["events_after"]),
        vec![sent[5].clone(), sent[6].clone()]
    );
    assert!(
        ctx["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name")
    );
    // The tokens continue with /messages.
    let start = ctx["start"].as_str().unwrap();
    let before = messages(&alice, &room, &format!("dir=b&limit=1&from={start}")).await;
    assert_eq!(ids(&before["chunk"]), vec![sent[1].clone()]);
}

#[tokio::test]
async fn timestamp_to_event_finds_the_nearest_event() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let id = send_ok(&alice, &room, "stamp").await;
    let ts = get_event(&alice, &room, &id).await.ok()["origin_server_ts"]
        .as_i64()
        .unwrap();
    let found = alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={}&dir=b",
            enc(&room),
            ts + 1
        ))
        .await
        .ok();
    assert_eq!(found["event_id"], id.as_str());
    alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={}&dir=f",
            enc(&room),
            ts + 10_000
        ))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn set_visibility(alice: &User, room: &str, setting: &str) {
    alice
        .put(
            &format!("/rooms/{}/state/m.room.history_visibility", enc(room)),
            json!({"history_visibility": setting}),
        )
        .await
        .ok();
}

/// Bob joins after some history: what he sees depends on history_visibility.
async fn history_seen_by_late_joiner(setting: &str) -> (Vec<String>, Vec<String>) {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    set_visibility(&alice, &room, setting).await;
    let before = send_ok(&alice, &room, "before").await;
    alice
        .post(
            &format!("/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    let invited = send_ok(&alice, &room, "while invited").await;
    join(&bob, &room).await;
    let after = send_ok(&alice, &room, "after").await;
    let seen = ids(&messages(&bob, &room, "dir=b&limit=100").await["chunk"]);
    let candidates = vec![before, invited, after];
    let visible = candidates
        .iter()
        .filter(|id| seen.contains(id))
        .cloned()
        .collect();
    (candidates, visible)
}

#[tokio::test]
async fn history_visibility_shared_shows_everything_to_members() {
    let (all, seen) = history_seen_by_late_joiner("shared").await;
    assert_eq!(seen, all);
}

#[tokio::test]
async fn history_visibility_invited_shows_from_the_invite() {
    let (all, seen) = history_seen_by_late_joiner("invited").await;
    assert_eq!(seen, all[1..].to_vec());
}

#[tokio::test]
async fn history_visibility_joined_shows_from_the_join() {
    let (all, seen) = history_seen_by_late_joiner("joined").await;
    assert_eq!(seen, all[2..].to_vec());
}

#[tokio::test]
async fn history_visibility_world_readable_is_open_to_non_members() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let eve = app.register("eve").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let id = send_ok(&alice, &room, "secret").await;
    // Not world-readable: a stranger is refused.
    eve.get(&format!("/rooms/{}/messages?dir=b", enc(&room)))
        .await
        .expect_err(403, "M_FORBIDDEN");
    get_event(&eve, &room, &id)
        .await
        .expect_err(404, "M_NOT_FOUND");
    set_visibility(&alice, &room, "world_readable").await;
    let id2 = send_ok(&alice, &room, "public").await;
    let seen = ids(&messages(&eve, &room, "dir=b&limit=50").await["chunk"]);
    assert!(seen.contains(&id2));
    assert!(
        !seen.contains(&id),
        "events from before world_readable stay hidden"
    );
}

#[tokio::test]
async fn a_user_who_left_sees_nothing_after_leaving() {
    let app = spawn_app().await;
    let (alice, bob, room) = joined_pair(&app).await;
    let during = send_ok(&alice, &room, "while bob is here").await;
    bob.post(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await
        .ok();
    let after = send_ok(&alice, &room, "after bob left").await;
    let seen = ids(&messages(&bob, &room, "dir=b&limit=50").await["chunk"]);
    assert!(seen.contains(&during));
    assert!(!seen.contains(&after));
    get_event(&bob, &room, &after)
        .await
        .expect_err(404, "M_NOT_FOUND");
    // Sending is refused once left.
    send(
        &bob,
        &room,
        json!({"msgtype": "m.text", "body": "x"}),
        "gone",
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
}

/// The `prev_events` of a stored event.
async fn prev_events(app: &TestApp, event_id: &str) -> Vec<String> {
    let pdu: String = sqlx::query_scalar("SELECT pdu FROM events WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let pdu: Value = serde_json::from_str(&pdu).unwrap();
    serde_json::from_value(pdu["prev_events"].clone()).unwrap()
}

#[tokio::test]
async fn a_send_built_on_stale_cached_state_is_redone_on_the_real_head() {
    // Process A's cached view of the room is put back to before process B's message: A's unlocked
    // attempt must fail its head check, and the locked retry chain the event after B's.
    let app_a = spawn_app().await;
    let app_b = spawn_peer(&app_a).await;
    let alice = app_a.register("alice").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    send_ok(&alice, &room, "first").await;
    let stale = app_a.state.rooms.get(&room).expect("cached after a send");
    let from_b = send_ok(&app_b.as_user(&alice), &room, "through B").await;
    // Let A hear of B's write, then make A's cache stale again.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app_a.state.rooms.put(stale);
    let from_a = send_ok(&alice, &room, "through A again").await;
    assert_eq!(prev_events(&app_a, &from_a).await, vec![from_b.clone()]);
    // And the room's timeline is one chain in the order the sends were acknowledged.
    let messages = alice
        .get(&format!("/rooms/{}/messages?dir=b&limit=3", enc(&room)))
        .await
        .ok();
    let bodies: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(bodies, vec!["through A again", "through B", "first"]);
}

#[tokio::test]
async fn a_transaction_retried_after_other_messages_still_answers_its_first_event() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let path = format!("/rooms/{}/send/m.room.message/retry-me", enc(&room));
    let first = alice
        .put(&path, json!({"msgtype": "m.text", "body": "once"}))
        .await
        .ok()["event_id"]
        .clone();
    send_ok(&alice, &room, "in between").await;
    let again = alice
        .put(&path, json!({"msgtype": "m.text", "body": "twice?"}))
        .await
        .ok()["event_id"]
        .clone();
    assert_eq!(first, again);
    let head = send_ok(&alice, &room, "after").await;
    // The retry stored nothing: the next message follows "in between"'s successor chain directly.
    let messages = alice
        .get(&format!("/rooms/{}/messages?dir=b&limit=3", enc(&room)))
        .await
        .ok();
    let ids: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], head);
    assert_eq!(ids[2], first.as_str().unwrap());
}

#[tokio::test]
async fn a_member_who_joined_through_another_process_can_send_at_once() {
    // Process A's cached state still says Bob is not in the room (his join went through B): A must
    // not refuse his message on that word alone.
    let app_a = spawn_app().await;
    let app_b = spawn_peer(&app_a).await;
    let alice = app_a.register("alice").await;
    let bob = app_a.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    send_ok(&alice, &room, "welcome").await;
    let before_the_join = app_a.state.rooms.get(&room).expect("cached after a send");
    app_b
        .as_user(&bob)
        .post(&format!("/join/{}", enc(&room)), json!({}))
        .await
        .ok();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app_a.state.rooms.put(before_the_join);
    send_ok(&bob, &room, "hello from bob").await;
}

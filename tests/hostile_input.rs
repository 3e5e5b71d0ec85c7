//! Hostile input: U+0000 anywhere a client can put a string, malformed pagination tokens,
//! requests that ask for unbounded work, and answers that must not carry `null` where the schema
//! has a string.

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::e2ee::one_time_keys;
use crate::rooms::{create_room, join};

/// Row counts of the tables a refused request could have written to.
async fn stored_rows(app: &TestApp) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for table in [
        "events",
        "event_txns",
        "account_data",
        "filters",
        "pushers",
        "room_aliases",
        "media",
        "users",
        "devices",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&app.db)
            .await
            .unwrap();
        counts.push((table, n));
    }
    counts
}

#[tokio::test]
async fn nul_characters_are_refused_in_paths_queries_and_bodies() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let (u, r, d) = (enc(&alice.user_id), enc(&room), alice.device_id.clone());
    let nul = "a\u{0}b";
    let before = stored_rows(&app).await;
    let profile_before = alice.get(&format!("/profile/{u}")).await.ok();
    let device_before = alice.get(&format!("/devices/{d}")).await.ok();

    let message = json!({"msgtype": "m.text", "body": "hello"});
    let with = |key: &str, value: Value| {
        let mut m = message.clone();
        m[key] = value;
        m
    };
    let pusher = |field: &str| {
        let mut p = json!({
            "kind": "http", "app_id": "org.example.app", "pushkey": "key1",
            "app_display_name": "App", "device_display_name": "Phone", "lang": "en",
            "data": {"url": "https://push.example.org/_matrix/push/v1/notify"},
        });
        p[field] = json!(nul);
        p
    };
    let param = "M_INVALID_PARAM";
    let body = "M_BAD_JSON";
    #[rustfmt::skip]
    let cases: Vec<(&str, Method, String, Option<Value>, &str)> = vec![
        // Path parameters.
        ("event type", Method::PUT, format!("/rooms/{r}/send/m.a%00b/t1"), Some(message.clone()), param),
        ("txnId", Method::PUT, format!("/rooms/{r}/send/m.room.message/t%001"), Some(message.clone()), param),
        ("room ID", Method::PUT, "/rooms/%21a%00b/send/m.room.message/t1".into(), Some(message.clone()), param),
        ("state key", Method::PUT, format!("/rooms/{r}/state/m.x/a%00b"), Some(json!({})), param),
        ("state event type", Method::GET, format!("/rooms/{r}/state/m.a%00b/"), None, param),
        ("alias (create)", Method::PUT, "/directory/room/%23a%00b:test.local".into(), Some(json!({"room_id": room})), param),
        ("alias (resolve)", Method::GET, "/directory/room/%23a%00b:test.local".into(), None, param),
        ("device ID", Method::PUT, "/devices/DEV%00".into(), Some(json!({"display_name": "x"})), param),
        ("account data type", Method::PUT, format!("/user/{u}/account_data/m.a%00b"), Some(json!({})), param),
        ("room account data type", Method::PUT, format!("/user/{u}/rooms/{r}/account_data/m.a%00b"), Some(json!({})), param),
        ("tag", Method::PUT, format!("/user/{u}/rooms/{r}/tags/t%00"), Some(json!({})), param),
        ("push rule ID", Method::PUT, "/pushrules/global/override/r%00".into(), Some(json!({"actions": ["notify"], "conditions": []})), param),
        ("to-device type", Method::PUT, "/sendToDevice/m.a%00b/t1".into(), Some(json!({"messages": {}})), param),
        ("receipt event ID", Method::POST, format!("/rooms/{r}/receipt/m.read/%24e%00v"), Some(json!({})), param),
        ("user ID", Method::GET, "/profile/%40a%00b:test.local".into(), None, param),
        // Query parameters.
        ("from", Method::GET, format!("/rooms/{r}/messages?dir=b&from=s1%00"), None, param),
        ("inline filter (percent-encoded)", Method::GET, format!("/sync?filter={}", enc(r#"{"room":{"rooms":["a\u0000b"]}}"#)), None, param),
        ("inline filter (raw)", Method::GET, "/sync?filter=%7B%22room%22%3A%7B%22rooms%22%3A%5B%22a%00%22%5D%7D%7D".into(), None, param),
        ("since", Method::GET, "/publicRooms?since=a%00".into(), None, param),
        // Bodies: values, keys, nested keys.
        ("content value", Method::PUT, format!("/rooms/{r}/send/m.room.message/t2"), Some(with("body", json!(nul))), body),
        ("content key", Method::PUT, format!("/rooms/{r}/send/m.room.message/t3"), Some(with(nul, json!(1))), body),
        ("nested content key", Method::PUT, format!("/rooms/{r}/send/m.room.message/t4"), Some(with("x", json!({"y": [{nul: true}]}))), body),
        ("custom event value", Method::PUT, format!("/rooms/{r}/send/m.custom/t5"), Some(json!({"a": {"b": nul}})), body),
        ("state content", Method::PUT, format!("/rooms/{r}/state/m.room.topic/"), Some(json!({"topic": nul})), body),
        ("redaction reason", Method::PUT, format!("/rooms/{r}/redact/%24e/t6"), Some(json!({"reason": nul})), body),
        ("account data", Method::PUT, format!("/user/{u}/account_data/m.x"), Some(json!({"a": nul})), body),
        ("account data key", Method::PUT, format!("/user/{u}/account_data/m.x"), Some(json!({nul: 1})), body),
        ("room account data", Method::PUT, format!("/user/{u}/rooms/{r}/account_data/m.x"), Some(json!({"a": [nul]})), body),
        ("tag content", Method::PUT, format!("/user/{u}/rooms/{r}/tags/t"), Some(json!({"order": 0.5, nul: 1})), body),
        ("push rule pattern", Method::PUT, "/pushrules/global/content/r1".into(), Some(json!({"actions": ["notify"], "pattern": nul})), body),
        ("push rule condition", Method::PUT, "/pushrules/global/override/r2".into(), Some(json!({"actions": ["notify"], "conditions": [{"kind": "event_match", "key": "content.body", "pattern": nul}]})), body),
        ("push rule actions", Method::PUT, "/pushrules/global/override/.m.rule.master/actions".into(), Some(json!({"actions": [{"set_tweak": nul}]})), body),
        ("pusher pushkey", Method::POST, "/pushers/set".into(), Some(pusher("pushkey")), body),
        ("pusher display name", Method::POST, "/pushers/set".into(), Some(pusher("app_display_name")), body),
        ("filter", Method::POST, format!("/user/{u}/filter"), Some(json!({"room": {"types": [nul]}})), body),
        ("device display name", Method::PUT, format!("/devices/{d}"), Some(json!({"display_name": nul})), body),
        ("displayname", Method::PUT, format!("/profile/{u}/displayname"), Some(json!({"displayname": nul})), body),
        ("avatar_url", Method::PUT, format!("/profile/{u}/avatar_url"), Some(json!({"avatar_url": format!("mxc://test.local/{nul}")})), body),
        ("createRoom name", Method::POST, "/createRoom".into(), Some(json!({"name": nul})), body),
        ("alias body", Method::PUT, "/directory/room/%23ok:test.local".into(), Some(json!({"room_id": nul})), body),
        ("user directory search", Method::POST, "/user_directory/search".into(), Some(json!({"search_term": nul})), body),
        ("public rooms search", Method::POST, "/publicRooms".into(), Some(json!({"filter": {"generic_search_term": nul}})), body),
        ("to-device content", Method::PUT, "/sendToDevice/m.x/t7".into(), Some(json!({"messages": {alice.user_id.clone(): {d.clone(): {"a": nul}}}})), body),
        ("one-time key", Method::POST, "/keys/upload".into(), Some(json!({"one_time_keys": {"signed_curve25519:AAA": {"key": nul, "signatures": {}}}})), body),
        ("receipt body", Method::POST, format!("/rooms/{r}/read_markers"), Some(json!({"m.fully_read": nul})), body),
        ("typing", Method::PUT, format!("/rooms/{r}/typing/{u}"), Some(json!({"typing": true, nul: 1})), body),
        ("presence", Method::PUT, format!("/presence/{u}/status"), Some(json!({"presence": "online", "status_msg": nul})), body),
        ("login", Method::POST, "/login".into(), Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": nul}, "password": "x"})), body),
        ("register", Method::POST, "/register".into(), Some(json!({"username": nul, "password": "x", "auth": {"type": "m.login.dummy"}})), body),
    ];
    let mut wrong = Vec::new();
    for (name, method, path, payload, errcode) in &cases {
        let r = alice.request(method.clone(), path, payload.clone()).await;
        if (r.status.as_u16(), r.errcode()) != (400, *errcode) {
            wrong.push(format!(
                "{name}: {method} {path} answered {} {}",
                r.status, r.body
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} positions:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );

    // A media filename is a query parameter like any other (the body itself is binary and free).
    let upload = |filename: &str| {
        app.http
            .post(format!(
                "{}/_matrix/media/v3/upload?filename={filename}",
                app.base_url
            ))
            .bearer_auth(&alice.token)
            .header("content-type", "application/octet-stream")
            .body(vec![0u8, 1, 0, 2])
    };
    let refused = upload("a%00b.txt").send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["errcode"],
        "M_INVALID_PARAM"
    );

    // Nothing reached the database, and the server still works.
    assert_eq!(stored_rows(&app).await, before);
    assert_eq!(
        alice.get(&format!("/profile/{u}")).await.ok(),
        profile_before
    );
    assert_eq!(
        alice.get(&format!("/devices/{d}")).await.ok(),
        device_before
    );
    assert_eq!(upload("a.bin").send().await.unwrap().status(), 200);
    alice
        .put(&format!("/rooms/{r}/send/m.room.message/ok"), message)
        .await
        .ok();
    alice.get("/sync").await.ok();
}

#[tokio::test]
async fn an_escaped_backslash_before_u0000_is_ordinary_text() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    // The JSON text is "\\u0000": a backslash, then the letters u0000. Not U+0000.
    let text = r"\u0000 and \\u0000";
    let event_id = alice
        .put(
            &format!("/rooms/{}/send/m.room.message/t1", enc(&room)),
            json!({"msgtype": "m.text", "body": text, r"\u0000": text}),
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = alice
        .get(&format!("/rooms/{}/event/{}", enc(&room), enc(&event_id)))
        .await
        .ok();
    assert_eq!(event["content"]["body"], text);
    assert_eq!(event["content"][r"\u0000"], text);
    // A percent sign followed by "00" only when it is not an escape of U+0000: %2500 is "%00".
    alice
        .put(
            &format!("/user/{}/account_data/m.a%2500", enc(&alice.user_id)),
            json!({"k": 1}),
        )
        .await
        .ok();
    let v = alice
        .get(&format!(
            "/user/{}/account_data/{}",
            enc(&alice.user_id),
            enc("m.a%00")
        ))
        .await
        .ok();
    assert_eq!(v, json!({"k": 1}));
}

// ---- malformed pagination tokens ----

#[tokio::test]
async fn malformed_public_rooms_since_tokens_are_invalid_params() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    create_room(&alice, json!({"visibility": "public"})).await;
    // Unauthenticated, as the directory is.
    for since in [
        "é",
        "éa_b",
        "n",
        "p",
        "x1_!a:test.local",
        "nfoo_!a",
        "garbage",
        "_",
    ] {
        app.get(&format!(
            "/_matrix/client/v3/publicRooms?since={}",
            enc(since)
        ))
        .await
        .expect_err(400, "M_INVALID_PARAM");
        alice
            .post("/publicRooms", json!({"since": since}))
            .await
            .expect_err(400, "M_INVALID_PARAM");
    }
    // As Synapse: an empty token is the first page.
    let v = app.get("/_matrix/client/v3/publicRooms?since=").await.ok();
    assert_eq!(v["chunk"].as_array().unwrap().len(), 1);
    let v = alice.post("/publicRooms", json!({"since": ""})).await.ok();
    assert_eq!(v["chunk"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_pagination_tokens_are_invalid_params_everywhere() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let r = enc(&room);
    let event_id = alice
        .put(
            &format!("/rooms/{r}/send/m.room.message/t1"),
            json!({"msgtype": "m.text", "body": "root"}),
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = enc(&event_id);
    for token in ["é", "sé", "s-1", "s", "garbage", "s1_é"] {
        let t = enc(token);
        for path in [
            format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&from={t}"),
            format!("/_matrix/client/v3/rooms/{r}/messages?dir=f&from=s0&to={t}"),
            format!("/_matrix/client/v3/sync?since={t}"),
            format!("/_matrix/client/v1/rooms/{r}/relations/{e}?from={t}"),
            format!("/_matrix/client/v1/rooms/{r}/threads?from={t}"),
        ] {
            if token == "s1_é" && !path.contains("/sync") {
                continue; // only the position is read there; the rest is other streams'
            }
            alice.get(&path).await.expect_err(400, "M_INVALID_PARAM");
        }
    }
    for token in ["é", "x", "1.5"] {
        alice
            .get(&format!("/notifications?from={}", enc(token)))
            .await
            .expect_err(400, "M_INVALID_PARAM");
    }
}

/// The deprecated `access_token` query parameter is percent-decoded by hand: a `%` followed by a
/// multi-byte character must not split it.
#[tokio::test]
async fn an_access_token_with_a_broken_escape_is_just_unknown() {
    let app = spawn_app().await;
    let address = app.base_url.strip_prefix("http://").unwrap().to_owned();
    for target in [
        "/_matrix/client/v3/account/whoami?access_token=%a\u{e9}",
        "/_matrix/client/v3/account/whoami?access_token=%\u{e9}",
        "/_matrix/client/v3/account/whoami?access_token=%4",
    ] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!("GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        let status = answer.split(' ').nth(1).unwrap_or_default().to_owned();
        // hyper may refuse non-ASCII in the target itself (400); never a 500 or a dropped connection.
        assert!(status == "401" || status == "400", "{target}: {answer}");
    }
}

// ---- bounded /keys/claim and /keys/query ----

#[tokio::test]
async fn keys_claim_answers_at_most_1000_devices_per_request() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": one_time_keys("A", 3)}),
        )
        .await
        .ok();
    // 1,000 devices of "@aaa" sort before alice's: hers is the 1,001st.
    let fake: serde_json::Map<String, Value> = (0..1000)
        .map(|i| (format!("DEV{i:04}"), json!("signed_curve25519")))
        .collect();
    let claim = json!({"one_time_keys": {
        "@aaa:test.local": fake,
        alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"},
    }});
    let v = bob.post("/keys/claim", claim).await.ok();
    assert_eq!(v["one_time_keys"], json!({}), "the excess is not claimed");
    assert_eq!(v["failures"]["test.local"]["status"], 413, "{v}");

    // Within the limit, the same device's key is claimed.
    let fake: serde_json::Map<String, Value> = (0..999)
        .map(|i| (format!("DEV{i:04}"), json!("signed_curve25519")))
        .collect();
    let claim = json!({"one_time_keys": {
        "@aaa:test.local": fake,
        alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"},
    }});
    let v = bob.post("/keys/claim", claim).await.ok();
    assert_eq!(v["failures"], json!({}));
    assert_eq!(
        v["one_time_keys"][&alice.user_id][&alice.device_id]
            .as_object()
            .unwrap()
            .len(),
        1
    );
    let counts = alice.post("/keys/upload", json!({})).await.ok();
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 2);
}

#[tokio::test]
async fn keys_query_answers_at_most_1000_users_per_request() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    alice
        .post(
            "/keys/upload",
            json!({"device_keys": {
                "user_id": alice.user_id, "device_id": alice.device_id,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                "keys": {format!("curve25519:{}", alice.device_id): "k"},
            }}),
        )
        .await;
    let query = |n: usize| {
        let mut users: serde_json::Map<String, Value> = (0..n)
            .map(|i| (format!("@aaa{i:04}:test.local"), json!([])))
            .collect();
        users.insert(alice.user_id.clone(), json!([]));
        json!({"device_keys": users})
    };
    let v = bob.post("/keys/query", query(1000)).await.ok();
    assert!(
        v["device_keys"].get(&alice.user_id).is_none(),
        "{}",
        v["failures"]
    );
    assert_eq!(v["failures"]["test.local"]["status"], 413);
    assert_eq!(v["device_keys"].as_object().unwrap().len(), 1000);

    let v = bob.post("/keys/query", query(999)).await.ok();
    assert_eq!(v["failures"], json!({}));
    assert!(v["device_keys"][&alice.user_id].is_object());
}

// ---- no null where the schema has a string ----

#[tokio::test]
async fn joined_members_and_user_directory_leave_out_unset_profile_fields() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    alice
        .put(
            &format!("/profile/{}/avatar_url", enc(&alice.user_id)),
            json!({"avatar_url": "mxc://test.local/abc"}),
        )
        .await
        .ok();

    let v = bob
        .get(&format!("/rooms/{}/joined_members", enc(&room)))
        .await
        .ok();
    let bob_entry = v["joined"][&bob.user_id].as_object().unwrap();
    assert!(!bob_entry.contains_key("avatar_url"), "{v}");
    assert!(bob_entry.values().all(Value::is_string), "{v}");
    assert_eq!(
        v["joined"][&alice.user_id]["avatar_url"],
        "mxc://test.local/abc"
    );

    let v = alice
        .post("/user_directory/search", json!({"search_term": "bob"}))
        .await
        .ok();
    let result = v["results"][0].as_object().unwrap();
    assert_eq!(result["user_id"], bob.user_id.as_str());
    assert!(!result.contains_key("avatar_url"), "{v}");
    assert!(result.values().all(Value::is_string), "{v}");
}

#[tokio::test]
async fn joined_members_leave_out_a_null_display_name() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    alice
        .put(
            &format!(
                "/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(&alice.user_id)
            ),
            json!({"membership": "join", "displayname": null, "avatar_url": null}),
        )
        .await
        .ok();
    let v = alice
        .get(&format!("/rooms/{}/joined_members", enc(&room)))
        .await
        .ok();
    assert_eq!(v["joined"][&alice.user_id], json!({}), "{v}");
}

/// As Synapse's `synapse/rest/client/voip.py`: 200 `{}` unless a shared secret, or a username and
/// a password, are set and not empty.
#[tokio::test]
async fn turn_server_with_an_empty_password_is_not_configured() {
    let mut config = test_config();
    config.turn.uris = vec!["turn:turn.example.org".into()];
    config.turn.username = Some("user".into());
    config.turn.password = Some(String::new());
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    assert_eq!(alice.get("/voip/turnServer").await.ok(), json!({}));
}

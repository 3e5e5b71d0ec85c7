//! Rate limits: failed logins per account, per-user limits on sending, creating rooms, joining,
//! inviting and uploading, the admin exemption, the Retry-After header, and the zero-config setup
//! (which the benchmark uses) staying unthrottled.
//!
//! Every test connects from 127.0.0.1 (Axon takes the client address from the socket only), so the
//! per-address limit is raised wherever a per-account or per-user limit is under test.

use axon::Config;
use axon::config::Limit;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const PASSWORD: &str = "correct horse";

/// Limits on, the per-address one out of the way, per-user limits on (the tests' setup is the
/// zero-config one, where they would be off), every per-user limit generous unless a test tightens it.
fn limited_config() -> Config {
    let mut config = test_config();
    let r = &mut config.rate_limits;
    r.enabled = true;
    r.per_second = 1000.0;
    r.burst = 10_000;
    r.per_user = Some(true);
    let generous = Limit {
        per_second: 1000.0,
        burst: 10_000,
    };
    r.failed_login = generous;
    r.message = generous;
    r.room_creation = generous;
    r.join = generous;
    r.invite_per_room = generous;
    r.invite_per_user = generous;
    r.media_create = generous;
    r.report = generous;
    r.key_lookups = generous;
    config
}

/// Hardly refills within a test.
fn tight(burst: u32) -> Limit {
    Limit {
        per_second: 0.001,
        burst,
    }
}

async fn login(app: &TestApp, name: &str, password: &str) -> Resp {
    app.request(
        Method::POST,
        "/_matrix/client/v3/login",
        None,
        Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": password})),
    )
    .await
}

/// 429 M_LIMIT_EXCEEDED with retry_after_ms and a Retry-After header in whole seconds, rounded up.
#[track_caller]
fn expect_limited(r: &Resp) -> u64 {
    r.expect_err(429, "M_LIMIT_EXCEEDED");
    let ms = r.body["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retry_after_ms: {}", r.body));
    assert!(ms > 0, "{ms}");
    let header = r
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After header: {:?}", r.headers));
    assert_eq!(header.to_str().unwrap(), ms.div_ceil(1000).to_string());
    ms
}

/// An admin, made one in the database before its token is first used (the token cache holds the flag).
async fn admin(app: &TestApp, name: &str) -> User {
    let user = app.register(name).await;
    sqlx::query("UPDATE users SET is_admin = TRUE WHERE user_id = $1")
        .bind(&user.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    user
}

async fn create_room(user: &User, body: Value) -> Resp {
    user.post("/createRoom", body).await
}

async fn send(user: &User, room: &str, txn: &str) -> Resp {
    user.put(
        &format!("/rooms/{}/send/m.room.message/{txn}", enc(room)),
        json!({"msgtype": "m.text", "body": txn}),
    )
    .await
}

async fn upload(user: &User) -> Resp {
    let resp = user
        .app
        .http
        .post(format!("{}/_matrix/media/v3/upload", user.app.base_url))
        .bearer_auth(&user.token)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Resp {
        status,
        body,
        headers,
    }
}

// ---- Failed logins, per account ----

#[tokio::test]
async fn failed_logins_are_limited_per_account_even_for_the_right_password() {
    let mut config = limited_config();
    config.rate_limits.failed_login = Limit {
        per_second: 1.0,
        burst: 3,
    };
    let app = spawn_app_with(config).await;
    app.register("alice").await;
    app.register("bob").await;
    for _ in 0..3 {
        login(&app, "alice", "guess")
            .await
            .expect_err(403, "M_FORBIDDEN");
    }
    // The account's failures are used up: even the right password waits (as in Synapse), and the
    // per-address limit (raised here) has nothing to do with it.
    let wait = expect_limited(&login(&app, "alice", PASSWORD).await);
    assert!(wait <= 1000, "{wait}");
    // The same account however it is named.
    expect_limited(&login(&app, "@ALICE:test.local", PASSWORD).await);
    // Another account from the same address is not affected.
    login(&app, "bob", PASSWORD).await.ok();
    // No longer than the window: once a failure has refilled, the right password logs in.
    tokio::time::sleep(std::time::Duration::from_millis(wait + 50)).await;
    login(&app, "alice", PASSWORD).await.ok();
}

#[tokio::test]
async fn failed_logins_count_for_accounts_that_do_not_exist() {
    let mut config = limited_config();
    config.rate_limits.failed_login = tight(2);
    let app = spawn_app_with(config).await;
    for _ in 0..2 {
        login(&app, "nobody", "x")
            .await
            .expect_err(403, "M_FORBIDDEN");
    }
    expect_limited(&login(&app, "nobody", "x").await);
}

#[tokio::test]
async fn every_rate_limited_answer_carries_retry_after() {
    // The per-address limit on login.
    let mut config = test_config();
    config.rate_limits.enabled = true;
    config.rate_limits.burst = 1;
    config.rate_limits.per_second = 0.4;
    let app = spawn_app_with(config).await;
    login(&app, "nobody", "x")
        .await
        .expect_err(403, "M_FORBIDDEN");
    let wait = expect_limited(&login(&app, "nobody", "x").await);
    assert!(wait > 2000 && wait <= 2500, "{wait}");
}

// ---- Per-user limits ----

#[tokio::test]
async fn sending_events_is_limited_per_user_and_admins_are_exempt() {
    let mut config = limited_config();
    config.rate_limits.message = tight(3);
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let root = admin(&app, "root").await;
    // Creating the room counts as one event, then a message and a state event.
    let room = create_room(&alice, json!({})).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event_id = send(&alice, &room, "t1").await.ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .put(
            &format!("/rooms/{}/state/m.room.topic/", enc(&room)),
            json!({"topic": "x"}),
        )
        .await
        .ok();
    // Now messages, state events and redactions are all refused.
    expect_limited(&send(&alice, &room, "t2").await);
    expect_limited(
        &alice
            .put(
                &format!("/rooms/{}/state/m.room.topic/", enc(&room)),
                json!({"topic": "y"}),
            )
            .await,
    );
    expect_limited(
        &alice
            .put(
                &format!("/rooms/{}/redact/{}/r1", enc(&room), enc(&event_id)),
                json!({}),
            )
            .await,
    );
    // Bob has his own budget.
    let bobs = create_room(&bob, json!({})).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    send(&bob, &bobs, "b1").await.ok();
    // An admin is not limited.
    let roots = create_room(&root, json!({})).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..10 {
        send(&root, &roots, &format!("r{i}")).await.ok();
    }
}

#[tokio::test]
async fn creating_rooms_is_limited_per_user() {
    let mut config = limited_config();
    config.rate_limits.room_creation = tight(2);
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    for _ in 0..2 {
        create_room(&alice, json!({})).await.ok();
    }
    expect_limited(&create_room(&alice, json!({})).await);
    // A refused creation created nothing.
    let joined = alice.get("/joined_rooms").await.ok();
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn joining_rooms_is_limited_per_user() {
    let mut config = limited_config();
    config.rate_limits.join = tight(2);
    let app = spawn_app_with(config).await;
    let root = admin(&app, "root").await;
    let alice = app.register("alice").await;
    let mut rooms = vec![];
    for _ in 0..3 {
        let r = create_room(&root, json!({"preset": "public_chat"}))
            .await
            .ok();
        rooms.push(r["room_id"].as_str().unwrap().to_owned());
    }
    alice
        .post(&format!("/join/{}", enc(&rooms[0])), json!({}))
        .await
        .ok();
    alice
        .post(&format!("/rooms/{}/join", enc(&rooms[1])), json!({}))
        .await
        .ok();
    // Joining a room one is in already is free.
    alice
        .post(&format!("/join/{}", enc(&rooms[0])), json!({}))
        .await
        .ok();
    expect_limited(
        &alice
            .post(&format!("/join/{}", enc(&rooms[2])), json!({}))
            .await,
    );
}

#[tokio::test]
async fn invites_are_limited_per_room_and_per_invitee() {
    let mut config = limited_config();
    config.rate_limits.invite_per_room = tight(2);
    config.rate_limits.invite_per_user = tight(2);
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut others = vec![];
    for name in ["carol", "dave", "erin"] {
        others.push(app.register(name).await.user_id);
    }
    let invite = |user: &User, room: &str, target: &str| {
        let user = user.clone();
        let path = format!("/rooms/{}/invite", enc(room));
        let target = target.to_owned();
        async move { user.post(&path, json!({"user_id": target})).await }
    };
    let new_room = |user: &User| {
        let user = user.clone();
        async move {
            create_room(&user, json!({})).await.ok()["room_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // Per room: two invites into one room, then no more.
    let room = new_room(&alice).await;
    invite(&alice, &room, &others[0]).await.ok();
    invite(&alice, &room, &others[1]).await.ok();
    expect_limited(&invite(&alice, &room, &others[2]).await);
    // Per invitee: erin may receive two invites, whoever sends them.
    let a2 = new_room(&alice).await;
    let b1 = new_room(&bob).await;
    let b2 = new_room(&bob).await;
    invite(&alice, &a2, &others[2]).await.ok();
    invite(&bob, &b1, &others[2]).await.ok();
    expect_limited(&invite(&bob, &b2, &others[2]).await);
    // Someone else can still be invited there.
    invite(&bob, &b2, &alice.user_id).await.ok();
}

#[tokio::test]
async fn media_uploads_are_limited_per_user() {
    let mut config = limited_config();
    config.rate_limits.media_create = tight(2);
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let root = admin(&app, "root").await;
    upload(&alice).await.ok();
    alice.post("/_matrix/media/v1/create", json!({})).await.ok();
    expect_limited(&upload(&alice).await);
    expect_limited(&alice.post("/_matrix/media/v1/create", json!({})).await);
    for _ in 0..4 {
        upload(&root).await.ok();
    }
}

#[tokio::test]
async fn the_zero_config_setup_does_not_throttle_users() {
    // What `cargo run` (and so the benchmark) gets: every default, limits enabled, private database on
    // loopback. Per-user limits are off there; the per-address and failed-login limits stay on.
    let mut config = test_config();
    config.rate_limits = Config::default().rate_limits;
    assert!(config.rate_limits.enabled);
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..30 {
        send(&alice, &room, &format!("t{i}")).await.ok();
    }
    for _ in 0..12 {
        create_room(&alice, json!({})).await.ok();
    }
    // And with a real setup the same defaults would have refused (Synapse's rc_message: burst 10).
    let mut real = Config::default();
    real.database.url = Some("postgres://db.example.org/axon".into());
    assert!(real.per_user_rate_limits());
    assert_eq!(real.rate_limits.message.burst, 10);
}

#[tokio::test]
async fn key_queries_and_claims_are_charged_by_their_size() {
    let mut config = limited_config();
    config.rate_limits.key_lookups = tight(100);
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let users: serde_json::Map<String, Value> = (0..150)
        .map(|i| (format!("@u{i}:test.local"), json!([])))
        .collect();
    // Served while the bucket has a token, then charged in full: the next request waits.
    alice
        .post("/keys/query", json!({"device_keys": users}))
        .await
        .ok();
    expect_limited(
        &alice
            .post("/keys/query", json!({"device_keys": {&alice.user_id: []}}))
            .await,
    );
    expect_limited(
        &alice
            .post(
                "/keys/claim",
                json!({"one_time_keys": {&alice.user_id: {"DEV": "signed_curve25519"}}}),
            )
            .await,
    );
    // Another user has a bucket of their own.
    let bob = app.register("bob").await;
    bob.post("/keys/query", json!({"device_keys": {&alice.user_id: []}}))
        .await
        .ok();
}

#[tokio::test]
async fn reporting_is_limited_per_user_across_the_three_endpoints() {
    let mut config = limited_config();
    config.rate_limits.report = tight(3);
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({})).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = alice
        .put(
            &format!("/rooms/{}/send/m.room.message/t1", enc(&room)),
            json!({"msgtype": "m.text", "body": "x"}),
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reason = json!({"reason": "x"});
    let event_path = format!("/rooms/{}/report/{}", enc(&room), enc(&event));
    let room_path = format!("/rooms/{}/report", enc(&room));
    let user_path = format!("/users/{}/report", enc(&bob.user_id));
    alice.post(&event_path, reason.clone()).await.ok();
    alice.post(&room_path, reason.clone()).await.ok();
    alice.post(&user_path, reason.clone()).await.ok();
    for path in [&event_path, &room_path, &user_path] {
        expect_limited(&alice.post(path, reason.clone()).await);
    }
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reports")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 3);
    // Another user has a bucket of their own.
    bob.post(&room_path, reason).await.ok();
}

//! Admin features that behave as Synapse's: a shadow-banned user's invites and typing, the
//! server notice's transaction ID, the "login as" (puppet) token, and expired retention events.

use std::time::Duration;

use serde_json::{Value, json};

use crate::admin_api::admin;
use crate::common::*;

const A: &str = "/_synapse/admin";

async fn shadow_ban(root: &User, user: &User) {
    root.post(
        &format!("{A}/v1/users/{}/shadow_ban", enc(&user.user_id)),
        json!({}),
    )
    .await
    .ok();
}

/// The rooms `user` is invited to, from an initial sync.
async fn invites(user: &User) -> Value {
    let v = user.get("/sync?timeout=0").await.ok();
    v["rooms"]["invite"].clone()
}

#[tokio::test]
async fn shadow_banned_invites_seem_to_work_and_reach_no_one() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    shadow_ban(&root, &alice).await;
    // createRoom with an invite: the room is made, the invite left out (Synapse's create_room).
    let body = json!({"invite": [bob.user_id], "is_direct": true});
    let room = alice.post("/createRoom", body).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // /invite: 200 {} as for anyone.
    let v = alice
        .post(
            &format!("/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    assert_eq!(v, json!({}));
    assert!(invites(&bob).await.get(&room).is_none(), "bob was invited");
    let members = root
        .get(&format!("{A}/v1/rooms/{}/members", enc(&room)))
        .await
        .ok();
    assert_eq!(members["members"], json!([alice.user_id]));
    // Lifting the ban lets invites through again.
    root.delete(&format!("{A}/v1/users/{}/shadow_ban", enc(&alice.user_id)))
        .await
        .ok();
    alice
        .post(
            &format!("/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    assert!(invites(&bob).await.get(&room).is_some());
}

#[tokio::test]
async fn shadow_banned_typing_seems_to_work_and_reaches_no_one() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let room = bob
        .post("/createRoom", json!({"preset": "public_chat"}))
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = enc(&room);
    alice.post(&format!("/join/{r}"), json!({})).await.ok();
    shadow_ban(&root, &alice).await;
    let path = format!("/rooms/{r}/typing/{}", enc(&alice.user_id));
    let v = alice
        .put(&path, json!({"typing": true, "timeout": 30000}))
        .await
        .ok();
    assert_eq!(v, json!({}));
    // Typing of another user is still refused, banned or not.
    alice
        .put(
            &format!("/rooms/{r}/typing/{}", enc(&bob.user_id)),
            json!({"typing": true}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Bob, typing himself, sees only himself typing.
    let bob_path = format!("/rooms/{r}/typing/{}", enc(&bob.user_id));
    bob.put(&bob_path, json!({"typing": true, "timeout": 30000}))
        .await
        .ok();
    let v = bob.get("/sync?timeout=0").await.ok();
    let typing: Vec<Value> = v["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.typing")
        .flat_map(|e| e["content"]["user_ids"].as_array().unwrap().clone())
        .collect();
    assert_eq!(typing, vec![json!(bob.user_id)]);
}

fn notices_config() -> axon::Config {
    let mut config = test_config();
    config.server_notices.system_mxid_localpart = Some("notices".into());
    config
}

#[tokio::test]
async fn a_server_notice_sent_again_with_its_txn_id_is_sent_once() {
    let app = spawn_app_with(notices_config()).await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let notice = |body: &str| json!({"user_id": bob.user_id, "content": {"msgtype": "m.text", "body": body}});
    let first = root
        .put(&format!("{A}/v1/send_server_notice/t1"), notice("one"))
        .await
        .ok();
    let again = root
        .put(&format!("{A}/v1/send_server_notice/t1"), notice("one"))
        .await
        .ok();
    assert_eq!(first["event_id"], again["event_id"]);
    let other = root
        .put(&format!("{A}/v1/send_server_notice/t2"), notice("two"))
        .await
        .ok();
    assert_ne!(first["event_id"], other["event_id"]);
    // Bob's notices room holds each notice once.
    let v = bob.get("/sync?timeout=0").await.ok();
    let room_id = v["rooms"]["invite"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    bob.post(&format!("/join/{}", enc(&room_id)), json!({}))
        .await
        .ok();
    let v = bob
        .get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(&room_id)))
        .await
        .ok();
    let bodies: Vec<&str> = v["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["two", "one"]);
}

fn login_as_config() -> axon::Config {
    let mut config = test_config();
    config.admin.allow_login_as = true;
    config
}

async fn login_as(root: &User, user: &User, body: Value) -> Resp {
    root.post(&format!("{A}/v1/users/{}/login", enc(&user.user_id)), body)
        .await
}

#[tokio::test]
async fn login_as_gives_a_puppet_token_the_user_does_not_see() {
    let app = spawn_app_with(login_as_config()).await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let token = login_as(&root, &bob, json!({})).await.ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let puppet = User {
        token: token.clone(),
        ..bob.clone()
    };
    // It acts as bob, with no device (whoami says none, as Synapse's).
    let me = puppet.get("/account/whoami").await.ok();
    assert_eq!(me["user_id"], bob.user_id);
    assert!(me.get("device_id").is_none(), "{me}");
    puppet
        .post("/createRoom", json!({"name": "made by an admin"}))
        .await
        .ok();
    // Bob sees only his own device, and his logging out everywhere leaves the admin's token.
    let devices = bob.get("/devices").await.ok();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");
    let admin_view = root
        .get(&format!("{A}/v2/users/{}/devices", enc(&bob.user_id)))
        .await
        .ok();
    assert_eq!(admin_view["total"], 1);
    bob.post("/logout/all", json!({})).await.ok();
    puppet.get("/account/whoami").await.ok();
    // Its own logout ends it.
    puppet.post("/logout", json!({})).await.ok();
    puppet
        .get("/account/whoami")
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn login_as_honours_valid_until_ms() {
    let app = spawn_app_with(login_as_config()).await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    login_as(&root, &bob, json!({"valid_until_ms": "soon"}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    let past = axon::store::now_ms() - 1000;
    let v = login_as(&root, &bob, json!({"valid_until_ms": past}))
        .await
        .ok();
    let puppet = User {
        token: v["access_token"].as_str().unwrap().to_owned(),
        ..bob.clone()
    };
    let r = puppet.get("/account/whoami").await;
    r.expect_err(401, "M_UNKNOWN_TOKEN");
    assert_eq!(r.body["soft_logout"], true);
    // An admin may not log in as itself.
    login_as(&root, &root, json!({}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

fn retention_config() -> axon::Config {
    let mut config = test_config();
    config.retention.enabled = true;
    // The purge job waits a day: whatever is hidden here, the filter hid.
    config.retention.purge_interval_ms = 24 * 3600 * 1000;
    config
}

/// Bodies of the room's messages as /messages and /sync show them to `user`.
async fn shown(user: &User, room: &str) -> (Vec<String>, Vec<String>) {
    let bodies = |events: &Value| -> Vec<String> {
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
            .collect()
    };
    let v = user
        .get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(room)))
        .await
        .ok();
    let messages = bodies(&v["chunk"]);
    let v = user.get("/sync?timeout=0").await.ok();
    let synced = bodies(&v["rooms"]["join"][room]["timeline"]["events"]);
    (messages, synced)
}

#[tokio::test]
async fn expired_events_are_hidden_before_the_purge_job_deletes_them() {
    let app = spawn_app_with(retention_config()).await;
    let alice = app.register("alice").await;
    let new_room = |name: &'static str| {
        let alice = alice.clone();
        async move {
            alice.post("/createRoom", json!({"name": name})).await.ok()["room_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (short, kept) = (new_room("short").await, new_room("kept").await);
    alice
        .put(
            &format!("/rooms/{}/state/m.room.retention/", enc(&short)),
            json!({"max_lifetime": 1500}),
        )
        .await
        .ok();
    let mut old = None;
    for room in [&short, &kept] {
        let v = alice
            .put(
                &format!("/rooms/{}/send/m.room.message/old", enc(room)),
                json!({"msgtype": "m.text", "body": "old"}),
            )
            .await
            .ok();
        old.get_or_insert(v["event_id"].as_str().unwrap().to_owned());
    }
    // Past the short room's lifetime (a wait for expiry, not a measurement).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for room in [&short, &kept] {
        alice
            .put(
                &format!("/rooms/{}/send/m.room.message/new", enc(room)),
                json!({"msgtype": "m.text", "body": "new"}),
            )
            .await
            .ok();
    }
    assert_eq!(
        shown(&alice, &short).await,
        (vec!["new".into()], vec!["new".into()])
    );
    let both = vec!["new".to_owned(), "old".to_owned()];
    assert_eq!(shown(&alice, &kept).await.0, both);
    let old = old.unwrap();
    alice
        .get(&format!("/rooms/{}/event/{}", enc(&short), enc(&old)))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .get(&format!("/rooms/{}/context/{}", enc(&short), enc(&old)))
        .await
        .expect_err(404, "M_NOT_FOUND");
    // State events never expire: the room keeps its name.
    let name = alice
        .get(&format!("/rooms/{}/state/m.room.name/", enc(&short)))
        .await
        .ok();
    assert_eq!(name["name"], "short");
    // The events are still stored: hidden, not purged.
    let db_count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_id = $1")
        .bind(&old)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(db_count, 1);
}

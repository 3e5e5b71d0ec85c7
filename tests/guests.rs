//! Guest access (issue #18): guest registration, what guests may and may not call, joining rooms
//! that allow guests, reading world-readable rooms, the upgrade to a full account, and guests
//! leaving a room that stops allowing them. `accounts::register_guest_is_forbidden` covers the
//! default (off).

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::messaging::send_ok;
use crate::rooms::create_room;
use crate::sync::{last_left_event, sync, sync_token, timeline};

async fn guest_app() -> TestApp {
    let mut config = test_config();
    config.registration.allow_guest_access = true;
    // Profiles then need a token; a guest's does (tested with the display name).
    config.directory.require_auth_for_profile_requests = true;
    spawn_app_with(config).await
}

async fn register_guest(app: &TestApp, body: Value) -> Resp {
    app.request(
        Method::POST,
        "/_matrix/client/v3/register?kind=guest",
        None,
        Some(body),
    )
    .await
}

/// A logged-in guest.
async fn guest(app: &TestApp) -> User {
    let v = register_guest(app, json!({})).await.ok();
    User {
        app: AppHandle {
            base_url: app.base_url.clone(),
            http: app.http.clone(),
        },
        user_id: v["user_id"].as_str().unwrap().to_owned(),
        token: v["access_token"].as_str().unwrap().to_owned(),
        device_id: v["device_id"].as_str().unwrap().to_owned(),
    }
}

/// A public room (join rule `public`) whose `m.room.guest_access` is `can_join`.
async fn guest_room(owner: &User) -> String {
    create_room(
        owner,
        json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}}]}),
    )
    .await
}

fn localpart(user_id: &str) -> &str {
    user_id[1..].split(':').next().unwrap()
}

#[tokio::test]
async fn a_guest_gets_a_numeric_user_id_a_device_and_is_marked_a_guest() {
    let app = guest_app().await;
    // Everything but the device's name is ignored (the spec), ill-typed or not.
    let v = register_guest(
        &app,
        json!({"initial_device_display_name": "Guest phone", "device_id": "MINE",
               "username": 5, "refresh_token": true}),
    )
    .await
    .ok();
    assert_ne!(v["device_id"], "MINE");
    assert!(v.get("refresh_token").is_none(), "{v}");
    let user_id = v["user_id"].as_str().unwrap();
    assert!(
        localpart(user_id).bytes().all(|b| b.is_ascii_digit()),
        "numeric localpart: {user_id}"
    );
    assert!(v["access_token"].is_string() && v["device_id"].is_string());
    let token = v["access_token"].as_str().unwrap();
    let me = app
        .request(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            Some(token),
            None,
        )
        .await
        .ok();
    assert_eq!(me["user_id"], user_id);
    assert_eq!(me["is_guest"], true);
    let devices = app
        .request(Method::GET, "/_matrix/client/v3/devices", Some(token), None)
        .await
        .ok();
    assert_eq!(devices["devices"][0]["display_name"], "Guest phone");
    // A second guest gets another number.
    let other = register_guest(&app, json!({})).await.ok();
    assert_ne!(other["user_id"], v["user_id"]);
}

#[tokio::test]
async fn numeric_user_ids_are_reserved_for_guests() {
    let app = guest_app().await;
    let r = app
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "12345", "password": "correct horse", "auth": {"type": "m.login.dummy"}})),
        )
        .await;
    r.expect_err(400, "M_INVALID_USERNAME");
}

#[tokio::test]
async fn a_guest_syncs_and_sets_its_display_name_but_no_other_profile_field() {
    let app = guest_app().await;
    let g = guest(&app).await;
    let s = sync(&g, "timeout=0").await;
    assert!(s["next_batch"].is_string());
    let path = format!("/profile/{}/displayname", enc(&g.user_id));
    g.put(&path, json!({"displayname": "Visitor"})).await.ok();
    // Read back with the guest's token, which profile reads then require.
    assert_eq!(g.get(&path).await.ok()["displayname"], "Visitor");
    app.get(&format!("/_matrix/client/v3{path}"))
        .await
        .expect_err(401, "M_MISSING_TOKEN");
    g.put(
        &format!("/profile/{}/avatar_url", enc(&g.user_id)),
        json!({"avatar_url": "mxc://test.local/abc"}),
    )
    .await
    .expect_err(403, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn a_guest_joins_a_room_that_allows_guests_and_sends_there() {
    let app = guest_app().await;
    let alice = app.register("alice").await;
    let g = guest(&app).await;
    let room = guest_room(&alice).await;
    let v = g
        .post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await
        .ok();
    assert_eq!(v["room_id"], room.as_str());
    let member = g
        .get(&format!(
            "/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(&g.user_id)
        ))
        .await
        .ok();
    assert_eq!(member["membership"], "join");
    assert_eq!(member["kind"], "guest");
    send_ok(&g, &room, "hello from a guest").await;
    let s = sync(&alice, "").await;
    let bodies: Vec<&str> = timeline(&s, &room)["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert!(bodies.contains(&"hello from a guest"), "{bodies:?}");
    g.post(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await
        .ok();
}

#[tokio::test]
async fn a_guest_cannot_join_a_room_that_does_not_allow_guests() {
    let app = guest_app().await;
    let alice = app.register("alice").await;
    let g = guest(&app).await;
    // public_chat sets m.room.guest_access to forbidden.
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "noguests"}),
    )
    .await;
    g.post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    g.post(&format!("/join/{}", enc("#noguests:test.local")), json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // A full user joins it.
    let bob = app.register("bob").await;
    bob.post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await
        .ok();
}

/// Guests may PUT state (as Synapse), but a join sent as a member state event is a join all the
/// same: the room's guest access decides (Synapse routes it through `update_membership`).
#[tokio::test]
async fn a_guest_cannot_join_through_a_member_state_event_either() {
    let app = guest_app().await;
    let alice = app.register("alice").await;
    let g = guest(&app).await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let r = enc(&room);
    g.put(
        &format!("/rooms/{r}/state/m.room.member/{}", enc(&g.user_id)),
        json!({"membership": "join"}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    let members = alice.get(&format!("/rooms/{r}/joined_members")).await.ok();
    assert!(members["joined"].get(&g.user_id).is_none(), "{members}");
    // Where guests may join, that form works too.
    let open = guest_room(&alice).await;
    g.put(
        &format!(
            "/rooms/{}/state/m.room.member/{}",
            enc(&open),
            enc(&g.user_id)
        ),
        json!({"membership": "join"}),
    )
    .await
    .ok();
}

#[tokio::test]
async fn a_guest_reads_a_world_readable_room_without_joining_it() {
    let app = guest_app().await;
    let alice = app.register("alice").await;
    let g = guest(&app).await;
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let event_id = send_ok(&alice, &room, "readable by all").await;
    let r = enc(&room);
    let messages = g
        .get(&format!("/rooms/{r}/messages?dir=b&limit=10"))
        .await
        .ok();
    assert!(
        messages["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "readable by all"),
        "{messages}"
    );
    g.get(&format!("/rooms/{r}/state")).await.ok();
    g.get(&format!("/rooms/{r}/members")).await.ok();
    let event = g
        .get(&format!("/rooms/{r}/event/{}", enc(&event_id)))
        .await
        .ok();
    assert_eq!(event["content"]["body"], "readable by all");
    g.get(&format!("/rooms/{r}/context/{}", enc(&event_id)))
        .await
        .ok();
    // A room that is not world-readable stays closed.
    let private = create_room(&alice, json!({"preset": "private_chat"})).await;
    g.get(&format!("/rooms/{}/messages?dir=b", enc(&private)))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

/// The spec's guest module lists `GET /rooms/{roomId}/initialSync` and `GET /events` "as used for
/// room previews" (Synapse: `allow_guest=True` on both; a guest's `/events` must name the room).
#[tokio::test]
async fn a_guest_previews_a_world_readable_room_through_the_legacy_endpoints() {
    let app = guest_app().await;
    let alice = app.register("alice").await;
    let g = guest(&app).await;
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    send_ok(&alice, &room, "preview me").await;
    let r = enc(&room);
    let info = g.get(&format!("/rooms/{r}/initialSync")).await.ok();
    assert!(
        info["messages"]["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "preview me"),
        "{info}"
    );
    let from = info["messages"]["end"].as_str().unwrap().to_owned();
    let waiting = {
        let g = g.clone();
        let path = format!("/events?room_id={r}&timeout=10000&from={}", enc(&from));
        tokio::spawn(async move { g.get(&path).await.ok() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    send_ok(&alice, &room, "live").await;
    let chunk = waiting.await.unwrap();
    assert!(
        chunk["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "live"),
        "{chunk}"
    );
    // Without a room the stream is not a preview: refused, as Synapse does.
    g.get("/events?timeout=0")
        .await
        .expect_err(400, "M_MISSING_PARAM");
    // The all-rooms snapshot is not in the guest module.
    g.get("/initialSync")
        .await
        .expect_err(403, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn guests_are_refused_every_endpoint_the_guest_module_does_not_list() {
    let app = guest_app().await;
    let alice = app.register("alice").await;
    let g = guest(&app).await;
    let room = guest_room(&alice).await;
    g.post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await
        .ok();
    let event_id = send_ok(&g, &room, "mine").await;
    let me = enc(&g.user_id);
    let r = enc(&room);
    let refused = [
        (Method::POST, "/createRoom".to_owned(), Some(json!({}))),
        (
            Method::PUT,
            format!("/user/{me}/account_data/m.something"),
            Some(json!({})),
        ),
        (Method::POST, format!("/user/{me}/filter"), Some(json!({}))),
        (Method::GET, "/pushrules/".to_owned(), None),
        (
            Method::POST,
            format!("/rooms/{r}/invite"),
            Some(json!({"user_id": alice.user_id})),
        ),
        (
            Method::PUT,
            format!("/rooms/{r}/redact/{}/t1", enc(&event_id)),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/user_directory/search".to_owned(),
            Some(json!({"search_term": "alice"})),
        ),
        (
            Method::POST,
            "/keys/device_signing/upload".to_owned(),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/account/password".to_owned(),
            Some(json!({"new_password": "x"})),
        ),
    ];
    for (method, path, body) in refused {
        let resp = g.request(method.clone(), &path, body).await;
        assert_eq!(
            (resp.status.as_u16(), resp.errcode()),
            (403, "M_GUEST_ACCESS_FORBIDDEN"),
            "{method} {path}: {}",
            resp.body
        );
    }
    // The same token still works where guests are allowed.
    g.get("/account/whoami").await.ok();
    g.post("/keys/query", json!({"device_keys": {}})).await.ok();
}

#[tokio::test]
async fn a_guest_upgrades_to_a_full_account_keeping_its_user_id() {
    let app = guest_app().await;
    let g = guest(&app).await;
    let name = localpart(&g.user_id).to_owned();
    let upgrade = |username: &str, token: &str| {
        json!({"username": username, "password": "a new password", "guest_access_token": token,
               "auth": {"type": "m.login.dummy"}})
    };
    let post = |body: Value| {
        app.request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(body),
        )
    };
    // Only the guest's own name, with the guest's own token.
    post(upgrade("someoneelse", &g.token))
        .await
        .expect_err(403, "M_FORBIDDEN");
    let alice = app.register("alice").await;
    post(upgrade(localpart(&alice.user_id), &alice.token))
        .await
        .expect_err(403, "M_FORBIDDEN");

    let v = post(upgrade(&name, &g.token)).await.ok();
    assert_eq!(v["user_id"], g.user_id.as_str());
    let new_token = v["access_token"].as_str().unwrap();
    for token in [new_token, g.token.as_str()] {
        let me = app
            .request(
                Method::GET,
                "/_matrix/client/v3/account/whoami",
                Some(token),
                None,
            )
            .await
            .ok();
        assert_eq!(me["user_id"], g.user_id.as_str());
        assert_eq!(me["is_guest"], false);
    }
    // A full account now: what guests may not do works, and the password logs in.
    g.post("/createRoom", json!({})).await.ok();
    let login = app
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
                        "password": "a new password"})),
        )
        .await
        .ok();
    assert_eq!(login["user_id"], g.user_id.as_str());
    // No second upgrade.
    post(upgrade(&name, &g.token))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn revoking_guest_access_makes_the_room_s_guests_leave() {
    let app = guest_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let g = guest(&app).await;
    let room = guest_room(&alice).await;
    for user in [&g, &bob] {
        user.post(&format!("/rooms/{}/join", enc(&room)), json!({}))
            .await
            .ok();
    }
    let since = sync_token(&g, "").await;
    alice
        .put(
            &format!("/rooms/{}/state/m.room.guest_access/", enc(&room)),
            json!({"guest_access": "forbidden"}),
        )
        .await
        .ok();
    let s = sync(&g, &format!("since={since}&timeout=0")).await;
    let leave = last_left_event(&s, &room);
    assert_eq!(leave["type"], "m.room.member");
    assert_eq!(leave["state_key"], g.user_id.as_str());
    assert_eq!(leave["content"]["membership"], "leave");
    // Full members stay.
    let joined = alice
        .get(&format!("/rooms/{}/joined_members", enc(&room)))
        .await
        .ok();
    let joined = joined["joined"].as_object().unwrap();
    assert!(joined.contains_key(&bob.user_id) && !joined.contains_key(&g.user_id));
    // And the guest cannot come back.
    g.post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

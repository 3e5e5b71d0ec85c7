//! Synapse's admin API (`/_synapse/admin/…`): who may call it, and each endpoint's shape and rules.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::messaging::send_ok;
use crate::rooms::{create_room, join};

/// A registered user made a server admin before its token is first used (and cached).
pub async fn admin(app: &TestApp, name: &str) -> User {
    let user = app.register(name).await;
    sqlx::query("UPDATE users SET is_admin = TRUE WHERE user_id = $1")
        .bind(&user.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    user
}

const A: &str = "/_synapse/admin";

/// Every admin endpoint: (method, path). Paths name a user, room or token that may not exist: the
/// permission check comes first.
fn endpoints() -> Vec<(Method, String)> {
    let u = enc("@bob:test.local");
    let r = enc("!room:test.local");
    vec![
        (Method::GET, format!("{A}/v1/server_version")),
        (Method::GET, format!("{A}/v2/users")),
        (Method::GET, format!("{A}/v2/users/{u}")),
        (Method::PUT, format!("{A}/v2/users/{u}")),
        (Method::POST, format!("{A}/v1/reset_password/{u}")),
        (Method::POST, format!("{A}/v1/deactivate/{u}")),
        (Method::GET, format!("{A}/v1/whois/{u}")),
        (Method::GET, format!("{A}/v1/users/{u}/joined_rooms")),
        (Method::GET, format!("{A}/v2/users/{u}/devices")),
        (Method::GET, format!("{A}/v2/users/{u}/devices/D")),
        (Method::PUT, format!("{A}/v2/users/{u}/devices/D")),
        (Method::DELETE, format!("{A}/v2/users/{u}/devices/D")),
        (Method::POST, format!("{A}/v2/users/{u}/delete_devices")),
        (Method::POST, format!("{A}/v1/users/{u}/shadow_ban")),
        (Method::DELETE, format!("{A}/v1/users/{u}/shadow_ban")),
        (Method::POST, format!("{A}/v1/users/{u}/login")),
        (Method::GET, format!("{A}/v1/rooms")),
        (Method::GET, format!("{A}/v1/rooms/{r}")),
        (Method::GET, format!("{A}/v1/rooms/{r}/members")),
        (Method::GET, format!("{A}/v1/rooms/{r}/state")),
        (Method::DELETE, format!("{A}/v2/rooms/{r}")),
        (Method::GET, format!("{A}/v2/rooms/{r}/delete_status")),
        (Method::GET, format!("{A}/v2/rooms/delete_status/x")),
        (Method::GET, format!("{A}/v1/registration_tokens")),
        (Method::POST, format!("{A}/v1/registration_tokens/new")),
        (Method::GET, format!("{A}/v1/registration_tokens/abc")),
        (Method::PUT, format!("{A}/v1/registration_tokens/abc")),
        (Method::DELETE, format!("{A}/v1/registration_tokens/abc")),
        (Method::POST, format!("{A}/v1/rooms/{r}/make_room_admin")),
        (Method::POST, format!("{A}/v1/send_server_notice")),
        (Method::PUT, format!("{A}/v1/send_server_notice/t")),
        (Method::GET, format!("{A}/v1/event_reports")),
        (Method::GET, format!("{A}/v1/event_reports/1")),
        (Method::DELETE, format!("{A}/v1/event_reports/1")),
    ]
}

#[tokio::test]
async fn every_admin_endpoint_refuses_anonymous_and_non_admin_callers() {
    let app = spawn_app().await;
    let bob = app.register("bob").await;
    let body = json!({"password": "x", "new_password": "y", "devices": ["D"]});
    for (method, path) in endpoints() {
        let r = app
            .request(method.clone(), &path, None, Some(body.clone()))
            .await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
        assert_eq!(r.errcode(), "M_MISSING_TOKEN", "{method} {path}");
        let r = bob.request(method.clone(), &path, Some(body.clone())).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert_eq!(r.errcode(), "M_FORBIDDEN", "{method} {path}");
    }
    // Nothing was done on bob's behalf: he still logs in with his password and is no admin.
    let r = app
        .request(
            Method::GET,
            &format!("{A}/v2/users"),
            Some(&bob.token),
            None,
        )
        .await;
    r.expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn server_version_names_axon() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let v = root.get(&format!("{A}/v1/server_version")).await.ok();
    assert!(
        v["server_version"].as_str().unwrap().starts_with("Axon "),
        "{v}"
    );
}

async fn names(root: &User, query: &str) -> (Vec<String>, Value) {
    let v = root.get(&format!("{A}/v2/users{query}")).await.ok();
    let names = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    (names, v)
}

#[tokio::test]
async fn user_list_pages_filters_and_orders() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    for name in ["carol", "alice", "bob"] {
        app.register(name).await;
    }
    let (all, v) = names(&root, "").await;
    assert_eq!(
        all,
        [
            "@alice:test.local",
            "@bob:test.local",
            "@carol:test.local",
            "@root:test.local"
        ]
    );
    assert_eq!(v["total"], 4);
    assert!(v.get("next_token").is_none());
    let user = &v["users"][0];
    for field in [
        "is_guest",
        "admin",
        "deactivated",
        "erased",
        "shadow_banned",
        "locked",
    ] {
        assert_eq!(user[field], false, "{field}: {user}");
    }
    assert_eq!(user["displayname"], "alice");
    assert!(user["creation_ts"].as_i64().unwrap() > 1_600_000_000);
    // Pages: next_token is the offset of the next page, a string.
    let (page, v) = names(&root, "?limit=2").await;
    assert_eq!(page, ["@alice:test.local", "@bob:test.local"]);
    assert_eq!(v["next_token"], "2");
    let (page, v) = names(&root, "?from=2&limit=2").await;
    assert_eq!(page, ["@carol:test.local", "@root:test.local"]);
    assert!(v.get("next_token").is_none());
    // Backwards, and by another column.
    let (page, _) = names(&root, "?dir=b&limit=1").await;
    assert_eq!(page, ["@root:test.local"]);
    let (page, _) = names(&root, "?order_by=admin&dir=b&limit=1").await;
    assert_eq!(page, ["@root:test.local"]);
    // Searches: name matches the ID or the display name; admins filters.
    let (page, v) = names(&root, "?name=aro").await;
    assert_eq!(page, ["@carol:test.local"]);
    assert_eq!(v["total"], 1);
    let (page, _) = names(&root, "?user_id=bo").await;
    assert_eq!(page, ["@bob:test.local"]);
    let (page, _) = names(&root, "?admins=true").await;
    assert_eq!(page, ["@root:test.local"]);
    // Bad parameters are 400, not 500.
    for bad in ["?order_by=password", "?dir=x", "?from=-1", "?limit=abc"] {
        root.get(&format!("{A}/v2/users{bad}"))
            .await
            .expect_err(400, "M_INVALID_PARAM");
    }
}

#[tokio::test]
async fn user_list_hides_guests_deactivated_and_locked_unless_asked() {
    let mut config = test_config();
    config.registration.allow_guest_access = true;
    let app = spawn_app_with(config).await;
    let root = admin(&app, "root").await;
    let guest = app
        .request(
            Method::POST,
            "/_matrix/client/v3/register?kind=guest",
            None,
            Some(json!({})),
        )
        .await
        .ok();
    let guest_id = guest["user_id"].as_str().unwrap().to_owned();
    app.register("gone").await;
    root.post(
        &format!("{A}/v1/deactivate/{}", enc("@gone:test.local")),
        json!({}),
    )
    .await
    .ok();
    app.register("shut").await;
    root.put(
        &format!("{A}/v2/users/{}", enc("@shut:test.local")),
        json!({"locked": true}),
    )
    .await
    .ok();
    let (all, _) = names(&root, "").await;
    assert_eq!(all, [guest_id.clone(), "@root:test.local".to_owned()]);
    let (all, _) = names(&root, "?guests=false").await;
    assert_eq!(all, ["@root:test.local"]);
    let (all, _) = names(&root, "?guests=false&deactivated=true&locked=true").await;
    assert_eq!(
        all,
        ["@gone:test.local", "@root:test.local", "@shut:test.local"]
    );
}

#[tokio::test]
async fn query_user_shows_details_and_unknown_is_404() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let v = root
        .get(&format!("{A}/v2/users/{}", enc(&root.user_id)))
        .await
        .ok();
    assert_eq!(v["name"], "@root:test.local");
    assert_eq!(v["admin"], true);
    assert_eq!(v["threepids"], json!([]));
    assert_eq!(v["external_ids"], json!([]));
    assert!(v["last_seen_ts"].is_i64() || v["last_seen_ts"].is_null());
    root.get(&format!("{A}/v2/users/{}", enc("@nobody:test.local")))
        .await
        .expect_err(404, "M_NOT_FOUND");
    root.get(&format!("{A}/v2/users/{}", enc("@x:elsewhere.org")))
        .await
        .expect_err(400, "M_UNKNOWN");
    root.get(&format!("{A}/v2/users/notauser"))
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

async fn login(app: &TestApp, user: &str, password: &str) -> Resp {
    app.request(
        Method::POST,
        "/_matrix/client/v3/login",
        None,
        Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})),
    )
    .await
}

#[tokio::test]
async fn put_user_creates_with_201_then_modifies_with_200() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let path = format!("{A}/v2/users/{}", enc("@dave:test.local"));
    let r = root
        .put(
            &path,
            json!({"password": "pw1", "displayname": "Dave", "admin": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["name"], "@dave:test.local");
    assert_eq!(r.body["displayname"], "Dave");
    assert_eq!(r.body["admin"], true);
    let dave = login(&app, "dave", "pw1").await.ok();
    let dave_token = dave["access_token"].as_str().unwrap().to_owned();
    // Modify: new password (logs out by default), no longer admin, avatar set.
    let r = root
        .put(
            &path,
            json!({"password": "pw2", "admin": false, "avatar_url": "mxc://test.local/a"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["admin"], false);
    assert_eq!(r.body["avatar_url"], "mxc://test.local/a");
    assert_eq!(r.body["displayname"], "Dave");
    app.request(
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        Some(&dave_token),
        None,
    )
    .await
    .expect_err(401, "M_UNKNOWN_TOKEN");
    login(&app, "dave", "pw1")
        .await
        .expect_err(403, "M_FORBIDDEN");
    let dave = login(&app, "dave", "pw2").await.ok();
    let token = dave["access_token"].as_str().unwrap();
    app.request(Method::GET, &format!("{A}/v2/users"), Some(token), None)
        .await
        .expect_err(403, "M_FORBIDDEN");
    // "" removes the display name; a bad localpart cannot be created.
    let r = root.put(&path, json!({"displayname": ""})).await.ok();
    assert_eq!(r["displayname"], Value::Null);
    root.put(
        &format!("{A}/v2/users/{}", enc("@BAD:test.local")),
        json!({}),
    )
    .await
    .expect_err(400, "M_INVALID_USERNAME");
    root.put(&path, json!({"admin": "yes"}))
        .await
        .expect_err(400, "M_BAD_JSON");
}

#[tokio::test]
async fn put_user_with_a_new_password_can_keep_devices() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let erin = app.register("erin").await;
    root.put(
        &format!("{A}/v2/users/{}", enc(&erin.user_id)),
        json!({"password": "new", "logout_devices": false}),
    )
    .await
    .ok();
    erin.get("/account/whoami").await.ok();
    login(&app, "erin", "new").await.ok();
}

#[tokio::test]
async fn locked_user_gets_user_locked_until_unlocked() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    bob.get("/account/whoami").await.ok();
    let path = format!("{A}/v2/users/{}", enc(&bob.user_id));
    let v = root.put(&path, json!({"locked": true})).await.ok();
    assert_eq!(v["locked"], true);
    let r = bob.get("/account/whoami").await;
    r.expect_err(401, "M_USER_LOCKED");
    assert_eq!(r.body["soft_logout"], true);
    // Logging in again does not get round it.
    login(&app, "bob", "correct horse")
        .await
        .expect_err(401, "M_USER_LOCKED");
    root.put(&path, json!({"locked": false})).await.ok();
    bob.get("/account/whoami").await.ok();
    login(&app, "bob", "correct horse").await.ok();
}

#[tokio::test]
async fn deactivating_through_put_or_deactivate_ends_sessions() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let v = root
        .put(
            &format!("{A}/v2/users/{}", enc(&bob.user_id)),
            json!({"deactivated": true}),
        )
        .await
        .ok();
    assert_eq!(v["deactivated"], true);
    bob.get("/account/whoami")
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    root.post(
        &format!("{A}/v1/deactivate/{}", enc(&carol.user_id)),
        json!({"erase": true}),
    )
    .await
    .ok();
    carol
        .get("/account/whoami")
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    let v = root
        .get(&format!("{A}/v2/users/{}", enc(&carol.user_id)))
        .await
        .ok();
    assert_eq!(v["erased"], true);
    // Reactivating needs a password, as Synapse.
    let path = format!("{A}/v2/users/{}", enc(&bob.user_id));
    root.put(&path, json!({"deactivated": false}))
        .await
        .expect_err(400, "M_BAD_JSON");
    let v = root
        .put(&path, json!({"deactivated": false, "password": "again"}))
        .await
        .ok();
    assert_eq!(v["deactivated"], false);
    login(&app, "bob", "again").await.ok();
}

#[tokio::test]
async fn reset_password_logs_out_unless_told_not_to() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let path = format!("{A}/v1/reset_password/{}", enc(&bob.user_id));
    root.post(
        &path,
        json!({"new_password": "p2", "logout_devices": false}),
    )
    .await
    .ok();
    bob.get("/account/whoami").await.ok();
    root.post(&path, json!({"new_password": "p3"})).await.ok();
    bob.get("/account/whoami")
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    login(&app, "bob", "p3").await.ok();
    root.post(&path, json!({}))
        .await
        .expect_err(400, "M_BAD_JSON");
    root.post(
        &format!("{A}/v1/reset_password/{}", enc("@nobody:test.local")),
        json!({"new_password": "x"}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn whois_lists_connections_under_one_device() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let v = root
        .get(&format!("{A}/v1/whois/{}", enc(&bob.user_id)))
        .await
        .ok();
    assert_eq!(v["user_id"], "@bob:test.local");
    let connections = v["devices"][""]["sessions"][0]["connections"]
        .as_array()
        .unwrap();
    assert_eq!(connections.len(), 1, "{v}");
    assert!(connections[0]["last_seen"].is_i64());
    root.get(&format!("{A}/v1/whois/{}", enc("@nobody:test.local")))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn devices_are_listed_shown_renamed_and_deleted() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let second = login(&app, "bob", "correct horse").await.ok();
    let second_device = second["device_id"].as_str().unwrap().to_owned();
    let second_token = second["access_token"].as_str().unwrap().to_owned();
    let base = format!("{A}/v2/users/{}/devices", enc(&bob.user_id));
    let v = root.get(&base).await.ok();
    assert_eq!(v["total"], 2);
    assert_eq!(v["devices"][0]["user_id"], "@bob:test.local");
    let one = format!("{base}/{}", bob.device_id);
    root.put(&one, json!({"display_name": "phone"})).await.ok();
    let v = root.get(&one).await.ok();
    assert_eq!(v["device_id"], bob.device_id.as_str());
    assert_eq!(v["display_name"], "phone");
    root.get(&format!("{base}/NOPE"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    root.delete(&one).await.ok();
    bob.get("/account/whoami")
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    root.post(
        &format!("{A}/v2/users/{}/delete_devices", enc(&bob.user_id)),
        json!({"devices": [second_device, "UNKNOWN"]}),
    )
    .await
    .ok();
    app.request(
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        Some(&second_token),
        None,
    )
    .await
    .expect_err(401, "M_UNKNOWN_TOKEN");
    assert_eq!(root.get(&base).await.ok()["total"], 0);
    root.get(&format!(
        "{A}/v2/users/{}/devices",
        enc("@nobody:test.local")
    ))
    .await
    .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn joined_rooms_of_a_user() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let room = create_room(&bob, json!({})).await;
    let v = root
        .get(&format!("{A}/v1/users/{}/joined_rooms", enc(&bob.user_id)))
        .await
        .ok();
    assert_eq!(v, json!({"joined_rooms": [room], "total": 1}));
    // As Synapse: an unknown user is in no room.
    let v = root
        .get(&format!(
            "{A}/v1/users/{}/joined_rooms",
            enc("@nobody:test.local")
        ))
        .await
        .ok();
    assert_eq!(v, json!({"joined_rooms": [], "total": 0}));
}

#[tokio::test]
async fn rooms_are_listed_searched_and_ordered() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let big = create_room(
        &bob,
        json!({"name": "Beta", "preset": "public_chat", "room_alias_name": "beta"}),
    )
    .await;
    join(&root, &big).await;
    let small = create_room(&bob, json!({"name": "Alpha"})).await;
    let v = root.get(&format!("{A}/v1/rooms")).await.ok();
    assert_eq!(v["total_rooms"], 2);
    assert_eq!(v["offset"], 0);
    assert_eq!(v["rooms"][0]["room_id"], small.as_str());
    let beta = &v["rooms"][1];
    assert_eq!(beta["name"], "Beta");
    assert_eq!(beta["canonical_alias"], "#beta:test.local");
    assert_eq!(beta["joined_members"], 2);
    assert_eq!(beta["joined_local_members"], 2);
    assert_eq!(beta["creator"], "@bob:test.local");
    assert_eq!(beta["join_rules"], "public");
    assert_eq!(beta["federatable"], true);
    assert_eq!(beta["version"], "12");
    assert!(beta["state_events"].as_i64().unwrap() >= 5);
    // By size, largest first; paging with next_batch.
    let v = root
        .get(&format!("{A}/v1/rooms?order_by=joined_members&limit=1"))
        .await
        .ok();
    assert_eq!(v["rooms"][0]["room_id"], big.as_str());
    assert_eq!(v["next_batch"], 1);
    let v = root
        .get(&format!("{A}/v1/rooms?order_by=joined_members&from=1"))
        .await
        .ok();
    assert_eq!(v["rooms"][0]["room_id"], small.as_str());
    assert_eq!(v["prev_batch"], 0);
    // Search by name, alias or ID.
    let v = root
        .get(&format!("{A}/v1/rooms?search_term=alph"))
        .await
        .ok();
    assert_eq!(v["total_rooms"], 1);
    assert_eq!(v["rooms"][0]["room_id"], small.as_str());
    let v = root
        .get(&format!("{A}/v1/rooms?search_term=%23beta"))
        .await
        .ok();
    assert_eq!(v["rooms"][0]["room_id"], big.as_str());
    root.get(&format!("{A}/v1/rooms?order_by=nonsense"))
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn room_details_members_and_state() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(
        &bob,
        json!({"name": "Room", "topic": "Talk", "preset": "public_chat"}),
    )
    .await;
    join(&carol, &room).await;
    let v = root.get(&format!("{A}/v1/rooms/{}", enc(&room))).await.ok();
    assert_eq!(v["room_id"], room.as_str());
    assert_eq!(v["topic"], "Talk");
    assert_eq!(v["joined_local_devices"], 2);
    assert_eq!(v["forgotten"], false);
    let v = root
        .get(&format!("{A}/v1/rooms/{}/members", enc(&room)))
        .await
        .ok();
    assert_eq!(
        v,
        json!({"members": ["@bob:test.local", "@carol:test.local"], "total": 2})
    );
    let v = root
        .get(&format!("{A}/v1/rooms/{}/state", enc(&room)))
        .await
        .ok();
    let state = v["state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == "@carol:test.local")
    );
    for path in ["", "/members", "/state"] {
        root.get(&format!("{A}/v1/rooms/{}{path}", enc("!nope:test.local")))
            .await
            .expect_err(404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn registration_tokens_are_created_listed_updated_and_deleted() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let base = format!("{A}/v1/registration_tokens");
    let v = root.post(&format!("{base}/new"), json!({})).await.ok();
    assert_eq!(v["token"].as_str().unwrap().len(), 16);
    assert_eq!(v["uses_allowed"], Value::Null);
    assert_eq!(v["pending"], 0);
    assert_eq!(v["completed"], 0);
    assert_eq!(v["expiry_time"], Value::Null);
    let future = axon::store::now_ms() + 3_600_000;
    let v = root
        .post(
            &format!("{base}/new"),
            json!({"token": "abcd", "uses_allowed": 1, "expiry_time": future}),
        )
        .await
        .ok();
    assert_eq!(
        v,
        json!({"token": "abcd", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": future})
    );
    let v = root
        .post(&format!("{base}/new"), json!({"length": 5}))
        .await
        .ok();
    assert_eq!(v["token"].as_str().unwrap().len(), 5);
    for bad in [
        json!({"token": "abcd"}),
        json!({"token": "not valid"}),
        json!({"uses_allowed": -1}),
        json!({"expiry_time": 1}),
        json!({"length": 65}),
        json!({"uses_allowed": "many"}),
    ] {
        root.post(&format!("{base}/new"), bad.clone())
            .await
            .expect_err(400, "M_INVALID_PARAM");
    }
    assert_eq!(
        root.get(&base).await.ok()["registration_tokens"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Used up: invalid.
    let v = root
        .put(&format!("{base}/abcd"), json!({"uses_allowed": 0}))
        .await
        .ok();
    assert_eq!(v["uses_allowed"], 0);
    assert_eq!(v["expiry_time"], future);
    let invalid = root.get(&format!("{base}?valid=false")).await.ok();
    assert_eq!(invalid["registration_tokens"][0]["token"], "abcd");
    assert_eq!(
        root.get(&format!("{base}?valid=true")).await.ok()["registration_tokens"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let v = root
        .put(
            &format!("{base}/abcd"),
            json!({"uses_allowed": null, "expiry_time": null}),
        )
        .await
        .ok();
    assert_eq!(v["uses_allowed"], Value::Null);
    assert_eq!(v["expiry_time"], Value::Null);
    assert_eq!(
        root.get(&format!("{base}/abcd")).await.ok()["token"],
        "abcd"
    );
    root.delete(&format!("{base}/abcd")).await.ok();
    root.get(&format!("{base}/abcd"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    root.delete(&format!("{base}/abcd"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    root.put(&format!("{base}/abcd"), json!({}))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn event_reports_are_listed_shown_and_deleted() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"name": "Lobby", "preset": "public_chat"})).await;
    join(&bob, &room).await;
    let first = send_ok(&alice, &room, "one").await;
    let second = send_ok(&alice, &room, "two").await;
    for (event, reason) in [(&first, "spam"), (&second, "rude")] {
        bob.post(
            &format!("/rooms/{}/report/{}", enc(&room), enc(event)),
            json!({"reason": reason, "score": -100}),
        )
        .await
        .ok();
    }
    // A user report is not an event report.
    bob.post(
        &format!("/users/{}/report", enc(&alice.user_id)),
        json!({"reason": "x"}),
    )
    .await;
    let v = root.get(&format!("{A}/v1/event_reports")).await.ok();
    assert_eq!(v["total"], 2);
    let newest = &v["event_reports"][0];
    assert_eq!(newest["event_id"], second.as_str());
    assert_eq!(newest["reason"], "rude");
    assert_eq!(newest["score"], -100);
    assert_eq!(newest["user_id"], "@bob:test.local");
    assert_eq!(newest["sender"], "@alice:test.local");
    assert_eq!(newest["room_id"], room.as_str());
    assert_eq!(newest["name"], "Lobby");
    let v = root
        .get(&format!("{A}/v1/event_reports?dir=f&limit=1"))
        .await
        .ok();
    assert_eq!(v["event_reports"][0]["event_id"], first.as_str());
    assert_eq!(v["next_token"], 1);
    let v = root
        .get(&format!("{A}/v1/event_reports?user_id=alice"))
        .await
        .ok();
    assert_eq!(v["total"], 0);
    let id = v["total"].as_i64().unwrap();
    assert_eq!(id, 0);
    let all = root.get(&format!("{A}/v1/event_reports")).await.ok();
    let id = all["event_reports"][0]["id"].as_i64().unwrap();
    let v = root.get(&format!("{A}/v1/event_reports/{id}")).await.ok();
    // As Synapse: the event as federation carries it (no event_id in room versions 3 and up).
    assert_eq!(v["event_id"], second.as_str());
    assert_eq!(v["event_json"]["content"]["body"], "two");
    assert!(v["event_json"]["auth_events"].is_array(), "{v}");
    assert!(v["event_json"]["unsigned"]["age_ts"].is_i64(), "{v}");
    root.delete(&format!("{A}/v1/event_reports/{id}"))
        .await
        .ok();
    root.get(&format!("{A}/v1/event_reports/{id}"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    root.get(&format!("{A}/v1/event_reports/x"))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    assert_eq!(
        root.get(&format!("{A}/v1/event_reports")).await.ok()["total"],
        1
    );
}

#[tokio::test]
async fn shadow_banned_sends_seem_to_succeed_but_reach_no_one() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let alice = app.register("alice").await;
    let eve = app.register("eve").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&eve, &room).await;
    let ban = format!("{A}/v1/users/{}/shadow_ban", enc(&eve.user_id));
    assert_eq!(root.post(&ban, json!({})).await.ok(), json!({}));
    let v = root
        .get(&format!("{A}/v2/users/{}", enc(&eve.user_id)))
        .await
        .ok();
    assert_eq!(v["shadow_banned"], true);
    let hidden = send_ok(&eve, &room, "spam").await;
    assert!(hidden.starts_with('$'));
    let topic = eve
        .put(
            &format!("/rooms/{}/state/m.room.topic/", enc(&room)),
            json!({"topic": "spam"}),
        )
        .await;
    // Power levels forbid eve the topic anyway; a shadow ban answers before any check, as Synapse.
    assert!(topic.ok()["event_id"].as_str().unwrap().starts_with('$'));
    alice
        .get(&format!("/rooms/{}/event/{}", enc(&room), enc(&hidden)))
        .await
        .expect_err(404, "M_NOT_FOUND");
    let messages = alice
        .get(&format!("/rooms/{}/messages?dir=b&limit=5", enc(&room)))
        .await
        .ok();
    assert!(!messages.to_string().contains("spam"), "{messages}");
    // Lifted: sends are real again.
    assert_eq!(root.delete(&ban).await.ok(), json!({}));
    let real = send_ok(&eve, &room, "hello").await;
    alice
        .get(&format!("/rooms/{}/event/{}", enc(&room), enc(&real)))
        .await
        .ok();
    root.post(
        &format!("{A}/v1/users/{}/shadow_ban", enc("@nobody:test.local")),
        json!({}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn login_as_a_user_is_off_by_default() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    root.post(
        &format!("{A}/v1/users/{}/login", enc(&bob.user_id)),
        json!({}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn login_as_a_user_when_allowed() {
    let mut config = test_config();
    config.admin.allow_login_as = true;
    let app = spawn_app_with(config).await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let v = root
        .post(
            &format!("{A}/v1/users/{}/login", enc(&bob.user_id)),
            json!({}),
        )
        .await
        .ok();
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
    assert_eq!(me["user_id"], "@bob:test.local");
    root.post(
        &format!("{A}/v1/users/{}/login", enc(&root.user_id)),
        json!({}),
    )
    .await
    .expect_err(400, "M_INVALID_PARAM");
    root.post(
        &format!("{A}/v1/users/{}/login", enc("@nobody:test.local")),
        json!({}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
}

/// Waits for a room deletion to end and returns its status.
async fn deletion_done(root: &User, delete_id: &str) -> Value {
    for _ in 0..100 {
        let v = root
            .get(&format!("{A}/v2/rooms/delete_status/{delete_id}"))
            .await
            .ok();
        if v["status"] == "complete" || v["status"] == "failed" {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the deletion did not finish");
}

#[tokio::test]
async fn deleting_a_room_moves_members_out_and_purges_it() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "doomed"}),
    )
    .await;
    join(&bob, &room).await;
    send_ok(&alice, &room, "hello").await;
    let before = bob.get("/sync").await.ok();
    let since = before["next_batch"].as_str().unwrap().to_owned();
    let v = root
        .request(
            Method::DELETE,
            &format!("{A}/v2/rooms/{}", enc(&room)),
            Some(json!({})),
        )
        .await
        .ok();
    let delete_id = v["delete_id"].as_str().unwrap().to_owned();
    let status = deletion_done(&root, &delete_id).await;
    assert_eq!(status["status"], "complete", "{status}");
    assert_eq!(status["room_id"], room.as_str());
    let mut kicked: Vec<String> =
        serde_json::from_value(status["shutdown_room"]["kicked_users"].clone()).unwrap();
    kicked.sort();
    assert_eq!(kicked, ["@alice:test.local", "@bob:test.local"]);
    assert_eq!(
        status["shutdown_room"]["local_aliases"],
        json!(["#doomed:test.local"])
    );
    // Gone: from the admin API, the members' rooms, the alias; sync and messages still answer.
    root.get(&format!("{A}/v1/rooms/{}", enc(&room)))
        .await
        .expect_err(404, "M_NOT_FOUND");
    assert_eq!(
        alice.get("/joined_rooms").await.ok()["joined_rooms"],
        json!([])
    );
    alice
        .get(&format!("/directory/room/{}", enc("#doomed:test.local")))
        .await
        .expect_err(404, "M_NOT_FOUND");
    bob.get(&format!("/sync?since={since}&timeout=0"))
        .await
        .ok();
    bob.get("/sync").await.ok();
    let r = alice
        .get(&format!("/rooms/{}/messages?dir=b", enc(&room)))
        .await;
    assert!(r.status == 403 || r.status == 404, "{:?}", r);
    // Not blocked: the room ID is free to be... nothing; joining it is an unknown room.
    let r = alice
        .post(&format!("/join/{}", enc(&room)), json!({}))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let v = root
        .get(&format!("{A}/v2/rooms/{}/delete_status", enc(&room)))
        .await
        .ok();
    assert_eq!(v["results"][0]["delete_id"], delete_id.as_str());
}

#[tokio::test]
async fn a_blocked_room_refuses_joins() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let v = root
        .request(
            Method::DELETE,
            &format!("{A}/v2/rooms/{}", enc(&room)),
            Some(json!({"block": true, "purge": false})),
        )
        .await
        .ok();
    let status = deletion_done(&root, v["delete_id"].as_str().unwrap()).await;
    assert_eq!(status["status"], "complete", "{status}");
    // Not purged: the room is still there, empty, and nobody may join it.
    let details = root.get(&format!("{A}/v1/rooms/{}", enc(&room))).await.ok();
    assert_eq!(details["joined_members"], 0);
    for user in [&alice, &bob] {
        user.post(&format!("/join/{}", enc(&room)), json!({}))
            .await
            .expect_err(403, "M_FORBIDDEN");
    }
    // Blocking an unknown room works too (Synapse's way to block ahead).
    let unknown = "!unknown:test.local";
    let v = root
        .request(
            Method::DELETE,
            &format!("{A}/v2/rooms/{}", enc(unknown)),
            Some(json!({"block": true})),
        )
        .await
        .ok();
    deletion_done(&root, v["delete_id"].as_str().unwrap()).await;
    alice
        .post(&format!("/join/{}", enc(unknown)), json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn deleting_a_room_can_move_members_to_a_new_room() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let v = root
        .request(
            Method::DELETE,
            &format!("{A}/v2/rooms/{}", enc(&room)),
            Some(json!({"new_room_user_id": root.user_id, "room_name": "Moved", "message": "Bye"})),
        )
        .await
        .ok();
    let status = deletion_done(&root, v["delete_id"].as_str().unwrap()).await;
    let new_room = status["shutdown_room"]["new_room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        alice.get("/joined_rooms").await.ok()["joined_rooms"],
        json!([new_room])
    );
    let messages = alice
        .get(&format!(
            "/rooms/{}/messages?dir=b&limit=20",
            enc(&new_room)
        ))
        .await
        .ok();
    assert!(
        messages["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "Bye")
    );
    // Alice may read but not speak there.
    let r = alice
        .put(
            &format!("/rooms/{}/send/m.room.message/t1", enc(&new_room)),
            json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    r.expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn deleting_bad_or_unknown_rooms_is_refused() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    root.request(
        Method::DELETE,
        &format!("{A}/v2/rooms/{}", enc("!nope:test.local")),
        Some(json!({})),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    root.request(
        Method::DELETE,
        &format!("{A}/v2/rooms/notaroom"),
        Some(json!({})),
    )
    .await
    .expect_err(400, "M_INVALID_PARAM");
    root.get(&format!("{A}/v2/rooms/delete_status/nope"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    root.get(&format!(
        "{A}/v2/rooms/{}/delete_status",
        enc("!nope:test.local")
    ))
    .await
    .expect_err(404, "M_NOT_FOUND");
}

fn notices_config() -> axon::Config {
    let mut config = test_config();
    config.server_notices.system_mxid_localpart = Some("notices".into());
    config.server_notices.room_name = "From the admins".into();
    config
}

#[tokio::test]
async fn server_notices_are_off_unless_configured() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    root.post(
        &format!("{A}/v1/send_server_notice"),
        json!({"user_id": bob.user_id, "content": {"msgtype": "m.text", "body": "hi"}}),
    )
    .await
    .expect_err(400, "M_UNKNOWN");
}

#[tokio::test]
async fn server_notices_arrive_in_the_users_notices_room() {
    let app = spawn_app_with(notices_config()).await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let path = format!("{A}/v1/send_server_notice");
    let body = |text: &str| json!({"user_id": bob.user_id, "content": {"msgtype": "m.text", "body": text}});
    let first = root.post(&path, body("first")).await.ok();
    assert!(first["event_id"].as_str().unwrap().starts_with('$'));
    // Bob is invited by the notices user to a room named as configured, tagged m.server_notice.
    let sync = bob.get("/sync").await.ok();
    let invites = sync["rooms"]["invite"].as_object().unwrap();
    assert_eq!(invites.len(), 1);
    let (room, invite) = invites.iter().next().unwrap();
    let events = invite["invite_state"]["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "From the admins")
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["sender"] == "@notices:test.local")
    );
    join(&bob, room).await;
    let tags = bob
        .get(&format!(
            "/user/{}/rooms/{}/tags",
            enc(&bob.user_id),
            enc(room)
        ))
        .await
        .ok();
    assert!(tags["tags"].get("m.server_notice").is_some(), "{tags}");
    // The next notice goes to the same room; the PUT form works too.
    let second = root.put(&format!("{path}/txn1"), body("second")).await.ok();
    let event = bob
        .get(&format!(
            "/rooms/{}/event/{}",
            enc(room),
            enc(second["event_id"].as_str().unwrap())
        ))
        .await
        .ok();
    assert_eq!(event["content"]["body"], "second");
    assert_eq!(event["sender"], "@notices:test.local");
    // Bob cannot answer there.
    bob.put(
        &format!("/rooms/{}/send/m.room.message/t1", enc(room)),
        json!({"msgtype": "m.text", "body": "no"}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    root.post(
        &path,
        json!({"user_id": "@x:elsewhere.org", "content": {"body": "x"}}),
    )
    .await
    .expect_err(400, "M_UNKNOWN");
    root.post(
        &path,
        json!({"user_id": "@nobody:test.local", "content": {"body": "x"}}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    root.post(&path, json!({"content": {"body": "x"}}))
        .await
        .expect_err(400, "M_BAD_JSON");
}

#[tokio::test]
async fn make_room_admin_gives_the_user_power_and_an_invite() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(
        &alice,
        json!({"preset": "private_chat", "room_alias_name": "secret"}),
    )
    .await;
    let v = root
        .post(
            &format!("{A}/v1/rooms/{}/make_room_admin", enc("#secret:test.local")),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    assert_eq!(v, json!({}));
    // Invited (the room is not public), then joined, bob holds the highest level.
    join(&bob, &room).await;
    let levels = bob
        .get(&format!("/rooms/{}/state/m.room.power_levels/", enc(&room)))
        .await
        .ok();
    assert_eq!(levels["users"][&bob.user_id], 100);
    bob.put(
        &format!("/rooms/{}/state/m.room.topic/", enc(&room)),
        json!({"topic": "mine"}),
    )
    .await
    .ok();
    // The caller by default.
    root.post(
        &format!("{A}/v1/rooms/{}/make_room_admin", enc(&room)),
        json!({}),
    )
    .await
    .ok();
    root.post(
        &format!("{A}/v1/rooms/{}/make_room_admin", enc("!nope:test.local")),
        json!({}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
}

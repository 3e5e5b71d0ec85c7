//! The account surface: registration (UIA, tokens, shared secret), login, tokens, refresh, logout,
//! devices, password change, deactivation, rate limiting and the admin CLI.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha1::Sha1;

use crate::common::*;

const PASSWORD: &str = "correct horse";

/// An unauthenticated POST to a client-server v3 path.
pub(crate) async fn post(app: &TestApp, path: &str, body: Value) -> Resp {
    app.request(
        Method::POST,
        &format!("/_matrix/client/v3{path}"),
        None,
        Some(body),
    )
    .await
}

fn user_from(app: &TestApp, v: &Value) -> User {
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

fn with_token(user: &User, token: &str) -> User {
    User {
        token: token.to_owned(),
        ..user.clone()
    }
}

async fn login(app: &TestApp, name: &str, password: &str) -> Resp {
    post(app, "/login", json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": password})).await
}

async fn login_user(app: &TestApp, name: &str) -> User {
    let v = login(app, name, PASSWORD).await.ok();
    user_from(app, &v)
}

fn password_auth(user: &User, password: &str, session: Option<&str>) -> Value {
    let mut auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id}, "password": password});
    if let Some(session) = session {
        auth["session"] = json!(session);
    }
    auth
}

#[track_caller]
fn assert_unknown_token(r: &Resp, soft_logout: bool) {
    r.expect_err(401, "M_UNKNOWN_TOKEN");
    assert_eq!(r.body["soft_logout"], soft_logout, "{}", r.body);
}

// ---- Registration ----

#[tokio::test]
async fn register_uia_round_trip_with_dummy_stage() {
    let app = spawn_app().await;
    let r = post(
        &app,
        "/register",
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["flows"], json!([{"stages": ["m.login.dummy"]}]));
    assert!(r.body["params"].is_object());
    let session = r.body["session"].as_str().unwrap().to_owned();
    let v = post(
        &app,
        "/register",
        json!({"username": "alice", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": session}}),
    )
    .await
    .ok();
    assert_eq!(v["user_id"], "@alice:test.local");
    assert!(v["access_token"].as_str().unwrap().len() >= 43);
    let alice = user_from(&app, &v);
    let me = alice.get("/account/whoami").await.ok();
    assert_eq!(me["user_id"], "@alice:test.local");
    assert_eq!(me["device_id"], v["device_id"]);
    assert_eq!(me["is_guest"], false);
    // Retrying the completed session answers for the same account, as in Synapse (whatever the
    // retry's username).
    let again = post(
        &app,
        "/register",
        json!({"username": "alice2", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": session}}),
    )
    .await
    .ok();
    assert_eq!(again["user_id"], "@alice:test.local");
}

#[tokio::test]
async fn register_one_shot_dummy_auth_without_session() {
    let app = spawn_app().await;
    let v = post(
        &app,
        "/register",
        json!({"username": "bob", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
    )
    .await
    .ok();
    assert_eq!(v["user_id"], "@bob:test.local");
    assert!(v["device_id"].is_string());
    assert_eq!(v["home_server"], "test.local");
}

#[tokio::test]
async fn register_unknown_session_and_stage_are_refused() {
    let app = spawn_app().await;
    let r = post(&app, "/register", json!({"username": "c", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": "nope"}})).await;
    r.expect_err(400, "M_UNKNOWN");
    // A stage the flows do not offer: 401 again, with the error.
    let r = post(
        &app,
        "/register",
        json!({"username": "c", "password": PASSWORD, "auth": {"type": "m.login.password"}}),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.body["session"].is_string());
    assert_eq!(r.errcode(), "M_UNKNOWN");
}

#[tokio::test]
async fn register_username_rules() {
    let app = spawn_app().await;
    app.register("alice").await;
    let dummy = json!({"type": "m.login.dummy"});
    post(
        &app,
        "/register",
        json!({"username": "alice", "password": PASSWORD, "auth": dummy}),
    )
    .await
    .expect_err(400, "M_USER_IN_USE");
    // Upper case maps onto the lowercase localpart, which is taken.
    post(
        &app,
        "/register",
        json!({"username": "ALICE", "password": PASSWORD, "auth": dummy}),
    )
    .await
    .expect_err(400, "M_USER_IN_USE");
    for bad in ["bad name", "caf\u{e9}", "a:b", "", "@x"] {
        post(
            &app,
            "/register",
            json!({"username": bad, "password": PASSWORD, "auth": dummy}),
        )
        .await
        .expect_err(400, "M_INVALID_USERNAME");
    }
    // The full user ID may be 255 bytes: "@" + localpart + ":test.local".
    let longest = "a".repeat(255 - 1 - ":test.local".len());
    post(
        &app,
        "/register",
        json!({"username": format!("{longest}a"), "password": PASSWORD, "auth": dummy}),
    )
    .await
    .expect_err(400, "M_INVALID_USERNAME");
    let v = post(
        &app,
        "/register",
        json!({"username": longest, "password": PASSWORD, "auth": dummy}),
    )
    .await
    .ok();
    assert_eq!(v["user_id"].as_str().unwrap().len(), 255);
    // The historical characters are allowed.
    post(
        &app,
        "/register",
        json!({"username": "x.y_z=1-2/3+4", "password": PASSWORD, "auth": dummy}),
    )
    .await
    .ok();
}

#[tokio::test]
async fn register_available() {
    let app = spawn_app().await;
    app.register("alice").await;
    let v = app
        .get("/_matrix/client/v3/register/available?username=bob")
        .await
        .ok();
    assert_eq!(v["available"], true);
    app.get("/_matrix/client/v3/register/available?username=alice")
        .await
        .expect_err(400, "M_USER_IN_USE");
    app.get("/_matrix/client/v3/register/available?username=no%20way")
        .await
        .expect_err(400, "M_INVALID_USERNAME");
    app.get("/_matrix/client/v3/register/available")
        .await
        .expect_err(400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn register_without_username_generates_one() {
    let app = spawn_app().await;
    let v = post(
        &app,
        "/register",
        json!({"password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
    )
    .await
    .ok();
    let user_id = v["user_id"].as_str().unwrap();
    assert!(
        user_id.starts_with('@') && user_id.ends_with(":test.local"),
        "{user_id}"
    );
    let localpart = user_id[1..].split(':').next().unwrap();
    login(&app, localpart, PASSWORD).await.ok();
}

#[tokio::test]
async fn register_missing_password_is_refused() {
    let app = spawn_app().await;
    post(
        &app,
        "/register",
        json!({"username": "nopass", "auth": {"type": "m.login.dummy"}}),
    )
    .await
    .expect_err(400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn register_inhibit_login_returns_no_token() {
    let app = spawn_app().await;
    let v = post(
        &app,
        "/register",
        json!({"username": "quiet", "password": PASSWORD, "inhibit_login": true, "auth": {"type": "m.login.dummy"}}),
    )
    .await
    .ok();
    assert_eq!(v["user_id"], "@quiet:test.local");
    assert!(
        v.get("access_token").is_none() && v.get("device_id").is_none(),
        "{v}"
    );
    // The account exists but has no device yet.
    let user = login_user(&app, "quiet").await;
    assert_eq!(
        user.get("/devices").await.ok()["devices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn register_honours_device_id_and_display_name() {
    let app = spawn_app().await;
    let v = post(
        &app,
        "/register",
        json!({"username": "dev", "password": PASSWORD, "device_id": "MYPHONE", "initial_device_display_name": "Phone",
               "auth": {"type": "m.login.dummy"}}),
    )
    .await
    .ok();
    assert_eq!(v["device_id"], "MYPHONE");
    let user = user_from(&app, &v);
    let d = user.get("/devices/MYPHONE").await.ok();
    assert_eq!(d["display_name"], "Phone");
    assert_eq!(d["device_id"], "MYPHONE");
}

#[tokio::test]
async fn register_guest_is_forbidden() {
    let app = spawn_app().await;
    let r = app
        .request(
            Method::POST,
            "/_matrix/client/v3/register?kind=guest",
            None,
            Some(json!({})),
        )
        .await;
    r.expect_err(403, "M_GUEST_ACCESS_FORBIDDEN");
    let r = app
        .request(
            Method::POST,
            "/_matrix/client/v3/register?kind=robot",
            None,
            Some(json!({})),
        )
        .await;
    r.expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn registration_disabled_is_forbidden() {
    let mut config = test_config();
    config.registration.policy = Some(axon::config::RegistrationPolicy::Disabled);
    let app = spawn_app_with(config).await;
    post(
        &app,
        "/register",
        json!({"username": "x", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    app.get("/_matrix/client/v3/register/available?username=x")
        .await
        .expect_err(403, "M_FORBIDDEN");
    app.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=abc")
        .await
        .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn registration_disabled_by_default_with_a_database_url() {
    let mut config = axon::Config::default();
    config.database.url = Some("postgres://elsewhere/db".into());
    assert_eq!(
        config.registration_policy(),
        axon::config::RegistrationPolicy::Disabled
    );
}

// ---- Registration tokens ----

async fn token_app() -> TestApp {
    let mut config = test_config();
    config.registration.policy = Some(axon::config::RegistrationPolicy::Token);
    spawn_app_with(config).await
}

async fn validity(app: &TestApp, token: &str) -> bool {
    let v = app
        .get(&format!(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token={token}"
        ))
        .await
        .ok();
    v["valid"].as_bool().unwrap()
}

#[tokio::test]
async fn registration_token_required_valid_and_exhausted() {
    let app = token_app().await;
    let token = axon::service::admin::tokens::create_simple(&app.state, None, Some(1), None)
        .await
        .unwrap();
    assert!(validity(&app, &token).await);
    assert!(!validity(&app, "unknown").await);

    let r = post(
        &app,
        "/register",
        json!({"username": "t1", "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body["flows"],
        json!([{"stages": ["m.login.registration_token"]}])
    );
    let session = r.body["session"].as_str().unwrap().to_owned();
    // The dummy stage alone does not do.
    let r = post(&app, "/register", json!({"username": "t1", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": session}})).await;
    assert_eq!(r.status, 401);
    // A wrong token fails the stage.
    let r = post(
        &app,
        "/register",
        json!({"username": "t1", "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": "wrong", "session": session}}),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.errcode(), "M_UNAUTHORIZED");
    let v = post(
        &app,
        "/register",
        json!({"username": "t1", "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": token, "session": session}}),
    )
    .await
    .ok();
    assert_eq!(v["user_id"], "@t1:test.local");

    // One use only: now exhausted.
    assert!(!validity(&app, &token).await);
    let r = post(
        &app,
        "/register",
        json!({"username": "t2", "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": token}}),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.errcode(), "M_UNAUTHORIZED");
}

#[tokio::test]
async fn registration_token_expired_is_refused() {
    let app = token_app().await;
    let past = axon::store::now_ms() - 1000;
    let token = axon::service::admin::tokens::create_simple(
        &app.state,
        Some("old-token".into()),
        None,
        Some(past + 60_000),
    )
    .await
    .unwrap();
    // Tokens cannot be created expired: this one expires after the fact.
    sqlx::query("UPDATE registration_tokens SET expiry_ts = $1 WHERE token = $2")
        .bind(past)
        .bind(&token)
        .execute(&app.db)
        .await
        .unwrap();
    assert!(!validity(&app, &token).await);
    let r = post(
        &app,
        "/register",
        json!({"username": "late", "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": token}}),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.errcode(), "M_UNAUTHORIZED");
    // An unlimited token with a future expiry works for several users.
    let future = axon::store::now_ms() + 60_000;
    let token = axon::service::admin::tokens::create_simple(&app.state, None, None, Some(future))
        .await
        .unwrap();
    for name in ["u1", "u2"] {
        post(&app, "/register", json!({"username": name, "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": token}}))
            .await
            .ok();
    }
}

#[tokio::test]
async fn registration_token_runs_out_between_stage_and_registration() {
    let app = token_app().await;
    let token = axon::service::admin::tokens::create_simple(&app.state, None, Some(1), None)
        .await
        .unwrap();
    // Two sessions validate the same single-use token; only the first registration gets it.
    let mut sessions = vec![];
    for name in ["r1", "r2"] {
        let r = post(
            &app,
            "/register",
            json!({"username": name, "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": token}}),
        )
        .await;
        sessions.push(r);
    }
    let ok = sessions.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1);
}

// ---- Shared-secret registration ----

fn mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(
        format!(
            "{nonce}\0{user}\0{password}\0{}",
            if admin { "admin" } else { "notadmin" }
        )
        .as_bytes(),
    );
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn shared_secret_registration_needs_configuration() {
    let app = spawn_app().await;
    app.get("/_synapse/admin/v1/register")
        .await
        .expect_err(400, "M_UNKNOWN");
    let r = app
        .request(
            Method::POST,
            "/_synapse/admin/v1/register",
            None,
            Some(json!({"nonce": "n", "username": "x", "password": "p", "mac": "00"})),
        )
        .await;
    r.expect_err(400, "M_UNKNOWN");
}

#[tokio::test]
async fn shared_secret_registration_mac_good_bad_and_reused_nonce() {
    let mut config = test_config();
    config.registration.shared_secret = Some("s3cret".into());
    // Shared-secret registration works even with registration closed.
    config.registration.policy = Some(axon::config::RegistrationPolicy::Disabled);
    let app = spawn_app_with(config).await;
    let register = |body: Value| {
        app.request(
            Method::POST,
            "/_synapse/admin/v1/register",
            None,
            Some(body),
        )
    };

    let nonce = app.get("/_synapse/admin/v1/register").await.ok()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"nonce": nonce, "username": "root", "password": "pw", "admin": true,
                      "mac": mac("s3cret", &nonce, "root", "pw", true)});
    let v = register(body.clone()).await.ok();
    assert_eq!(v["user_id"], "@root:test.local");
    let root = user_from(&app, &v);
    // The new user is an admin: whois on someone else works.
    let other = post(
        &app,
        "/login",
        json!({"type": "m.login.password", "user": "root", "password": "pw"}),
    )
    .await
    .ok();
    assert_eq!(other["user_id"], "@root:test.local");
    root.get("/admin/whois/@root:test.local").await.ok();

    // The same nonce again: refused.
    register(body).await.expect_err(400, "M_UNKNOWN");

    // A bad MAC (signed as non-admin, sent as admin): refused, and the nonce is spent.
    let nonce = app.get("/_synapse/admin/v1/register").await.ok()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = json!({"nonce": nonce, "username": "eve", "password": "pw", "admin": true,
                     "mac": mac("s3cret", &nonce, "eve", "pw", false)});
    register(bad.clone()).await.expect_err(403, "M_FORBIDDEN");
    let good = json!({"nonce": nonce, "username": "eve", "password": "pw", "admin": false,
                      "mac": mac("s3cret", &nonce, "eve", "pw", false)});
    register(good).await.expect_err(400, "M_UNKNOWN");
    login(&app, "eve", "pw")
        .await
        .expect_err(403, "M_FORBIDDEN");

    // A wrong secret.
    let nonce = app.get("/_synapse/admin/v1/register").await.ok()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = json!({"nonce": nonce, "username": "eve", "password": "pw", "mac": mac("other", &nonce, "eve", "pw", false)});
    register(wrong).await.expect_err(403, "M_FORBIDDEN");

    // A non-admin user made this way cannot look up others.
    let nonce = app.get("/_synapse/admin/v1/register").await.ok()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = register(json!({"nonce": nonce, "username": "plain", "password": "pw", "mac": mac("s3cret", &nonce, "plain", "pw", false)}))
        .await
        .ok();
    let plain = user_from(&app, &v);
    plain
        .get("/admin/whois/@root:test.local")
        .await
        .expect_err(403, "M_FORBIDDEN");
    plain.get("/admin/whois/@plain:test.local").await.ok();
}

#[tokio::test]
async fn shared_secret_nonce_expires_after_a_minute() {
    let mut config = test_config();
    config.registration.shared_secret = Some("s3cret".into());
    let app = spawn_app_with(config).await;
    let nonce = app.get("/_synapse/admin/v1/register").await.ok()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    sqlx::query("UPDATE registration_nonces SET created_ts = created_ts - 61000")
        .execute(&app.db)
        .await
        .unwrap();
    let body = json!({"nonce": nonce, "username": "slow", "password": "pw", "mac": mac("s3cret", &nonce, "slow", "pw", false)});
    let r = app
        .request(
            Method::POST,
            "/_synapse/admin/v1/register",
            None,
            Some(body),
        )
        .await;
    r.expect_err(400, "M_UNKNOWN");
}

// ---- Login, tokens, logout ----

#[tokio::test]
async fn login_flows_list_password() {
    let app = spawn_app().await;
    let v = app.get("/_matrix/client/v3/login").await.ok();
    assert!(
        v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.password")
    );
}

#[tokio::test]
async fn login_by_localpart_full_id_and_deprecated_user() {
    let app = spawn_app().await;
    app.register("alice").await;
    let a = login(&app, "alice", PASSWORD).await.ok();
    assert_eq!(a["user_id"], "@alice:test.local");
    assert!(a["well_known"]["m.homeserver"]["base_url"].is_string());
    login(&app, "@alice:test.local", PASSWORD).await.ok();
    login(&app, "Alice", PASSWORD).await.ok();
    let b = post(
        &app,
        "/login",
        json!({"type": "m.login.password", "user": "alice", "password": PASSWORD}),
    )
    .await
    .ok();
    assert_ne!(a["access_token"], b["access_token"]);
    assert_ne!(a["device_id"], b["device_id"], "every login makes a device");
}

#[tokio::test]
async fn login_wrong_password_and_unknown_user_look_the_same() {
    let app = spawn_app().await;
    app.register("alice").await;
    let wrong = login(&app, "alice", "nope").await;
    wrong.expect_err(403, "M_FORBIDDEN");
    let unknown = login(&app, "nobody", "nope").await;
    unknown.expect_err(403, "M_FORBIDDEN");
    assert_eq!(wrong.body, unknown.body);
    login(&app, "@alice:elsewhere.org", PASSWORD)
        .await
        .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn login_bad_requests() {
    let app = spawn_app().await;
    post(
        &app,
        "/login",
        json!({"type": "m.login.token", "token": "x"}),
    )
    .await
    .expect_err(400, "M_UNKNOWN");
    post(
        &app,
        "/login",
        json!({"type": "m.login.password", "identifier": {"type": "m.id.weird"}, "password": "x"}),
    )
    .await
    .expect_err(400, "M_UNKNOWN");
    post(&app, "/login", json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": "x"}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    post(
        &app,
        "/login",
        json!({"type": "m.login.password", "password": "x"}),
    )
    .await
    .expect_err(400, "M_MISSING_PARAM");
    post(
        &app,
        "/login",
        json!({"type": "m.login.password", "user": "alice"}),
    )
    .await
    .expect_err(400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn token_lifecycle_login_use_logout() {
    let app = spawn_app().await;
    app.register("alice").await;
    let alice = login_user(&app, "alice").await;
    alice.get("/account/whoami").await.ok();
    // The deprecated query parameter works too.
    let r = app
        .get(&format!(
            "/_matrix/client/v3/account/whoami?access_token={}",
            alice.token
        ))
        .await
        .ok();
    assert_eq!(r["user_id"], alice.user_id);
    alice.post("/logout", json!({})).await.ok();
    assert_unknown_token(&alice.get("/account/whoami").await, false);
    // The device went with the session.
    let other = login_user(&app, "alice").await;
    let devices = other.get("/devices").await.ok();
    assert!(
        !devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device_id"] == alice.device_id.as_str())
    );
    // Logging out twice: the token is unknown.
    assert_unknown_token(&alice.post("/logout", json!({})).await, false);
}

#[tokio::test]
async fn missing_and_unknown_tokens() {
    let app = spawn_app().await;
    app.get("/_matrix/client/v3/account/whoami")
        .await
        .expect_err(401, "M_MISSING_TOKEN");
    let r = app
        .request(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            Some("axo_not_a_token"),
            None,
        )
        .await;
    assert_unknown_token(&r, false);
    app.request(Method::POST, "/_matrix/client/v3/logout", None, None)
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn tokens_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM access_tokens")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0], alice.token.as_bytes());
    assert_eq!(rows[0].len(), 32);
}

#[tokio::test]
async fn logout_all_ends_every_session() {
    let app = spawn_app().await;
    let first = app.register("alice").await;
    let second = login_user(&app, "alice").await;
    let third = login_user(&app, "alice").await;
    second.post("/logout/all", json!({})).await.ok();
    for user in [&first, &second, &third] {
        assert_unknown_token(&user.get("/account/whoami").await, false);
    }
    let again = login_user(&app, "alice").await;
    assert_eq!(
        again.get("/devices").await.ok()["devices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn logout_reaches_a_peer_process_cache() {
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let alice = app.register("alice").await;
    let on_peer = peer.as_user(&alice);
    on_peer.get("/account/whoami").await.ok();
    alice.post("/logout", json!({})).await.ok();
    let mut last = None;
    for _ in 0..50 {
        let r = on_peer.get("/account/whoami").await;
        if r.status == 401 {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_unknown_token(&last.expect("the peer still honours the token"), false);
}

#[tokio::test]
async fn login_with_existing_device_id_replaces_its_token() {
    let app = spawn_app().await;
    app.register("alice").await;
    let body = json!({"type": "m.login.password", "user": "alice", "password": PASSWORD, "device_id": "LAPTOP",
                      "initial_device_display_name": "Laptop"});
    let first = user_from(&app, &post(&app, "/login", body.clone()).await.ok());
    first.get("/account/whoami").await.ok();
    let second = user_from(&app, &post(&app, "/login", body).await.ok());
    assert_eq!(second.device_id, "LAPTOP");
    assert_unknown_token(&first.get("/account/whoami").await, false);
    let devices = second.get("/devices").await.ok();
    assert_eq!(
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["device_id"] == "LAPTOP")
            .count(),
        1
    );
    assert_eq!(
        second.get("/devices/LAPTOP").await.ok()["display_name"],
        "Laptop"
    );
}

// ---- Refresh tokens ----

async fn refresh_app() -> TestApp {
    let mut config = test_config();
    config.sessions.refreshable_access_token_lifetime_ms = 1000;
    spawn_app_with(config).await
}

async fn refresh(app: &TestApp, token: &str) -> Resp {
    post(app, "/refresh", json!({"refresh_token": token})).await
}

#[tokio::test]
async fn refresh_tokens_expire_and_rotate() {
    let app = refresh_app().await;
    app.register("alice").await;
    let v = post(&app, "/login", json!({"type": "m.login.password", "user": "alice", "password": PASSWORD, "refresh_token": true}))
        .await
        .ok();
    assert_eq!(v["expires_in_ms"], 1000);
    let r1 = v["refresh_token"].as_str().unwrap().to_owned();
    let alice = user_from(&app, &v);
    alice.get("/account/whoami").await.ok();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Expired: a soft logout, the client should refresh.
    assert_unknown_token(&alice.get("/account/whoami").await, true);

    let v2 = refresh(&app, &r1).await.ok();
    let r2 = v2["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(v2["expires_in_ms"], 1000);
    assert_ne!(r2, r1);
    // A retry with the old refresh token is allowed while its successor is unused; it replaces it.
    let v3 = refresh(&app, &r1).await.ok();
    let r3 = v3["refresh_token"].as_str().unwrap().to_owned();
    assert_unknown_token(&refresh(&app, &r2).await, false);
    // Using the new access token retires the old refresh token.
    let a3 = with_token(&alice, v3["access_token"].as_str().unwrap());
    let me = a3.get("/account/whoami").await.ok();
    assert_eq!(
        me["device_id"],
        alice.device_id.as_str(),
        "refreshing keeps the device"
    );
    assert_unknown_token(&refresh(&app, &r1).await, false);
    // The newest refresh token works, once its successor is used it is gone too.
    let v4 = refresh(&app, &r3).await.ok();
    let r4 = v4["refresh_token"].as_str().unwrap().to_owned();
    refresh(&app, &r4).await.ok();
    assert_unknown_token(&refresh(&app, &r3).await, false);
    assert_unknown_token(&refresh(&app, "axr_unknown").await, false);
}

#[tokio::test]
async fn refresh_token_on_register_and_not_without_asking() {
    let app = refresh_app().await;
    let v = post(
        &app,
        "/register",
        json!({"username": "r", "password": PASSWORD, "refresh_token": true, "auth": {"type": "m.login.dummy"}}),
    )
    .await
    .ok();
    assert!(v["refresh_token"].is_string());
    assert_eq!(v["expires_in_ms"], 1000);
    let plain = login(&app, "r", PASSWORD).await.ok();
    assert!(
        plain.get("refresh_token").is_none() && plain.get("expires_in_ms").is_none(),
        "{plain}"
    );
    // An expired access token can still log out.
    let user = user_from(&app, &v);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    user.post("/logout", json!({})).await.ok();
    assert_unknown_token(
        &refresh(&app, v["refresh_token"].as_str().unwrap()).await,
        false,
    );
}

// ---- Devices ----

#[tokio::test]
async fn devices_list_get_rename() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let phone = login_user(&app, "alice").await;
    let v = alice.get("/devices").await.ok();
    let ids: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&alice.device_id.as_str()) && ids.contains(&phone.device_id.as_str()),
        "{ids:?}"
    );
    let d = alice
        .get(&format!("/devices/{}", phone.device_id))
        .await
        .ok();
    assert!(d["last_seen_ts"].as_i64().unwrap() > 0);
    assert_eq!(d["last_seen_ip"], "127.0.0.1");
    alice
        .put(
            &format!("/devices/{}", phone.device_id),
            json!({"display_name": "Phone"}),
        )
        .await
        .ok();
    assert_eq!(
        alice
            .get(&format!("/devices/{}", phone.device_id))
            .await
            .ok()["display_name"],
        "Phone"
    );
    // No display name: unchanged.
    alice
        .put(&format!("/devices/{}", phone.device_id), json!({}))
        .await
        .ok();
    assert_eq!(
        alice
            .get(&format!("/devices/{}", phone.device_id))
            .await
            .ok()["display_name"],
        "Phone"
    );
    alice
        .get("/devices/NOSUCH")
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .put("/devices/NOSUCH", json!({"display_name": "x"}))
        .await
        .expect_err(404, "M_NOT_FOUND");
    // Someone else's device is not ours to see.
    let bob = app.register("bob").await;
    bob.get(&format!("/devices/{}", phone.device_id))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice.get("/devices").await.ok();
    app.get("/_matrix/client/v3/devices")
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn delete_device_needs_password_uia() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let phone = login_user(&app, "alice").await;
    let path = format!("/devices/{}", phone.device_id);
    // Without auth: the flows.
    let r = alice.request(Method::DELETE, &path, Some(json!({}))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = r.body["session"].as_str().unwrap().to_owned();
    // Wrong password: 401 with the error, the device stays.
    let r = alice
        .request(
            Method::DELETE,
            &path,
            Some(json!({"auth": password_auth(&alice, "wrong", Some(&session))})),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.errcode(), "M_FORBIDDEN");
    phone.get("/account/whoami").await.ok();
    // Someone else's password does not do.
    let bob = app.register("bob").await;
    let r = alice
        .request(
            Method::DELETE,
            &path,
            Some(json!({"auth": password_auth(&bob, PASSWORD, Some(&session))})),
        )
        .await;
    r.expect_err(403, "M_FORBIDDEN");
    phone.get("/account/whoami").await.ok();
    // Right password.
    alice
        .request(
            Method::DELETE,
            &path,
            Some(json!({"auth": password_auth(&alice, PASSWORD, Some(&session))})),
        )
        .await
        .ok();
    assert_unknown_token(&phone.get("/account/whoami").await, false);
    alice.get(&path).await.expect_err(404, "M_NOT_FOUND");
    // Already gone: fine, no authentication needed.
    alice
        .request(Method::DELETE, &path, Some(json!({})))
        .await
        .ok();
    // A session of Alice's cannot authorise Bob.
    let r = alice
        .request(
            Method::DELETE,
            &format!("/devices/{}", alice.device_id),
            Some(json!({})),
        )
        .await;
    let alice_session = r.body["session"].as_str().unwrap().to_owned();
    let r = bob
        .request(
            Method::DELETE,
            &format!("/devices/{}", bob.device_id),
            Some(json!({"auth": password_auth(&bob, PASSWORD, Some(&alice_session))})),
        )
        .await;
    r.expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn delete_devices_in_bulk_one_shot() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let a = login_user(&app, "alice").await;
    let b = login_user(&app, "alice").await;
    let body = json!({"devices": [a.device_id, b.device_id, "GONE"]});
    let r = alice.post("/delete_devices", body.clone()).await;
    assert_eq!(r.status, 401);
    let mut with_auth = body;
    with_auth["auth"] = password_auth(&alice, PASSWORD, None);
    alice.post("/delete_devices", with_auth).await.ok();
    assert_unknown_token(&a.get("/account/whoami").await, false);
    assert_unknown_token(&b.get("/account/whoami").await, false);
    alice.get("/account/whoami").await.ok();
    assert_eq!(
        alice.get("/devices").await.ok()["devices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    alice
        .post("/delete_devices", json!({}))
        .await
        .expect_err(400, "M_BAD_JSON");
}

#[tokio::test]
async fn uia_session_is_bound_to_its_operation() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let phone = login_user(&app, "alice").await;
    let r = alice
        .request(
            Method::DELETE,
            &format!("/devices/{}", phone.device_id),
            Some(json!({})),
        )
        .await;
    let session = r.body["session"].as_str().unwrap().to_owned();
    let r = alice
        .post(
            "/account/deactivate",
            json!({"auth": password_auth(&alice, PASSWORD, Some(&session))}),
        )
        .await;
    r.expect_err(403, "M_FORBIDDEN");
    alice.get("/account/whoami").await.ok();
}

/// Synapse's check_ui_auth: a session completes only the request that started it.
#[tokio::test]
async fn uia_session_completes_only_the_request_that_started_it() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let phone = login_user(&app, "alice").await;
    let tablet = login_user(&app, "alice").await;
    let phone_path = format!("/devices/{}", phone.device_id);
    let r = alice
        .request(Method::DELETE, &phone_path, Some(json!({})))
        .await;
    let session = r.body["session"].as_str().unwrap().to_owned();
    let auth = password_auth(&alice, PASSWORD, Some(&session));
    // Another target.
    alice
        .request(
            Method::DELETE,
            &format!("/devices/{}", tablet.device_id),
            Some(json!({"auth": auth})),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Another endpoint for the same device.
    alice
        .post(
            "/delete_devices",
            json!({"devices": [phone.device_id], "auth": auth}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    tablet.get("/account/whoami").await.ok();
    phone.get("/account/whoami").await.ok();
    // A changed body.
    let body = json!({"devices": [phone.device_id]});
    let r = alice.post("/delete_devices", body).await;
    let bulk = r.body["session"].as_str().unwrap().to_owned();
    alice
        .post(
            "/delete_devices",
            json!({"devices": [phone.device_id, tablet.device_id],
                   "auth": password_auth(&alice, PASSWORD, Some(&bulk))}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    tablet.get("/account/whoami").await.ok();
    // The request that started it still completes it.
    alice
        .request(Method::DELETE, &phone_path, Some(json!({"auth": auth})))
        .await
        .ok();
    assert_unknown_token(&phone.get("/account/whoami").await, false);
}

/// Synapse's validate_user_via_ui_auth: UIA authenticates the access token's owner.
#[tokio::test]
async fn uia_refuses_the_password_of_another_user() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let bobs = |session: Option<&str>| password_auth(&bob, PASSWORD, session);
    alice
        .post(
            "/account/password",
            json!({"new_password": "taken over", "auth": bobs(None)}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .post("/account/deactivate", json!({"auth": bobs(None)}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .post(
            "/delete_devices",
            json!({"devices": [alice.device_id], "auth": bobs(None)}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    let r = alice.post("/account/deactivate", json!({})).await;
    let session = r.body["session"].as_str().unwrap().to_owned();
    alice
        .post("/account/deactivate", json!({"auth": bobs(Some(&session))}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice.get("/account/whoami").await.ok();
    login(&app, "bob", PASSWORD).await.ok();
}

// ---- Password change ----

#[tokio::test]
async fn change_password_logs_out_other_devices() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let other = login_user(&app, "alice").await;
    let r = alice
        .post("/account/password", json!({"new_password": "new horse"}))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = r.body["session"].as_str().unwrap().to_owned();
    alice
        .post("/account/password", json!({"new_password": "new horse", "auth": password_auth(&alice, PASSWORD, Some(&session))}))
        .await
        .ok();
    alice.get("/account/whoami").await.ok();
    assert_unknown_token(&other.get("/account/whoami").await, false);
    assert_eq!(
        alice.get("/devices").await.ok()["devices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    login(&app, "alice", PASSWORD)
        .await
        .expect_err(403, "M_FORBIDDEN");
    login(&app, "alice", "new horse").await.ok();
}

#[tokio::test]
async fn change_password_can_keep_other_devices() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let other = login_user(&app, "alice").await;
    alice
        .post(
            "/account/password",
            json!({"new_password": "new horse", "logout_devices": false, "auth": password_auth(&alice, PASSWORD, None)}),
        )
        .await
        .ok();
    other.get("/account/whoami").await.ok();
    login(&app, "alice", "new horse").await.ok();
    alice
        .post("/account/password", json!({}))
        .await
        .expect_err(400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn change_password_without_access_token() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD});
    post(
        &app,
        "/account/password",
        json!({"new_password": "n2", "auth": auth}),
    )
    .await
    .ok();
    assert_unknown_token(&alice.get("/account/whoami").await, false);
    login(&app, "alice", "n2").await.ok();
}

// ---- Deactivation ----

async fn create_room(app: &TestApp, creator: &str) -> String {
    use axon::service::events::EventDraft;
    use axon::service::writer::Target;
    let drafts = vec![
        EventDraft::new(
            "m.room.create",
            Some(""),
            creator,
            json!({"room_version": "12"}),
        ),
        EventDraft::new(
            "m.room.member",
            Some(creator),
            creator,
            json!({"membership": "join"}),
        ),
    ];
    let target = Target::New {
        version: axon::service::room_versions::parse("12").unwrap(),
        room_id: None,
        is_public: false,
        aliases: vec![],
    };
    app.state
        .writer
        .submit(target, drafts, None)
        .await
        .expect("creating a room")
        .room_id
}

#[tokio::test]
async fn deactivation_revokes_everything_and_leaves_rooms() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let phone = login_user(&app, "alice").await;
    let room_id = create_room(&app, &alice.user_id).await;
    let joined = axon::store::rooms::joined_rooms(&app.db, &alice.user_id)
        .await
        .unwrap();
    assert_eq!(joined, vec![room_id.clone()]);

    let r = alice.post("/account/deactivate", json!({})).await;
    assert_eq!(r.status, 401);
    let session = r.body["session"].as_str().unwrap().to_owned();
    let r = alice
        .post(
            "/account/deactivate",
            json!({"auth": password_auth(&alice, "wrong", Some(&session))}),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.errcode(), "M_FORBIDDEN");
    let v = alice
        .post(
            "/account/deactivate",
            json!({"auth": password_auth(&alice, PASSWORD, Some(&session))}),
        )
        .await
        .ok();
    assert_eq!(v["id_server_unbind_result"], "no-support");

    assert_unknown_token(&alice.get("/account/whoami").await, false);
    assert_unknown_token(&phone.get("/account/whoami").await, false);
    login(&app, "alice", PASSWORD)
        .await
        .expect_err(403, "M_FORBIDDEN");
    post(
        &app,
        "/register",
        json!({"username": "alice", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
    )
    .await
    .expect_err(400, "M_USER_IN_USE");
    app.get("/_matrix/client/v3/register/available?username=alice")
        .await
        .expect_err(400, "M_USER_IN_USE");
    let memberships = axon::store::rooms::memberships_of(&app.db, &alice.user_id)
        .await
        .unwrap();
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0].membership, "leave");
}

// ---- Third-party identifiers, whois ----

#[tokio::test]
async fn threepids_are_empty_at_first() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    assert_eq!(
        alice.get("/account/3pid").await.ok(),
        json!({"threepids": []})
    );
}

#[tokio::test]
async fn whois_shows_own_devices() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let v = alice
        .get(&format!("/admin/whois/{}", alice.user_id))
        .await
        .ok();
    assert_eq!(v["user_id"], alice.user_id.as_str());
    let connections = &v["devices"][alice.device_id.as_str()]["sessions"][0]["connections"];
    assert_eq!(connections[0]["ip"], "127.0.0.1");
    let bob = app.register("bob").await;
    bob.get(&format!("/admin/whois/{}", alice.user_id))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

// ---- Rate limiting ----

#[tokio::test]
async fn login_and_registration_are_rate_limited_per_ip() {
    let mut config = test_config();
    config.rate_limits.enabled = true;
    config.rate_limits.burst = 3;
    config.rate_limits.per_second = 0.1;
    let app = spawn_app_with(config).await;
    for _ in 0..3 {
        login(&app, "nobody", "x")
            .await
            .expect_err(403, "M_FORBIDDEN");
    }
    let r = login(&app, "nobody", "x").await;
    r.expect_err(429, "M_LIMIT_EXCEEDED");
    let wait = r.body["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 0 && wait <= 10_000, "{wait}");
    // Registration has its own budget.
    for i in 0..3 {
        post(&app, "/register", json!({"username": format!("u{i}"), "password": PASSWORD, "auth": {"type": "m.login.dummy"}}))
            .await
            .ok();
    }
    post(
        &app,
        "/register",
        json!({"username": "u9", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
    )
    .await
    .expect_err(429, "M_LIMIT_EXCEEDED");
}

// ---- The admin CLI ----

pub fn cli_config(app: &TestApp, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("axon.toml");
    let text = format!(
        "server_name = \"test.local\"\ndata_dir = \"{}\"\n[database]\nurl = \"{}\"\nmax_connections = 2\n[log]\nlevel = \"warn\"\n",
        dir.display(),
        database_url(&app.db_name)
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `axon --config … args`, feeding `stdin`; returns (success, stdout, stderr).
pub async fn axon_cli(
    config: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_manages_users_while_the_server_runs() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(&app, dir.path());

    let (ok, out, err) = axon_cli(&config, &["user", "create", "carol", "--admin"], "pw1\n").await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("@carol:test.local"), "{out}");
    let carol = user_from(&app, &login(&app, "carol", "pw1").await.ok());
    // Admin: may look up others.
    let dave = app.register("dave").await;
    carol
        .get(&format!("/admin/whois/{}", dave.user_id))
        .await
        .ok();

    let (ok, _, err) = axon_cli(&config, &["user", "create", "carol"], "pw\n").await;
    assert!(!ok && err.contains("taken"), "{err}");
    let (ok, _, err) = axon_cli(&config, &["user", "create", "Bad Name"], "pw\n").await;
    assert!(!ok, "{err}");

    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, "pw2\n").unwrap();
    let (ok, out, err) = axon_cli(
        &config,
        &[
            "user",
            "reset-password",
            "@carol:test.local",
            "--password-file",
            pwfile.to_str().unwrap(),
        ],
        "",
    )
    .await;
    assert!(ok, "{out}{err}");
    login(&app, "carol", "pw1")
        .await
        .expect_err(403, "M_FORBIDDEN");
    login(&app, "carol", "pw2").await.ok();
    // The running server dropped the old session (cache invalidation crossed processes).
    assert_unknown_token(&carol.get("/account/whoami").await, false);

    let (ok, out, err) = axon_cli(&config, &["user", "deactivate", "dave"], "").await;
    assert!(ok, "{out}{err}");
    assert_unknown_token(&dave.get("/account/whoami").await, false);
    login(&app, "dave", PASSWORD)
        .await
        .expect_err(403, "M_FORBIDDEN");
    let erased = axon::store::users::erased_users(&app.db).await.unwrap();
    assert!(erased.is_empty(), "{erased:?}");

    // `--erase`: the deactivation of `POST /account/deactivate` with `erase: true`.
    app.register("erin").await;
    let (ok, out, err) = axon_cli(&config, &["user", "deactivate", "erin", "--erase"], "").await;
    assert!(ok, "{out}{err}");
    let erased = axon::store::users::erased_users(&app.db).await.unwrap();
    assert_eq!(erased, vec!["@erin:test.local".to_owned()]);
}

#[tokio::test]
async fn cli_creates_registration_tokens() {
    let mut config = test_config();
    config.registration.policy = Some(axon::config::RegistrationPolicy::Token);
    let app = spawn_app_with(config).await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(&app, dir.path());

    let (ok, out, err) = axon_cli(
        &config,
        &[
            "registration-token",
            "create",
            "--uses",
            "1",
            "--expires",
            "1h",
        ],
        "",
    )
    .await;
    assert!(ok, "{out}{err}");
    let token = out.trim().to_owned();
    assert!(validity(&app, &token).await);
    post(&app, "/register", json!({"username": "newbie", "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": token}}))
        .await
        .ok();
    assert!(!validity(&app, &token).await);

    let (ok, out, err) = axon_cli(&config, &["registration-token", "list"], "").await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&token) && out.contains("1/1 uses") && out.contains("used up"),
        "{out}"
    );
    let (ok, _, err) = axon_cli(
        &config,
        &["registration-token", "create", "--expires", "soon"],
        "",
    )
    .await;
    assert!(!ok && err.contains("soon"), "{err}");
    let (ok, _, err) = axon_cli(&config, &["registration-token", "delete", &token], "").await;
    assert!(ok, "{err}");
}

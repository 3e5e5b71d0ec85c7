//! Logging in a new device from an existing session: `POST /v1/login/get_token` (behind UIA,
//! off unless configured), then an `m.login.token` login with the single-use token.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::accounts::post;
use crate::common::*;

const GET_TOKEN: &str = "/_matrix/client/v1/login/get_token";

fn enabled() -> axon::Config {
    let mut config = test_config();
    config.login_token.enabled = true;
    config
}

fn password_auth(user: &User, session: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id},
           "password": "correct horse", "session": session})
}

/// Asks for a token, answering the password challenge.
async fn get_token(user: &User) -> Value {
    let challenge = user.post(GET_TOKEN, json!({})).await;
    challenge.expect_err(401, "");
    let session = challenge.body["session"].as_str().unwrap();
    user.post(GET_TOKEN, json!({"auth": password_auth(user, session)}))
        .await
        .ok()
}

async fn token_login(app: &TestApp, token: &str) -> Resp {
    post(
        app,
        "/login",
        json!({"type": "m.login.token", "token": token}),
    )
    .await
}

#[tokio::test]
async fn login_tokens_are_off_unless_configured() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    // As Synapse, which then registers no such endpoint.
    alice
        .post(GET_TOKEN, json!({}))
        .await
        .expect_err(404, "M_UNRECOGNIZED");
    let caps = alice.get("/capabilities").await.ok();
    assert_eq!(caps["capabilities"]["m.get_login_token"]["enabled"], false);
    let flows = app.get("/_matrix/client/v3/login").await.ok();
    assert!(
        !flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.token"),
        "{flows}"
    );
    token_login(&app, "whatever")
        .await
        .expect_err(400, "M_UNKNOWN");
}

#[tokio::test]
async fn when_on_login_tokens_are_advertised() {
    let app = spawn_app_with(enabled()).await;
    let alice = app.register("alice").await;
    let caps = alice.get("/capabilities").await.ok();
    assert_eq!(caps["capabilities"]["m.get_login_token"]["enabled"], true);
    let flows = app.get("/_matrix/client/v3/login").await.ok();
    assert!(
        flows["flows"]
            .as_array()
            .unwrap()
            .contains(&json!({"type": "m.login.token", "get_login_token": true})),
        "{flows}"
    );
    let versions = app.get("/_matrix/client/versions").await.ok();
    assert_eq!(versions["unstable_features"]["org.matrix.msc3882"], true);
}

#[tokio::test]
async fn a_login_token_needs_the_password_every_time() {
    let app = spawn_app_with(enabled()).await;
    let alice = app.register("alice").await;
    let challenge = alice.post(GET_TOKEN, json!({})).await;
    challenge.expect_err(401, "");
    assert_eq!(
        challenge.body["flows"],
        json!([{"stages": ["m.login.password"]}])
    );
    let session = challenge.body["session"].as_str().unwrap();
    let mut wrong = password_auth(&alice, session);
    wrong["password"] = json!("wrong");
    alice
        .post(GET_TOKEN, json!({"auth": wrong}))
        .await
        .expect_err(401, "M_FORBIDDEN");
    let v = alice
        .post(GET_TOKEN, json!({"auth": password_auth(&alice, session)}))
        .await
        .ok();
    assert_eq!(v["expires_in_ms"], 300_000);
    assert!(v["login_token"].as_str().is_some_and(|t| !t.is_empty()));
    // The next token asks again: the completed session is gone.
    alice
        .post(GET_TOKEN, json!({"auth": password_auth(&alice, session)}))
        .await
        .expect_err(400, "M_UNKNOWN");
    alice.post(GET_TOKEN, json!({})).await.expect_err(401, "");
}

#[tokio::test]
async fn a_login_token_logs_in_one_new_device_once() {
    let app = spawn_app_with(enabled()).await;
    let alice = app.register("alice").await;
    let token = get_token(&alice).await["login_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = token_login(&app, &token).await.ok();
    assert_eq!(session["user_id"], alice.user_id);
    assert_ne!(session["device_id"], json!(alice.device_id));
    let new_device = User {
        token: session["access_token"].as_str().unwrap().to_owned(),
        device_id: session["device_id"].as_str().unwrap().to_owned(),
        ..alice.clone()
    };
    let whoami = new_device.get("/account/whoami").await.ok();
    assert_eq!(whoami["user_id"], alice.user_id);
    assert_eq!(whoami["device_id"], session["device_id"]);
    // Single use.
    token_login(&app, &token)
        .await
        .expect_err(403, "M_FORBIDDEN");
    token_login(&app, "unknown")
        .await
        .expect_err(403, "M_FORBIDDEN");
    post(&app, "/login", json!({"type": "m.login.token"}))
        .await
        .expect_err(400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn two_logins_racing_with_one_token_log_in_one_device() {
    let app = spawn_app_with(enabled()).await;
    let alice = app.register("alice").await;
    let token = get_token(&alice).await["login_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let attempts: Vec<_> = (0..8).map(|_| token_login(&app, &token)).collect();
    let results = futures_util::future::join_all(attempts).await;
    let won = results.iter().filter(|r| r.status.as_u16() == 200).count();
    assert_eq!(won, 1, "{results:?}");
    for r in results.iter().filter(|r| r.status.as_u16() != 200) {
        r.expect_err(403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn an_expired_login_token_is_refused() {
    let mut config = enabled();
    config.login_token.lifetime_ms = 1000;
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let v = get_token(&alice).await;
    assert_eq!(v["expires_in_ms"], 1000);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    token_login(&app, v["login_token"].as_str().unwrap())
        .await
        .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn without_ui_auth_configured_a_token_comes_at_once() {
    let mut config = enabled();
    config.login_token.require_ui_auth = false;
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let v = alice.post(GET_TOKEN, json!({})).await.ok();
    token_login(&app, v["login_token"].as_str().unwrap())
        .await
        .ok();
    // MSC3882's unstable path, which Synapse still serves.
    alice
        .request(
            Method::POST,
            "/_matrix/client/unstable/org.matrix.msc3882/login/token",
            Some(json!({})),
        )
        .await
        .ok();
}

#[tokio::test]
async fn login_tokens_are_rate_limited_per_user() {
    let mut config = enabled();
    config.login_token.require_ui_auth = false;
    let r = &mut config.rate_limits;
    r.enabled = true;
    r.per_user = Some(true);
    r.per_second = 1000.0;
    r.burst = 10_000;
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    alice.post(GET_TOKEN, json!({})).await.ok();
    let refused = alice.post(GET_TOKEN, json!({})).await;
    refused.expect_err(429, "M_LIMIT_EXCEEDED");
    assert!(refused.body["retry_after_ms"].as_u64().unwrap() > 50_000);
    // Per user.
    bob.post(GET_TOKEN, json!({})).await.ok();
}

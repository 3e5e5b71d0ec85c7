//! OpenID tokens: a user asks for one and a third party (widget, integration manager, call server)
//! exchanges it at the federation userinfo endpoint for the user's ID.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

const USERINFO: &str = "/_matrix/federation/v1/openid/userinfo";

async fn request_token(user: &User) -> Resp {
    user.post(
        &format!("/user/{}/openid/request_token", enc(&user.user_id)),
        json!({}),
    )
    .await
}

async fn userinfo(app: &TestApp, token: &str) -> Resp {
    app.get(&format!("{USERINFO}?access_token={}", enc(token)))
        .await
}

#[tokio::test]
async fn an_openid_token_tells_a_third_party_who_asked_for_it() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let v = request_token(&alice).await.ok();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["matrix_server_name"], "test.local");
    assert_eq!(v["expires_in"], 3600);
    let token = v["access_token"].as_str().unwrap();
    // Usable until it expires (a widget may check it more than once), as in Synapse.
    for _ in 0..2 {
        let info = userinfo(&app, token).await.ok();
        assert_eq!(info, json!({"sub": alice.user_id}));
    }
    // It is no access token.
    let as_access = User {
        token: token.to_owned(),
        ..alice.clone()
    };
    as_access
        .get("/account/whoami")
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    // Stored hashed, never as issued.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM openid_tokens")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token.as_bytes());
}

#[tokio::test]
async fn an_openid_token_expires_as_configured() {
    let mut config = test_config();
    config.openid.token_lifetime_ms = 1000;
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let v = request_token(&alice).await.ok();
    assert_eq!(v["expires_in"], 1);
    let token = v["access_token"].as_str().unwrap();
    userinfo(&app, token).await.ok();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    userinfo(&app, token)
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn unknown_or_missing_openid_tokens_are_refused() {
    let app = spawn_app().await;
    userinfo(&app, "nonsense")
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    // As Synapse: no token at all is M_MISSING_TOKEN.
    app.get(USERINFO).await.expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn nobody_gets_an_openid_token_for_another_user() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    alice
        .post(
            &format!("/user/{}/openid/request_token", enc(&bob.user_id)),
            json!({}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .post("/user/not-a-user-id/openid/request_token", json!({}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    // A token is needed to ask.
    app.request(
        reqwest::Method::POST,
        &format!(
            "/_matrix/client/v3/user/{}/openid/request_token",
            enc(&alice.user_id)
        ),
        None,
        Some(json!({})),
    )
    .await
    .expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn a_deactivated_users_openid_tokens_stop_working() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let token = request_token(&alice).await.ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .post(
            "/account/deactivate",
            json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id}, "password": "correct horse"}}),
        )
        .await
        .ok();
    userinfo(&app, &token)
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
}

//! Registering the way clients do it over several requests of one UIA session, the stages that
//! registration and login advertise, and what /admin/whois reports of a device's sessions.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::accounts::post;
use crate::common::*;

/// Starts a registration with `body` and returns the session of the 401.
async fn start(app: &TestApp, body: Value) -> String {
    let r = post(app, "/register", body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    r.body["session"].as_str().unwrap().to_owned()
}

fn dummy(session: &str) -> Value {
    json!({"auth": {"type": "m.login.dummy", "session": session}})
}

async fn login(app: &TestApp, name: &str, password: &str) -> Resp {
    post(app, "/login", json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": password})).await
}

#[tokio::test]
async fn the_last_stage_may_leave_out_the_first_requests_parameters() {
    let app = spawn_app().await;
    let session = start(
        &app,
        json!({"username": "alice", "password": "pw one", "device_id": "PHONE",
               "initial_device_display_name": "Alice's phone"}),
    )
    .await;
    let v = post(&app, "/register", dummy(&session)).await.ok();
    assert_eq!(v["user_id"], "@alice:test.local");
    assert_eq!(v["device_id"], "PHONE");
    let token = v["access_token"].as_str().unwrap();
    let devices = app
        .request(Method::GET, "/_matrix/client/v3/devices", Some(token), None)
        .await
        .ok();
    assert_eq!(devices["devices"][0]["display_name"], "Alice's phone");
    login(&app, "alice", "pw one").await.ok();
}

#[tokio::test]
async fn retrying_a_completed_registration_answers_for_the_same_account() {
    let app = spawn_app().await;
    let session = start(&app, json!({"username": "bob", "password": "pw"})).await;
    let mut body = dummy(&session);
    body["username"] = json!("bob");
    body["password"] = json!("pw");
    let first = post(&app, "/register", body.clone()).await.ok();
    // The response was lost; the client sends the same request again.
    let again = post(&app, "/register", body).await.ok();
    assert_eq!(again["user_id"], first["user_id"]);
    assert!(again["access_token"].is_string());
}

#[tokio::test]
async fn inhibit_login_from_the_first_request_returns_no_token_or_device() {
    let app = spawn_app().await;
    let session = start(
        &app,
        json!({"username": "carol", "password": "pw", "inhibit_login": true}),
    )
    .await;
    let v = post(&app, "/register", dummy(&session)).await.ok();
    assert_eq!(v["user_id"], "@carol:test.local");
    assert!(v.get("access_token").is_none(), "{v}");
    assert!(v.get("device_id").is_none(), "{v}");
    let login = login(&app, "carol", "pw").await.ok();
    let token = login["access_token"].as_str().unwrap();
    let devices = app
        .request(Method::GET, "/_matrix/client/v3/devices", Some(token), None)
        .await
        .ok();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");
}

#[tokio::test]
async fn non_ascii_passwords_match_however_they_are_composed() {
    let app = spawn_app().await;
    // "é" as one code point at registration, as "e" + a combining accent at login (NFKC, as Synapse).
    let v = post(
        &app,
        "/register",
        json!({"username": "dora", "password": "caf\u{e9} \u{1f511}", "auth": {"type": "m.login.dummy"}}),
    )
    .await
    .ok();
    assert_eq!(v["user_id"], "@dora:test.local");
    login(&app, "dora", "caf\u{e9} \u{1f511}").await.ok();
    login(&app, "dora", "cafe\u{301} \u{1f511}").await.ok();
    login(&app, "dora", "cafe \u{1f511}")
        .await
        .expect_err(403, "M_FORBIDDEN");
}

/// Every stage registration and login advertise is one Axon completes.
#[tokio::test]
async fn only_completable_stages_are_advertised() {
    const COMPLETABLE: [&str; 3] = [
        "m.login.dummy",
        "m.login.registration_token",
        "m.login.password",
    ];
    let app = spawn_app().await;
    let r = post(
        &app,
        "/register",
        json!({"username": "eve", "password": "pw"}),
    )
    .await;
    assert_eq!(r.status, 401);
    for flow in r.body["flows"].as_array().unwrap() {
        for stage in flow["stages"].as_array().unwrap() {
            assert!(COMPLETABLE.contains(&stage.as_str().unwrap()), "{stage}");
        }
    }
    let flows = app.get("/_matrix/client/v3/login").await.ok();
    let types: Vec<&str> = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["m.login.password"]);
    // A stage that is not advertised does not complete the flow.
    let session = r.body["session"].as_str().unwrap();
    let r = post(
        &app,
        "/register",
        json!({"auth": {"type": "m.login.recaptcha", "response": "x", "session": session}}),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test]
async fn whois_reports_the_address_time_and_user_agent_of_each_device() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let resp = app
        .http
        .get(format!("{}/_matrix/client/v3/account/whoami", app.base_url))
        .bearer_auth(&alice.token)
        .header("User-Agent", "AxonTest/1.0 (whois)")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Activity is recorded off the request path.
    let mut connection = Value::Null;
    for _ in 0..50 {
        let v = alice
            .get(&format!("/admin/whois/{}", enc(&alice.user_id)))
            .await
            .ok();
        connection = v["devices"][&alice.device_id]["sessions"][0]["connections"][0].clone();
        if connection.get("user_agent").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        connection["user_agent"], "AxonTest/1.0 (whois)",
        "{connection}"
    );
    assert_eq!(connection["ip"], "127.0.0.1");
    assert!(connection["last_seen"].as_i64().unwrap() > 0);
}

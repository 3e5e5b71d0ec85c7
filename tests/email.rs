//! Email addresses on accounts and password reset by email, against a local SMTP sink written here
//! (no external service); phone numbers and identity servers answer clear refusals.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axon::config::SmtpTls;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::accounts::post;
use crate::common::*;

const PASSWORD: &str = "correct horse";

/// One mail the sink received.
#[derive(Debug, Clone)]
struct Mail {
    to: Vec<String>,
    data: String,
}

/// A local SMTP server speaking just enough SMTP (greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET,
/// NOOP, QUIT) to take mails and record them.
#[derive(Clone)]
struct SmtpSink {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let sink = SmtpSink {
            port,
            mails: mails.clone(),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_smtp(stream, mails.clone()));
            }
        });
        sink
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

async fn serve_smtp(stream: tokio::net::TcpStream, mails: Arc<Mutex<Vec<Mail>>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 sink\r\n",
            "MAIL" | "RSET" => {
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                let address = line.split(['<', '>']).nth(1).unwrap_or("").to_owned();
                to.push(address);
                b"250 OK\r\n"
            }
            "DATA" => {
                let _ = write.write_all(b"354 go ahead\r\n").await;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    // Dot-stuffing undone.
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                mails.lock().unwrap().push(Mail {
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 OK queued\r\n"
            }
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"250 OK\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

impl Mail {
    /// The path and query of the link in the mail (the link's host is the configured public base
    /// URL; the test's server listens elsewhere).
    fn link(&self) -> String {
        // Undo quoted-printable, should the mail come so encoded.
        let text = self.data.replace("=\r\n", "").replace("=3D", "=");
        let start = text.find("/_axon/").expect("a link in the mail");
        let end = text[start..]
            .find(char::is_whitespace)
            .map_or(text.len(), |e| start + e);
        text[start..end].to_owned()
    }
}

async fn email_app_with(config: impl FnOnce(&mut axon::Config)) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let mut c = test_config();
    c.email.smtp_host = Some("127.0.0.1".into());
    c.email.smtp_port = sink.port;
    c.email.tls = SmtpTls::None;
    c.email.notif_from = "Axon <noreply@test.local>".into();
    config(&mut c);
    (spawn_app_with(c).await, sink)
}

async fn email_app() -> (TestApp, SmtpSink) {
    email_app_with(|_| {}).await
}

fn token_body(secret: &str, email: &str, attempt: u64) -> Value {
    json!({"client_secret": secret, "email": email, "send_attempt": attempt})
}

/// A page of this server (HTML): status and text.
async fn page(app: &TestApp, method: Method, path_and_query: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .request(method, format!("{}{}", app.base_url, path_and_query))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    (status, location.unwrap_or(text))
}

/// Asks for a validation mail to add `email`, and opens its link: the validated session's sid.
async fn validated_add_session(
    app: &TestApp,
    sink: &SmtpSink,
    secret: &str,
    email: &str,
) -> String {
    let before = sink.mails().len();
    let sid = post(
        app,
        "/account/3pid/email/requestToken",
        token_body(secret, email, 1),
    )
    .await
    .ok()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let mail = sink.mails()[before].clone();
    let (status, text) = page(app, Method::GET, &mail.link()).await;
    assert_eq!(status, 200, "{text}");
    sid
}

fn password_auth(user: &User) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id}, "password": PASSWORD})
}

/// Gives `user` the address through the whole flow.
async fn add_email(app: &TestApp, sink: &SmtpSink, user: &User, email: &str) {
    let sid = validated_add_session(app, sink, "addsecret", email).await;
    user.post(
        "/account/3pid/add",
        json!({"client_secret": "addsecret", "sid": sid, "auth": password_auth(user)}),
    )
    .await
    .ok();
}

async fn login_email(app: &TestApp, address: &str, password: &str) -> Resp {
    post(app, "/login", json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": address}, "password": password})).await
}

// ---- Without SMTP ----

#[tokio::test]
async fn without_smtp_email_endpoints_answer_not_supported() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let body = token_body("secret", "alice@example.org", 1);
    for path in [
        "/account/3pid/email/requestToken",
        "/account/password/email/requestToken",
        "/register/email/requestToken",
    ] {
        post(&app, path, body.clone())
            .await
            .expect_err(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    }
    alice
        .post(
            "/account/3pid/add",
            json!({"client_secret": "s", "sid": "x"}),
        )
        .await
        .expect_err(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    let caps = alice.get("/capabilities").await.ok();
    assert_eq!(caps["capabilities"]["m.3pid_changes"]["enabled"], false);
}

#[tokio::test]
async fn flows_offer_email_only_with_smtp() {
    let reset_flows = |app: &TestApp| {
        let app_url = app.base_url.clone();
        let http = app.http.clone();
        async move {
            let r = http
                .post(format!("{app_url}/_matrix/client/v3/account/password"))
                .json(&json!({"new_password": "x"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
            r.json::<Value>().await.unwrap()["flows"].to_string()
        }
    };
    let login_flows = |app: &TestApp| {
        let app_url = app.base_url.clone();
        let http = app.http.clone();
        async move {
            http.get(format!("{app_url}/_matrix/client/v3/login"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let plain = spawn_app().await;
    assert!(!reset_flows(&plain).await.contains("m.login.email.identity"));
    assert!(!login_flows(&plain).await.contains("email"));
    let register = post(&plain, "/register", json!({})).await;
    assert!(!register.body["flows"].to_string().contains("email"));

    let (app, _sink) = email_app().await;
    assert!(reset_flows(&app).await.contains("m.login.email.identity"));
    let alice = app.register("alice").await;
    let caps = alice.get("/capabilities").await.ok();
    assert_eq!(caps["capabilities"]["m.3pid_changes"]["enabled"], true);
}

#[tokio::test]
async fn phone_numbers_and_identity_servers_are_refused_clearly() {
    let (app, _sink) = email_app().await;
    let alice = app.register("alice").await;
    let msisdn = json!({"client_secret": "s", "country": "GB", "phone_number": "07700900001", "send_attempt": 1});
    for path in [
        "/register/msisdn/requestToken",
        "/account/3pid/msisdn/requestToken",
        "/account/password/msisdn/requestToken",
    ] {
        let r = post(&app, path, msisdn.clone()).await;
        r.expect_err(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
        assert!(r.body["error"].as_str().unwrap().contains("Phone numbers"));
    }
    let bind = alice
        .post("/account/3pid/bind", json!({"client_secret": "s", "sid": "x", "id_server": "id.example.org", "id_access_token": "t"}))
        .await;
    bind.expect_err(400, "M_UNRECOGNIZED");
    assert!(
        bind.body["error"]
            .as_str()
            .unwrap()
            .contains("identity server")
    );
    let unbind = alice
        .post(
            "/account/3pid/unbind",
            json!({"medium": "email", "address": "a@example.org", "id_server": "id.example.org"}),
        )
        .await
        .ok();
    assert_eq!(unbind, json!({"id_server_unbind_result": "no-support"}));
    alice
        .post("/account/3pid", json!({"three_pid_creds": {"client_secret": "s", "sid": "x", "id_server": "id.example.org", "id_access_token": "t"}}))
        .await
        .expect_err(400, "M_UNRECOGNIZED");
}

// ---- Validation ----

#[tokio::test]
async fn request_token_mails_a_link_and_send_attempt_is_idempotent() {
    let (app, sink) = email_app().await;
    let first = post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("secret1", "Alice@Example.org", 1),
    )
    .await
    .ok();
    let sid = first["sid"].as_str().unwrap();
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["alice@example.org".to_owned()]);
    assert!(mails[0].link().contains(&format!("sid={sid}")));
    // The link points at the public base URL (the listener's address when none is configured).
    assert!(
        mails[0]
            .data
            .contains("http://127.0.0.1:8008/_axon/client/email/submit_token?sid="),
        "{}",
        mails[0].data
    );
    assert!(
        mails[0].data.contains("From: Axon <noreply@test.local>"),
        "{}",
        mails[0].data
    );

    // The same attempt again: the same session, no second mail.
    let again = post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("secret1", "alice@example.org", 1),
    )
    .await
    .ok();
    assert_eq!(again["sid"], sid);
    assert_eq!(sink.mails().len(), 1);

    // A new attempt: the same session, a new mail with a new token.
    let next = post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("secret1", "alice@example.org", 2),
    )
    .await
    .ok();
    assert_eq!(next["sid"], sid);
    let mails = sink.mails();
    assert_eq!(mails.len(), 2);
    assert_ne!(mails[0].link(), mails[1].link());

    // Another client secret: another session.
    let other = post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("secret2", "alice@example.org", 1),
    )
    .await
    .ok();
    assert_ne!(other["sid"], sid);
}

#[tokio::test]
async fn bad_client_secret_and_email_are_refused() {
    let (app, sink) = email_app().await;
    for secret in ["has space", "", &"x".repeat(256)] {
        let r = post(
            &app,
            "/account/3pid/email/requestToken",
            token_body(secret, "a@example.org", 1),
        )
        .await;
        assert_eq!(r.status, 400, "{secret}: {}", r.body);
    }
    // Letters beyond ASCII are not in the spec's [0-9a-zA-Z.=_-].
    post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("sécret", "a@example.org", 1),
    )
    .await
    .expect_err(400, "M_INVALID_PARAM");
    post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("secret", "not an address", 1),
    )
    .await
    .expect_err(400, "M_INVALID_PARAM");
    post(
        &app,
        "/account/3pid/email/requestToken",
        json!({"email": "a@example.org"}),
    )
    .await
    .expect_err(400, "M_BAD_JSON");
    assert!(sink.mails().is_empty());
    // The page refuses a bad client secret too.
    let (status, _) = page(
        &app,
        Method::GET,
        "/_axon/client/email/submit_token?sid=x&client_secret=a%20b&token=t",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_link_validates_and_opening_it_again_answers_the_same() {
    let (app, sink) = email_app().await;
    post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("secret", "alice@example.org", 1),
    )
    .await
    .ok();
    let link = sink.mails()[0].link();
    for _ in 0..2 {
        let (status, text) = page(&app, Method::GET, &link).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("validated"), "{text}");
    }
    // A wrong token validates nothing.
    let wrong = link.replace("token=", "token=x");
    let (status, text) = page(&app, Method::GET, &wrong).await;
    assert_eq!(status, 400, "{text}");
}

#[tokio::test]
async fn the_link_goes_on_to_next_link() {
    let (app, sink) = email_app().await;
    let mut body = token_body("secret", "alice@example.org", 1);
    body["next_link"] = json!("https://client.example.org/done?x=1");
    let sid = post(&app, "/account/3pid/email/requestToken", body)
        .await
        .ok()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, location) = page(&app, Method::GET, &sink.mails()[0].link()).await;
    assert_eq!(status, 302);
    assert_eq!(
        location,
        format!("https://client.example.org/done?x=1&sid={sid}")
    );
    let mut bad = token_body("secret", "alice@example.org", 2);
    bad["next_link"] = json!("file:///etc/passwd");
    post(&app, "/account/3pid/email/requestToken", bad)
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

/// A next_link that could not be a `Location` header (control characters) is refused when it is
/// given, not answered with a 500 when the mailed link is opened.
#[tokio::test]
async fn a_next_link_with_control_characters_is_refused_up_front() {
    let (app, sink) = email_app().await;
    for link in [
        "https://client.example.org/\ndone",
        "https://client.example.org/\u{7f}",
        "https://client.example.org/\u{1}",
    ] {
        let mut body = token_body("secret", "alice@example.org", 1);
        body["next_link"] = json!(link);
        post(&app, "/account/3pid/email/requestToken", body)
            .await
            .expect_err(400, "M_INVALID_PARAM");
    }
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn an_expired_token_does_not_validate() {
    let (app, sink) = email_app_with(|c| c.email.validation_token_lifetime_ms = 1000).await;
    let alice = app.register("alice").await;
    let sid = post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("secret", "alice@example.org", 1),
    )
    .await
    .ok()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, text) = page(&app, Method::GET, &sink.mails()[0].link()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("expired"), "{text}");
    alice
        .post(
            "/account/3pid/add",
            json!({"client_secret": "secret", "sid": sid, "auth": password_auth(&alice)}),
        )
        .await
        .expect_err(400, "M_THREEPID_AUTH_FAILED");
}

#[tokio::test]
async fn validation_mails_are_rate_limited() {
    let (app, sink) = email_app_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.threepid_validation.burst = 2;
    })
    .await;
    for attempt in 1..=2 {
        post(
            &app,
            "/account/3pid/email/requestToken",
            token_body("secret", "alice@example.org", attempt),
        )
        .await
        .ok();
    }
    post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("secret", "alice@example.org", 3),
    )
    .await
    .expect_err(429, "M_LIMIT_EXCEEDED");
    assert_eq!(sink.mails().len(), 2);
}

// ---- Adding, listing, removing ----

#[tokio::test]
async fn add_needs_the_password_and_a_validated_session() {
    let (app, sink) = email_app().await;
    let alice = app.register("alice").await;
    let sid = post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("secret", "alice@example.org", 1),
    )
    .await
    .ok()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"client_secret": "secret", "sid": sid});
    let challenge = alice.post("/account/3pid/add", body.clone()).await;
    challenge.expect_err(401, "");
    assert_eq!(
        challenge.body["flows"],
        json!([{"stages": ["m.login.password"]}])
    );
    // Not validated yet.
    let mut with_auth = body.clone();
    with_auth["auth"] = password_auth(&alice);
    alice
        .post("/account/3pid/add", with_auth.clone())
        .await
        .expect_err(400, "M_THREEPID_AUTH_FAILED");
    page(&app, Method::GET, &sink.mails()[0].link()).await;
    alice.post("/account/3pid/add", with_auth).await.ok();
    let list = alice.get("/account/3pid").await.ok();
    let threepids = list["threepids"].as_array().unwrap();
    assert_eq!(threepids.len(), 1, "{list}");
    assert_eq!(threepids[0]["medium"], "email");
    assert_eq!(threepids[0]["address"], "alice@example.org");
    assert!(threepids[0]["validated_at"].as_u64().unwrap() > 0);
    assert!(threepids[0]["added_at"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn an_address_belongs_to_one_account() {
    let (app, sink) = email_app().await;
    let alice = app.register("alice").await;
    add_email(&app, &sink, &alice, "shared@example.org").await;
    post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("bobsecret", "SHARED@example.org", 1),
    )
    .await
    .expect_err(400, "M_THREEPID_IN_USE");
}

#[tokio::test]
async fn delete_removes_the_address() {
    let (app, sink) = email_app().await;
    let alice = app.register("alice").await;
    add_email(&app, &sink, &alice, "alice@example.org").await;
    let r = alice
        .post(
            "/account/3pid/delete",
            json!({"medium": "email", "address": "alice@example.org"}),
        )
        .await
        .ok();
    assert_eq!(r, json!({"id_server_unbind_result": "no-support"}));
    assert_eq!(
        alice.get("/account/3pid").await.ok(),
        json!({"threepids": []})
    );
    alice
        .post(
            "/account/3pid/delete",
            json!({"medium": "email", "address": "alice@example.org"}),
        )
        .await
        .expect_err(400, "M_THREEPID_NOT_FOUND");
    login_email(&app, "alice@example.org", PASSWORD)
        .await
        .expect_err(403, "M_FORBIDDEN");
}

// ---- Login and password reset ----

#[tokio::test]
async fn login_with_an_email_identifier() {
    let (app, sink) = email_app().await;
    let alice = app.register("alice").await;
    add_email(&app, &sink, &alice, "alice@example.org").await;
    let v = login_email(&app, "Alice@Example.org", PASSWORD).await.ok();
    assert_eq!(v["user_id"], alice.user_id);
    login_email(&app, "alice@example.org", "wrong")
        .await
        .expect_err(403, "M_FORBIDDEN");
    login_email(&app, "nobody@example.org", PASSWORD)
        .await
        .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn password_reset_by_email_end_to_end() {
    let (app, sink) = email_app().await;
    let alice = app.register("alice").await;
    add_email(&app, &sink, &alice, "alice@example.org").await;
    let other_device = login_email(&app, "alice@example.org", PASSWORD).await.ok();

    let sid = post(
        &app,
        "/account/password/email/requestToken",
        token_body("resetsecret", "alice@example.org", 1),
    )
    .await
    .ok()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let mail = sink.mails().last().unwrap().clone();
    assert_eq!(mail.to, vec!["alice@example.org".to_owned()]);
    let reset = json!({
        "new_password": "new horse",
        "auth": {"type": "m.login.email.identity", "threepid_creds": {"sid": sid, "client_secret": "resetsecret"}},
    });

    // Opening the link only asks for a confirmation: the session is not validated yet.
    let (status, text) = page(&app, Method::GET, &mail.link()).await;
    assert_eq!(status, 200);
    assert!(text.contains("<form method=\"post\""), "{text}");
    let early = post(&app, "/account/password", reset.clone()).await;
    early.expect_err(401, "M_THREEPID_AUTH_FAILED");

    let (status, text) = page(&app, Method::POST, &mail.link()).await;
    assert_eq!(status, 200, "{text}");
    post(&app, "/account/password", reset.clone()).await.ok();

    post(&app, "/login", json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    login_email(&app, "alice@example.org", "new horse")
        .await
        .ok();
    // Every earlier device is logged out.
    alice
        .get("/account/whoami")
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    app.request(
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        other_device["access_token"].as_str(),
        None,
    )
    .await
    .expect_err(401, "M_UNKNOWN_TOKEN");
    // The session proved the address once.
    post(&app, "/account/password", reset)
        .await
        .expect_err(401, "M_THREEPID_AUTH_FAILED");
}

#[tokio::test]
async fn password_reset_for_an_unknown_address_is_refused() {
    let (app, sink) = email_app().await;
    post(
        &app,
        "/account/password/email/requestToken",
        token_body("secret", "nobody@example.org", 1),
    )
    .await
    .expect_err(400, "M_THREEPID_NOT_FOUND");
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn an_add_session_cannot_reset_a_password() {
    let (app, sink) = email_app().await;
    let alice = app.register("alice").await;
    add_email(&app, &sink, &alice, "alice@example.org").await;
    // A validated session for another address, started to add it, is no proof for a reset.
    let sid = validated_add_session(&app, &sink, "other", "other@example.org").await;
    post(&app, "/account/password", json!({
        "new_password": "new horse",
        "auth": {"type": "m.login.email.identity", "threepid_creds": {"sid": sid, "client_secret": "other"}},
    }))
    .await
    .expect_err(401, "M_THREEPID_AUTH_FAILED");
}

#[tokio::test]
async fn the_page_escapes_what_it_shows() {
    let (app, sink) = email_app().await;
    let alice = app.register("alice").await;
    add_email(&app, &sink, &alice, "alice@example.org").await;
    post(
        &app,
        "/account/password/email/requestToken",
        token_body("secret", "alice@example.org", 1),
    )
    .await
    .ok();
    let link = sink.mails().last().unwrap().link();
    let (base, _) = link.split_once("&token=").unwrap();
    let hostile = format!("{base}&token=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    let (status, text) = page(&app, Method::GET, &hostile).await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("<script>"), "{text}");
    assert!(!text.contains("\"><script"), "{text}");
    assert!(
        text.contains("%3Cscript%3E") || text.contains("&lt;script&gt;"),
        "{text}"
    );
}

#[tokio::test]
async fn deactivation_frees_the_address() {
    let (app, sink) = email_app().await;
    let alice = app.register("alice").await;
    add_email(&app, &sink, &alice, "alice@example.org").await;
    alice
        .post(
            "/account/deactivate",
            json!({"auth": password_auth(&alice)}),
        )
        .await
        .ok();
    post(
        &app,
        "/account/3pid/email/requestToken",
        token_body("bobsecret", "alice@example.org", 1),
    )
    .await
    .ok();
}

#[tokio::test]
async fn a_reset_may_keep_the_other_devices() {
    let (app, sink) = email_app().await;
    let alice = app.register("alice").await;
    add_email(&app, &sink, &alice, "alice@example.org").await;
    let sid = post(
        &app,
        "/account/password/email/requestToken",
        token_body("resetsecret", "alice@example.org", 1),
    )
    .await
    .ok()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let link = sink.mails().last().unwrap().link();
    page(&app, Method::POST, &link).await;
    post(&app, "/account/password", json!({
        "new_password": "new horse",
        "logout_devices": false,
        "auth": {"type": "m.login.email.identity", "threepid_creds": {"sid": sid, "client_secret": "resetsecret"}},
    }))
    .await
    .ok();
    alice.get("/account/whoami").await.ok();
    login_email(&app, "alice@example.org", "new horse")
        .await
        .ok();
}

#[tokio::test]
async fn an_unreachable_mail_server_is_a_prompt_clear_error() {
    // A port nothing listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (app, _sink) = email_app_with(|c| c.email.smtp_port = port).await;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        post(
            &app,
            "/account/3pid/email/requestToken",
            token_body("secret", "alice@example.org", 1),
        ),
    )
    .await
    .expect("an answer, not a hang");
    r.expect_err(500, "M_UNKNOWN");
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("could not be sent")
    );
}

//! Federation, stage 1: identity (keys, notaries, rotation), name resolution and transport (TLS,
//! X-Matrix, address filtering), between Axon instances named `127.0.0.1:PORT`.

use std::collections::BTreeMap;

use axon::service::federation::keyring::{KeySet, signed_by};
use reqwest::StatusCode;
use ruma::api::federation::authentication::{XMatrix, XMatrixSigningInput};
use ruma::api::federation::discovery::get_server_version::v1 as version;
use ruma::api::federation::query::get_profile_information::v1 as profile;
use ruma::serde::Base64;
use ruma::signatures::Ed25519KeyPair;
use ruma::{CanonicalJsonObject, OwnedServerName, OwnedUserId, ServerName};
use serde_json::{Value, json};

use crate::common::{TestApp, insecure_client, spawn_app, spawn_federating};

fn name(app: &TestApp) -> OwnedServerName {
    OwnedServerName::try_from(app.state.server_name.as_str()).unwrap()
}

fn now_ms() -> i64 {
    axon::store::now_ms()
}

async fn get_json(url: &str) -> (StatusCode, Value) {
    let response = insecure_client().get(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The verify keys a key answer lists, as a key set.
fn verify_keys(answer: &Value) -> KeySet {
    answer["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, k)| {
            (
                id.clone(),
                Base64::parse(k["key"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

fn canonical(value: &Value) -> CanonicalJsonObject {
    serde_json::from_value(value.clone()).unwrap()
}

/// The current key ID of `app` (`ed25519:…`).
fn key_id(app: &TestApp) -> String {
    format!("ed25519:{}", app.state.signing_key.version())
}

#[tokio::test]
async fn version_and_own_keys_are_served_over_tls_self_signed() {
    let a = spawn_federating(|_| {}).await;
    let fed = a.fed.as_ref().unwrap();
    let (status, body) = get_json(&format!("{}/_matrix/federation/v1/version", fed.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["server"]["name"], "Axon");

    let (status, keys) = get_json(&format!("{}/_matrix/key/v2/server", fed.url)).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    assert_eq!(keys["server_name"], a.state.server_name.as_str());
    assert!(keys["valid_until_ts"].as_i64().unwrap() > now_ms());
    assert!(verify_keys(&keys).contains_key(&key_id(&a)));
    assert!(signed_by(
        &canonical(&keys),
        a.state.server_name.as_str(),
        &verify_keys(&keys)
    ));
    // The same key signs events: the published key is the event-signing key.
    let public =
        Base64::<ruma::serde::base64::Standard>::new(a.state.signing_key.public_key().to_vec());
    assert_eq!(verify_keys(&keys)[&key_id(&a)].encode(), public.encode());
}

#[tokio::test]
async fn remote_keys_are_fetched_verified_and_then_served_from_the_database() {
    let mut a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let ids = [key_id(&a)];
    let keys = b
        .state
        .keyring
        .keys_valid_at(&name(&a), &ids, now_ms())
        .await
        .unwrap();
    assert!(keys.contains_key(&ids[0]), "fetched from the origin");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM remote_server_keys WHERE server_name = $1")
            .bind(a.state.server_name.as_str())
            .fetch_one(&b.db)
            .await
            .unwrap();
    assert_eq!(stored, 1);

    // The origin goes down: B still knows its keys, and answers notary queries for it,
    // countersigned, from its database.
    a.fed.as_mut().unwrap().stop().await;
    let again = b
        .state
        .keyring
        .keys_valid_at(&name(&a), &ids, now_ms())
        .await
        .unwrap();
    assert_eq!(again, keys);
    let url = format!(
        "{}/_matrix/key/v2/query/{}",
        b.fed.as_ref().unwrap().url,
        a.state.server_name
    );
    let (status, body) = get_json(&url).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = &body["server_keys"][0];
    assert_eq!(answer["server_name"], a.state.server_name.as_str());
    let object = canonical(answer);
    assert!(
        signed_by(&object, a.state.server_name.as_str(), &keys),
        "the origin's signature kept"
    );
    let b_keys = KeySet::from([(
        key_id(&b),
        Base64::new(b.state.signing_key.public_key().to_vec()),
    )]);
    assert!(
        signed_by(&object, b.state.server_name.as_str(), &b_keys),
        "countersigned by the notary"
    );
}

#[tokio::test]
async fn keys_come_through_a_trusted_notary_whose_signature_is_checked() {
    let mut a = spawn_federating(|_| {}).await;
    let notary = spawn_federating(|_| {}).await;
    // The notary learns A's keys while A is up (POST query, as another server would ask).
    let body = json!({"server_keys": {a.state.server_name.as_str(): {}}});
    let response = insecure_client()
        .post(format!(
            "{}/_matrix/key/v2/query",
            notary.fed.as_ref().unwrap().url
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["server_keys"].as_array().unwrap().len(),
        1,
        "{answer}"
    );
    a.fed.as_mut().unwrap().stop().await;

    let trusted = |keys: Option<BTreeMap<String, String>>| axon::config::TrustedKeyServer {
        server_name: notary.state.server_name.to_string(),
        verify_keys: keys,
    };
    // A notary with a wrong configured key is not believed.
    let wrong = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "x".into()).unwrap();
    let wrong_keys = BTreeMap::from([(
        key_id(&notary),
        Base64::<ruma::serde::base64::Standard>::new(wrong.public_key().to_vec()).encode(),
    )]);
    let fooled =
        spawn_federating(|c| c.federation.trusted_key_servers = vec![trusted(Some(wrong_keys))])
            .await;
    let ids = [key_id(&a)];
    let none = fooled
        .state
        .keyring
        .keys_valid_at(&name(&a), &ids, now_ms())
        .await
        .unwrap();
    assert!(
        none.is_empty(),
        "a notary answer without a valid notary signature is refused"
    );

    // A notary whose keys are fetched from it: A's keys arrive although A is down.
    let b = spawn_federating(|c| c.federation.trusted_key_servers = vec![trusted(None)]).await;
    let keys = b
        .state
        .keyring
        .keys_valid_at(&name(&a), &ids, now_ms())
        .await
        .unwrap();
    assert!(keys.contains_key(&ids[0]), "through the notary");
}

#[tokio::test]
async fn rotation_keeps_the_old_key_as_an_old_verify_key() {
    let a = spawn_federating(|_| {}).await;
    let old = key_id(&a);
    let new = axon::service::keys::rotate(&a.db).await.unwrap();
    assert_ne!(new, old);
    // A restarted process signs with the new key and publishes the old one as expired.
    let restarted = crate::common::spawn_peer(&a).await;
    assert_eq!(key_id(&restarted), new);
    let keys = axon::service::keys::server_keys(
        &restarted.db,
        &restarted.state.server_name,
        &restarted.state.signing_key,
    )
    .await
    .unwrap();
    let keys: Value = serde_json::from_str(keys.json().get()).unwrap();
    assert!(keys["verify_keys"].get(&new).is_some(), "{keys}");
    assert!(keys["verify_keys"].get(&old).is_none(), "{keys}");
    let expired = keys["old_verify_keys"][&old]["expired_ts"]
        .as_i64()
        .unwrap();
    assert!(expired <= now_ms() && expired > now_ms() - 60_000, "{keys}");
    // The process that has not restarted still publishes the key it signs with as current.
    let (_, served) = get_json(&format!(
        "{}/_matrix/key/v2/server",
        a.fed.as_ref().unwrap().url
    ))
    .await;
    assert!(served["verify_keys"].get(&old).is_some(), "{served}");
    assert!(served["verify_keys"].get(&new).is_some(), "{served}");
}

/// A GET of the profile endpoint signed by `key` as `origin`, for `destination`.
fn signed_profile_request(
    target: &TestApp,
    user_id: &str,
    origin: &ServerName,
    destination: &ServerName,
    key: &Ed25519KeyPair,
) -> reqwest::RequestBuilder {
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        crate::common::enc(user_id)
    );
    let request = http::Request::builder()
        .method("GET")
        .uri(&path)
        .body(Vec::<u8>::new())
        .unwrap();
    let header = XMatrix::sign_http_request(
        &request,
        XMatrixSigningInput::new(origin.to_owned(), destination.to_owned(), key),
    )
    .unwrap();
    insecure_client()
        .get(format!("{}{path}", target.fed.as_ref().unwrap().url))
        .header("Authorization", http::HeaderValue::from(&header))
}

#[tokio::test]
async fn x_matrix_signed_requests_are_accepted_and_others_get_401() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    alice
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            json!({"displayname": "Alice"}),
        )
        .await
        .ok();

    // Through B's federation client: signed, resolved, TLS.
    let user_id = OwnedUserId::try_from(alice.user_id.as_str()).unwrap();
    let answer = b
        .state
        .federation
        .send(&name(&a), profile::Request::new(user_id))
        .await
        .unwrap();
    assert_eq!(answer.get("displayname"), Some(&json!("Alice")));

    let fed = &a.fed.as_ref().unwrap().url;
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        crate::common::enc(&alice.user_id)
    );
    let unsigned = insecure_client()
        .get(format!("{fed}{path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let body: Value = unsigned.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");

    let expect_401 = |response: reqwest::Response| async move {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    };
    // Signed by B's key, as B, for A: accepted.
    let ok = signed_profile_request(
        &a,
        &alice.user_id,
        &name(&b),
        &name(&a),
        &b.state.signing_key,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // Signed with another key under B's key ID.
    let forged = Ed25519KeyPair::from_der(
        &Ed25519KeyPair::generate(),
        b.state.signing_key.version().into(),
    )
    .unwrap();
    expect_401(
        signed_profile_request(&a, &alice.user_id, &name(&b), &name(&a), &forged)
            .send()
            .await
            .unwrap(),
    )
    .await;
    // Properly signed, but for another destination.
    let elsewhere = OwnedServerName::try_from("127.0.0.1:1").unwrap();
    expect_401(
        signed_profile_request(
            &a,
            &alice.user_id,
            &name(&b),
            &elsewhere,
            &b.state.signing_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    // The signature does not cover another URI.
    let tampered = signed_profile_request(&a, "@bob:x", &name(&b), &name(&a), &b.state.signing_key)
        .build()
        .unwrap();
    let header = tampered.headers()["Authorization"].clone();
    let response = insecure_client()
        .get(format!("{fed}{path}"))
        .header("Authorization", header)
        .send()
        .await
        .unwrap();
    expect_401(response).await;
    // Unknown endpoints are authenticated too.
    let other = insecure_client()
        .get(format!("{fed}/_matrix/federation/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowlisted() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|c| c.federation.ip_range_allowlist = vec![]).await;
    let refused = b
        .state
        .federation
        .send_unsigned(&name(&a), version::Request::new())
        .await
        .unwrap_err();
    assert_eq!(refused.errcode(), "M_FORBIDDEN", "{refused}");
    // A host name that resolves to loopback is refused after resolution.
    let by_name =
        OwnedServerName::try_from(format!("localhost:{}", a.fed.as_ref().unwrap().port)).unwrap();
    let refused = b
        .state
        .federation
        .send_unsigned(&by_name, version::Request::new())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("may not reach"), "{refused}");
    // With the allowlist (as spawn_federating sets it) both work.
    let c = spawn_federating(|_| {}).await;
    c.state
        .federation
        .send_unsigned(&name(&a), version::Request::new())
        .await
        .unwrap();
    c.state
        .federation
        .send_unsigned(&by_name, version::Request::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn certificates_are_verified_and_extra_ca_file_is_trusted() {
    let a = spawn_federating(|_| {}).await;
    let strict = spawn_federating(|c| c.federation.verify_certificates = true).await;
    let failed = strict
        .state
        .federation
        .send_unsigned(&name(&a), version::Request::new())
        .await
        .unwrap_err();
    assert_eq!(failed.errcode(), "M_UNKNOWN", "{failed}");
    assert!(
        failed.to_string().to_lowercase().contains("certificate"),
        "{failed}"
    );
    let cert = a.fed.as_ref().unwrap().cert_file.clone();
    let trusting = spawn_federating(|c| {
        c.federation.verify_certificates = true;
        c.federation.extra_ca_file = Some(cert);
    })
    .await;
    let answer = trusting
        .state
        .federation
        .send_unsigned(&name(&a), version::Request::new())
        .await
        .unwrap();
    assert_eq!(answer.server.unwrap().name.as_deref(), Some("Axon"));
}

#[tokio::test]
async fn well_known_delegation_is_served_followed_and_cached() {
    // A delegates to its own IP literal, on the client listener and the federation listener.
    let a =
        spawn_federating(|c| c.federation.well_known_server = Some(c.server_name.clone())).await;
    let (status, body) = get_json(&format!("{}/.well-known/matrix/server", a.base_url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["m.server"], a.state.server_name.as_str());
    let plain = spawn_app().await;
    let (status, _) = get_json(&format!("{}/.well-known/matrix/server", plain.base_url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no delegation configured");

    // B resolves "localhost" (no port: well-known first) through A's answer to A's IP literal,
    // and reaches A by that name.
    let b = spawn_federating(|_| {}).await;
    let resolver = &b.state.federation.resolver;
    resolver.set_well_known_port(a.fed.as_ref().unwrap().port);
    let localhost = <&ServerName>::try_from("localhost").unwrap();
    let destination = resolver.resolve(localhost).await;
    assert_eq!(destination.tls_name, "127.0.0.1");
    assert_eq!(destination.port, a.fed.as_ref().unwrap().port);
    assert_eq!(destination.host_header, a.state.server_name.as_str());
    assert_eq!(
        resolver.well_known_cached("localhost"),
        Some(Some(name(&a)))
    );
    let answer = b
        .state
        .federation
        .send_unsigned(localhost, version::Request::new())
        .await
        .unwrap();
    assert_eq!(answer.server.unwrap().name.as_deref(), Some("Axon"));

    // A host without a well-known answer: the failure is cached, and the name falls to port 8448.
    let c = spawn_federating(|_| {}).await;
    let resolver = &c.state.federation.resolver;
    resolver.set_well_known_port(1);
    let destination = resolver.resolve(localhost).await;
    assert_eq!(
        (destination.tls_name.as_str(), destination.port),
        ("localhost", 8448)
    );
    assert_eq!(resolver.well_known_cached("localhost"), Some(None));
}

#[tokio::test]
async fn keys_rotate_command_makes_a_new_current_key() {
    let a = spawn_app().await;
    let old = key_id(&a);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("axon.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n",
            crate::common::database_url(&a.db_name)
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .arg("--config")
        .arg(&config)
        .args(["keys", "rotate"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(new.starts_with("ed25519:") && new != old, "{new}");
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT 'ed25519:' || key_version, expired_ts FROM signing_keys ORDER BY created_ts",
    )
    .fetch_all(&a.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, old);
    assert!(rows[0].1.is_some(), "the old key expired");
    assert_eq!(rows[1], (new, None));
}

/// Waits (up to 10 s) until `query` on `db` returns a count of at least `want`.
async fn wait_count(db: &sqlx::PgPool, query: &str, want: i64) -> i64 {
    let mut count = 0;
    for _ in 0..200 {
        count = sqlx::query_scalar::<_, i64>(query)
            .fetch_one(db)
            .await
            .unwrap();
        if count >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    count
}

fn typing_edu(n: usize) -> Value {
    json!({"edu_type": "m.typing", "content": {"room_id": "!r:example.org", "user_id": format!("@u{n}:example.org"), "typing": true}})
}

#[tokio::test]
async fn queued_edus_go_out_as_transactions_that_are_recorded_idempotently() {
    use axon::service::federation::queue::Edu;
    use ruma::api::federation::transactions::send_transaction_message::v1 as send;
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    a.state
        .outbox
        .enqueue_edus(
            &[name(&b)],
            &[Edu::new(typing_edu(1)), Edu::new(typing_edu(2))],
        )
        .await
        .unwrap();
    let received = wait_count(
        &b.db,
        "SELECT coalesce(sum(edu_count), 0)::bigint FROM federation_inbound_txns",
        2,
    )
    .await;
    assert_eq!(received, 2);
    let origin: String = sqlx::query_scalar("SELECT origin FROM federation_inbound_txns")
        .fetch_one(&b.db)
        .await
        .unwrap();
    assert_eq!(origin, a.state.server_name.as_str());
    assert_eq!(
        wait_count(&a.db, "SELECT -count(*) FROM federation_outbox", 0).await,
        0,
        "sent: the queue is empty"
    );

    // The same transaction twice: one record, the same answer.
    let mut request = send::Request::new(
        "t1".into(),
        name(&a),
        ruma::MilliSecondsSinceUnixEpoch::now(),
    );
    request
        .edus
        .push(ruma::serde::Raw::from_json_string(typing_edu(3).to_string()).unwrap());
    a.state
        .federation
        .send(&name(&b), request.clone())
        .await
        .unwrap();
    let mut retried = request.clone();
    retried
        .edus
        .push(ruma::serde::Raw::from_json_string(typing_edu(4).to_string()).unwrap());
    a.state.federation.send(&name(&b), retried).await.unwrap();
    let copies: Vec<i32> =
        sqlx::query_scalar("SELECT edu_count FROM federation_inbound_txns WHERE txn_id = 't1'")
            .fetch_all(&b.db)
            .await
            .unwrap();
    assert_eq!(copies, vec![1], "recorded once, as first received");
    // Another server's name in the body: refused.
    let mut lying = request.clone();
    lying.transaction_id = "t2".into();
    lying.origin = OwnedServerName::try_from("127.0.0.1:1").unwrap();
    let refused = a.state.federation.send(&name(&b), lying).await.unwrap_err();
    assert_eq!(refused.errcode(), "M_FORBIDDEN", "{refused}");
}

#[tokio::test]
async fn a_destination_that_is_down_keeps_its_queue_and_backs_off() {
    use axon::service::federation::queue::Edu;
    let a = spawn_federating(|_| {}).await;
    let mut b = spawn_federating(|_| {}).await;
    b.fed.as_mut().unwrap().stop().await;
    a.state
        .outbox
        .enqueue_edus(&[name(&b)], &[Edu::new(typing_edu(1))])
        .await
        .unwrap();
    let failures = wait_count(
        &a.db,
        "SELECT coalesce(max(failures), 0)::bigint FROM federation_destinations",
        1,
    )
    .await;
    assert_eq!(failures, 1);
    let (queued, retry_at, interval): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM federation_outbox), retry_at_ts, retry_interval_ms FROM federation_destinations",
    )
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert_eq!(queued, 1, "nothing is lost");
    assert_eq!(interval, 5_000);
    assert!(retry_at > now_ms(), "no retry before the backoff");
}

#[tokio::test]
async fn a_queue_left_by_a_dead_process_is_taken_over_and_sent_once() {
    let a = spawn_federating(|_| {}).await;
    let peer = crate::common::spawn_peer(&a).await;
    peer.state.outbox.start();
    let b = spawn_federating(|_| {}).await;
    // As a process that died mid-lease left it: 130 EDUs (two transactions: 100 + 30).
    sqlx::query("INSERT INTO federation_destinations (destination, lease_owner, lease_until_ts) VALUES ($1, 'dead', $2)")
        .bind(b.state.server_name.as_str())
        .bind(now_ms() - 1)
        .execute(&a.db)
        .await
        .unwrap();
    for n in 0..130 {
        sqlx::query("INSERT INTO federation_outbox (destination, kind, body, queued_ts) VALUES ($1, 'edu', $2, 0)")
            .bind(b.state.server_name.as_str())
            .bind(typing_edu(n).to_string())
            .execute(&a.db)
            .await
            .unwrap();
    }
    let received = wait_count(
        &b.db,
        "SELECT coalesce(sum(edu_count), 0)::bigint FROM federation_inbound_txns",
        130,
    )
    .await;
    assert_eq!(received, 130);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (edus, transactions): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(edu_count), 0)::bigint, count(*) FROM federation_inbound_txns",
    )
    .fetch_one(&b.db)
    .await
    .unwrap();
    assert_eq!(
        (edus, transactions),
        (130, 2),
        "each EDU once, at most 100 a transaction"
    );
}

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_server_binary_opens_a_tls_federation_listener() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::common::self_signed_cert(dir.path());
    let (client_port, fed_port) = (free_port(), free_port());
    let config = dir.path().join("axon.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"127.0.0.1:{fed_port}\"\ndata_dir = \"{}\"\n[listen]\nport = {client_port}\n\
             [database]\nurl = \"{}\"\nmax_connections = 4\n[log]\nlevel = \"warn\"\n\
             [federation]\naddress = \"127.0.0.1\"\nport = {fed_port}\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\n\
             verify_certificates = false\n",
            dir.path().display(),
            crate::common::database_url(&app.db_name),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{fed_port}/_matrix/federation/v1/version");
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(response) = insecure_client().get(&url).send().await {
            answer = Some(response.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.start_kill();
    let output = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    let answer = answer.unwrap_or_else(|| panic!("no federation listener; log: {log}"));
    assert_eq!(answer["server"]["name"], "Axon");
    assert!(
        log.contains("verify_certificates = false"),
        "the loud warning: {log}"
    );
}

#[tokio::test]
async fn malformed_federation_requests_get_4xx() {
    let a = spawn_federating(|_| {}).await;
    let fed = &a.fed.as_ref().unwrap().url;
    let client = insecure_client();
    let bad_json = client
        .post(format!("{fed}/_matrix/key/v2/query"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), StatusCode::BAD_REQUEST);
    let bad_name = client
        .get(format!("{fed}/_matrix/key/v2/query/not%20a%20name"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_name.status(), StatusCode::BAD_REQUEST);
    // A notary query for a server that cannot be reached: an empty answer, not an error.
    let unknown = client
        .get(format!("{fed}/_matrix/key/v2/query/127.0.0.1:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::OK);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["server_keys"], json!([]));
    for header in [
        "X-Matrix",
        "X-Matrix origin=\"a b\",key=\"ed25519:x\",sig=\"!!\"",
        "Bearer abc",
    ] {
        let response = client
            .put(format!("{fed}/_matrix/federation/v1/send/t1"))
            .header("Authorization", header)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header}");
    }
}

#[tokio::test]
async fn a_rooms_server_acl_refuses_denied_origins() {
    use axon::service::federation::acl::ensure_allowed;
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = crate::rooms::create_room(&alice, json!({})).await;
    let server = |s: &str| OwnedServerName::try_from(s).unwrap();
    ensure_allowed(&app.state, &room, &server("evil.example.org"))
        .await
        .unwrap();
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.server_acl/",
                crate::common::enc(&room)
            ),
            json!({"allow": ["*"], "deny": ["*.example.org"], "allow_ip_literals": false}),
        )
        .await
        .ok();
    let refused = ensure_allowed(&app.state, &room, &server("evil.example.org"))
        .await
        .unwrap_err();
    assert_eq!(refused.errcode(), "M_FORBIDDEN");
    assert!(
        ensure_allowed(&app.state, &room, &server("1.2.3.4:8448"))
            .await
            .is_err()
    );
    ensure_allowed(&app.state, &room, &server("matrix.org"))
        .await
        .unwrap();
}

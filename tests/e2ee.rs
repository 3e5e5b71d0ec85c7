//! End-to-end encryption, server side: keys, one-time and fallback keys, to-device messages, device
//! lists, cross-signing and key backup. Signatures are real ed25519 signatures made here.

use std::collections::BTreeSet;
use std::time::Duration;

use axon::service::auth_rules::RoomVersion;
use axon::service::e2ee;
use axon::service::events::EventDraft;
use axon::service::writer::Target;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use reqwest::Method;
use ruma::signatures::Ed25519KeyPair;
use serde_json::{Value, json};

use crate::common::*;

/// A fresh ed25519 key pair whose key version is `version`, or its own public key when `None`
/// (cross-signing keys are named by their public key).
fn keypair(version: Option<&str>) -> (Ed25519KeyPair, String) {
    let der = Ed25519KeyPair::generate();
    let public = STANDARD_NO_PAD.encode(
        Ed25519KeyPair::from_der(&der, "x".into())
            .unwrap()
            .public_key(),
    );
    let version = version.map_or_else(|| public.clone(), str::to_owned);
    (Ed25519KeyPair::from_der(&der, version).unwrap(), public)
}

/// Adds `signer`'s signature with `key` to `value`, as a client does.
fn sign(value: &mut Value, signer: &str, key: &Ed25519KeyPair) {
    let mut object =
        ruma::canonical_json::try_from_json_map(value.as_object().unwrap().clone()).unwrap();
    ruma::signatures::sign_json(signer, key, &mut object).unwrap();
    *value = serde_json::to_value(object).unwrap();
}

/// Signed device keys for the user's device, and the device's signing key.
fn device_keys(user: &User) -> (Value, Ed25519KeyPair) {
    let (key, public) = keypair(Some(&user.device_id));
    let mut keys = json!({
        "user_id": user.user_id,
        "device_id": user.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", user.device_id): "curve+key+of+device",
            format!("ed25519:{}", user.device_id): public,
        },
    });
    sign(&mut keys, &user.user_id, &key);
    (keys, key)
}

pub(crate) fn one_time_keys(prefix: &str, count: usize) -> Value {
    let mut keys = serde_json::Map::new();
    for i in 0..count {
        keys.insert(
            format!("signed_curve25519:{prefix}{i:03}"),
            json!({"key": format!("otk-{prefix}{i}"), "signatures": {}}),
        );
    }
    Value::Object(keys)
}

async fn login_again(app: &TestApp, user: &User) -> User {
    login_named(app, user, None).await
}

async fn login_named(app: &TestApp, user: &User, display_name: Option<&str>) -> User {
    let localpart = user
        .user_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap();
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": "correct horse",
        "initial_device_display_name": display_name,
    });
    let v = app
        .request(Method::POST, "/_matrix/client/v3/login", None, Some(body))
        .await
        .ok();
    let device_id = v["device_id"].as_str().unwrap().to_owned();
    User {
        token: v["access_token"].as_str().unwrap().to_owned(),
        device_id,
        ..user.clone()
    }
}

async fn position(app: &TestApp) -> i64 {
    axon::store::stream::current(&app.db).await.unwrap()
}

/// A public room created by `creator` that `others` joined, through the event writer.
async fn shared_room(app: &TestApp, creator: &User, others: &[&User]) -> String {
    let drafts = vec![
        EventDraft::new(
            "m.room.create",
            Some(""),
            &creator.user_id,
            json!({"creator": creator.user_id, "room_version": "10"}),
        ),
        EventDraft::new(
            "m.room.member",
            Some(&creator.user_id),
            &creator.user_id,
            json!({"membership": "join"}),
        ),
        EventDraft::new(
            "m.room.join_rules",
            Some(""),
            &creator.user_id,
            json!({"join_rule": "public"}),
        ),
    ];
    writer_room(app, RoomVersion::V10, drafts, others).await
}

async fn set_membership(app: &TestApp, room_id: &str, user: &User, membership: &str) {
    let draft = EventDraft::new(
        "m.room.member",
        Some(&user.user_id),
        &user.user_id,
        json!({"membership": membership}),
    );
    app.state
        .writer
        .submit(Target::Existing(room_id.to_owned()), vec![draft], None)
        .await
        .unwrap();
}

// ---- /keys/upload and /keys/query ----

#[tokio::test]
async fn uploaded_device_keys_are_served_intact_with_display_name() {
    let app = spawn_app().await;
    let alice = login_named(&app, &app.register("alice").await, Some("Alice's phone")).await;
    let bob = app.register("bob").await;
    let (keys, _) = device_keys(&alice);
    let v = alice
        .post("/keys/upload", json!({"device_keys": keys}))
        .await
        .ok();
    assert_eq!(v["one_time_key_counts"]["signed_curve25519"], 0);

    let v = bob
        .post(
            "/keys/query",
            json!({"device_keys": {alice.user_id.clone(): []}}),
        )
        .await
        .ok();
    assert_eq!(v["failures"], json!({}));
    let served = &v["device_keys"][&alice.user_id][&alice.device_id];
    let mut without_unsigned = served.clone();
    without_unsigned.as_object_mut().unwrap().remove("unsigned");
    assert_eq!(
        without_unsigned, keys,
        "keys and signatures come back exactly"
    );
    assert_eq!(served["unsigned"]["device_display_name"], "Alice's phone");
    for field in ["master_keys", "self_signing_keys", "user_signing_keys"] {
        assert!(v[field].is_object(), "{field} missing: {v}");
    }
}

#[tokio::test]
async fn query_lists_every_requested_user_even_without_devices() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let body = json!({"device_keys": {
        bob.user_id.clone(): [],
        "@nobody:test.local": [],
    }});
    let v = alice.post("/keys/query", body).await.ok();
    assert_eq!(
        v["device_keys"][&bob.user_id],
        json!({}),
        "bob has a device but no keys"
    );
    assert_eq!(v["device_keys"]["@nobody:test.local"], json!({}));
}

#[tokio::test]
async fn query_can_ask_for_particular_devices() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let alice2 = login_again(&app, &alice).await;
    alice
        .post(
            "/keys/upload",
            json!({"device_keys": device_keys(&alice).0}),
        )
        .await
        .ok();
    alice2
        .post(
            "/keys/upload",
            json!({"device_keys": device_keys(&alice2).0}),
        )
        .await
        .ok();
    let v = alice
        .post(
            "/keys/query",
            json!({"device_keys": {alice.user_id.clone(): [alice2.device_id.clone()]}}),
        )
        .await
        .ok();
    let devices: Vec<&String> = v["device_keys"][&alice.user_id]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(devices, vec![&alice2.device_id]);
}

#[tokio::test]
async fn device_keys_must_match_the_requester() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (mut keys, _) = device_keys(&alice);
    keys["device_id"] = json!("SOMEONEELSE");
    let r = alice
        .post("/keys/upload", json!({"device_keys": keys}))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let (mut keys, _) = device_keys(&alice);
    keys["user_id"] = json!("@mallory:test.local");
    let r = alice
        .post("/keys/upload", json!({"device_keys": keys}))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

// ---- one-time keys and fallback keys ----

#[tokio::test]
async fn one_time_keys_are_counted_and_claimed_once() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let v = alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": one_time_keys("A", 3)}),
        )
        .await
        .ok();
    assert_eq!(v["one_time_key_counts"]["signed_curve25519"], 3);

    let claim = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let v = bob.post("/keys/claim", claim.clone()).await.ok();
    let claimed = v["one_time_keys"][&alice.user_id][&alice.device_id]
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(claimed.len(), 1);
    let (id, key) = claimed.iter().next().unwrap();
    assert!(id.starts_with("signed_curve25519:A"), "{id}");
    assert_eq!(
        key,
        &one_time_keys("A", 3)[id],
        "the key comes back as uploaded"
    );

    let (counts, _) = e2ee::key_counts(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        &alice.device_id,
    )
    .await
    .unwrap();
    assert_eq!(counts["signed_curve25519"], 2);
    let mut seen = BTreeSet::from([id.clone()]);
    for _ in 0..2 {
        let v = bob.post("/keys/claim", claim.clone()).await.ok();
        let id = v["one_time_keys"][&alice.user_id][&alice.device_id]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        assert!(seen.insert(id), "a key was handed out twice");
    }
    let v = bob.post("/keys/claim", claim).await.ok();
    assert_eq!(
        v["one_time_keys"],
        json!({}),
        "no keys left and no fallback key"
    );
}

#[tokio::test]
async fn reusing_a_one_time_key_id_with_other_content_is_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": one_time_keys("A", 1)}),
        )
        .await
        .ok();
    // The same key again (a retried request) is fine.
    let v = alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": one_time_keys("A", 1)}),
        )
        .await
        .ok();
    assert_eq!(v["one_time_key_counts"]["signed_curve25519"], 1);
    let r = alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": {"signed_curve25519:A000": {"key": "different"}}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_a_key_twice() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": one_time_keys("K", 10)}),
        )
        .await
        .ok();
    let claim = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (bob, claim) = (bob.clone(), claim.clone());
            tokio::spawn(async move { bob.post("/keys/claim", claim).await.ok() })
        })
        .collect();
    let mut handed_out = Vec::new();
    for task in tasks {
        let v = task.await.unwrap();
        if let Some(keys) = v["one_time_keys"][&alice.user_id][&alice.device_id].as_object() {
            handed_out.extend(keys.keys().cloned());
        }
    }
    let distinct: BTreeSet<&String> = handed_out.iter().collect();
    assert_eq!(handed_out.len(), 10, "every key handed out: {handed_out:?}");
    assert_eq!(distinct.len(), 10, "no key twice: {handed_out:?}");
}

#[tokio::test]
async fn fallback_key_is_handed_out_when_one_time_keys_run_out() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let fallback =
        json!({"signed_curve25519:F1": {"key": "fallback-1", "fallback": true, "signatures": {}}});
    alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": one_time_keys("A", 1), "fallback_keys": fallback}),
        )
        .await
        .ok();
    let (_, unused) = e2ee::key_counts(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        &alice.device_id,
    )
    .await
    .unwrap();
    assert_eq!(unused, vec!["signed_curve25519"]);

    let claim = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let v = bob.post("/keys/claim", claim.clone()).await.ok();
    assert!(
        v["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:A000"].is_object(),
        "one-time key first"
    );
    for _ in 0..2 {
        let v = bob.post("/keys/claim", claim.clone()).await.ok();
        assert_eq!(
            v["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:F1"],
            fallback["signed_curve25519:F1"]
        );
    }
    let (_, unused) = e2ee::key_counts(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        &alice.device_id,
    )
    .await
    .unwrap();
    assert!(
        unused.is_empty(),
        "a used fallback key is no longer reported unused"
    );

    // Uploading the same fallback key again keeps it used; a new one is unused.
    alice
        .post("/keys/upload", json!({"fallback_keys": fallback}))
        .await
        .ok();
    let (_, unused) = e2ee::key_counts(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        &alice.device_id,
    )
    .await
    .unwrap();
    assert!(unused.is_empty());
    let new_fallback = json!({"signed_curve25519:F2": {"key": "fallback-2", "fallback": true}});
    alice
        .post("/keys/upload", json!({"fallback_keys": new_fallback}))
        .await
        .ok();
    let (_, unused) = e2ee::key_counts(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        &alice.device_id,
    )
    .await
    .unwrap();
    assert_eq!(unused, vec!["signed_curve25519"]);
    let v = bob.post("/keys/claim", claim).await.ok();
    assert!(
        v["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:F2"].is_object()
    );
}

// ---- to-device messages ----

#[tokio::test]
async fn to_device_messages_are_delivered_until_acknowledged() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let since = position(&app).await;
    let content = json!({"algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": {"x": {"body": "secret", "type": 0}}});
    let body = json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): content}}});
    alice
        .put("/sendToDevice/m.room.encrypted/txn1", body)
        .await
        .ok();
    let upto = position(&app).await;

    let expected = json!({"sender": alice.user_id, "type": "m.room.encrypted", "content": content});
    let first =
        e2ee::to_device_for_sync(&app.state, &bob.user_id, &bob.device_id, since, upto, 100)
            .await
            .unwrap();
    assert_eq!(first, vec![expected.clone()]);
    // The client crashed before processing: syncing again from the same token gets it again.
    let again =
        e2ee::to_device_for_sync(&app.state, &bob.user_id, &bob.device_id, since, upto, 100)
            .await
            .unwrap();
    assert_eq!(again, vec![expected]);
    // A sync from the later token acknowledges it: it is gone for good.
    let later = e2ee::to_device_for_sync(
        &app.state,
        &bob.user_id,
        &bob.device_id,
        upto,
        position(&app).await,
        100,
    )
    .await
    .unwrap();
    assert!(later.is_empty());
    let from_start =
        e2ee::to_device_for_sync(&app.state, &bob.user_id, &bob.device_id, since, upto, 100)
            .await
            .unwrap();
    assert!(from_start.is_empty(), "acknowledged messages are deleted");
    // Nothing for the sender's device.
    assert!(
        e2ee::to_device_for_sync(&app.state, &alice.user_id, &alice.device_id, 0, upto, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn to_device_sends_are_idempotent_per_transaction() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let body = json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"n": 1}}}});
    alice
        .put("/sendToDevice/m.test/same", body.clone())
        .await
        .ok();
    alice
        .put("/sendToDevice/m.test/same", body.clone())
        .await
        .ok();
    // Another event type is another scope.
    alice.put("/sendToDevice/m.other/same", body).await.ok();
    let messages = e2ee::to_device_for_sync(
        &app.state,
        &bob.user_id,
        &bob.device_id,
        0,
        position(&app).await,
        100,
    )
    .await
    .unwrap();
    let types: Vec<&str> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["m.test", "m.other"]);
}

#[tokio::test]
async fn to_device_star_reaches_every_device_in_order_and_wakes_them() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let bob2 = login_again(&app, &bob).await;
    let device_key = format!("device:{}:{}", bob2.user_id, bob2.device_id);
    let subscription = app.state.notifier.subscribe([device_key.as_str()]);
    for n in 0..3 {
        let body = json!({"messages": {bob.user_id.clone(): {"*": {"n": n}}}});
        alice
            .put(&format!("/sendToDevice/m.test/t{n}"), body)
            .await
            .ok();
    }
    assert!(
        subscription.wait(Duration::from_secs(2)).await,
        "the recipient device's sync is woken"
    );
    let upto = position(&app).await;
    for device in [&bob, &bob2] {
        let messages =
            e2ee::to_device_for_sync(&app.state, &device.user_id, &device.device_id, 0, upto, 100)
                .await
                .unwrap();
        let ns: Vec<i64> = messages
            .iter()
            .map(|m| m["content"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, vec![0, 1, 2], "device {}", device.device_id);
    }
}

#[tokio::test]
async fn to_device_batch_cut_by_the_limit_ends_at_a_message() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    for n in 0..5 {
        let body = json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"n": n}}}});
        alice
            .put(&format!("/sendToDevice/m.test/t{n}"), body)
            .await
            .ok();
    }
    let upto = position(&app).await;
    let (first, cut) = e2ee::to_device_batch(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        &bob.device_id,
        0,
        upto,
        2,
    )
    .await
    .unwrap();
    assert_eq!(first.len(), 2);
    let cut = cut.expect("the batch was cut");
    let (rest, cut) = e2ee::to_device_batch(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        &bob.device_id,
        cut,
        upto,
        10,
    )
    .await
    .unwrap();
    let ns: Vec<i64> = rest
        .iter()
        .map(|m| m["content"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![2, 3, 4], "nothing lost, nothing repeated");
    assert_eq!(cut, None);
}

// ---- device lists ----

#[tokio::test]
async fn key_upload_new_device_and_removal_are_device_list_changes() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    shared_room(&app, &alice, &[&bob]).await;

    let since = position(&app).await;
    let subscription = app.state.notifier.subscribe([bob.user_id.as_str()]);
    alice
        .post(
            "/keys/upload",
            json!({"device_keys": device_keys(&alice).0}),
        )
        .await
        .ok();
    assert!(
        subscription.wait(Duration::from_secs(2)).await,
        "bob, who shares a room, is woken"
    );
    let upto = position(&app).await;
    let (changed, left) = e2ee::device_list_changes(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        since,
        upto,
    )
    .await
    .unwrap();
    assert_eq!(changed, vec![alice.user_id.clone()]);
    assert!(left.is_empty());
    let (changed, _) = e2ee::device_list_changes(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        since,
        upto,
    )
    .await
    .unwrap();
    assert_eq!(
        changed,
        vec![alice.user_id.clone()],
        "a user sees their own changes"
    );
    let (changed, _) = e2ee::device_list_changes(
        &mut app.state.db.acquire().await.unwrap(),
        &carol.user_id,
        since,
        upto,
    )
    .await
    .unwrap();
    assert!(changed.is_empty(), "carol shares no room with alice");

    // Uploading the same keys again is no change.
    let same_since = position(&app).await;
    let v = alice
        .post(
            "/keys/query",
            json!({"device_keys": {alice.user_id.clone(): []}}),
        )
        .await
        .ok();
    let mut stored = v["device_keys"][&alice.user_id][&alice.device_id].clone();
    stored.as_object_mut().unwrap().remove("unsigned");
    alice
        .post("/keys/upload", json!({"device_keys": stored}))
        .await
        .ok();
    let (changed, _) = e2ee::device_list_changes(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        same_since,
        position(&app).await,
    )
    .await
    .unwrap();
    assert!(changed.is_empty(), "{changed:?}");

    // A new device.
    let since = position(&app).await;
    e2ee::device_changed(&app.state, &alice.user_id)
        .await
        .unwrap();
    let (changed, _) = e2ee::device_list_changes(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        since,
        position(&app).await,
    )
    .await
    .unwrap();
    assert_eq!(changed, vec![alice.user_id.clone()]);

    // A removed device: its keys go, and the change is reported, also through /keys/changes.
    alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": one_time_keys("A", 2)}),
        )
        .await
        .ok();
    let since = position(&app).await;
    e2ee::device_removed(&app.state, &alice.user_id, &alice.device_id)
        .await
        .unwrap();
    let upto = position(&app).await;
    let v = bob
        .get(&format!("/keys/changes?from=s{since}&to=s{upto}_0_0"))
        .await
        .ok();
    assert_eq!(v["changed"], json!([alice.user_id]));
    assert_eq!(v["left"], json!([]));
    let v = bob
        .post(
            "/keys/query",
            json!({"device_keys": {alice.user_id.clone(): []}}),
        )
        .await
        .ok();
    assert_eq!(
        v["device_keys"][&alice.user_id],
        json!({}),
        "the removed device's keys are gone"
    );
    let (counts, _) = e2ee::key_counts(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        &alice.device_id,
    )
    .await
    .unwrap();
    assert_eq!(counts["signed_curve25519"], 0);
}

#[tokio::test]
async fn joining_and_leaving_shared_rooms_show_in_device_lists() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = shared_room(&app, &alice, &[]).await;

    let since = position(&app).await;
    set_membership(&app, &room, &bob, "join").await;
    let upto = position(&app).await;
    let (changed, _) = e2ee::device_list_changes(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        since,
        upto,
    )
    .await
    .unwrap();
    assert_eq!(
        changed,
        vec![bob.user_id.clone()],
        "a new room member's devices are new to alice"
    );
    let (changed, _) = e2ee::device_list_changes(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        since,
        upto,
    )
    .await
    .unwrap();
    assert_eq!(
        changed,
        vec![alice.user_id.clone()],
        "and the room's members are new to bob"
    );

    let since = upto;
    set_membership(&app, &room, &bob, "leave").await;
    let upto = position(&app).await;
    let (changed, left) = e2ee::device_list_changes(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        since,
        upto,
    )
    .await
    .unwrap();
    assert!(changed.is_empty(), "{changed:?}");
    assert_eq!(left, vec![bob.user_id.clone()]);
    let (_, left) = e2ee::device_list_changes(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        since,
        upto,
    )
    .await
    .unwrap();
    assert_eq!(left, vec![alice.user_id.clone()]);
    // Bob's later changes are no longer alice's business.
    let since = upto;
    bob.post("/keys/upload", json!({"device_keys": device_keys(&bob).0}))
        .await
        .ok();
    let (changed, left) = e2ee::device_list_changes(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        since,
        position(&app).await,
    )
    .await
    .unwrap();
    assert!(
        changed.is_empty() && left.is_empty(),
        "{changed:?} {left:?}"
    );
}

#[tokio::test]
async fn keys_changes_rejects_bad_tokens() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .get("/keys/changes?from=nonsense&to=s1")
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .get("/keys/changes?from=s1")
        .await
        .expect_err(400, "M_MISSING_PARAM");
}

// ---- cross-signing ----

struct CrossSigning {
    master_public: String,
    self_signing: Ed25519KeyPair,
    self_signing_public: String,
    user_signing: Ed25519KeyPair,
    user_signing_public: String,
    body: Value,
}

fn cross_signing_keys(user: &User) -> CrossSigning {
    let (master, master_public) = keypair(None);
    let (self_signing, self_signing_public) = keypair(None);
    let (user_signing, user_signing_public) = keypair(None);
    let key = |usage: &str, public: &str| json!({"user_id": user.user_id, "usage": [usage], "keys": {format!("ed25519:{public}"): public}});
    let master_key = key("master", &master_public);
    let mut self_signing_key = key("self_signing", &self_signing_public);
    sign(&mut self_signing_key, &user.user_id, &master);
    let mut user_signing_key = key("user_signing", &user_signing_public);
    sign(&mut user_signing_key, &user.user_id, &master);
    let body = json!({"master_key": master_key, "self_signing_key": self_signing_key, "user_signing_key": user_signing_key});
    CrossSigning {
        master_public,
        self_signing,
        self_signing_public,
        user_signing,
        user_signing_public,
        body,
    }
}

#[tokio::test]
async fn first_cross_signing_upload_needs_no_password_later_ones_do() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let keys = cross_signing_keys(&alice);
    alice
        .post("/keys/device_signing/upload", keys.body.clone())
        .await
        .ok();
    // Repeating the same keys (a lost response) needs no password either.
    alice
        .post("/keys/device_signing/upload", keys.body.clone())
        .await
        .ok();

    let other = cross_signing_keys(&alice);
    let r = alice
        .post("/keys/device_signing/upload", other.body.clone())
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = r.body["session"].as_str().unwrap().to_owned();
    let mut body = other.body.clone();
    body["auth"] = json!({"type": "m.login.password", "session": session, "password": "wrong",
        "identifier": {"type": "m.id.user", "user": alice.user_id}});
    let r = alice
        .post("/keys/device_signing/upload", body.clone())
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["errcode"], "M_FORBIDDEN");
    body["auth"]["password"] = json!("correct horse");
    alice.post("/keys/device_signing/upload", body).await.ok();

    let query = json!({"device_keys": {alice.user_id.clone(): []}});
    let v = alice.post("/keys/query", query.clone()).await.ok();
    assert_eq!(v["master_keys"][&alice.user_id], other.body["master_key"]);
    assert_eq!(
        v["self_signing_keys"][&alice.user_id],
        other.body["self_signing_key"]
    );
    assert_eq!(
        v["user_signing_keys"][&alice.user_id],
        other.body["user_signing_key"]
    );
    let v = bob.post("/keys/query", query).await.ok();
    assert_eq!(v["master_keys"][&alice.user_id], other.body["master_key"]);
    assert!(
        v["user_signing_keys"].get(&alice.user_id).is_none(),
        "the user-signing key is only for its owner"
    );
}

#[tokio::test]
async fn cross_signing_keys_must_be_signed_by_the_master_key() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let keys = cross_signing_keys(&alice);
    let mut body = keys.body.clone();
    body["self_signing_key"]["signatures"][&alice.user_id]
        [format!("ed25519:{}", keys.master_public)] = json!(
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    );
    alice
        .post("/keys/device_signing/upload", body)
        .await
        .expect_err(400, "M_INVALID_SIGNATURE");
    let body = json!({"self_signing_key": keys.body["self_signing_key"]});
    alice
        .post("/keys/device_signing/upload", body)
        .await
        .expect_err(400, "M_MISSING_PARAM");
    let mut body = keys.body.clone();
    body["master_key"]["user_id"] = json!("@bob:test.local");
    alice
        .post("/keys/device_signing/upload", body)
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn signatures_upload_verifies_and_publishes_signatures() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let (alice_device_keys, alice_device_key) = device_keys(&alice);
    alice
        .post("/keys/upload", json!({"device_keys": alice_device_keys}))
        .await
        .ok();
    let alice_cs = cross_signing_keys(&alice);
    alice
        .post("/keys/device_signing/upload", alice_cs.body.clone())
        .await
        .ok();
    let bob_cs = cross_signing_keys(&bob);
    bob.post("/keys/device_signing/upload", bob_cs.body.clone())
        .await
        .ok();

    // Alice's self-signing key signs her device; her device signs her master key; her user-signing
    // key signs bob's master key. One forged signature and one unknown device fail alone.
    let mut signed_device = alice_device_keys.clone();
    sign(&mut signed_device, &alice.user_id, &alice_cs.self_signing);
    let mut signed_master = alice_cs.body["master_key"].clone();
    sign(&mut signed_master, &alice.user_id, &alice_device_key);
    let mut signed_bob = bob_cs.body["master_key"].clone();
    sign(&mut signed_bob, &alice.user_id, &alice_cs.user_signing);
    let mut forged = bob_cs.body["self_signing_key"].clone();
    sign(&mut forged, &alice.user_id, &alice_cs.user_signing);
    let mut unknown = alice_device_keys.clone();
    unknown["device_id"] = json!("NOSUCHDEVICE");
    sign(&mut unknown, &alice.user_id, &alice_cs.self_signing);
    let body = json!({
        alice.user_id.clone(): {
            alice.device_id.clone(): signed_device,
            alice_cs.master_public.clone(): signed_master,
            "NOSUCHDEVICE": unknown,
        },
        bob.user_id.clone(): {
            bob_cs.master_public.clone(): signed_bob,
            bob_cs.self_signing_public.clone(): forged,
        },
    });
    let v = alice.post("/keys/signatures/upload", body).await.ok();
    let failures = &v["failures"];
    assert_eq!(
        failures[&alice.user_id]["NOSUCHDEVICE"]["errcode"], "M_NOT_FOUND",
        "{v}"
    );
    assert_eq!(
        failures[&bob.user_id][&bob_cs.self_signing_public]["errcode"], "M_NOT_FOUND",
        "{v}"
    );
    assert!(
        failures[&alice.user_id].get(&alice.device_id).is_none(),
        "{v}"
    );
    assert!(
        failures[&bob.user_id].get(&bob_cs.master_public).is_none(),
        "{v}"
    );

    let ssk_id = format!("ed25519:{}", alice_cs.self_signing_public);
    let usk_id = format!("ed25519:{}", alice_cs.user_signing_public);
    let query = json!({"device_keys": {alice.user_id.clone(): [], bob.user_id.clone(): []}});
    for viewer in [&alice, &carol] {
        let v = viewer.post("/keys/query", query.clone()).await.ok();
        let device = &v["device_keys"][&alice.user_id][&alice.device_id];
        assert!(
            device["signatures"][&alice.user_id][&ssk_id].is_string(),
            "cross-signed device: {device}"
        );
        assert!(
            device["signatures"][&alice.user_id][format!("ed25519:{}", alice.device_id)]
                .is_string()
        );
        let master = &v["master_keys"][&alice.user_id];
        assert!(
            master["signatures"][&alice.user_id][format!("ed25519:{}", alice.device_id)]
                .is_string(),
            "{master}"
        );
        let bob_master = &v["master_keys"][&bob.user_id];
        let sees_alices_signature = bob_master["signatures"][&alice.user_id][&usk_id].is_string();
        assert_eq!(
            sees_alices_signature,
            viewer.user_id == alice.user_id,
            "only the signer sees it: {bob_master}"
        );
    }
}

#[tokio::test]
async fn invalid_signatures_are_reported_per_key() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (alice_device_keys, _) = device_keys(&alice);
    alice
        .post("/keys/upload", json!({"device_keys": alice_device_keys}))
        .await
        .ok();
    let alice_cs = cross_signing_keys(&alice);
    alice
        .post("/keys/device_signing/upload", alice_cs.body.clone())
        .await
        .ok();

    // Signed by the wrong key (the user-signing key under the self-signing key's name).
    let mut wrong = alice_device_keys.clone();
    let (impostor, _) = keypair(Some(&alice_cs.self_signing_public));
    sign(&mut wrong, &alice.user_id, &impostor);
    let v = alice
        .post(
            "/keys/signatures/upload",
            json!({alice.user_id.clone(): {alice.device_id.clone(): wrong}}),
        )
        .await
        .ok();
    assert_eq!(
        v["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE",
        "{v}"
    );

    // A correct signature on an object that is not the stored key.
    let mut altered = alice_device_keys.clone();
    altered["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    sign(&mut altered, &alice.user_id, &alice_cs.self_signing);
    let v = alice
        .post(
            "/keys/signatures/upload",
            json!({alice.user_id.clone(): {alice.device_id.clone(): altered}}),
        )
        .await
        .ok();
    assert_eq!(
        v["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE",
        "{v}"
    );
}

// ---- key backup ----

fn session(first_message_index: i64, forwarded_count: i64, is_verified: bool, tag: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {"ephemeral": "e", "ciphertext": tag, "mac": "m"},
    })
}

#[tokio::test]
async fn backup_versions_are_created_read_updated_and_deleted() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .get("/room_keys/version")
        .await
        .expect_err(404, "M_NOT_FOUND");
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    let v = alice
        .post(
            "/room_keys/version",
            json!({"algorithm": algorithm, "auth_data": {"public_key": "pk1"}}),
        )
        .await
        .ok();
    let first = v["version"].as_str().unwrap().to_owned();
    let v = alice.get("/room_keys/version").await.ok();
    assert_eq!(v["version"], first.as_str());
    assert_eq!(v["algorithm"], algorithm);
    assert_eq!(v["auth_data"], json!({"public_key": "pk1"}));
    assert_eq!(v["count"], 0);
    assert!(v["etag"].is_string());

    let v = alice
        .post(
            "/room_keys/version",
            json!({"algorithm": algorithm, "auth_data": {"public_key": "pk2"}}),
        )
        .await
        .ok();
    let second = v["version"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(
        alice.get("/room_keys/version").await.ok()["version"],
        second.as_str(),
        "the newest is current"
    );
    assert_eq!(
        alice.get(&format!("/room_keys/version/{first}")).await.ok()["auth_data"]["public_key"],
        "pk1"
    );

    let update = json!({"algorithm": algorithm, "auth_data": {"public_key": "pk2", "signatures": {}}, "version": second});
    alice
        .put(&format!("/room_keys/version/{second}"), update)
        .await
        .ok();
    assert_eq!(
        alice.get("/room_keys/version").await.ok()["auth_data"]["signatures"],
        json!({})
    );
    let wrong_algorithm = json!({"algorithm": "other", "auth_data": {}});
    alice
        .put(&format!("/room_keys/version/{second}"), wrong_algorithm)
        .await
        .expect_err(400, "M_INVALID_PARAM");
    let wrong_version =
        json!({"algorithm": algorithm, "auth_data": {"public_key": "pk"}, "version": first});
    alice
        .put(&format!("/room_keys/version/{second}"), wrong_version)
        .await
        .expect_err(400, "M_INVALID_PARAM");

    alice
        .delete(&format!("/room_keys/version/{second}"))
        .await
        .ok();
    alice
        .delete(&format!("/room_keys/version/{second}"))
        .await
        .ok();
    alice
        .get(&format!("/room_keys/version/{second}"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    assert_eq!(
        alice.get("/room_keys/version").await.ok()["version"],
        first.as_str()
    );
    alice
        .delete("/room_keys/version/999")
        .await
        .expect_err(404, "M_NOT_FOUND");
    let v = alice
        .post(
            "/room_keys/version",
            json!({"algorithm": algorithm, "auth_data": {"public_key": "pk"}}),
        )
        .await
        .ok();
    assert_ne!(
        v["version"],
        second.as_str(),
        "a deleted version's number is not reused"
    );

    let bob = app.register("bob").await;
    bob.get(&format!("/room_keys/version/{first}"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn backup_keys_follow_the_replacement_rules() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let v = alice
        .post(
            "/room_keys/version",
            json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "pk"}}),
        )
        .await
        .ok();
    let version = v["version"].as_str().unwrap().to_owned();
    let room = "!room:test.local";
    let path = |rest: &str| format!("/room_keys/keys{rest}?version={version}");
    let room_path = format!("/{}", enc(room));

    let v = alice
        .put(
            &path(&format!("{room_path}/s1")),
            session(5, 1, false, "original"),
        )
        .await
        .ok();
    assert_eq!(v["count"], 1);
    let etag = v["etag"].clone();
    let read = |v: Value| v["session_data"]["ciphertext"].as_str().unwrap().to_owned();

    // Worse: higher index, or more forwards at the same index, or a tie: the stored key stays.
    for worse in [
        session(6, 0, false, "worse"),
        session(5, 2, false, "worse"),
        session(5, 1, false, "tie"),
    ] {
        let v = alice
            .put(&path(&format!("{room_path}/s1")), worse)
            .await
            .ok();
        assert_eq!(v["etag"], etag, "nothing changed");
    }
    assert_eq!(
        read(alice.get(&path(&format!("{room_path}/s1"))).await.ok()),
        "original"
    );
    // Better: lower index; then fewer forwards; then verified beats everything unverified.
    alice
        .put(
            &path(&format!("{room_path}/s1")),
            session(4, 3, false, "lower-index"),
        )
        .await
        .ok();
    assert_eq!(
        read(alice.get(&path(&format!("{room_path}/s1"))).await.ok()),
        "lower-index"
    );
    let v = alice
        .put(
            &path(&format!("{room_path}/s1")),
            session(4, 2, false, "fewer-forwards"),
        )
        .await
        .ok();
    assert_ne!(v["etag"], etag);
    assert_eq!(
        read(alice.get(&path(&format!("{room_path}/s1"))).await.ok()),
        "fewer-forwards"
    );
    alice
        .put(
            &path(&format!("{room_path}/s1")),
            session(9, 9, true, "verified"),
        )
        .await
        .ok();
    alice
        .put(
            &path(&format!("{room_path}/s1")),
            session(0, 0, false, "unverified"),
        )
        .await
        .ok();
    assert_eq!(
        read(alice.get(&path(&format!("{room_path}/s1"))).await.ok()),
        "verified"
    );

    // Whole-backup and per-room forms.
    let body = json!({"rooms": {room: {"sessions": {"s2": session(0, 0, false, "two")}}, "!other:test.local": {"sessions": {"s3": session(0, 0, false, "three")}}}});
    let v = alice.put(&path(""), body).await.ok();
    assert_eq!(v["count"], 3);
    let v = alice.get(&path("")).await.ok();
    assert_eq!(v["rooms"][room]["sessions"].as_object().unwrap().len(), 2);
    assert_eq!(
        v["rooms"]["!other:test.local"]["sessions"]["s3"]["session_data"]["ciphertext"],
        "three"
    );
    let v = alice.get(&path(&room_path)).await.ok();
    assert_eq!(v["sessions"].as_object().unwrap().len(), 2);
    let v = alice.get(&path("/%21empty%3Atest.local")).await.ok();
    assert_eq!(v, json!({"sessions": {}}));
    alice
        .get(&path(&format!("{room_path}/nosuch")))
        .await
        .expect_err(404, "M_NOT_FOUND");
    assert_eq!(alice.get("/room_keys/version").await.ok()["count"], 3);

    let v = alice.delete(&path(&format!("{room_path}/s1"))).await.ok();
    assert_eq!(v["count"], 2);
    let v = alice.delete(&path(&room_path)).await.ok();
    assert_eq!(v["count"], 1);
    let v = alice.delete(&path("")).await.ok();
    assert_eq!(v["count"], 0);
}

#[tokio::test]
async fn backup_writes_to_an_old_version_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    alice
        .put(
            "/room_keys/keys/%21r%3At/s?version=1",
            session(0, 0, false, "x"),
        )
        .await
        .expect_err(404, "M_NOT_FOUND");
    let old = alice
        .post(
            "/room_keys/version",
            json!({"algorithm": algorithm, "auth_data": {"public_key": "pk"}}),
        )
        .await
        .ok()["version"]
        .clone();
    let new = alice
        .post(
            "/room_keys/version",
            json!({"algorithm": algorithm, "auth_data": {"public_key": "pk"}}),
        )
        .await
        .ok()["version"]
        .clone();
    let r = alice
        .put(
            &format!(
                "/room_keys/keys/%21r%3At/s?version={}",
                old.as_str().unwrap()
            ),
            session(0, 0, false, "x"),
        )
        .await;
    r.expect_err(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(r.body["current_version"], new);
    alice
        .put("/room_keys/keys/%21r%3At/s", session(0, 0, false, "x"))
        .await
        .expect_err(400, "M_MISSING_PARAM");
    alice
        .get("/room_keys/keys?version=77")
        .await
        .expect_err(404, "M_NOT_FOUND");
}

// ---- malformed input and other servers ----

#[tokio::test]
async fn malformed_key_requests_are_client_errors() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let r = alice
        .post(
            "/keys/upload",
            json!({"one_time_keys": {"no-algorithm": {"key": "k"}}}),
        )
        .await;
    r.expect_err(400, "M_INVALID_PARAM");
    alice
        .post("/keys/upload", json!({"device_keys": "not an object"}))
        .await
        .expect_err(400, "M_BAD_JSON");
    alice
        .post(
            "/keys/query",
            json!({"device_keys": {"@a:test.local": "x"}}),
        )
        .await
        .expect_err(400, "M_BAD_JSON");
    alice
        .post("/keys/claim", json!({}))
        .await
        .expect_err(400, "M_BAD_JSON");
    alice
        .put("/sendToDevice/m.test/t1", json!({"nothing": 1}))
        .await
        .expect_err(400, "M_BAD_JSON");
    let r = app
        .raw(
            Method::POST,
            "/_matrix/client/v3/keys/upload",
            Some(&alice.token),
            b"{oops".to_vec(),
        )
        .await;
    r.expect_err(400, "M_NOT_JSON");
    app.request(
        Method::POST,
        "/_matrix/client/v3/keys/query",
        None,
        Some(json!({"device_keys": {}})),
    )
    .await
    .expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn other_servers_users_are_reported_as_failures() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let v = alice
        .post(
            "/keys/query",
            json!({"device_keys": {"@bob:elsewhere.example": []}}),
        )
        .await
        .ok();
    assert_eq!(v["device_keys"]["@bob:elsewhere.example"], json!({}));
    assert!(v["failures"]["elsewhere.example"].is_object(), "{v}");
    let v = alice
        .post(
            "/keys/claim",
            json!({"one_time_keys": {"@bob:elsewhere.example": {"D": "signed_curve25519"}}}),
        )
        .await
        .ok();
    assert!(v["failures"]["elsewhere.example"].is_object(), "{v}");
    // To-device messages to other servers and to unknown devices are dropped, not errors.
    let body = json!({"messages": {"@bob:elsewhere.example": {"D": {}}, alice.user_id.clone(): {"NOSUCHDEVICE": {}}}});
    alice.put("/sendToDevice/m.test/t1", body).await.ok();
}

#[tokio::test]
async fn changed_device_keys_lose_signatures_made_on_the_old_ones() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (keys, _) = device_keys(&alice);
    alice
        .post("/keys/upload", json!({"device_keys": keys}))
        .await
        .ok();
    let cs = cross_signing_keys(&alice);
    alice
        .post("/keys/device_signing/upload", cs.body.clone())
        .await
        .ok();
    let mut signed = keys.clone();
    sign(&mut signed, &alice.user_id, &cs.self_signing);
    let v = alice
        .post(
            "/keys/signatures/upload",
            json!({alice.user_id.clone(): {alice.device_id.clone(): signed}}),
        )
        .await
        .ok();
    assert_eq!(v["failures"], json!({}));
    let ssk_id = format!("ed25519:{}", cs.self_signing_public);
    let query = json!({"device_keys": {alice.user_id.clone(): []}});
    let served = alice.post("/keys/query", query.clone()).await.ok();
    assert!(
        served["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id]
            [&ssk_id]
            .is_string()
    );

    let (new_keys, _) = device_keys(&alice);
    alice
        .post("/keys/upload", json!({"device_keys": new_keys}))
        .await
        .ok();
    let served = alice.post("/keys/query", query).await.ok();
    let device = &served["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device["keys"], new_keys["keys"]);
    assert!(
        device["signatures"][&alice.user_id].get(&ssk_id).is_none(),
        "{device}"
    );
}

// ---- issue #17: as clients call them ----

/// As Synapse (`get_e2e_device_keys_for_cs_api`): every device carries `unsigned`, with
/// `device_display_name` whenever the device has a name, an empty one too.
#[tokio::test]
async fn query_serves_unsigned_for_every_device_and_empty_display_names() {
    let app = spawn_app().await;
    let alice = login_named(&app, &app.register("alice").await, None).await;
    let (keys, _) = device_keys(&alice);
    alice
        .post("/keys/upload", json!({"device_keys": keys}))
        .await
        .ok();
    let query = json!({"device_keys": {alice.user_id.clone(): [alice.device_id.clone()]}});
    let v = alice.post("/keys/query", query.clone()).await.ok();
    assert_eq!(
        v["device_keys"][&alice.user_id][&alice.device_id]["unsigned"],
        json!({}),
        "{v}"
    );
    alice
        .put(
            &format!("/devices/{}", enc(&alice.device_id)),
            json!({"display_name": ""}),
        )
        .await
        .ok();
    let v = alice.post("/keys/query", query).await.ok();
    assert_eq!(
        v["device_keys"][&alice.user_id][&alice.device_id]["unsigned"],
        json!({"device_display_name": ""}),
        "{v}"
    );
}

/// Clients and tools create versions of algorithms the spec does not define (such as the old
/// `m.megolm_backup.v1`) with any JSON as `auth_data`; Synapse stores it as given.
#[tokio::test]
async fn backup_versions_of_other_algorithms_keep_any_auth_data() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for auth_data in [
        json!("dGhpcyBzaG91bGQgYWN0dWFsbHkgYmUgZW5jcnlwdGVkIGpzb24K"),
        json!([1, "two"]),
        json!(42),
        json!({"anything": {"nested": true}}),
    ] {
        let body = json!({"algorithm": "m.megolm_backup.v1", "auth_data": auth_data});
        let v = alice.post("/room_keys/version", body).await.ok();
        let version = v["version"].as_str().unwrap().to_owned();
        let v = alice
            .get(&format!("/room_keys/version/{version}"))
            .await
            .ok();
        assert_eq!(v["algorithm"], "m.megolm_backup.v1");
        assert_eq!(v["auth_data"], auth_data);
        let update = json!({"algorithm": "m.megolm_backup.v1", "auth_data": "replaced"});
        alice
            .put(&format!("/room_keys/version/{version}"), update)
            .await
            .ok();
        let v = alice
            .get(&format!("/room_keys/version/{version}"))
            .await
            .ok();
        assert_eq!(v["auth_data"], "replaced");
    }
}

/// `m.megolm_backup.v1.curve25519-aes-sha2`: `auth_data` is an object with a string
/// `public_key` (and `signatures`, if given, an object).
#[tokio::test]
async fn spec_backup_algorithm_auth_data_is_validated() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    let good = json!({"algorithm": algorithm, "auth_data": {"public_key": "pk", "signatures": {}}});
    let version = alice.post("/room_keys/version", good).await.ok()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    for bad in [
        json!("text"),
        json!({}),
        json!({"public_key": 5}),
        json!({"public_key": "pk", "signatures": []}),
    ] {
        let body = json!({"algorithm": algorithm, "auth_data": bad});
        alice
            .post("/room_keys/version", body.clone())
            .await
            .expect_err(400, "M_BAD_JSON");
        alice
            .put(&format!("/room_keys/version/{version}"), body)
            .await
            .expect_err(400, "M_BAD_JSON");
    }
}

/// Clients still call the unstable paths of MSC1756; they answer as the v3 ones do.
#[tokio::test]
async fn unstable_cross_signing_upload_paths_answer_like_v3() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (device, _) = device_keys(&alice);
    alice
        .post("/keys/upload", json!({"device_keys": device}))
        .await
        .ok();
    let cs = cross_signing_keys(&alice);
    alice
        .post(
            "/_matrix/client/unstable/keys/device_signing/upload",
            cs.body.clone(),
        )
        .await
        .ok();
    let mut signed = device.clone();
    sign(&mut signed, &alice.user_id, &cs.self_signing);
    let body = json!({alice.user_id.clone(): {alice.device_id.clone(): signed}});
    let v = alice
        .post("/_matrix/client/unstable/keys/signatures/upload", body)
        .await
        .ok();
    assert_eq!(v["failures"], json!({}), "{v}");
    let query = json!({"device_keys": {alice.user_id.clone(): []}});
    let v = alice.post("/keys/query", query).await.ok();
    assert_eq!(v["master_keys"][&alice.user_id], cs.body["master_key"]);
    let signatures = &v["device_keys"][&alice.user_id][&alice.device_id]["signatures"];
    assert!(
        signatures[&alice.user_id]
            .get(format!("ed25519:{}", cs.self_signing_public))
            .is_some(),
        "{signatures}"
    );
}

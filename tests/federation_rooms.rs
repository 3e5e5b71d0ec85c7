//! Federation, stage 2: rooms shared with other servers. Instance B plays the remote homeserver:
//! its signing key signs the events of its user `@bob`, and its federation client sends them.

use std::collections::HashMap;

use ruma::api::federation::membership::{
    create_join_event::v2 as send_join, create_leave_event::v2 as send_leave,
    prepare_join_event::v1 as make_join, prepare_leave_event::v1 as make_leave,
};
use ruma::api::federation::transactions::send_transaction_message::v1 as send;
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId,
    RoomVersionId,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::common::{TestApp, User, enc, spawn_federating};

pub(crate) fn name(app: &TestApp) -> OwnedServerName {
    OwnedServerName::try_from(app.state.server_name.as_str()).unwrap()
}

pub(crate) fn bob_of(b: &TestApp) -> OwnedUserId {
    OwnedUserId::try_from(format!("@bob:{}", b.state.server_name)).unwrap()
}

/// The room version's rules (the test rooms use Axon's default version).
pub(crate) fn rules_of(version: &str) -> ruma::room_version_rules::RoomVersionRules {
    RoomVersionId::try_from(version)
        .unwrap()
        .rules()
        .expect("a known room version")
}

/// Signs `event` as `b` would, and answers its ID and PDU.
pub(crate) fn sign(b: &TestApp, version: &str, event: Value) -> (String, Box<RawValue>) {
    let mut object: CanonicalJsonObject = serde_json::from_value(event).unwrap();
    let rules = rules_of(version);
    ruma::signatures::hash_and_sign_event(
        b.state.server_name.as_str(),
        &b.state.signing_key,
        &mut object,
        &rules.redaction,
    )
    .unwrap();
    let id = format!(
        "${}",
        ruma::signatures::reference_hash(&object, &rules).unwrap()
    );
    let raw = RawValue::from_string(CanonicalJsonValue::Object(object).to_string()).unwrap();
    (id, raw)
}

pub(crate) async fn create_room(alice: &User) -> String {
    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"preset": "public_chat"}),
        )
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// make_join and send_join v2 for `@bob` of `b` into `room_id` on `a`: (room version, join ID,
/// the answer).
pub(crate) async fn remote_join(
    a: &TestApp,
    b: &TestApp,
    room_id: &str,
) -> (String, String, send_join::Response) {
    let room = OwnedRoomId::try_from(room_id).unwrap();
    let mut request = make_join::Request::new(room.clone(), bob_of(b));
    request.ver = vec![RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];
    let template = b.state.federation.send(&name(a), request).await.unwrap();
    let version = template.room_version.unwrap().to_string();
    let event: Value = serde_json::from_str(template.event.get()).unwrap();
    assert_eq!(event["content"]["membership"], "join");
    let (id, pdu) = sign(b, &version, event);
    let request = send_join::Request::new(room, OwnedEventId::try_from(id.as_str()).unwrap(), pdu);
    let answer = b.state.federation.send(&name(a), request).await.unwrap();
    (version, id, answer)
}

/// `room_id`'s current state on `a` as alice sees it: (type, state key) → event ID.
pub(crate) async fn state_ids(alice: &User, room_id: &str) -> HashMap<(String, String), String> {
    let state = alice
        .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room_id)))
        .await
        .ok();
    state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["state_key"].as_str().unwrap().to_owned(),
                ),
                e["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The newest event of `room_id` as alice sees it.
pub(crate) async fn latest(alice: &User, room_id: &str) -> Value {
    alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1",
            enc(room_id)
        ))
        .await
        .ok()["chunk"][0]
        .clone()
}

/// An unsigned event of bob's on `prev`, authorized by the create event, the power levels and his
/// membership.
pub(crate) async fn bob_event(
    alice: &User,
    b: &TestApp,
    room_id: &str,
    kind: &str,
    content: Value,
    prev: &str,
) -> Value {
    let state = state_ids(alice, room_id).await;
    let bob = bob_of(b).to_string();
    let mut auth = vec![
        state[&("m.room.power_levels".to_owned(), String::new())].clone(),
        state[&("m.room.member".to_owned(), bob.clone())].clone(),
    ];
    let create = &state[&("m.room.create".to_owned(), String::new())];
    if !room_id.ends_with(&create[1..]) {
        auth.push(create.clone());
    }
    json!({
        "auth_events": auth,
        "prev_events": [prev],
        "content": content,
        "depth": 100,
        "origin_server_ts": axon::store::now_ms(),
        "room_id": room_id,
        "sender": bob,
        "type": kind,
    })
}

/// Sends `pdus` from `b` to `a` in one transaction; answers the per-PDU results.
pub(crate) async fn transact(
    a: &TestApp,
    b: &TestApp,
    txn: &str,
    pdus: Vec<Box<RawValue>>,
    edus: Vec<Value>,
) -> Value {
    let mut request = send::Request::new(txn.into(), name(b), MilliSecondsSinceUnixEpoch::now());
    request.pdus = pdus;
    request.edus = edus
        .into_iter()
        .map(|e| ruma::serde::Raw::from_json_string(e.to_string()).unwrap())
        .collect();
    let answer = b.state.federation.send(&name(a), request).await.unwrap();
    serde_json::to_value(
        answer
            .pdus
            .into_iter()
            .map(|(id, r)| (id.to_string(), r.err().unwrap_or_default()))
            .collect::<HashMap<_, _>>(),
    )
    .unwrap()
}

/// Waits (up to 10 s) until `b` has received at least `want` PDUs from other servers.
pub(crate) async fn wait_pdus(b: &TestApp, want: i64) -> i64 {
    let mut got = 0;
    for _ in 0..100 {
        got = sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(pdu_count), 0)::bigint FROM federation_inbound_txns",
        )
        .fetch_one(&b.db)
        .await
        .unwrap();
        if got >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    got
}

pub(crate) async fn members(alice: &User, room_id: &str) -> Value {
    alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            enc(room_id)
        ))
        .await
        .ok()["joined"]
        .clone()
}

#[tokio::test]
async fn a_remote_user_joins_a_local_room_through_make_join_and_send_join() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice).await;
    let (_, join_id, answer) = remote_join(&a, &b, &room_id).await;
    let bob = bob_of(&b).to_string();
    assert!(
        members(&alice, &room_id).await.get(&bob).is_some(),
        "bob is joined"
    );
    assert_eq!(latest(&alice, &room_id).await["event_id"], join_id.as_str());
    let state = &answer.room_state;
    let types: Vec<String> = state
        .state
        .iter()
        .map(|p| {
            serde_json::from_str::<Value>(p.get()).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(types.contains(&"m.room.create".to_owned()), "{types:?}");
    assert!(types.contains(&"m.room.power_levels".to_owned()));
    assert!(!state.auth_chain.is_empty(), "the auth chain of the state");
    assert!(
        state
            .servers_in_room
            .as_ref()
            .unwrap()
            .contains(&a.state.server_name.to_string())
    );
}

#[tokio::test]
async fn make_join_refuses_a_server_that_does_not_support_the_room_version() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice).await;
    let mut request =
        make_join::Request::new(OwnedRoomId::try_from(room_id.as_str()).unwrap(), bob_of(&b));
    request.ver = vec![RoomVersionId::V1];
    let refused = b
        .state
        .federation
        .send(&name(&a), request)
        .await
        .unwrap_err();
    let text = refused.to_string();
    assert!(text.contains("M_INCOMPATIBLE_ROOM_VERSION"), "{text}");
}

#[tokio::test]
async fn local_events_go_out_to_the_servers_in_the_room() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice).await;
    // Before any remote member: nothing is queued.
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t0",
                enc(&room_id)
            ),
            json!({"msgtype": "m.text", "body": "alone"}),
        )
        .await
        .ok();
    remote_join(&a, &b, &room_id).await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
                enc(&room_id)
            ),
            json!({"msgtype": "m.text", "body": "hello bob"}),
        )
        .await
        .ok();
    assert_eq!(
        wait_pdus(&b, 1).await,
        1,
        "the message reached B, and only it"
    );
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM federation_outbox")
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(queued, 0, "delivered");
}

#[tokio::test]
async fn remote_pdus_are_checked_and_appear_in_local_sync() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice).await;
    let (version, join_id, _) = remote_join(&a, &b, &room_id).await;
    let sync = alice.get("/_matrix/client/v3/sync").await.ok();
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    let event = bob_event(
        &alice,
        &b,
        &room_id,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "hi from B"}),
        &join_id,
    )
    .await;
    let (id, pdu) = sign(&b, &version, event.clone());
    // Signed by another key: refused, not stored.
    let stranger = spawn_federating(|_| {}).await;
    let (forged_id, forged) = {
        let mut e = event.clone();
        e["content"]["body"] = json!("forged");
        let mut object: CanonicalJsonObject = serde_json::from_value(e).unwrap();
        let rules = rules_of(&version);
        ruma::signatures::hash_and_sign_event(
            b.state.server_name.as_str(),
            &stranger.state.signing_key,
            &mut object,
            &rules.redaction,
        )
        .unwrap();
        let id = format!(
            "${}",
            ruma::signatures::reference_hash(&object, &rules).unwrap()
        );
        (
            id,
            RawValue::from_string(CanonicalJsonValue::Object(object).to_string()).unwrap(),
        )
    };
    let results = transact(&a, &b, "t1", vec![pdu, forged], vec![]).await;
    assert_eq!(results[&id], "", "accepted: {results}");
    assert_ne!(
        results[&forged_id], "",
        "a bad signature is refused: {results}"
    );

    let sync = alice
        .get(&format!(
            "/_matrix/client/v3/sync?since={since}&timeout=5000"
        ))
        .await
        .ok();
    let timeline = &sync["rooms"]["join"][&room_id]["timeline"]["events"];
    let bodies: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["hi from B"], "{sync}");
}

#[tokio::test]
async fn a_remote_event_not_allowed_by_the_current_state_is_refused() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice).await;
    let (version, join_id, _) = remote_join(&a, &b, &room_id).await;
    // Bob (power 0) may not change the power levels.
    let event = bob_event(
        &alice,
        &b,
        &room_id,
        "m.room.power_levels",
        json!({"users": {bob_of(&b).as_str(): 100}}),
        &join_id,
    )
    .await;
    let mut event = event;
    event["state_key"] = json!("");
    let (id, pdu) = sign(&b, &version, event);
    let results = transact(&a, &b, "t1", vec![pdu], vec![]).await;
    assert!(
        results[&id].as_str().unwrap().contains("not allowed"),
        "{results}"
    );
}

#[tokio::test]
async fn a_remote_event_on_an_older_event_is_appended_when_authorized() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice).await;
    let (version, join_id, _) = remote_join(&a, &b, &room_id).await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
                enc(&room_id)
            ),
            json!({"msgtype": "m.text", "body": "meanwhile"}),
        )
        .await
        .ok();
    // Bob's event names his join, not alice's newer message: a fork, kept linear.
    let event = bob_event(
        &alice,
        &b,
        &room_id,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "forked"}),
        &join_id,
    )
    .await;
    let (id, pdu) = sign(&b, &version, event);
    let results = transact(&a, &b, "t1", vec![pdu], vec![]).await;
    assert_eq!(results[&id], "", "{results}");
    assert_eq!(latest(&alice, &room_id).await["event_id"], id.as_str());
}

#[tokio::test]
async fn a_remote_user_leaves_through_make_leave_and_send_leave_and_a_kick_goes_out() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice).await;
    let room = OwnedRoomId::try_from(room_id.as_str()).unwrap();
    let (version, _, _) = remote_join(&a, &b, &room_id).await;
    let template = b
        .state
        .federation
        .send(
            &name(&a),
            make_leave::Request::new(room.clone(), bob_of(&b)),
        )
        .await
        .unwrap();
    let event: Value = serde_json::from_str(template.event.get()).unwrap();
    assert_eq!(event["content"]["membership"], "leave");
    let (id, pdu) = sign(&b, &version, event);
    b.state
        .federation
        .send(
            &name(&a),
            send_leave::Request::new(room, OwnedEventId::try_from(id.as_str()).unwrap(), pdu),
        )
        .await
        .unwrap();
    let bob = bob_of(&b).to_string();
    assert!(
        members(&alice, &room_id).await.get(&bob).is_none(),
        "bob left"
    );

    // Bob joins again; alice kicks him: the kick goes to B.
    remote_join(&a, &b, &room_id).await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room_id)),
            json!({"user_id": bob, "reason": "bye"}),
        )
        .await
        .ok();
    assert_eq!(wait_pdus(&b, 1).await, 1, "the kick reached B");
    assert!(members(&alice, &room_id).await.get(&bob).is_none());
}

#[tokio::test]
async fn typing_from_a_remote_user_reaches_local_sync() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice).await;
    remote_join(&a, &b, &room_id).await;
    let bob = bob_of(&b).to_string();
    let since = alice.get("/_matrix/client/v3/sync").await.ok()["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let typing = json!({"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": bob, "typing": true}});
    // Another server's user: ignored.
    let other = json!({"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": alice.user_id, "typing": true}});
    transact(&a, &b, "t1", vec![], vec![other, typing]).await;
    let sync = alice
        .get(&format!(
            "/_matrix/client/v3/sync?since={since}&timeout=5000"
        ))
        .await
        .ok();
    let ephemeral = &sync["rooms"]["join"][&room_id]["ephemeral"]["events"];
    let typers = ephemeral
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.typing")
        .map(|e| e["content"]["user_ids"].clone());
    assert_eq!(typers, Some(json!([bob])), "{sync}");
}

/// Waits (up to 10 s) for `user`'s /sync to show `body` in `room_id`'s timeline.
pub(crate) async fn sees_message(user: &User, room_id: &str, body: &str) -> bool {
    let mut since: Option<String> = None;
    for _ in 0..20 {
        let path = match &since {
            Some(s) => format!("/_matrix/client/v3/sync?since={s}&timeout=500"),
            None => "/_matrix/client/v3/sync".to_owned(),
        };
        let sync = user.get(&path).await.ok();
        let events = &sync["rooms"]["join"][room_id]["timeline"]["events"];
        if events
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["content"]["body"] == body)
        {
            return true;
        }
        since = sync["next_batch"].as_str().map(str::to_owned);
    }
    false
}

pub(crate) async fn say(user: &User, room_id: &str, txn: &str, body: &str) {
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room_id)
        ),
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
    .ok();
}

#[tokio::test]
async fn a_local_user_joins_a_remote_room_and_messages_flow_both_ways() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice).await;
    say(&alice, &room_id, "t0", "before carol").await;
    let joined = carol
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?server_name={}",
                enc(&room_id),
                enc(a.state.server_name.as_str())
            ),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(joined["room_id"], room_id.as_str());
    // Usable at once on B: the room's state is there.
    let state = state_ids(&carol, &room_id).await;
    assert!(state.contains_key(&("m.room.create".to_owned(), String::new())));
    assert!(
        members(&alice, &room_id)
            .await
            .get(&carol.user_id)
            .is_some(),
        "A sees carol"
    );

    say(&alice, &room_id, "t1", "hello carol").await;
    assert!(sees_message(&carol, &room_id, "hello carol").await, "A → B");
    say(&carol, &room_id, "t1", "hello alice").await;
    assert!(sees_message(&alice, &room_id, "hello alice").await, "B → A");

    // Carol leaves on B: A learns it.
    carol
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)),
            json!({}),
        )
        .await
        .ok();
    let mut left = false;
    for _ in 0..50 {
        if members(&alice, &room_id)
            .await
            .get(&carol.user_id)
            .is_none()
        {
            left = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(left, "A sees carol leave");
}

/// Waits (up to 10 s) for an ephemeral event of `kind` in `room_id` on `user`'s /sync whose
/// content `matches`.
async fn sees_ephemeral(
    user: &User,
    room_id: &str,
    kind: &str,
    matches: impl Fn(&Value) -> bool,
) -> bool {
    let mut since: Option<String> = None;
    for _ in 0..20 {
        let path = match &since {
            Some(s) => format!("/_matrix/client/v3/sync?since={s}&timeout=500"),
            None => "/_matrix/client/v3/sync".to_owned(),
        };
        let sync = user.get(&path).await.ok();
        let events = &sync["rooms"]["join"][room_id]["ephemeral"]["events"];
        if events
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["type"] == kind && matches(&e["content"]))
        {
            return true;
        }
        since = sync["next_batch"].as_str().map(str::to_owned);
    }
    false
}

#[tokio::test]
async fn typing_and_read_receipts_cross_between_two_servers() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice).await;
    carol
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&room_id),
                enc(a.state.server_name.as_str())
            ),
            json!({}),
        )
        .await
        .ok();
    let carol_id = carol.user_id.clone();
    carol
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room_id),
                enc(&carol_id)
            ),
            json!({"typing": true, "timeout": 20000}),
        )
        .await
        .ok();
    assert!(
        sees_ephemeral(&alice, &room_id, "m.typing", |c| c["user_ids"]
            == json!([carol_id]))
        .await,
        "B → A typing"
    );
    let event_id = latest(&alice, &room_id).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room_id),
                enc(&event_id)
            ),
            json!({}),
        )
        .await
        .ok();
    let alice_id = alice.user_id.clone();
    assert!(
        sees_ephemeral(&carol, &room_id, "m.receipt", |c| c[&event_id]["m.read"]
            [&alice_id]
            .is_object())
        .await,
        "A → B receipt"
    );
}

#[tokio::test]
async fn a_remote_users_profile_is_asked_of_their_server() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    carol
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&carol.user_id)
            ),
            json!({"displayname": "Carol of B"}),
        )
        .await
        .ok();
    let profile = alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&carol.user_id)
        ))
        .await
        .ok();
    assert_eq!(profile["displayname"], "Carol of B", "{profile}");
    let missing = alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&format!("@nobody:{}", b.state.server_name))
        ))
        .await;
    missing.expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_remote_alias_resolves_and_joins_through_its_server() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice).await;
    let alias = format!("#lobby:{}", a.state.server_name);
    alice
        .put(
            &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)),
            json!({"room_id": room_id}),
        )
        .await
        .ok();
    let resolved = carol
        .get(&format!(
            "/_matrix/client/v3/directory/room/{}",
            enc(&alias)
        ))
        .await
        .ok();
    assert_eq!(resolved["room_id"], room_id.as_str());
    assert_eq!(resolved["servers"][0], a.state.server_name.as_str());
    let unknown = carol
        .get(&format!(
            "/_matrix/client/v3/directory/room/{}",
            enc(&format!("#nowhere:{}", a.state.server_name))
        ))
        .await;
    unknown.expect_err(404, "M_NOT_FOUND");
    let joined = carol
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&alias)),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(joined["room_id"], room_id.as_str());
    assert!(
        members(&alice, &room_id)
            .await
            .get(&carol.user_id)
            .is_some()
    );
}

#[tokio::test]
async fn a_ban_of_a_remote_member_reaches_their_server() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice).await;
    carol
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&room_id),
                enc(a.state.server_name.as_str())
            ),
            json!({}),
        )
        .await
        .ok();
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room_id)),
            json!({"user_id": carol.user_id, "reason": "spam"}),
        )
        .await
        .ok();
    let mut banned = false;
    for _ in 0..50 {
        let member = carol
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&room_id),
                enc(&carol.user_id)
            ))
            .await;
        if member.status == 200 && member.body["membership"] == "ban" {
            banned = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(banned, "B applied the ban of its user");
}

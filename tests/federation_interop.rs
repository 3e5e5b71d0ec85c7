//! Federation behaviour found missing when Axon met the reference Synapse
//! (tests/synapse_interop): joining a room again after every local member left, `/rooms/{id}/join`
//! across servers, redacted events served redacted, other servers reading history (`/backfill`,
//! `/get_missing_events`, `/event_auth`), a remote room joined with its recent history, state
//! resolution of a state event sent on another branch (and the next event merging the branches),
//! and presence sent to other servers. Instance A hosts the room; B's user carol joins it.

use std::time::Duration;

use ruma::api::federation::authorization::get_event_authorization::v1 as event_auth;
use ruma::api::federation::backfill::get_backfill::v1 as backfill;
use ruma::api::federation::event::{get_event::v1 as get_event, get_missing_events::v1 as missing};
use ruma::api::federation::transactions::send_transaction_message::v1 as send;
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, UInt};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::common::{TestApp, User, enc, spawn_federating};

fn name(app: &TestApp) -> OwnedServerName {
    OwnedServerName::try_from(app.state.server_name.as_str()).unwrap()
}

fn room(id: &str) -> OwnedRoomId {
    OwnedRoomId::try_from(id).unwrap()
}

fn event(id: &str) -> OwnedEventId {
    OwnedEventId::try_from(id).unwrap()
}

async fn create_room(alice: &User, body: Value) -> String {
    alice.post("/_matrix/client/v3/createRoom", body).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn say(user: &User, room_id: &str, body: &str) -> String {
    let txn = axon::service::auth::random_string(8);
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room_id)
        ),
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
    .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Carol of `b` joins `room_id` through `a` (by `/join/{roomId}?server_name=`).
async fn join_through(carol: &User, a: &TestApp, room_id: &str) {
    let joined = carol
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?server_name={}",
                enc(room_id),
                enc(a.state.server_name.as_str())
            ),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(joined["room_id"], room_id);
}

/// Waits (up to 10 s) until `pred` holds for `user`'s view of `path`.
async fn eventually(user: &User, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let resp = user.get(path).await;
        if resp.status == 200 && pred(&resp.body) {
            return resp.body;
        }
        last = resp.body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

async fn joined_members(user: &User, room_id: &str) -> Value {
    user.get(&format!(
        "/_matrix/client/v3/rooms/{}/joined_members",
        enc(room_id)
    ))
    .await
    .ok()["joined"]
        .clone()
}

/// Waits until `a` sees `user` joined to `room_id` (or not, with `joined` false).
async fn wait_membership(alice: &User, room_id: &str, user: &str, joined: bool) {
    for _ in 0..100 {
        if joined_members(alice, room_id).await.get(user).is_some() == joined {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{user} never became joined={joined} in {room_id}");
}

fn parsed(pdus: &[Box<RawValue>]) -> Vec<Value> {
    pdus.iter()
        .map(|p| serde_json::from_str(p.get()).unwrap())
        .collect()
}

fn bodies(pdus: &[Value]) -> Vec<Value> {
    pdus.iter()
        .filter(|p| p["type"] == "m.room.message")
        .map(|p| p["content"]["body"].clone())
        .collect()
}

#[tokio::test]
async fn a_room_every_local_member_left_is_joined_again_through_a_resident_server() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join_through(&carol, &a, &room_id).await;
    carol
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)),
            json!({}),
        )
        .await
        .ok();
    wait_membership(&alice, &room_id, &carol.user_id, false).await;
    // While B has no one in the room, the room changes; B hears nothing of it.
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.name/",
                enc(&room_id)
            ),
            json!({"name": "renamed while carol was away"}),
        )
        .await
        .ok();
    // Joining again goes through A (whose answer also holds carol's leave, signed by B itself).
    join_through(&carol, &a, &room_id).await;
    let name = carol
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.name/",
            enc(&room_id)
        ))
        .await
        .ok();
    assert_eq!(name["name"], "renamed while carol was away");
    wait_membership(&alice, &room_id, &carol.user_id, true).await;
    // And the room goes on for B.
    say(&alice, &room_id, "welcome back").await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=5",
        enc(&room_id)
    );
    let seen = eventually(&carol, &path, |m| {
        m["chunk"]
            .as_array()
            .is_some_and(|c| c.iter().any(|e| e["content"]["body"] == "welcome back"))
    })
    .await;
    assert!(
        seen["chunk"].as_array().is_some_and(|c| !c.is_empty()),
        "{seen}"
    );
}

#[tokio::test]
async fn joining_through_rooms_room_id_join_federates() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    // A version 10 room: its ID names the server to ask.
    let room_id = create_room(
        &alice,
        json!({"preset": "public_chat", "room_version": "10"}),
    )
    .await;
    let joined = carol
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room_id)),
            json!({"reason": "hello"}),
        )
        .await
        .ok();
    assert_eq!(joined["room_id"], room_id.as_str());
    wait_membership(&alice, &room_id, &carol.user_id, true).await;
}

#[tokio::test]
async fn a_redacted_event_is_given_to_other_servers_redacted() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join_through(&carol, &a, &room_id).await;
    let secret = say(&alice, &room_id, "a secret").await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                enc(&room_id),
                enc(&secret)
            ),
            json!({}),
        )
        .await
        .ok();
    let answer = b
        .state
        .federation
        .send(&name(&a), get_event::Request::new(event(&secret)))
        .await
        .unwrap();
    let pdu: Value = serde_json::from_str(answer.pdu.get()).unwrap();
    assert_eq!(pdu["content"], json!({}), "{pdu}");
    assert_eq!(pdu["type"], "m.room.message");
    assert!(pdu["signatures"][a.state.server_name.as_str()].is_object());
}

#[tokio::test]
async fn backfill_gives_the_events_before_the_given_ones_newest_first() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    say(&alice, &room_id, "one").await;
    let two = say(&alice, &room_id, "two").await;
    say(&alice, &room_id, "three").await;
    let request = backfill::Request::new(room(&room_id), vec![event(&two)], UInt::from(2u32));
    // Not in the room: nothing to read.
    let refused = b.state.federation.send(&name(&a), request.clone()).await;
    assert!(refused.is_err(), "a server not in the room is refused");
    join_through(&carol, &a, &room_id).await;
    let answer = b.state.federation.send(&name(&a), request).await.unwrap();
    assert_eq!(answer.origin, name(&a));
    assert_eq!(
        bodies(&parsed(&answer.pdus)),
        vec![json!("two"), json!("one")]
    );
}

#[tokio::test]
async fn backfill_redacts_what_the_history_visibility_hides_from_the_server() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "",
            "content": {"history_visibility": "joined"}
        }]}),
    )
    .await;
    let before = say(&alice, &room_id, "before carol").await;
    join_through(&carol, &a, &room_id).await;
    let after = say(&alice, &room_id, "after carol").await;
    let answer = b
        .state
        .federation
        .send(
            &name(&a),
            backfill::Request::new(room(&room_id), vec![event(&after)], UInt::from(10u32)),
        )
        .await
        .unwrap();
    let pdus = parsed(&answer.pdus);
    let by_id = |id: &str| pdus.iter().find(|p| event_id_of(p) == id).cloned();
    assert_eq!(
        by_id(&after).unwrap()["content"]["body"],
        "after carol",
        "sent while B's user was joined"
    );
    let hidden = by_id(&before).expect("the hidden event is there, redacted");
    assert_eq!(hidden["content"], json!({}), "{hidden}");
}

/// The event ID of a PDU of a room of Axon's default version (12).
fn event_id_of(pdu: &Value) -> String {
    let object: ruma::CanonicalJsonObject = serde_json::from_value(pdu.clone()).unwrap();
    let rules = ruma::RoomVersionId::V12.rules().unwrap();
    format!(
        "${}",
        ruma::signatures::reference_hash(&object, &rules).unwrap()
    )
}

#[tokio::test]
async fn get_missing_events_walks_back_from_the_latest_to_the_earliest() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join_through(&carol, &a, &room_id).await;
    let one = say(&alice, &room_id, "one").await;
    say(&alice, &room_id, "two").await;
    say(&alice, &room_id, "three").await;
    let four = say(&alice, &room_id, "four").await;
    let request = missing::Request::new(room(&room_id), vec![event(&one)], vec![event(&four)]);
    let answer = b.state.federation.send(&name(&a), request).await.unwrap();
    assert_eq!(
        bodies(&parsed(&answer.events)),
        vec![json!("two"), json!("three")],
        "oldest first, neither end included"
    );
    let auth = b
        .state
        .federation
        .send(
            &name(&a),
            event_auth::Request::new(room(&room_id), event(&four)),
        )
        .await
        .unwrap();
    let types: Vec<Value> = parsed(&auth.auth_chain)
        .iter()
        .map(|p| p["type"].clone())
        .collect();
    assert!(types.contains(&json!("m.room.power_levels")), "{types:?}");
    assert!(types.contains(&json!("m.room.member")), "{types:?}");
}

#[tokio::test]
async fn a_remote_room_is_joined_with_its_recent_history() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    say(&alice, &room_id, "one").await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.name/",
                enc(&room_id)
            ),
            json!({"name": "the old name"}),
        )
        .await
        .ok();
    say(&alice, &room_id, "two").await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.name/",
                enc(&room_id)
            ),
            json!({"name": "the name"}),
        )
        .await
        .ok();
    join_through(&carol, &a, &room_id).await;
    let page = carol
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            enc(&room_id)
        ))
        .await
        .ok();
    let timeline: Vec<Value> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|e| e["type"] == "m.room.message" || e["type"] == "m.room.name")
        .map(|e| {
            e["content"]["body"]
                .as_str()
                .or(e["content"]["name"].as_str())
                .into()
        })
        .collect();
    assert_eq!(
        timeline,
        vec![
            json!("one"),
            json!("the old name"),
            json!("two"),
            json!("the name")
        ],
        "the history before the join, oldest first"
    );
    // The current state is the join's answer's, not the older name in the history.
    let name = carol
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.name/",
            enc(&room_id)
        ))
        .await
        .ok();
    assert_eq!(name["name"], "the name");
}

/// Sends one PDU of `b`'s (signed by it) to `a` in a transaction; answers its result.
async fn send_pdu(a: &TestApp, b: &TestApp, event: Value) -> (String, Value) {
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(event).unwrap();
    let rules = ruma::RoomVersionId::V12.rules().unwrap();
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
    let raw = RawValue::from_string(ruma::CanonicalJsonValue::Object(object).to_string()).unwrap();
    let txn = axon::service::auth::random_string(8);
    let mut request =
        send::Request::new(txn.into(), name(b), ruma::MilliSecondsSinceUnixEpoch::now());
    request.pdus = vec![raw];
    let answer = b.state.federation.send(&name(a), request).await.unwrap();
    let result = answer
        .pdus
        .into_values()
        .map(|r| json!(r.err()))
        .next()
        .unwrap_or(Value::Null);
    (id, result)
}

/// An event of alice's as A serves it to her.
async fn event_of(alice: &User, room_id: &str, id: &str) -> Value {
    alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(room_id),
            enc(id)
        ))
        .await
        .ok()
}

#[tokio::test]
async fn a_state_event_sent_on_another_branch_is_resolved_as_every_server_resolves_it() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join_through(&carol, &a, &room_id).await;
    let mut levels = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
            enc(&room_id)
        ))
        .await
        .ok();
    levels["users"][&carol.user_id] = json!(50);
    let pl = alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
                enc(&room_id)
            ),
            levels,
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let member = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}?format=event",
            enc(&room_id),
            enc(&carol.user_id)
        ))
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let state_name = |alice: User, room_id: String| async move {
        alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.name/",
                enc(&room_id)
            ))
            .await
            .ok()["name"]
            .clone()
    };
    // Carol renames the room on B's branch, from the power levels on; meanwhile alice renamed it
    // on A. Both renames are authorized by the same power levels: the later one wins (ties: the
    // greater event ID), wherever it arrives last.
    for (round, carol_is_later) in [(1, false), (2, true)] {
        let before = latest_id(&alice, &room_id).await;
        let alices = alice
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.name/",
                    enc(&room_id)
                ),
                json!({"name": format!("alice's {round}")}),
            )
            .await
            .ok()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let alice_ts = event_of(&alice, &room_id, &alices).await["origin_server_ts"]
            .as_i64()
            .unwrap();
        let depth = 1000 + round;
        let (carols, result) = send_pdu(
            &a,
            &b,
            json!({
                "auth_events": [pl, member],
                "prev_events": [before],
                "content": {"name": format!("carol's {round}")},
                "depth": depth,
                "origin_server_ts": if carol_is_later { alice_ts + 1000 } else { alice_ts - 1000 },
                "room_id": room_id,
                "sender": carol.user_id,
                "state_key": "",
                "type": "m.room.name",
            }),
        )
        .await;
        assert_eq!(result, Value::Null, "carol's rename is accepted");
        let want = if carol_is_later {
            format!("carol's {round}")
        } else {
            format!("alice's {round}")
        };
        assert_eq!(
            state_name(alice.clone(), room_id.clone()).await,
            json!(want),
            "round {round}"
        );
        // Carol's event is in the timeline either way.
        assert_eq!(
            event_of(&alice, &room_id, &carols).await["content"]["name"],
            json!(format!("carol's {round}"))
        );
        // A's next event merges the two branches: it cites both renames.
        let next = say(&alice, &room_id, &format!("after round {round}")).await;
        let answer = b
            .state
            .federation
            .send(&name(&a), get_event::Request::new(event(&next)))
            .await
            .unwrap();
        let pdu: Value = serde_json::from_str(answer.pdu.get()).unwrap();
        let mut prev: Vec<&str> = pdu["prev_events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        prev.sort_unstable();
        let mut both = vec![alices.as_str(), carols.as_str()];
        both.sort_unstable();
        assert_eq!(prev, both, "round {round}");
    }
}

/// The ID of the newest event of `room_id` as alice sees it.
async fn latest_id(alice: &User, room_id: &str) -> String {
    alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1",
            enc(room_id)
        ))
        .await
        .ok()["chunk"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_local_users_presence_reaches_the_servers_sharing_a_room_with_them() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join_through(&carol, &a, &room_id).await;
    alice
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
            json!({"presence": "unavailable", "status_msg": "lunch"}),
        )
        .await
        .ok();
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let seen = eventually(&carol, &path, |p| p["presence"] == "unavailable").await;
    assert_eq!(seen["presence"], "unavailable", "{seen}");
    assert_eq!(seen["status_msg"], "lunch");
}

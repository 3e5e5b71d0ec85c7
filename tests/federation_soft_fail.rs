//! Federation: soft failure (spec "Soft failure"). A received event its auth events and the state
//! before it allow, but the room's current state refuses, is kept — other servers can fetch it —
//! yet never shown to clients nor cited by new local events; the transaction reports it accepted.

use ruma::OwnedEventId;
use ruma::api::federation::event::get_event::v1 as get_event;
use serde_json::{Value, json};

use crate::common::{User, enc, spawn_federating};
use crate::federation_rooms::{
    bob_event, bob_of, create_room, latest, name, remote_join, say, sign, state_ids, transact,
};

/// Bob's message on `prev`, authorized by his join `join_id` (whatever his membership is now).
async fn message_on(
    alice: &User,
    b: &crate::common::TestApp,
    room_id: &str,
    join_id: &str,
    prev: &str,
    body: &str,
) -> Value {
    let mut event = bob_event(
        alice,
        b,
        room_id,
        "m.room.message",
        json!({"msgtype": "m.text", "body": body}),
        prev,
    )
    .await;
    let bob = bob_of(b).to_string();
    let current = state_ids(alice, room_id).await[&("m.room.member".to_owned(), bob)].clone();
    for id in event["auth_events"].as_array_mut().unwrap() {
        if *id == current {
            *id = json!(join_id);
        }
    }
    event
}

#[tokio::test]
async fn an_event_only_the_current_state_refuses_is_kept_but_never_shown() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let c = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice).await;
    let (version, join_id, _) = remote_join(&a, &b, &room_id).await;
    // C's bob is in the room too: C may fetch the room's events.
    remote_join(&a, &c, &room_id).await;
    let since = alice.get("/sync").await.ok()["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room_id)),
            json!({"user_id": bob_of(&b).to_string()}),
        )
        .await
        .ok();
    let ban_id = latest(&alice, &room_id).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Sent on bob's join, before the ban: allowed by its auth events and the state before it.
    let evading = message_on(&alice, &b, &room_id, &join_id, &join_id, "evading").await;
    let (id, pdu) = sign(&b, &version, evading);
    let results = transact(&a, &b, "t1", vec![pdu.clone()], vec![]).await;
    assert_eq!(
        results[&id], "",
        "soft-failed counts as accepted: {results}"
    );
    // Again: known, accepted as it is.
    let results = transact(&a, &b, "t2", vec![pdu], vec![]).await;
    assert_eq!(results[&id], "", "{results}");
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM soft_failed_events WHERE event_id = $1")
            .bind(&id)
            .fetch_one(&a.db)
            .await
            .unwrap();
    assert_eq!(kept, 1);

    // Never shown: not in /sync, /messages, /event, /context.
    let sync = alice
        .get(&format!("/_matrix/client/v3/sync?since={since}"))
        .await
        .ok();
    assert!(!sync.to_string().contains("evading"), "{sync}");
    let messages = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            enc(&room_id)
        ))
        .await
        .ok();
    assert!(!messages.to_string().contains("evading"), "{messages}");
    for path in [
        format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(&room_id),
            enc(&id)
        ),
        format!(
            "/_matrix/client/v3/rooms/{}/context/{}",
            enc(&room_id),
            enc(&id)
        ),
    ] {
        alice.get(&path).await.expect_err(404, "M_NOT_FOUND");
    }
    assert_eq!(latest(&alice, &room_id).await["event_id"], ban_id.as_str());
    let notified: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifications WHERE event_id = $1")
            .bind(&id)
            .fetch_one(&a.db)
            .await
            .unwrap();
    assert_eq!(notified, 0);

    // Not cited by the next local event.
    say(&alice, &room_id, "t1", "after the ban").await;
    let pdu: String = sqlx::query_scalar(
        "SELECT pdu FROM events WHERE room_id = $1 ORDER BY stream_ordering DESC LIMIT 1",
    )
    .bind(&room_id)
    .fetch_one(&a.db)
    .await
    .unwrap();
    let pdu: Value = serde_json::from_str(&pdu).unwrap();
    assert_eq!(pdu["prev_events"], json!([ban_id]), "{pdu}");

    // Served to a server in the room.
    let fetched = c
        .state
        .federation
        .send(
            &name(&a),
            get_event::Request::new(OwnedEventId::try_from(id.as_str()).unwrap()),
        )
        .await
        .unwrap();
    let fetched: Value = serde_json::from_str(fetched.pdu.get()).unwrap();
    assert_eq!(fetched["content"]["body"], "evading");
}

#[tokio::test]
async fn an_event_the_state_before_it_refuses_is_rejected() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice).await;
    let (version, join_id, _) = remote_join(&a, &b, &room_id).await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room_id)),
            json!({"user_id": bob_of(&b).to_string()}),
        )
        .await
        .ok();
    let ban_id = latest(&alice, &room_id).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // On the ban itself, yet citing his old join: its auth events allow it, the state before it
    // (bob banned) does not.
    let event = message_on(&alice, &b, &room_id, &join_id, &ban_id, "after my ban").await;
    let (id, pdu) = sign(&b, &version, event);
    let results = transact(&a, &b, "t1", vec![pdu], vec![]).await;
    assert!(
        results[&id].as_str().unwrap().contains("rejected"),
        "{results}"
    );
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM soft_failed_events")
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(kept, 0);
}

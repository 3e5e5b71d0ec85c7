//! Erasure on deactivation (`POST /account/deactivate` with `erase: true`): users who join after the
//! erasure are served the erased user's events redacted; members who saw them keep seeing them (as
//! Synapse, synapse/visibility.py).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::messaging::send_ok;
use crate::rooms::{create_room, join};

const PASSWORD: &str = "correct horse";

/// Deactivates `user` through UIA by password, erasing or not.
async fn deactivate(user: &User, erase: bool) {
    // The UIA session completes only the request that started it: the same body, `auth` aside.
    let r = user
        .post("/account/deactivate", json!({"erase": erase}))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let session = r.body["session"].as_str().unwrap().to_owned();
    let auth = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": PASSWORD,
        "session": session,
    });
    user.post("/account/deactivate", json!({"auth": auth, "erase": erase}))
        .await
        .ok();
}

/// Alice's room with Bob in it, two messages of Alice's that Bob saw, then Alice deactivated
/// (erasing or not), then Carol joining: (bob, carol, room, Alice's message IDs).
pub(crate) async fn erased_history(
    app: &TestApp,
    erase: bool,
) -> (User, User, String, Vec<String>) {
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let sent = vec![
        send_ok(&alice, &room, "secret one").await,
        send_ok(&alice, &room, "secret two").await,
    ];
    deactivate(&alice, erase).await;
    join(&carol, &room).await;
    (bob, carol, room, sent)
}

/// The events with these IDs among `events`, which must hold them all.
pub(crate) fn pick<'a>(events: &'a Value, ids: &[String]) -> Vec<&'a Value> {
    let found: Vec<&Value> = ids
        .iter()
        .filter_map(|id| {
            events
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["event_id"] == id.as_str())
        })
        .collect();
    assert_eq!(found.len(), ids.len(), "not all of {ids:?} in {events}");
    found
}

#[track_caller]
pub(crate) fn assert_redacted(events: &[&Value]) {
    for event in events {
        assert_eq!(event["type"], "m.room.message", "{event}");
        assert_eq!(event["content"], json!({}), "served unredacted: {event}");
    }
}

#[track_caller]
pub(crate) fn assert_intact(events: &[&Value]) {
    for event in events {
        let body = event["content"]["body"].as_str().unwrap_or_default();
        assert!(body.starts_with("secret"), "served redacted: {event}");
    }
}

async fn messages(user: &User, room: &str) -> Value {
    user.get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(room)))
        .await
        .ok()
}

async fn initial_sync_timeline(user: &User, room: &str) -> Value {
    let filter = enc(&json!({"room": {"timeline": {"limit": 50}}}).to_string());
    let v = user.get(&format!("/sync?filter={filter}")).await.ok();
    v["rooms"]["join"][room]["timeline"]["events"].clone()
}

#[tokio::test]
async fn erased_messages_are_redacted_in_messages_for_later_joiners_only() {
    let app = spawn_app().await;
    let (bob, carol, room, sent) = erased_history(&app, true).await;
    assert_redacted(&pick(&messages(&carol, &room).await["chunk"], &sent));
    assert_intact(&pick(&messages(&bob, &room).await["chunk"], &sent));
}

#[tokio::test]
async fn erased_messages_are_redacted_in_initial_sync_for_later_joiners_only() {
    let app = spawn_app().await;
    let (bob, carol, room, sent) = erased_history(&app, true).await;
    assert_redacted(&pick(&initial_sync_timeline(&carol, &room).await, &sent));
    assert_intact(&pick(&initial_sync_timeline(&bob, &room).await, &sent));
}

#[tokio::test]
async fn erased_messages_are_redacted_in_context_and_event_for_later_joiners_only() {
    let app = spawn_app().await;
    let (bob, carol, room, sent) = erased_history(&app, true).await;
    let context = |user: &User| {
        let path = format!("/rooms/{}/context/{}?limit=10", enc(&room), enc(&sent[0]));
        let user = user.clone();
        async move { user.get(&path).await.ok() }
    };
    let event = |user: &User| {
        let path = format!("/rooms/{}/event/{}", enc(&room), enc(&sent[1]));
        let user = user.clone();
        async move { user.get(&path).await.ok() }
    };
    let of_carol = context(&carol).await;
    assert_redacted(&[&of_carol["event"]]);
    assert_redacted(&pick(&of_carol["events_after"], &sent[1..]));
    assert_redacted(&[&event(&carol).await]);
    let of_bob = context(&bob).await;
    assert_intact(&[&of_bob["event"]]);
    assert_intact(&pick(&of_bob["events_after"], &sent[1..]));
    assert_intact(&[&event(&bob).await]);
}

#[tokio::test]
async fn deactivation_without_erase_redacts_nothing() {
    let app = spawn_app().await;
    let (_bob, carol, room, sent) = erased_history(&app, false).await;
    assert_intact(&pick(&messages(&carol, &room).await["chunk"], &sent));
    assert_intact(&pick(&initial_sync_timeline(&carol, &room).await, &sent));
}

#[tokio::test]
async fn an_erased_message_served_redacted_loses_its_bundled_edit() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let original = send_ok(&alice, &room, "secret one").await;
    // Carol is in the room for the edit, not for the message it edits.
    join(&carol, &room).await;
    alice
        .put(
            &format!("/rooms/{}/send/m.room.message/edit1", enc(&room)),
            json!({
                "msgtype": "m.text",
                "body": "* secret edited",
                "m.new_content": {"msgtype": "m.text", "body": "secret edited"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": original},
            }),
        )
        .await
        .ok();
    deactivate(&alice, true).await;
    let path = format!("/rooms/{}/event/{}", enc(&room), enc(&original));
    let event = carol.get(&path).await.ok();
    assert_redacted(&[&event]);
    assert!(
        event["unsigned"]["m.relations"]["m.replace"].is_null(),
        "the edit leaks the erased content: {event}"
    );
}

#[tokio::test]
async fn erasure_reaches_the_other_processes() {
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let sent = vec![send_ok(&alice, &room, "secret one").await];
    // The peer has read the (empty) erased set before the erasure.
    let carol_on_peer = peer.as_user(&carol);
    let lobby = create_room(&carol_on_peer, json!({"preset": "public_chat"})).await;
    messages(&carol_on_peer, &lobby).await;
    deactivate(&alice, true).await;
    join(&carol, &room).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let chunk = messages(&carol_on_peer, &room).await["chunk"].clone();
        let event = pick(&chunk, &sent)[0].clone();
        if event["content"] == json!({}) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the peer still serves the erased content: {event}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

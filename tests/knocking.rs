//! Knocking: asking to be let in to a room whose join rule is `knock`, and what /sync shows of it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::rooms::{create_room, join};
use crate::sync::{last_left_event, long_poll, next_batch, sync, sync_token, timeline};

pub async fn knock_room(owner: &User) -> String {
    create_room(
        owner,
        json!({"preset": "private_chat", "name": "Knock here",
               "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
    )
    .await
}

pub async fn knock(user: &User, room: &str, reason: Option<&str>) -> Resp {
    let body = match reason {
        Some(reason) => json!({"reason": reason}),
        None => json!({}),
    };
    user.post(&format!("/knock/{}", enc(room)), body).await
}

fn stripped<'a>(events: &'a Value, event_type: &str, state_key: &str) -> Option<&'a Value> {
    events
        .as_array()?
        .iter()
        .find(|e| e["type"] == event_type && e["state_key"] == state_key)
}

#[tokio::test]
async fn a_knock_reaches_the_room_and_an_invite_lets_the_knocker_in() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = knock_room(&alice).await;
    let alice_since = sync_token(&alice, "").await;
    let bob_since = sync_token(&bob, "").await;
    // Alice, in the room, is woken by the knock.
    let alice_waiting = long_poll(&alice, &alice_since, "");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let v = knock(&bob, &room, Some("let me in")).await.ok();
    assert_eq!(v["room_id"], room.as_str());

    let s = tokio::time::timeout(Duration::from_secs(5), alice_waiting)
        .await
        .expect("the room is woken by the knock")
        .unwrap();
    let events = &timeline(&s, &room)["events"];
    let knock_event = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("the knock in the room's timeline: {s}"));
    assert_eq!(knock_event["content"]["membership"], "knock");
    assert_eq!(knock_event["content"]["reason"], "let me in");
    assert_eq!(knock_event["content"]["displayname"], "bob");

    // The knocker's sync lists the room under `knock`, with stripped state.
    let s = sync(&bob, &format!("since={bob_since}")).await;
    let knock_state = &s["rooms"]["knock"][&room]["knock_state"]["events"];
    assert_eq!(
        stripped(knock_state, "m.room.join_rules", "").unwrap()["content"]["join_rule"],
        "knock"
    );
    assert_eq!(
        stripped(knock_state, "m.room.name", "").unwrap()["content"]["name"],
        "Knock here"
    );
    assert!(stripped(knock_state, "m.room.create", "").is_some());
    let own = stripped(knock_state, "m.room.member", &bob.user_id).expect("the knock itself");
    assert_eq!(own["content"]["membership"], "knock");
    assert!(own.get("event_id").is_none(), "stripped: {own}");
    assert!(s["rooms"]["join"].get(&room).is_none());
    // An initial sync lists it too; the next incremental one does not repeat it.
    assert!(sync(&bob, "").await["rooms"]["knock"].get(&room).is_some());
    let s2 = sync(&bob, &format!("since={}", next_batch(&s))).await;
    assert!(s2["rooms"]["knock"].get(&room).is_none(), "{s2}");

    // Alice lets Bob in: an invite, which he accepts.
    alice
        .post(
            &format!("/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    let s3 = sync(&bob, &format!("since={}", next_batch(&s2))).await;
    assert!(s3["rooms"]["invite"].get(&room).is_some(), "{s3}");
    assert!(s3["rooms"]["knock"].get(&room).is_none(), "{s3}");
    join(&bob, &room).await;
    let s4 = sync(&bob, &format!("since={}", next_batch(&s3))).await;
    assert!(s4["rooms"]["join"].get(&room).is_some(), "{s4}");
}

#[tokio::test]
async fn a_knock_can_be_withdrawn_or_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = knock_room(&alice).await;

    // Bob withdraws his knock by leaving.
    knock(&bob, &room, None).await.ok();
    let since = sync_token(&bob, "").await;
    bob.post(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await
        .ok();
    let s = sync(&bob, &format!("since={since}")).await;
    assert!(s["rooms"]["knock"].get(&room).is_none(), "{s}");
    let last = last_left_event(&s, &room);
    assert_eq!(last["content"]["membership"], "leave");
    // And may knock again.
    knock(&bob, &room, Some("again")).await.ok();

    // Alice refuses Carol's knock by kicking her.
    knock(&carol, &room, None).await.ok();
    let since = sync_token(&carol, "").await;
    alice
        .post(
            &format!("/rooms/{}/kick", enc(&room)),
            json!({"user_id": carol.user_id, "reason": "no"}),
        )
        .await
        .ok();
    let s = sync(&carol, &format!("since={since}")).await;
    let last = last_left_event(&s, &room);
    assert_eq!(last["sender"], alice.user_id.as_str());
    assert_eq!(last["content"]["reason"], "no");
}

#[tokio::test]
async fn knocks_are_refused_where_the_rules_say_so() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let public = create_room(&alice, json!({"preset": "public_chat"})).await;
    knock(&bob, &public, None)
        .await
        .expect_err(403, "M_FORBIDDEN");
    let invite_only = create_room(&alice, json!({"preset": "private_chat"})).await;
    knock(&bob, &invite_only, None)
        .await
        .expect_err(403, "M_FORBIDDEN");
    let room = knock_room(&alice).await;
    // A member has nothing to knock for.
    knock(&alice, &room, None)
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Nor has a banned user any say.
    alice
        .post(
            &format!("/rooms/{}/ban", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    knock(&bob, &room, None)
        .await
        .expect_err(403, "M_FORBIDDEN");
    knock(&bob, "!unknown:test.local", None)
        .await
        .expect_err(404, "M_NOT_FOUND");
    knock(&bob, "not-a-room", None)
        .await
        .expect_err(400, "M_INVALID_PARAM");
    // Nothing was stored for the refused knocks.
    let s = sync(&bob, "").await;
    assert_eq!(s["rooms"]["knock"], json!({}), "{s}");
}

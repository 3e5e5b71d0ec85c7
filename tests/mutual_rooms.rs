//! Mutual rooms: `GET /v1/mutual_rooms` (and MSC2666's unstable path) lists the rooms where both
//! the requester and another user are joined.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::common::*;
use crate::rooms::{create_room, join};

async fn mutual(user: &User, other: &str, from: Option<&str>) -> Resp {
    let mut path = format!("/_matrix/client/v1/mutual_rooms?user_id={}", enc(other));
    if let Some(from) = from {
        path += &format!("&from={}", enc(from));
    }
    user.get(&path).await
}

fn sorted(mut rooms: Vec<String>) -> Value {
    rooms.sort();
    json!(rooms)
}

#[tokio::test]
async fn mutual_rooms_are_exactly_the_rooms_both_have_joined() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let public = json!({"preset": "public_chat"});
    let both = create_room(&alice, public.clone()).await;
    join(&bob, &both).await;
    let bobs = create_room(&bob, public.clone()).await;
    join(&alice, &bobs).await;
    // Invited only, left, alone, and a room of Bob's without Alice: none shared.
    let invited = create_room(&alice, json!({"invite": [bob.user_id]})).await;
    let left = create_room(&alice, public.clone()).await;
    join(&bob, &left).await;
    bob.post(&format!("/rooms/{}/leave", enc(&left)), json!({}))
        .await
        .ok();
    create_room(&alice, public.clone()).await;
    let others = create_room(&bob, public).await;
    join(&carol, &others).await;
    let _ = invited;

    let v = mutual(&alice, &bob.user_id, None).await.ok();
    assert_eq!(
        v,
        json!({"joined": sorted(vec![both.clone(), bobs.clone()]), "count": 2})
    );
    // The same from Bob's side.
    let v = mutual(&bob, &alice.user_id, None).await.ok();
    assert_eq!(v["joined"], sorted(vec![both, bobs]));
    // MSC2666's unstable path, which clients still call.
    let v = alice
        .get(&format!(
            "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms?user_id={}",
            enc(&bob.user_id)
        ))
        .await
        .ok();
    assert_eq!(v["joined"].as_array().unwrap().len(), 2);
    let versions = app.get("/_matrix/client/versions").await.ok();
    for flag in [
        "uk.half-shot.msc2666.query_mutual_rooms",
        "uk.half-shot.msc2666.query_mutual_rooms.stable",
    ] {
        assert_eq!(versions["unstable_features"][flag], true, "{flag}");
    }
}

#[tokio::test]
async fn mutual_rooms_come_in_pages_of_100() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut rooms = Vec::new();
    for _ in 0..13 {
        let created =
            join_all((0..8).map(|_| create_room(&alice, json!({"preset": "public_chat"})))).await;
        join_all(created.iter().map(|room| join(&bob, room))).await;
        rooms.extend(created);
    }
    assert_eq!(rooms.len(), 104);
    let first = mutual(&alice, &bob.user_id, None).await.ok();
    assert_eq!(first["count"], 104);
    let page: Vec<String> = serde_json::from_value(first["joined"].clone()).unwrap();
    assert_eq!(page.len(), 100);
    let token = first["next_batch"].as_str().unwrap();
    let second = mutual(&alice, &bob.user_id, Some(token)).await.ok();
    assert_eq!(second["count"], 104);
    assert!(second.get("next_batch").is_none(), "{second}");
    let rest: Vec<String> = serde_json::from_value(second["joined"].clone()).unwrap();
    let all: Vec<String> = page.into_iter().chain(rest).collect();
    assert_eq!(json!(all), sorted(rooms));
}

#[tokio::test]
async fn mutual_rooms_with_oneself_or_a_malformed_user_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    mutual(&alice, &alice.user_id, None)
        .await
        .expect_err(400, "M_INVALID_PARAM");
    for bad in ["not-a-user", "@Upper Case:test.local"] {
        mutual(&alice, bad, None)
            .await
            .expect_err(400, "M_INVALID_PARAM");
    }
    alice
        .get("/_matrix/client/v1/mutual_rooms")
        .await
        .expect_err(400, "M_MISSING_PARAM");
    mutual(&alice, "@bob:test.local", Some("!!!"))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    // A user nobody knows shares no room: the spec asks for an empty list.
    let v = mutual(&alice, "@nobody:elsewhere.example", None).await.ok();
    assert_eq!(v, json!({"joined": [], "count": 0}));
    app.get("/_matrix/client/v1/mutual_rooms?user_id=%40bob%3Atest.local")
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

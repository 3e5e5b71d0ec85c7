//! Rooms: createRoom and its presets, direct chats, membership, state, authorization rules.

use serde_json::{Value, json};

use crate::common::*;

pub async fn create_room(user: &User, body: Value) -> String {
    user.post("/createRoom", body).await.ok()["room_id"].as_str().unwrap().to_owned()
}

pub async fn state_content(user: &User, room: &str, event_type: &str, key: &str) -> Resp {
    user.get(&format!("/rooms/{}/state/{}/{}", enc(room), event_type, enc(key))).await
}

#[tokio::test]
async fn create_room_makes_a_v12_room_with_creator_joined() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"name": "Hello", "topic": "World"})).await;
    assert!(room.starts_with('!') && !room.contains(':'), "v12 room IDs have no server name: {room}");
    let create = state_content(&alice, &room, "m.room.create", "").await.ok();
    assert_eq!(create["room_version"], "12");
    assert!(create.get("creator").is_none());
    let member = state_content(&alice, &room, "m.room.member", &alice.user_id).await.ok();
    assert_eq!(member["membership"], "join");
    assert_eq!(state_content(&alice, &room, "m.room.name", "").await.ok()["name"], "Hello");
    assert_eq!(state_content(&alice, &room, "m.room.topic", "").await.ok()["topic"], "World");
    let joined = alice.get("/joined_rooms").await.ok();
    assert_eq!(joined["joined_rooms"], json!([room]));
}

#[tokio::test]
async fn is_direct_marks_every_invite_of_the_call() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(
        &alice,
        json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id, carol.user_id]}),
    )
    .await;
    for invitee in [&bob, &carol] {
        let member = state_content(&alice, &room, "m.room.member", &invitee.user_id).await.ok();
        assert_eq!(member["membership"], "invite");
        assert_eq!(member["is_direct"], true, "{member}");
        assert_eq!(member["displayname"], invitee.user_id[1..].split(':').next().unwrap());
        // The invitee sees it in the invite's stripped state.
        let sync = invitee.get("/sync").await.ok();
        let invite_state = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
        let own = invite_state
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == invitee.user_id.as_str())
            .expect("invite member event in stripped state");
        assert_eq!(own["content"]["is_direct"], true);
    }
    let room2 = create_room(&alice, json!({"invite": [bob.user_id]})).await;
    let member = state_content(&alice, &room2, "m.room.member", &bob.user_id).await.ok();
    assert!(member.get("is_direct").is_none(), "{member}");
}

#[tokio::test]
async fn send_sync_and_paginate() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let sync = alice.get("/sync").await.ok();
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let mut ids = vec![];
    for i in 0..5 {
        let r = alice.put(&format!("/rooms/{}/send/m.room.message/t{i}", enc(&room)), json!({"msgtype": "m.text", "body": format!("hi {i}")})).await.ok();
        ids.push(r["event_id"].as_str().unwrap().to_owned());
    }
    let sync = alice.get(&format!("/sync?since={since}")).await.ok();
    let events = sync["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap();
    let got: Vec<&str> = events.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(events[0]["unsigned"]["transaction_id"], "t0");
    let page = alice.get(&format!("/rooms/{}/messages?dir=b&limit=3", enc(&room))).await.ok();
    let chunk: Vec<&str> = page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(chunk, vec![ids[4].as_str(), ids[3].as_str(), ids[2].as_str()]);
}

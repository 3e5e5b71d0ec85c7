//! Rooms: createRoom and its presets, direct chats, membership, state, authorization rules.

use serde_json::{Value, json};

use crate::common::*;

pub async fn create_room(user: &User, body: Value) -> String {
    user.post("/createRoom", body).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn join(user: &User, room: &str) {
    user.post(&format!("/join/{}", enc(room)), json!({}))
        .await
        .ok();
}

pub async fn state_content(user: &User, room: &str, event_type: &str, key: &str) -> Resp {
    user.get(&format!(
        "/rooms/{}/state/{}/{}",
        enc(room),
        event_type,
        enc(key)
    ))
    .await
}

#[tokio::test]
async fn create_room_makes_a_v12_room_with_creator_joined() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"name": "Hello", "topic": "World"})).await;
    assert!(
        room.starts_with('!') && !room.contains(':'),
        "v12 room IDs have no server name: {room}"
    );
    let create = state_content(&alice, &room, "m.room.create", "").await.ok();
    assert_eq!(create["room_version"], "12");
    assert!(create.get("creator").is_none());
    let member = state_content(&alice, &room, "m.room.member", &alice.user_id)
        .await
        .ok();
    assert_eq!(member["membership"], "join");
    assert_eq!(
        state_content(&alice, &room, "m.room.name", "").await.ok()["name"],
        "Hello"
    );
    assert_eq!(
        state_content(&alice, &room, "m.room.topic", "").await.ok()["topic"],
        "World"
    );
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
        let member = state_content(&alice, &room, "m.room.member", &invitee.user_id)
            .await
            .ok();
        assert_eq!(member["membership"], "invite");
        assert_eq!(member["is_direct"], true, "{member}");
        // ... and through /event, as the invitee reads it.
        let whole = alice
            .get(&format!(
                "/rooms/{}/state/m.room.member/{}?format=event",
                enc(&room),
                enc(&invitee.user_id)
            ))
            .await
            .ok();
        let event = invitee
            .get(&format!(
                "/rooms/{}/event/{}",
                enc(&room),
                enc(whole["event_id"].as_str().unwrap())
            ))
            .await
            .ok();
        assert_eq!(event["content"]["is_direct"], true, "{event}");
        assert_eq!(
            member["displayname"],
            invitee.user_id[1..].split(':').next().unwrap()
        );
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
    let member = state_content(&alice, &room2, "m.room.member", &bob.user_id)
        .await
        .ok();
    assert!(member.get("is_direct").is_none(), "{member}");
    let sync = bob.get("/sync").await.ok();
    let stripped = sync["rooms"]["invite"][&room2]["invite_state"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let own = stripped
        .iter()
        .find(|e| e["state_key"] == bob.user_id.as_str())
        .unwrap();
    assert!(own["content"].get("is_direct").is_none(), "{own}");
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
        let r = alice
            .put(
                &format!("/rooms/{}/send/m.room.message/t{i}", enc(&room)),
                json!({"msgtype": "m.text", "body": format!("hi {i}")}),
            )
            .await
            .ok();
        ids.push(r["event_id"].as_str().unwrap().to_owned());
    }
    let sync = alice.get(&format!("/sync?since={since}")).await.ok();
    let events = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(events[0]["unsigned"]["transaction_id"], "t0");
    let page = alice
        .get(&format!("/rooms/{}/messages?dir=b&limit=3", enc(&room)))
        .await
        .ok();
    let chunk: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        chunk,
        vec![ids[4].as_str(), ids[3].as_str(), ids[2].as_str()]
    );
}

async fn power_levels(user: &User, room: &str) -> Value {
    state_content(user, room, "m.room.power_levels", "")
        .await
        .ok()
}

#[tokio::test]
async fn presets_set_the_specified_state() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    for (preset, join_rule, guest) in [
        ("private_chat", "invite", "can_join"),
        ("trusted_private_chat", "invite", "can_join"),
        ("public_chat", "public", "forbidden"),
    ] {
        let room = create_room(
            &alice,
            json!({"preset": preset, "invite": [bob.user_id], "room_version": "11"}),
        )
        .await;
        assert_eq!(
            state_content(&alice, &room, "m.room.join_rules", "")
                .await
                .ok()["join_rule"],
            join_rule,
            "{preset}"
        );
        assert_eq!(
            state_content(&alice, &room, "m.room.history_visibility", "")
                .await
                .ok()["history_visibility"],
            "shared"
        );
        assert_eq!(
            state_content(&alice, &room, "m.room.guest_access", "")
                .await
                .ok()["guest_access"],
            guest
        );
        let pl = power_levels(&alice, &room).await;
        assert_eq!(pl["users"][&alice.user_id], 100);
        let bob_level = pl["users"].get(&bob.user_id).cloned();
        if preset == "trusted_private_chat" {
            assert_eq!(
                bob_level,
                Some(json!(100)),
                "invitees get the creator's level"
            );
        } else {
            assert_eq!(bob_level, None);
        }
    }
    // v12: creators are not listed; trusted invitees become additional creators.
    let room = create_room(
        &alice,
        json!({"preset": "trusted_private_chat", "invite": [bob.user_id]}),
    )
    .await;
    let create = state_content(&alice, &room, "m.room.create", "").await.ok();
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    let pl = power_levels(&alice, &room).await;
    assert!(pl["users"].as_object().unwrap().is_empty(), "{pl}");
    assert!(
        pl["events"]["m.room.tombstone"].as_i64().unwrap() > pl["state_default"].as_i64().unwrap()
    );
    // visibility=public without a preset means public_chat.
    let room = create_room(&alice, json!({"visibility": "public"})).await;
    assert_eq!(
        state_content(&alice, &room, "m.room.join_rules", "")
            .await
            .ok()["join_rule"],
        "public"
    );
}

#[tokio::test]
async fn create_room_events_come_in_the_spec_order() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(
        &alice,
        json!({"room_alias_name": "ordered", "name": "N", "topic": "T", "invite": [bob.user_id],
               "initial_state": [{"type": "m.room.avatar", "content": {"url": "mxc://x/y"}}]}),
    )
    .await;
    let page = alice
        .get(&format!(
            "/rooms/{}/messages?dir=f&limit=50&from=s0",
            enc(&room)
        ))
        .await
        .ok();
    let types: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}{}",
                e["type"].as_str().unwrap(),
                if e["type"] == "m.room.member" {
                    format!(":{}", e["content"]["membership"].as_str().unwrap())
                } else {
                    String::new()
                }
            )
        })
        .collect();
    assert_eq!(
        types,
        vec![
            "m.room.create",
            "m.room.member:join",
            "m.room.power_levels",
            "m.room.canonical_alias",
            "m.room.join_rules",
            "m.room.history_visibility",
            "m.room.guest_access",
            "m.room.avatar",
            "m.room.name",
            "m.room.topic",
            "m.room.member:invite",
        ]
    );
    let alias = alice
        .get(&format!("/directory/room/{}", enc("#ordered:test.local")))
        .await
        .ok();
    assert_eq!(alias["room_id"], room.as_str());
}

#[tokio::test]
async fn create_room_refusals() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .post("/createRoom", json!({"room_version": "13"}))
        .await
        .expect_err(400, "M_UNSUPPORTED_ROOM_VERSION");
    alice
        .post("/createRoom", json!({"name": 5}))
        .await
        .expect_err(400, "M_BAD_JSON");
    alice
        .post("/createRoom", json!({"topic": ["x"]}))
        .await
        .expect_err(400, "M_BAD_JSON");
    alice
        .post(
            "/createRoom",
            json!({"initial_state": [{"type": "m.room.name", "content": {"name": 1}}]}),
        )
        .await
        .expect_err(400, "M_INVALID_ROOM_STATE");
    alice.post("/createRoom", json!({"invite_3pid": [{"medium": "email", "address": "a@b.c", "id_server": "x", "id_access_token": "y"}]})).await.expect_err(400, "M_INVALID_PARAM");
    alice
        .post("/createRoom", json!({"preset": "party"}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    create_room(&alice, json!({"room_alias_name": "taken"})).await;
    alice
        .post("/createRoom", json!({"room_alias_name": "taken"}))
        .await
        .expect_err(400, "M_ROOM_IN_USE");
    app.request(
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom",
        None,
        Some(json!({})),
    )
    .await
    .expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn a_failed_create_room_leaves_nothing_behind() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    // The power levels override makes the creator unable to send the name: the whole call fails.
    let r = alice
        .post("/createRoom", json!({"room_version": "11", "name": "never", "room_alias_name": "ghost",
                                    "power_level_content_override": {"users": {alice.user_id.clone(): 0}, "state_default": 50, "events": {}}}))
        .await;
    r.expect_err(403, "M_FORBIDDEN");
    assert!(
        alice.get("/joined_rooms").await.ok()["joined_rooms"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    alice
        .get(&format!("/directory/room/{}", enc("#ghost:test.local")))
        .await
        .expect_err(404, "M_NOT_FOUND");
    let rooms: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rooms")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!((rooms, events), (0, 0));
}

#[tokio::test]
async fn room_versions_10_and_11_work() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for v in ["10", "11"] {
        let room = create_room(&alice, json!({"room_version": v})).await;
        assert!(room.ends_with(":test.local"), "{room}");
        let create = state_content(&alice, &room, "m.room.create", "").await.ok();
        assert_eq!(create["room_version"], v);
        assert_eq!(create.get("creator").is_some(), v == "10");
        let id = crate::messaging::send_ok(&alice, &room, "hi").await;
        assert!(id.starts_with('$'));
        let redacted = alice
            .put(
                &format!("/rooms/{}/redact/{}/x", enc(&room), enc(&id)),
                json!({}),
            )
            .await
            .ok();
        assert!(redacted["event_id"].is_string());
    }
}

#[tokio::test]
async fn membership_transitions_follow_the_auth_rules() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"preset": "private_chat"})).await;
    let r = |p: &str| format!("/rooms/{}/{p}", enc(&room));
    // Invite-only: joining uninvited is refused.
    bob.post(&r("join"), json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Only members may invite.
    carol
        .post(&r("invite"), json!({"user_id": bob.user_id}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .post(
            &r("invite"),
            json!({"user_id": bob.user_id, "reason": "welcome"}),
        )
        .await
        .ok();
    assert_eq!(
        state_content(&alice, &room, "m.room.member", &bob.user_id)
            .await
            .ok()["reason"],
        "welcome"
    );
    // An invited user can reject (leave) and be invited again.
    bob.post(&r("leave"), json!({})).await.ok();
    alice
        .post(&r("invite"), json!({"user_id": bob.user_id}))
        .await
        .ok();
    bob.post(&r("join"), json!({})).await.ok();
    // Inviting someone already joined is refused.
    alice
        .post(&r("invite"), json!({"user_id": bob.user_id}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Bob (power 0) cannot kick or ban Alice; Alice can kick Bob.
    bob.post(&r("kick"), json!({"user_id": alice.user_id}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    bob.post(&r("ban"), json!({"user_id": alice.user_id}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .post(&r("kick"), json!({"user_id": bob.user_id}))
        .await
        .ok();
    // Ban, then a banned user cannot rejoin even when invited; unban lets them be invited again.
    alice
        .post(&r("ban"), json!({"user_id": bob.user_id, "reason": "spam"}))
        .await
        .ok();
    alice
        .post(&r("invite"), json!({"user_id": bob.user_id}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    bob.post(&r("join"), json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .post(&r("unban"), json!({"user_id": bob.user_id}))
        .await
        .ok();
    assert_eq!(
        state_content(&alice, &room, "m.room.member", &bob.user_id)
            .await
            .ok()["membership"],
        "leave"
    );
    alice
        .post(&r("invite"), json!({"user_id": bob.user_id}))
        .await
        .ok();
    bob.post(&r("join"), json!({})).await.ok();
    // Public rooms can be joined by anyone, also through an alias.
    let public = create_room(
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "lobby"}),
    )
    .await;
    let joined = carol
        .post(&format!("/join/{}", enc("#lobby:test.local")), json!({}))
        .await
        .ok();
    assert_eq!(joined["room_id"], public.as_str());
    // Unknown rooms and remote rooms answer clearly.
    carol
        .post(&format!("/join/{}", enc("!nowhere:test.local")), json!({}))
        .await
        .expect_err(404, "M_NOT_FOUND");
    carol
        .post(
            &format!("/join/{}", enc("!elsewhere:remote.example")),
            json!({}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    carol
        .post(&format!("/join/{}", enc("#nope:test.local")), json!({}))
        .await
        .expect_err(404, "M_NOT_FOUND");
    carol
        .post(&format!("/join/{}", enc("not a room")), json!({}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .post(
            &format!("/rooms/{}/invite", enc(&public)),
            json!({"user_id": "@someone:remote.example"}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .post(
            &format!("/rooms/{}/invite", enc(&public)),
            json!({"user_id": "@ghost:test.local"}),
        )
        .await
        .expect_err(404, "M_NOT_FOUND");
}

/// Synapse's update_membership_locked: "The target user is not in the room" for a kick of a
/// banned user (it would lift the ban), of one who left, or of one who was never in the room.
#[tokio::test]
async fn kick_applies_only_to_members_invitees_and_knockers() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let dave = app.register("dave").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let r = |p: &str| format!("/rooms/{}/{p}", enc(&room));
    let kick = |user: &User| json!({"user_id": user.user_id});
    bob.post(&r("join"), json!({})).await.ok();
    carol.post(&r("join"), json!({})).await.ok();
    // Banned: the kick is refused and the ban stays.
    alice.post(&r("ban"), kick(&bob)).await.ok();
    alice
        .post(&r("kick"), kick(&bob))
        .await
        .expect_err(403, "M_FORBIDDEN");
    let member = state_content(&alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member.ok()["membership"], "ban");
    bob.post(&r("join"), json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .post(&r("invite"), kick(&bob))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Left, and never in the room.
    carol.post(&r("leave"), json!({})).await.ok();
    alice
        .post(&r("kick"), kick(&carol))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .post(&r("kick"), kick(&dave))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // An invitee can be kicked (the invite is withdrawn).
    alice.post(&r("invite"), kick(&dave)).await.ok();
    alice.post(&r("kick"), kick(&dave)).await.ok();
    // The ban lifts only through /unban.
    alice.post(&r("unban"), kick(&bob)).await.ok();
    bob.post(&r("join"), json!({})).await.ok();
}

#[tokio::test]
async fn power_levels_govern_state_and_messages() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "room_version": "11"}),
    )
    .await;
    join(&bob, &room).await;
    // state_default 50: Bob (0) may not rename the room or change power levels.
    bob.put(
        &format!("/rooms/{}/state/m.room.name", enc(&room)),
        json!({"name": "mine"}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    bob.put(
        &format!("/rooms/{}/state/m.room.power_levels", enc(&room)),
        json!({"users": {bob.user_id.clone(): 100}}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    // Bob may set state keyed by his own user ID only where the level allows: @-keys of others are refused.
    bob.put(
        &format!(
            "/rooms/{}/state/org.example.x/{}",
            enc(&room),
            enc(&alice.user_id)
        ),
        json!({}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    // Alice promotes Bob to 50: now he can rename, but not give himself 100.
    let mut pl = power_levels(&alice, &room).await;
    pl["users"][&bob.user_id] = json!(50);
    alice
        .put(
            &format!("/rooms/{}/state/m.room.power_levels", enc(&room)),
            pl.clone(),
        )
        .await
        .ok();
    bob.put(
        &format!("/rooms/{}/state/m.room.name", enc(&room)),
        json!({"name": "ok"}),
    )
    .await
    .ok();
    let mut raise = pl.clone();
    raise["users"][&bob.user_id] = json!(100);
    bob.put(
        &format!("/rooms/{}/state/m.room.power_levels", enc(&room)),
        raise,
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    // events_default raised: Bob can no longer talk, Alice still can.
    let mut mute = pl.clone();
    mute["events_default"] = json!(75);
    alice
        .put(
            &format!("/rooms/{}/state/m.room.power_levels", enc(&room)),
            mute,
        )
        .await
        .ok();
    crate::messaging::send(&bob, &room, json!({"msgtype": "m.text", "body": "x"}), "m1")
        .await
        .expect_err(403, "M_FORBIDDEN");
    crate::messaging::send_ok(&alice, &room, "still here").await;
    // Non-members cannot send at all.
    let eve = app.register("eve").await;
    crate::messaging::send(&eve, &room, json!({"msgtype": "m.text", "body": "x"}), "e1")
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Unknown room: 404.
    crate::messaging::send(
        &alice,
        "!missing:test.local",
        json!({"msgtype": "m.text", "body": "x"}),
        "u",
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn v12_creators_cannot_be_kicked_or_listed() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let mut pl = power_levels(&alice, &room).await;
    pl["users"][&bob.user_id] = json!(100);
    alice
        .put(
            &format!("/rooms/{}/state/m.room.power_levels", enc(&room)),
            pl,
        )
        .await
        .ok();
    // Even at 100, Bob cannot kick the creator.
    bob.post(
        &format!("/rooms/{}/kick", enc(&room)),
        json!({"user_id": alice.user_id}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    let mut listed = power_levels(&alice, &room).await;
    listed["users"][&alice.user_id] = json!(100);
    alice
        .put(
            &format!("/rooms/{}/state/m.room.power_levels", enc(&room)),
            listed,
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn state_put_get_dedupe_and_empty_state_keys() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let a = alice
        .put(
            &format!("/rooms/{}/state/m.room.topic", enc(&room)),
            json!({"topic": "t1"}),
        )
        .await
        .ok();
    let b = alice
        .put(
            &format!("/rooms/{}/state/m.room.topic/", enc(&room)),
            json!({"topic": "t1"}),
        )
        .await
        .ok();
    assert_eq!(
        a["event_id"], b["event_id"],
        "identical state is de-duplicated"
    );
    let c = alice
        .put(
            &format!("/rooms/{}/state/m.room.topic/", enc(&room)),
            json!({"topic": "t2"}),
        )
        .await
        .ok();
    assert_ne!(a["event_id"], c["event_id"]);
    assert_eq!(
        alice
            .get(&format!("/rooms/{}/state/m.room.topic/", enc(&room)))
            .await
            .ok()["topic"],
        "t2"
    );
    let full = alice
        .get(&format!(
            "/rooms/{}/state/m.room.topic?format=event",
            enc(&room)
        ))
        .await
        .ok();
    assert_eq!(full["event_id"], c["event_id"]);
    assert_eq!(full["unsigned"]["prev_content"]["topic"], "t1");
    alice
        .get(&format!("/rooms/{}/state/m.room.avatar", enc(&room)))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .put(
            &format!("/rooms/{}/state/m.room.name", enc(&room)),
            json!({"name": 3}),
        )
        .await
        .expect_err(400, "M_BAD_JSON");
    alice
        .put(
            &format!("/rooms/{}/state/m.room.topic", enc(&room)),
            json!({}),
        )
        .await
        .expect_err(400, "M_BAD_JSON");
    alice
        .put(
            &format!("/rooms/{}/state/m.room.canonical_alias", enc(&room)),
            json!({"alias": "#missing:test.local"}),
        )
        .await
        .expect_err(400, "M_BAD_ALIAS");
    let all = alice
        .get(&format!("/rooms/{}/state", enc(&room)))
        .await
        .ok();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "t2")
    );
    // Strangers may not look.
    let eve = app.register("eve").await;
    eve.get(&format!("/rooms/{}/state", enc(&room)))
        .await
        .expect_err(403, "M_FORBIDDEN");
    eve.get(&format!("/rooms/{}/state/m.room.topic", enc(&room)))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_user_who_left_sees_state_at_their_leave_and_forget_hides_the_room() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "before"})).await;
    join(&bob, &room).await;
    bob.post(&format!("/rooms/{}/forget", enc(&room)), json!({}))
        .await
        .expect_err(400, "M_UNKNOWN");
    bob.post(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await
        .ok();
    alice
        .put(
            &format!("/rooms/{}/state/m.room.name", enc(&room)),
            json!({"name": "after"}),
        )
        .await
        .ok();
    assert_eq!(
        state_content(&bob, &room, "m.room.name", "").await.ok()["name"],
        "before"
    );
    bob.post(&format!("/rooms/{}/forget", enc(&room)), json!({}))
        .await
        .ok();
    let f = enc(&json!({"room": {"include_leave": true}}).to_string());
    let s = bob.get(&format!("/sync?filter={f}")).await.ok();
    assert!(
        s["rooms"]["leave"].get(&room).is_none(),
        "forgotten rooms are hidden"
    );
}

#[tokio::test]
async fn members_and_joined_members() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "invite": [carol.user_id]}),
    )
    .await;
    join(&bob, &room).await;
    let all = alice
        .get(&format!("/rooms/{}/members", enc(&room)))
        .await
        .ok();
    assert_eq!(all["chunk"].as_array().unwrap().len(), 3);
    let invited = alice
        .get(&format!("/rooms/{}/members?membership=invite", enc(&room)))
        .await
        .ok();
    assert_eq!(invited["chunk"].as_array().unwrap().len(), 1);
    let not_joined = alice
        .get(&format!(
            "/rooms/{}/members?not_membership=join",
            enc(&room)
        ))
        .await
        .ok();
    assert_eq!(not_joined["chunk"][0]["state_key"], carol.user_id.as_str());
    let joined = alice
        .get(&format!("/rooms/{}/joined_members", enc(&room)))
        .await
        .ok();
    assert_eq!(joined["joined"].as_object().unwrap().len(), 2);
    assert_eq!(joined["joined"][&bob.user_id]["display_name"], "bob");
    // `at` a token from before Bob joined.
    let page = alice
        .get(&format!("/rooms/{}/messages?dir=b&limit=1", enc(&room)))
        .await
        .ok();
    let before_bob = page["end"].as_str().unwrap();
    let then = alice
        .get(&format!("/rooms/{}/members?at={before_bob}", enc(&room)))
        .await
        .ok();
    assert_eq!(then["chunk"].as_array().unwrap().len(), 2);
    let eve = app.register("eve").await;
    eve.get(&format!("/rooms/{}/joined_members", enc(&room)))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn profile_changes_propagate_with_prev_content() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room1 = create_room(&alice, json!({})).await;
    let room2 = create_room(&alice, json!({})).await;
    let p = |k: &str| format!("/profile/{}/{k}", enc(&alice.user_id));
    alice
        .put(&p("displayname"), json!({"displayname": "Alice A."}))
        .await
        .ok();
    alice
        .put(
            &p("avatar_url"),
            json!({"avatar_url": "mxc://test.local/face"}),
        )
        .await
        .ok();
    let profile = bob
        .get(&format!("/profile/{}", enc(&alice.user_id)))
        .await
        .ok();
    assert_eq!(
        profile,
        json!({"displayname": "Alice A.", "avatar_url": "mxc://test.local/face"})
    );
    assert_eq!(
        bob.get(&p("displayname")).await.ok()["displayname"],
        "Alice A."
    );
    for room in [&room1, &room2] {
        let member = alice
            .get(&format!(
                "/rooms/{}/state/m.room.member/{}?format=event",
                enc(room),
                enc(&alice.user_id)
            ))
            .await
            .ok();
        assert_eq!(member["content"]["displayname"], "Alice A.");
        assert_eq!(member["content"]["avatar_url"], "mxc://test.local/face");
        assert_eq!(
            member["unsigned"]["prev_content"]["displayname"],
            "Alice A."
        );
        assert_eq!(member["content"]["membership"], "join");
    }
    // The name change event itself kept the previous name.
    let page = alice
        .get(&format!("/rooms/{}/messages?dir=b&limit=2", enc(&room1)))
        .await
        .ok();
    let name_change = &page["chunk"][1];
    assert_eq!(name_change["content"]["displayname"], "Alice A.");
    assert_eq!(
        name_change["unsigned"]["prev_content"]["displayname"],
        "alice"
    );
    // Only for yourself; bad values refused.
    bob.put(&p("displayname"), json!({"displayname": "hacked"}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .put(&p("displayname"), json!({"displayname": 7}))
        .await
        .expect_err(400, "M_BAD_JSON");
    bob.get(&format!("/profile/{}", enc("@nobody:test.local")))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn aliases_create_resolve_delete() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let a = |s: &str| format!("/directory/room/{}", enc(s));
    alice
        .put(&a("#one:test.local"), json!({"room_id": room}))
        .await
        .ok();
    let r = alice
        .put(&a("#one:test.local"), json!({"room_id": room}))
        .await;
    r.expect_err(409, "M_UNKNOWN");
    alice
        .put(&a("#two:elsewhere.org"), json!({"room_id": room}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .put(&a("not-an-alias"), json!({"room_id": room}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    let resolved = bob.get(&a("#one:test.local")).await.ok();
    assert_eq!(resolved["room_id"], room.as_str());
    assert_eq!(resolved["servers"], json!(["test.local"]));
    let aliases = alice
        .get(&format!("/rooms/{}/aliases", enc(&room)))
        .await
        .ok();
    assert_eq!(aliases["aliases"], json!(["#one:test.local"]));
    join(&bob, &room).await;
    bob.delete(&a("#one:test.local"))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice.delete(&a("#one:test.local")).await.ok();
    bob.get(&a("#one:test.local"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .delete(&a("#one:test.local"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn public_room_directory_paginates_stably_and_searches() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut rooms = Vec::new();
    for i in 0..7 {
        rooms.push(create_room(&alice, json!({"visibility": "public", "name": format!("Room {i}"), "topic": if i == 3 { "special topic" } else { "plain" }})).await);
    }
    create_room(&alice, json!({"name": "Hidden"})).await;
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    loop {
        let url = match &since {
            Some(s) => format!("/publicRooms?limit=3&since={s}"),
            None => "/publicRooms?limit=3".into(),
        };
        let page = app.get(&format!("/_matrix/client/v3{url}")).await.ok();
        assert_eq!(page["total_room_count_estimate"], 7);
        seen.extend(
            page["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["room_id"].as_str().unwrap().to_owned()),
        );
        match page["next_batch"].as_str() {
            Some(n) => since = Some(n.to_owned()),
            None => break,
        }
    }
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 7);
    assert_eq!(seen.len(), 7);
    let found = alice
        .post(
            "/publicRooms",
            json!({"filter": {"generic_search_term": "SPECIAL"}}),
        )
        .await
        .ok();
    let chunk = found["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 1);
    assert_eq!(chunk[0]["room_id"], rooms[3].as_str());
    assert_eq!(chunk[0]["num_joined_members"], 1);
    assert_eq!(chunk[0]["join_rule"], "public");
    // Publishing and unpublishing.
    let vis = |r: &str| format!("/directory/list/room/{}", enc(r));
    assert_eq!(
        alice.get(&vis(&rooms[0])).await.ok()["visibility"],
        "public"
    );
    alice
        .put(&vis(&rooms[0]), json!({"visibility": "private"}))
        .await
        .ok();
    assert_eq!(
        alice.get(&vis(&rooms[0])).await.ok()["visibility"],
        "private"
    );
    let bob = app.register("bob").await;
    bob.put(&vis(&rooms[1]), json!({"visibility": "private"}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .get(&vis("!unknown:test.local"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn user_directory_finds_room_mates_and_public_room_members() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let dave = app.register("dave").await;
    bob.put(
        &format!("/profile/{}/displayname", enc(&bob.user_id)),
        json!({"displayname": "Bobby Tables"}),
    )
    .await
    .ok();
    // Alice shares a private room with Bob; Carol sits in a public room; Dave is alone.
    create_room(&alice, json!({"invite": [bob.user_id]})).await;
    let private = alice.get("/joined_rooms").await.ok()["joined_rooms"][0]
        .as_str()
        .unwrap()
        .to_owned();
    bob.post(&format!("/rooms/{}/join", enc(&private)), json!({}))
        .await
        .ok();
    create_room(&carol, json!({"preset": "public_chat"})).await;
    let search = |term: &str| json!({"search_term": term, "limit": 10});
    let r = alice
        .post("/user_directory/search", search("tables"))
        .await
        .ok();
    assert_eq!(r["results"][0]["user_id"], bob.user_id.as_str());
    assert_eq!(r["results"][0]["display_name"], "Bobby Tables");
    let r = alice
        .post("/user_directory/search", search("carol"))
        .await
        .ok();
    assert_eq!(r["results"].as_array().unwrap().len(), 1);
    let r = alice
        .post("/user_directory/search", search("dave"))
        .await
        .ok();
    assert!(r["results"].as_array().unwrap().is_empty());
    assert_eq!(r["limited"], false);
    let _ = dave;
    // By config, everyone is searchable.
    let mut config = test_config();
    config.directory.search_all_users = true;
    let app2 = spawn_app_with(config).await;
    let x = app2.register("xavier").await;
    app2.register("yolanda").await;
    let r = x.post("/user_directory/search", search("yol")).await.ok();
    assert_eq!(r["results"].as_array().unwrap().len(), 1);
}

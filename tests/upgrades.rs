//! Room upgrades: the replacement room, its copied state, the tombstone, moved aliases, the
//! restricted old room, and each member's tags and push rules carried over.

use serde_json::{Value, json};

use crate::common::*;
use crate::rooms::{create_room, join, state_content};

async fn upgrade(user: &User, room: &str, body: Value) -> Resp {
    user.post(&format!("/rooms/{}/upgrade", enc(room)), body)
        .await
}

async fn upgraded(user: &User, room: &str, version: &str) -> String {
    upgrade(user, room, json!({"new_version": version}))
        .await
        .ok()["replacement_room"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn send_text(user: &User, room: &str, txn: &str) -> Resp {
    user.put(
        &format!("/rooms/{}/send/m.room.message/{txn}", enc(room)),
        json!({"msgtype": "m.text", "body": "hi"}),
    )
    .await
}

/// A public v11 room with a name, topic, alias, custom power levels, bob joined and carol banned.
async fn furnished_room(alice: &User, bob: &User, carol: &User) -> String {
    let room = create_room(
        alice,
        json!({
            "preset": "public_chat", "room_version": "11", "name": "Old name", "topic": "Old topic",
            "room_alias_name": "lounge",
            "power_level_content_override": {"events": {"m.room.topic": 20, "org.example.custom": 30}},
        }),
    )
    .await;
    join(bob, &room).await;
    join(carol, &room).await;
    alice
        .post(
            &format!("/rooms/{}/ban", enc(&room)),
            json!({"user_id": carol.user_id, "reason": "spam"}),
        )
        .await
        .ok();
    room
}

#[tokio::test]
async fn upgrade_copies_state_and_tombstones_the_old_room() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let old = furnished_room(&alice, &bob, &carol).await;
    let new = upgraded(&alice, &old, "12").await;
    assert_ne!(new, old);

    let tombstone = state_content(&alice, &old, "m.room.tombstone", "")
        .await
        .ok();
    assert_eq!(tombstone["replacement_room"], new.as_str());
    assert!(tombstone["body"].is_string());

    let create = state_content(&alice, &new, "m.room.create", "").await.ok();
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(
        state_content(&alice, &new, "m.room.name", "").await.ok()["name"],
        "Old name"
    );
    assert_eq!(
        state_content(&alice, &new, "m.room.topic", "").await.ok()["topic"],
        "Old topic"
    );
    for (t, key, value) in [
        ("m.room.join_rules", "join_rule", "public"),
        ("m.room.history_visibility", "history_visibility", "shared"),
        ("m.room.guest_access", "guest_access", "forbidden"),
    ] {
        assert_eq!(
            state_content(&alice, &new, t, "").await.ok()[key],
            value,
            "{t}"
        );
    }
    let ban = state_content(&alice, &new, "m.room.member", &carol.user_id)
        .await
        .ok();
    assert_eq!(ban["membership"], "ban");
    assert_eq!(ban["reason"], "spam");
    // Bob is not carried over: he joins the new room himself.
    state_content(&alice, &new, "m.room.member", &bob.user_id)
        .await
        .expect_err(404, "M_NOT_FOUND");

    // The custom levels come along; in v12 the upgrader is a creator, so not in `users`.
    let power = state_content(&alice, &new, "m.room.power_levels", "")
        .await
        .ok();
    assert_eq!(power["events"]["m.room.topic"], 20);
    assert_eq!(power["events"]["org.example.custom"], 30);
    assert!(power["users"].get(&alice.user_id).is_none(), "{power}");

    // The room can be used: alice speaks, bob joins and speaks.
    send_text(&alice, &new, "a1").await.ok();
    join(&bob, &new).await;
    send_text(&bob, &new, "b1").await.ok();
}

#[tokio::test]
async fn upgrade_moves_aliases_and_the_directory_entry() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let old = furnished_room(&alice, &bob, &carol).await;
    alice
        .put(
            "/directory/room/%23extra:test.local",
            json!({"room_id": old}),
        )
        .await
        .ok();
    alice
        .put(
            &format!("/rooms/{}/state/m.room.canonical_alias/", enc(&old)),
            json!({"alias": "#lounge:test.local", "alt_aliases": ["#extra:test.local"]}),
        )
        .await
        .ok();
    alice
        .put(
            &format!("/directory/list/room/{}", enc(&old)),
            json!({"visibility": "public"}),
        )
        .await
        .ok();
    let new = upgraded(&alice, &old, "12").await;

    for alias in ["%23lounge:test.local", "%23extra:test.local"] {
        let resolved = alice.get(&format!("/directory/room/{alias}")).await.ok();
        assert_eq!(resolved["room_id"], new.as_str(), "{alias}");
    }
    let aliases = alice
        .get(&format!("/rooms/{}/aliases", enc(&new)))
        .await
        .ok();
    assert_eq!(
        aliases["aliases"],
        json!(["#extra:test.local", "#lounge:test.local"])
    );
    assert_eq!(
        state_content(&alice, &new, "m.room.canonical_alias", "")
            .await
            .ok(),
        json!({"alias": "#lounge:test.local", "alt_aliases": ["#extra:test.local"]})
    );
    assert_eq!(
        state_content(&alice, &old, "m.room.canonical_alias", "")
            .await
            .ok(),
        json!({})
    );
    // The directory lists the new room instead of the old one.
    let public = alice.get("/publicRooms").await.ok();
    let listed: Vec<&str> = public["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["room_id"].as_str())
        .collect();
    assert_eq!(listed, vec![new.as_str()]);
}

#[tokio::test]
async fn upgrade_restricts_the_old_room_to_moderators() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let old = furnished_room(&alice, &bob, &carol).await;
    send_text(&bob, &old, "before").await.ok();
    upgraded(&alice, &old, "12").await;
    let power = state_content(&alice, &old, "m.room.power_levels", "")
        .await
        .ok();
    assert_eq!(power["events_default"], 50);
    assert_eq!(power["invite"], 50);
    send_text(&bob, &old, "after")
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Moderators and above still can.
    send_text(&alice, &old, "after").await.ok();
}

#[tokio::test]
async fn upgrade_between_every_supported_version_gives_a_usable_room() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for (from, to) in [
        ("10", "11"),
        ("11", "10"),
        ("10", "12"),
        ("12", "11"),
        ("12", "12"),
    ] {
        let old = create_room(
            &alice,
            json!({"room_version": from, "name": "n", "power_level_content_override": {"state_default": 60}}),
        )
        .await;
        let last = send_text(&alice, &old, "last").await.ok()["event_id"].clone();
        let new = upgraded(&alice, &old, to).await;
        let create = state_content(&alice, &new, "m.room.create", "").await.ok();
        assert_eq!(create["room_version"], to, "{from} → {to}");
        assert_eq!(create["predecessor"]["room_id"], old.as_str());
        if to == "12" {
            assert!(create["predecessor"].get("event_id").is_none(), "{create}");
            assert!(!new.contains(':'), "{new}");
        } else {
            // The old room's last event before the upgrade.
            assert_eq!(create["predecessor"]["event_id"], last, "{from} → {to}");
        }
        assert_eq!(create.get("creator").is_some(), to == "10", "{create}");
        let power = state_content(&alice, &new, "m.room.power_levels", "")
            .await
            .ok();
        assert_eq!(power["state_default"], 60, "{from} → {to}");
        if to != "12" {
            // The upgrader keeps an admin's level; a v12 creator gets the highest level the old
            // room's levels name (the tombstone's 150), keeping every power they had.
            let expected = if from == "12" { 150 } else { 100 };
            assert_eq!(
                power["users"][&alice.user_id], expected,
                "{from} → {to}: {power}"
            );
        }
        send_text(&alice, &new, "first").await.ok();
        alice
            .put(
                &format!("/rooms/{}/state/m.room.topic/", enc(&new)),
                json!({"topic": "still admin"}),
            )
            .await
            .ok();
    }
}

#[tokio::test]
async fn upgrade_to_v12_takes_additional_creators() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let old = create_room(
        &alice,
        json!({"room_version": "11", "preset": "public_chat"}),
    )
    .await;
    join(&bob, &old).await;
    alice
        .put(
            &format!("/rooms/{}/state/m.room.power_levels/", enc(&old)),
            json!({"users": {alice.user_id.clone(): 100, bob.user_id.clone(): 100}}),
        )
        .await
        .ok();
    let new = upgrade(
        &alice,
        &old,
        json!({"new_version": "12", "additional_creators": [bob.user_id]}),
    )
    .await
    .ok()["replacement_room"]
        .as_str()
        .unwrap()
        .to_owned();
    let create = state_content(&alice, &new, "m.room.create", "").await.ok();
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    let power = state_content(&alice, &new, "m.room.power_levels", "")
        .await
        .ok();
    assert_eq!(power["users"], json!({}), "creators are not listed in v12");

    upgrade(
        &alice,
        &new,
        json!({"new_version": "12", "additional_creators": ["not a user"]}),
    )
    .await
    .expect_err(400, "M_BAD_JSON");
}

#[tokio::test]
async fn members_tags_and_room_push_rules_follow_the_upgrade() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let old = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &old).await;
    let me = enc(&bob.user_id);
    bob.put(
        &format!("/user/{me}/rooms/{}/tags/m.favourite", enc(&old)),
        json!({"order": 0.5}),
    )
    .await
    .ok();
    bob.put(
        &format!("/pushrules/global/room/{}", enc(&old)),
        json!({"actions": []}),
    )
    .await
    .ok();
    bob.put(
        &format!("/user/{me}/account_data/m.direct"),
        json!({"@alice:test.local": [old]}),
    )
    .await
    .ok();
    let new = upgraded(&alice, &old, "12").await;
    join(&bob, &new).await;

    let tags = bob
        .get(&format!("/user/{me}/rooms/{}/tags", enc(&new)))
        .await
        .ok();
    assert_eq!(tags["tags"], json!({"m.favourite": {"order": 0.5}}));
    let rule = bob
        .get(&format!("/pushrules/global/room/{}", enc(&new)))
        .await
        .ok();
    assert_eq!(rule["rule_id"], new.as_str());
    assert_eq!(rule["actions"], json!([]));
    let direct = bob
        .get(&format!("/user/{me}/account_data/m.direct"))
        .await
        .ok();
    assert_eq!(direct["@alice:test.local"], json!([old, new]));
}

#[tokio::test]
async fn upgrade_refusals() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    upgrade(&alice, &room, json!({"new_version": "13"}))
        .await
        .expect_err(400, "M_UNSUPPORTED_ROOM_VERSION");
    upgrade(&alice, &room, json!({}))
        .await
        .expect_err(400, "M_MISSING_PARAM");
    // Bob lacks the power to send the tombstone: nothing is created, nothing changes.
    upgrade(&bob, &room, json!({"new_version": "12"}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    state_content(&alice, &room, "m.room.tombstone", "")
        .await
        .expect_err(404, "M_NOT_FOUND");
    assert_eq!(
        bob.get("/joined_rooms").await.ok()["joined_rooms"],
        json!([room])
    );
    upgrade(&alice, "!nowhere:test.local", json!({"new_version": "12"}))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

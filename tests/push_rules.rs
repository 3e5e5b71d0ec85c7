//! Push rules as clients call them (issue #17): the spec's predefined rules including the legacy
//! mention rules, the push rules API's paths and errors, and /notifications.

use serde_json::{Value, json};

use crate::common::*;
use crate::messaging::send;
use crate::rooms::{create_room, join};

/// Sets the user's display name (before they join rooms, so their member events carry it).
async fn set_display_name(user: &User, name: &str) {
    user.put(
        &format!("/profile/{}/displayname", enc(&user.user_id)),
        json!({"displayname": name}),
    )
    .await
    .ok();
}

/// A public room of `creator` (power level 100) that `others` joined.
async fn public_room(creator: &User, others: &[&User]) -> String {
    let room = create_room(creator, json!({"preset": "public_chat"})).await;
    for user in others {
        join(user, &room).await;
    }
    room
}

async fn say(user: &User, room: &str, content: Value) {
    let txn = format!("t{}", axon::service::auth::random_string(10));
    send(user, room, content, &txn).await.ok();
}

async fn highlights(user: &User, room: &str) -> Value {
    let s = user.get("/sync").await.ok();
    s["rooms"]["join"][room]["unread_notifications"]["highlight_count"].clone()
}

fn ids(rules: &Value) -> Vec<&str> {
    rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn default_push_rules_are_the_spec_list_in_order() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let rules = alice.get("/pushrules/global/").await.ok();
    assert_eq!(
        ids(&rules["override"]),
        [
            ".m.rule.master",
            ".m.rule.suppress_notices",
            ".m.rule.invite_for_me",
            ".m.rule.member_event",
            ".m.rule.is_user_mention",
            ".m.rule.contains_display_name",
            ".m.rule.is_room_mention",
            ".m.rule.roomnotif",
            ".m.rule.tombstone",
            ".m.rule.reaction",
            ".m.rule.room.server_acl",
            ".m.rule.suppress_edits",
        ]
    );
    assert_eq!(
        rules["content"],
        json!([{
            "rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
            "pattern": "alice",
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}],
        }])
    );
    assert_eq!(
        ids(&rules["underride"]),
        [
            ".m.rule.call",
            ".m.rule.encrypted_room_one_to_one",
            ".m.rule.room_one_to_one",
            ".m.rule.message",
            ".m.rule.encrypted",
        ]
    );
    let roomnotif = alice
        .get("/pushrules/global/override/.m.rule.roomnotif")
        .await
        .ok();
    assert_eq!(
        roomnotif["conditions"],
        json!([
            {"kind": "event_match", "key": "content.body", "pattern": "@room"},
            {"kind": "sender_notification_permission", "key": "room"},
        ])
    );
}

#[tokio::test]
async fn a_message_with_the_display_name_highlights_without_m_mentions() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    set_display_name(&bob, "Bobby Tables").await;
    let room = public_room(&alice, &[&bob, &carol]).await;

    say(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "hello Bobby Tables!"}),
    )
    .await;
    assert_eq!(highlights(&bob, &room).await, json!(1));
    assert_eq!(highlights(&carol, &room).await, json!(0));
    let list = bob.get("/notifications?only=highlight").await.ok();
    assert_eq!(
        list["notifications"][0]["event"]["content"]["body"],
        "hello Bobby Tables!"
    );
    // With m.mentions the legacy rules stand aside.
    let mentions = json!({"msgtype": "m.text", "body": "Bobby Tables again", "m.mentions": {}});
    say(&alice, &room, mentions).await;
    assert_eq!(highlights(&bob, &room).await, json!(1));
}

#[tokio::test]
async fn a_message_with_the_user_name_highlights_without_m_mentions() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    set_display_name(&bob, "Robert").await;
    let room = public_room(&alice, &[&bob]).await;
    say(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "ping bob"}),
    )
    .await;
    assert_eq!(highlights(&bob, &room).await, json!(1));
}

#[tokio::test]
async fn at_room_without_m_mentions_highlights_from_those_who_may_notify() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = public_room(&alice, &[&bob, &carol]).await;
    // Bob (power level 0) may not notify the room.
    say(
        &bob,
        &room,
        json!({"msgtype": "m.text", "body": "@room hi"}),
    )
    .await;
    assert_eq!(highlights(&carol, &room).await, json!(0));
    say(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "@room hi"}),
    )
    .await;
    assert_eq!(highlights(&carol, &room).await, json!(1));
}

#[tokio::test]
async fn push_rules_of_one_kind_are_listed() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let all = alice.get("/pushrules/").await.ok();
    for kind in ["override", "underride", "sender", "room", "content"] {
        let listed = alice.get(&format!("/pushrules/global/{kind}/")).await.ok();
        assert_eq!(listed, all["global"][kind], "{kind}");
    }
    alice
        .get("/pushrules/global/sideways/")
        .await
        .expect_err(400, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn unknown_push_rule_attributes_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let path = "/pushrules/global/override/.m.rule.master/colour";
    alice.get(path).await.expect_err(400, "M_UNRECOGNIZED");
    alice
        .put(path, json!({"colour": "red"}))
        .await
        .expect_err(400, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn push_rule_paths_without_a_rule_id_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let rule = json!({"actions": ["notify"], "conditions": []});
    for path in ["/pushrules/global/override/", "/pushrules/global/override"] {
        alice
            .put(path, rule.clone())
            .await
            .expect_err(400, "M_UNRECOGNIZED");
        alice.delete(path).await.expect_err(400, "M_UNRECOGNIZED");
    }
    alice
        .get("/pushrules/global/override")
        .await
        .expect_err(400, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn room_rules_take_the_room_id_as_rule_id() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = public_room(&alice, &[&bob, &carol]).await;
    let path = format!("/pushrules/global/room/{}", enc(&room));
    alice
        .put(&path, json!({"actions": ["dont_notify"]}))
        .await
        .ok();
    let rule = alice.get(&path).await.ok();
    assert_eq!(rule["rule_id"], room.as_str(), "{rule}");
    assert_eq!(rule["actions"], json!(["dont_notify"]));
    crate::messaging::send_ok(&bob, &room, "quiet please").await;
    let s = alice.get("/sync").await.ok();
    assert_eq!(
        s["rooms"]["join"][&room]["unread_notifications"]["notification_count"],
        json!(0)
    );
    alice.delete(&path).await.ok();
    alice.get(&path).await.expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn notifications_carry_the_pushers_profile_tag() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let pusher = json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": "key1", "app_display_name": "App",
        "device_display_name": "Phone", "lang": "en", "profile_tag": "mobile-tag",
        "data": {"url": "https://push.invalid/_matrix/push/v1/notify"},
    });
    bob.post("/pushers/set", pusher).await.ok();
    let room = public_room(&alice, &[&bob, &carol]).await;
    crate::messaging::send_ok(&alice, &room, "hello").await;
    let list = bob.get("/notifications").await.ok();
    assert_eq!(
        list["notifications"][0]["profile_tag"], "mobile-tag",
        "{list}"
    );
    let list = carol.get("/notifications").await.ok();
    let first = list["notifications"][0].as_object().unwrap();
    assert!(!first.contains_key("profile_tag"), "{list}");
}

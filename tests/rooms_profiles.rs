//! Rooms and profiles as clients use them: joining with extra member content, deleting a canonical
//! alias, redacting through the wrong room, reading profiles, and who the user directory shows.

use serde_json::{Value, json};

use crate::common::*;
use crate::rooms::{create_room, join, state_content};

async fn member_content(user: &User, room: &str, member: &str) -> Value {
    state_content(user, room, "m.room.member", member)
        .await
        .ok()
}

#[tokio::test]
async fn join_by_alias_keeps_the_bodys_keys_in_the_member_event() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    bob.put(
        "/profile/@bob:test.local/displayname",
        json!({"displayname": "Bob"}),
    )
    .await
    .ok();
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    // As Synapse's JoinRoomAliasServlet: the body is the content; membership is forced; the profile
    // fills in what the body leaves out.
    let body = json!({"reason": "hi", "foo": {"bar": 1}, "membership": "leave", "avatar_url": "mxc://x/y"});
    bob.post(&format!("/join/{}", enc(&room)), body).await.ok();
    let content = member_content(&alice, &room, &bob.user_id).await;
    assert_eq!(
        content,
        json!({"membership": "join", "reason": "hi", "foo": {"bar": 1},
               "displayname": "Bob", "avatar_url": "mxc://x/y"})
    );
    // The same join again is a no-op; a new per-room name is a new member event.
    let again = json!({"reason": "hi", "foo": {"bar": 1}, "avatar_url": "mxc://x/y"});
    bob.post(&format!("/join/{}", enc(&room)), again).await.ok();
    let events = alice
        .get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(&room)))
        .await
        .ok();
    let bobs = |v: &Value| {
        v["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
            .count()
    };
    assert_eq!(bobs(&events), 1, "{events}");
    bob.post(
        &format!("/join/{}", enc(&room)),
        json!({"displayname": "Bob here"}),
    )
    .await
    .ok();
    let content = member_content(&alice, &room, &bob.user_id).await;
    assert_eq!(content["displayname"], "Bob here");
    // A per-room name longer than Synapse's limit is refused.
    bob.post(
        &format!("/join/{}", enc(&room)),
        json!({"displayname": "x".repeat(257)}),
    )
    .await
    .expect_err(400, "M_BAD_JSON");
}

#[tokio::test]
async fn join_by_room_id_keeps_the_reason() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.post(
        &format!("/rooms/{}/join", enc(&room)),
        json!({"reason": "because"}),
    )
    .await
    .ok();
    let content = member_content(&alice, &room, &bob.user_id).await;
    assert_eq!(content["membership"], "join");
    assert_eq!(content["reason"], "because");
}

#[tokio::test]
async fn deleting_an_alias_takes_it_out_of_the_canonical_alias() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"room_alias_name": "main"})).await;
    for alt in ["#alt1:test.local", "#alt2:test.local"] {
        alice
            .put(
                &format!("/directory/room/{}", enc(alt)),
                json!({"room_id": room}),
            )
            .await
            .ok();
    }
    alice
        .put(
            &format!("/rooms/{}/state/m.room.canonical_alias/", enc(&room)),
            json!({"alias": "#main:test.local", "alt_aliases": ["#alt1:test.local", "#alt2:test.local"]}),
        )
        .await
        .ok();
    alice
        .delete(&format!("/directory/room/{}", enc("#main:test.local")))
        .await
        .ok();
    let content = state_content(&alice, &room, "m.room.canonical_alias", "")
        .await
        .ok();
    assert_eq!(
        content,
        json!({"alt_aliases": ["#alt1:test.local", "#alt2:test.local"]})
    );
    alice
        .delete(&format!("/directory/room/{}", enc("#alt1:test.local")))
        .await
        .ok();
    let content = state_content(&alice, &room, "m.room.canonical_alias", "")
        .await
        .ok();
    assert_eq!(content, json!({"alt_aliases": ["#alt2:test.local"]}));
}

#[tokio::test]
async fn an_alias_creator_without_power_still_deletes_the_alias() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    bob.put(
        &format!("/directory/room/{}", enc("#bobs:test.local")),
        json!({"room_id": room}),
    )
    .await
    .ok();
    alice
        .put(
            &format!("/rooms/{}/state/m.room.canonical_alias/", enc(&room)),
            json!({"alias": "#bobs:test.local"}),
        )
        .await
        .ok();
    // Bob may not change the canonical alias: the alias goes, the state stays (as Synapse).
    bob.delete(&format!("/directory/room/{}", enc("#bobs:test.local")))
        .await
        .ok();
    app.get(&format!(
        "/_matrix/client/v3/directory/room/{}",
        enc("#bobs:test.local")
    ))
    .await
    .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn redacting_an_event_of_another_room_is_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let one = create_room(&alice, json!({})).await;
    let two = create_room(&alice, json!({})).await;
    let event = alice
        .put(
            &format!("/rooms/{}/send/m.room.message/t1", enc(&two)),
            json!({"msgtype": "m.text", "body": "hello"}),
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .put(
            &format!("/rooms/{}/redact/{}/r1", enc(&one), enc(&event)),
            json!({}),
        )
        .await
        .expect_err(400, "M_UNKNOWN");
    let original = alice
        .get(&format!("/rooms/{}/event/{}", enc(&two), enc(&event)))
        .await
        .ok();
    assert_eq!(original["content"]["body"], "hello");
}

#[tokio::test]
async fn profiles_are_readable_without_a_token_by_default() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .put(
            "/profile/@alice:test.local/displayname",
            json!({"displayname": "Alice"}),
        )
        .await
        .ok();
    let base = "/_matrix/client/v3/profile/%40alice%3Atest.local";
    assert_eq!(app.get(base).await.ok(), json!({"displayname": "Alice"}));
    assert_eq!(
        app.get(&format!("{base}/displayname")).await.ok(),
        json!({"displayname": "Alice"})
    );
    // An unset field is 404 on its own path.
    app.get(&format!("{base}/avatar_url"))
        .await
        .expect_err(404, "M_NOT_FOUND");

    let mut config = test_config();
    config.directory.require_auth_for_profile_requests = true;
    let strict = spawn_app_with(config).await;
    strict.register("alice").await;
    strict.get(base).await.expect_err(401, "M_MISSING_TOKEN");
    strict
        .get(&format!("{base}/displayname"))
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn any_avatar_url_synapse_stores_is_accepted() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let path = "/profile/@alice:test.local/avatar_url";
    for url in ["https://example.org/me.png", "not a uri at all"] {
        alice.put(path, json!({"avatar_url": url})).await.ok();
        assert_eq!(alice.get(path).await.ok()["avatar_url"], url);
    }
    // Synapse's only check is the length (1000 characters).
    alice
        .put(path, json!({"avatar_url": "é".repeat(1000)}))
        .await
        .ok();
    alice
        .put(path, json!({"avatar_url": "x".repeat(1001)}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

async fn search(user: &User, term: &str) -> Vec<String> {
    let r = user
        .post("/user_directory/search", json!({"search_term": term}))
        .await
        .ok();
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_user_directory_follows_public_rooms_as_they_change() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let public = create_room(&bob, json!({"preset": "public_chat"})).await;
    assert_eq!(search(&alice, "bob").await, vec![bob.user_id.clone()]);
    // No longer public: Bob is gone from Alice's results ...
    bob.put(
        &format!("/rooms/{}/state/m.room.join_rules/", enc(&public)),
        json!({"join_rule": "invite"}),
    )
    .await
    .ok();
    assert!(search(&alice, "bob").await.is_empty());
    // ... and back while the room's history is world-readable (Synapse's "public room").
    bob.put(
        &format!("/rooms/{}/state/m.room.history_visibility/", enc(&public)),
        json!({"history_visibility": "world_readable"}),
    )
    .await
    .ok();
    assert_eq!(search(&alice, "bob").await, vec![bob.user_id.clone()]);
    // Leaving the room takes Carol out again.
    let other = create_room(&bob, json!({"preset": "public_chat"})).await;
    join(&carol, &other).await;
    assert_eq!(search(&alice, "carol").await, vec![carol.user_id.clone()]);
    carol
        .post(&format!("/rooms/{}/leave", enc(&other)), json!({}))
        .await
        .ok();
    assert!(search(&alice, "carol").await.is_empty());
}

#[tokio::test]
async fn searchers_do_not_find_themselves_through_a_private_room() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    create_room(&alice, json!({"preset": "private_chat"})).await;
    assert!(search(&alice, "alice").await.is_empty());
    // In a public room, they are in the directory like anyone there (as in Synapse).
    create_room(&alice, json!({"preset": "public_chat"})).await;
    assert_eq!(search(&alice, "alice").await, vec![alice.user_id.clone()]);

    let mut config = test_config();
    config.directory.search_all_users = true;
    let everyone = spawn_app_with(config).await;
    let dan = everyone.register("dan").await;
    everyone.register("danielle").await;
    let found = search(&dan, "dan").await;
    assert_eq!(found, vec!["@danielle:test.local".to_owned()]);
}

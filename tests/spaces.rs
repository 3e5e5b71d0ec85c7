//! Spaces: the space hierarchy, room summaries (previews), and joining restricted rooms through
//! membership of another room.

use serde_json::{Value, json};

use crate::common::*;
use crate::rooms::{create_room, join, state_content};

/// A public space named `name`.
async fn space(owner: &User, name: &str) -> String {
    create_room(
        owner,
        json!({"preset": "public_chat", "name": name, "creation_content": {"type": "m.space"}}),
    )
    .await
}

/// A room with `join_rule` (and, for the restricted rules, an allow list naming `allowed`).
async fn room_with_rule(owner: &User, name: &str, join_rule: &str, allowed: &[&str]) -> String {
    let mut rules = json!({"join_rule": join_rule});
    if !allowed.is_empty() {
        rules["allow"] = allowed
            .iter()
            .map(|r| json!({"type": "m.room_membership", "room_id": r}))
            .collect();
    }
    create_room(
        owner,
        json!({"preset": "private_chat", "name": name,
               "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": rules}]}),
    )
    .await
}

/// Makes `child` a child of `space`, with `extra` content beside the `via`.
async fn add_child(owner: &User, space: &str, child: &str, extra: Value) {
    let mut content = json!({"via": ["test.local"]});
    for (k, v) in extra.as_object().unwrap() {
        content[k] = v.clone();
    }
    owner
        .put(
            &format!("/rooms/{}/state/m.space.child/{}", enc(space), enc(child)),
            content,
        )
        .await
        .ok();
}

async fn hierarchy(user: &User, space: &str, query: &str) -> Resp {
    user.get(&format!(
        "/_matrix/client/v1/rooms/{}/hierarchy?{query}",
        enc(space)
    ))
    .await
}

fn room_ids(page: &Value) -> Vec<String> {
    page["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(rooms: &[&String]) -> Vec<String> {
    rooms.iter().map(|r| r.to_string()).collect()
}

fn chunk<'a>(page: &'a Value, room: &str) -> &'a Value {
    page["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == room)
        .unwrap_or_else(|| panic!("{room} in {page}"))
}

#[tokio::test]
async fn hierarchy_lists_a_space_and_its_children_with_the_summary_fields() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let space = create_room(
        &alice,
        json!({"preset": "public_chat", "name": "The Space", "topic": "All of it",
               "room_alias_name": "space", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let general = create_room(
        &alice,
        json!({"preset": "public_chat", "name": "General",
               "initial_state": [
                   {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                   {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://test.local/av"}},
                   {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}},
               ]}),
    )
    .await;
    let random = create_room(&alice, json!({"preset": "public_chat"})).await;
    let removed = create_room(&alice, json!({"preset": "public_chat"})).await;
    add_child(&alice, &space, &random, json!({})).await;
    add_child(&alice, &space, &general, json!({"order": "a"})).await;
    // Without a `via` a room is not a child (any more).
    alice
        .put(
            &format!(
                "/rooms/{}/state/m.space.child/{}",
                enc(&space),
                enc(&removed)
            ),
            json!({}),
        )
        .await
        .ok();

    let page = hierarchy(&alice, &space, "").await.ok();
    // Depth first, children in the spec's order: a valid `order` first.
    assert_eq!(room_ids(&page), ids(&[&space, &general, &random]), "{page}");
    assert!(page.get("next_batch").is_none(), "{page}");

    let root = chunk(&page, &space);
    assert_eq!(root["name"], "The Space");
    assert_eq!(root["topic"], "All of it");
    assert_eq!(root["canonical_alias"], "#space:test.local");
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["join_rule"], "public");
    assert_eq!(root["num_joined_members"], 1);
    assert_eq!(root["world_readable"], false);
    assert_eq!(root["guest_can_join"], false);
    assert_eq!(root["room_version"], "12");
    assert!(root.get("encryption").is_none(), "{root}");
    let children = root["children_state"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{root}");
    let first = &children[0];
    assert_eq!(first["type"], "m.space.child");
    assert_eq!(first["state_key"], general.as_str());
    assert_eq!(first["sender"], alice.user_id.as_str());
    assert_eq!(
        first["content"],
        json!({"via": ["test.local"], "order": "a"})
    );
    assert!(first["origin_server_ts"].as_i64().unwrap() > 0, "{first}");
    assert!(first.get("event_id").is_none(), "stripped: {first}");

    let child = chunk(&page, &general);
    assert_eq!(child["name"], "General");
    assert_eq!(child["encryption"], "m.megolm.v1.aes-sha2");
    assert_eq!(child["avatar_url"], "mxc://test.local/av");
    assert_eq!(child["world_readable"], true);
    assert!(child.get("room_type").is_none(), "{child}");
    assert_eq!(
        child["children_state"],
        json!([]),
        "not a space: no children"
    );
    // No name: left out, never null.
    assert!(chunk(&page, &random).get("name").is_none());
}

#[tokio::test]
async fn hierarchy_shows_only_the_children_the_requester_may_see() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let space = space(&alice, "Space").await;
    let elsewhere = space_elsewhere(&alice).await;
    let public = room_with_rule(&alice, "public", "public", &[]).await;
    let private = room_with_rule(&alice, "private", "invite", &[]).await;
    let via_space = room_with_rule(&alice, "via space", "restricted", &[&space]).await;
    let via_other = room_with_rule(&alice, "via other", "restricted", &[&elsewhere]).await;
    let knock = room_with_rule(&alice, "knock", "knock", &[]).await;
    let knock_other =
        room_with_rule(&alice, "knock other", "knock_restricted", &[&elsewhere]).await;
    let readable = room_with_rule(&alice, "readable", "invite", &[]).await;
    alice
        .put(
            &format!("/rooms/{}/state/m.room.history_visibility/", enc(&readable)),
            json!({"history_visibility": "world_readable"}),
        )
        .await
        .ok();
    let children = [
        &public,
        &private,
        &via_space,
        &via_other,
        &knock,
        &knock_other,
        &readable,
    ];
    for (i, child) in children.iter().enumerate() {
        add_child(&alice, &space, child, json!({"order": format!("{i}")})).await;
    }
    // A room of another server: without federation it cannot be looked into, and is left out.
    add_child(&alice, &space, "!remote:elsewhere.example", json!({})).await;
    join(&bob, &space).await;

    let page = hierarchy(&bob, &space, "").await.ok();
    assert_eq!(
        room_ids(&page),
        ids(&[&space, &public, &via_space, &knock, &knock_other, &readable]),
        "{page}"
    );
    // The root still lists every child.
    assert_eq!(
        chunk(&page, &space)["children_state"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert_eq!(
        chunk(&page, &via_space)["allowed_room_ids"],
        json!([space]),
        "restricted rooms name their allowed rooms"
    );
    assert_eq!(chunk(&page, &via_space)["join_rule"], "restricted");

    // Members and invitees see the private room.
    let page = hierarchy(&alice, &space, "").await.ok();
    assert!(room_ids(&page).contains(&private), "{page}");
    alice
        .post(
            &format!("/rooms/{}/invite", enc(&private)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    let page = hierarchy(&bob, &space, "").await.ok();
    assert!(room_ids(&page).contains(&private), "{page}");
    assert!(!room_ids(&page).contains(&via_other), "{page}");
}

/// A space Bob is not in.
async fn space_elsewhere(owner: &User) -> String {
    room_with_rule(owner, "elsewhere", "invite", &[]).await
}

#[tokio::test]
async fn hierarchy_suggested_only_and_max_depth() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let top = space(&alice, "Top").await;
    let sub = space(&alice, "Sub").await;
    let deep = create_room(&alice, json!({"preset": "public_chat"})).await;
    let side = create_room(&alice, json!({"preset": "public_chat"})).await;
    add_child(&alice, &top, &sub, json!({"order": "1", "suggested": true})).await;
    add_child(&alice, &top, &side, json!({"order": "2"})).await;
    add_child(&alice, &sub, &deep, json!({})).await;
    // A loop back to the top is not followed twice.
    add_child(&alice, &sub, &top, json!({})).await;

    let all = hierarchy(&alice, &top, "").await.ok();
    assert_eq!(room_ids(&all), ids(&[&top, &sub, &deep, &side]), "{all}");

    let suggested = hierarchy(&alice, &top, "suggested_only=true").await.ok();
    assert_eq!(room_ids(&suggested), ids(&[&top, &sub]), "{suggested}");
    let states = chunk(&suggested, &top)["children_state"]
        .as_array()
        .unwrap();
    assert_eq!(states.len(), 1, "only suggested children: {suggested}");

    let root_only = hierarchy(&alice, &top, "max_depth=0").await.ok();
    assert_eq!(room_ids(&root_only), ids(&[&top]), "{root_only}");
    assert!(root_only.get("next_batch").is_none(), "{root_only}");
    // The root's children are listed, though not visited.
    assert_eq!(
        chunk(&root_only, &top)["children_state"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let one = hierarchy(&alice, &top, "max_depth=1").await.ok();
    assert_eq!(room_ids(&one), ids(&[&top, &sub, &side]), "{one}");
}

#[tokio::test]
async fn hierarchy_pages_continue_the_walk_whatever_changes_meanwhile() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let top = space(&alice, "Top").await;
    let mut children = Vec::new();
    for order in ["b", "c", "d"] {
        let child = create_room(&alice, json!({"preset": "public_chat"})).await;
        add_child(&alice, &top, &child, json!({"order": order})).await;
        children.push(child);
    }

    let first = hierarchy(&alice, &top, "limit=2").await.ok();
    assert_eq!(room_ids(&first), ids(&[&top, &children[0]]), "{first}");
    let token = first["next_batch"]
        .as_str()
        .expect("a next page")
        .to_owned();

    // A child added in front after the first page does not shift the rest.
    let late = create_room(&alice, json!({"preset": "public_chat"})).await;
    add_child(&alice, &top, &late, json!({"order": "a"})).await;

    let second = hierarchy(&alice, &top, &format!("limit=2&from={token}"))
        .await
        .ok();
    assert_eq!(
        room_ids(&second),
        ids(&[&children[1], &children[2]]),
        "{second}"
    );
    assert!(second.get("next_batch").is_none(), "{second}");
    // The same token gives the same page again.
    let again = hierarchy(&alice, &top, &format!("limit=2&from={token}"))
        .await
        .ok();
    assert_eq!(room_ids(&again), room_ids(&second));
    // A new walk sees the new child.
    let fresh = hierarchy(&alice, &top, "").await.ok();
    assert_eq!(room_ids(&fresh)[1], late, "{fresh}");
}

#[tokio::test]
async fn hierarchy_refuses_foreign_tokens_bad_parameters_and_hidden_rooms() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let top = space(&alice, "Top").await;
    let other = space(&alice, "Other").await;
    for _ in 0..2 {
        let child = create_room(&alice, json!({"preset": "public_chat"})).await;
        add_child(&alice, &top, &child, json!({})).await;
    }
    let first = hierarchy(&alice, &top, "limit=1").await.ok();
    let token = first["next_batch"].as_str().unwrap().to_owned();
    hierarchy(&alice, &top, &format!("limit=1&from={token}"))
        .await
        .ok();

    for (user, room, query) in [
        (&alice, &top, "from=nonsense".to_owned()),
        // suggested_only and max_depth cannot change during pagination.
        (&alice, &top, format!("from={token}&suggested_only=true")),
        (&alice, &top, format!("from={token}&max_depth=3")),
        // Another requester, another room.
        (&bob, &top, format!("from={token}")),
        (&alice, &other, format!("from={token}")),
        (&alice, &top, "limit=0".to_owned()),
        (&alice, &top, "limit=-1".to_owned()),
        (&alice, &top, "max_depth=-1".to_owned()),
        (&alice, &top, "max_depth=deep".to_owned()),
        (&alice, &top, "suggested_only=maybe".to_owned()),
    ] {
        let r = hierarchy(user, room, &query).await;
        assert_eq!(r.status.as_u16(), 400, "{query}: {}", r.body);
        assert_eq!(r.errcode(), "M_INVALID_PARAM", "{query}: {}", r.body);
    }

    // A private room one is not in, or an unknown room: 403.
    let private = room_with_rule(&alice, "private", "invite", &[]).await;
    hierarchy(&bob, &private, "")
        .await
        .expect_err(403, "M_FORBIDDEN");
    hierarchy(&bob, "!unknown:test.local", "")
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Without a token: 401.
    let r = app
        .get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&top)))
        .await;
    r.expect_err(401, "M_MISSING_TOKEN");
}

fn summary_path(room: &str) -> String {
    format!("/_matrix/client/v1/room_summary/{}", enc(room))
}

async fn summary(user: &User, room: &str) -> Resp {
    user.get(&summary_path(room)).await
}

#[tokio::test]
async fn room_summary_gives_the_fields_and_the_requesters_membership() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let space = space(&alice, "Space").await;
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "name": "Cheese", "topic": "Tasty",
               "room_alias_name": "cheese",
               "initial_state": [{"type": "m.room.encryption", "state_key": "",
                                  "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;

    // By alias, by someone not in the room.
    let s = summary(&bob, "#cheese:test.local").await.ok();
    assert_eq!(s["room_id"], room.as_str());
    assert_eq!(s["name"], "Cheese");
    assert_eq!(s["topic"], "Tasty");
    assert_eq!(s["canonical_alias"], "#cheese:test.local");
    assert_eq!(s["num_joined_members"], 1);
    assert_eq!(s["join_rule"], "public");
    assert_eq!(s["world_readable"], false);
    assert_eq!(s["guest_can_join"], false);
    assert_eq!(s["encryption"], "m.megolm.v1.aes-sha2");
    assert_eq!(s["room_version"], "12");
    assert_eq!(s["membership"], "leave");
    assert!(s.get("room_type").is_none(), "{s}");
    assert!(s.get("children_state").is_none(), "{s}");
    assert!(s.get("allowed_room_ids").is_none(), "{s}");

    assert_eq!(summary(&alice, &room).await.ok()["membership"], "join");
    assert_eq!(summary(&alice, &space).await.ok()["room_type"], "m.space");
    // Without an access token: the same summary, without a membership.
    let s = app.get(&summary_path(&room)).await.ok();
    assert_eq!(s["name"], "Cheese");
    assert!(s.get("membership").is_none(), "{s}");
    // A token that is wrong is still refused.
    let r = app
        .request(
            reqwest::Method::GET,
            &summary_path(&room),
            Some("nope"),
            None,
        )
        .await;
    r.expect_err(401, "M_UNKNOWN_TOKEN");
    // MSC3266's unstable path.
    let s = bob
        .get(&format!(
            "/_matrix/client/unstable/im.nheko.summary/summary/{}",
            enc(&room)
        ))
        .await
        .ok();
    assert_eq!(s["name"], "Cheese");

    // A restricted room names its allowed rooms, to those who may see it.
    let restricted = room_with_rule(&alice, "restricted", "restricted", &[&space]).await;
    join(&bob, &space).await;
    let s = summary(&bob, &restricted).await.ok();
    assert_eq!(s["allowed_room_ids"], json!([space]));
    assert_eq!(s["join_rule"], "restricted");
    assert_eq!(s["membership"], "leave");
}

#[tokio::test]
async fn room_summary_is_not_found_for_rooms_the_requester_may_not_see() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let private = room_with_rule(&alice, "private", "invite", &[]).await;
    let space = space(&alice, "Space").await;
    let restricted = room_with_rule(&alice, "restricted", "restricted", &[&space]).await;

    summary(&bob, &private).await.expect_err(404, "M_NOT_FOUND");
    app.get(&summary_path(&private))
        .await
        .expect_err(404, "M_NOT_FOUND");
    // Restricted: only for members of an allowed room.
    summary(&bob, &restricted)
        .await
        .expect_err(404, "M_NOT_FOUND");
    app.get(&summary_path(&restricted))
        .await
        .expect_err(404, "M_NOT_FOUND");
    summary(&bob, "!unknown:test.local")
        .await
        .expect_err(404, "M_NOT_FOUND");
    summary(&bob, "#nowhere:test.local")
        .await
        .expect_err(404, "M_NOT_FOUND");
    summary(&bob, "!remote:elsewhere.example")
        .await
        .expect_err(404, "M_NOT_FOUND");
    summary(&bob, "not-a-room")
        .await
        .expect_err(400, "M_INVALID_PARAM");

    // An invitee sees it, and that they are invited.
    alice
        .post(
            &format!("/rooms/{}/invite", enc(&private)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    assert_eq!(summary(&bob, &private).await.ok()["membership"], "invite");
    // A world-readable room is for everyone, even without an account.
    alice
        .put(
            &format!(
                "/rooms/{}/state/m.room.history_visibility/",
                enc(&restricted)
            ),
            json!({"history_visibility": "world_readable"}),
        )
        .await
        .ok();
    assert_eq!(
        app.get(&summary_path(&restricted)).await.ok()["world_readable"],
        true
    );
}

async fn join_resp(user: &User, room: &str) -> Resp {
    user.post(&format!("/join/{}", enc(room)), json!({})).await
}

#[tokio::test]
async fn a_restricted_room_lets_in_members_of_an_allowed_room_and_no_one_else() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let space = space(&alice, "Space").await;
    let room = room_with_rule(&alice, "members only", "restricted", &[&space]).await;

    let r = join_resp(&bob, &room).await;
    r.expect_err(403, "M_FORBIDDEN");
    assert!(
        r.body["error"].as_str().unwrap().contains("required rooms"),
        "{}",
        r.body
    );
    let r = bob
        .post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await;
    r.expect_err(403, "M_FORBIDDEN");

    join(&bob, &space).await;
    // A vouching user named by the client is not trusted: the server names its own.
    let v = bob
        .post(
            &format!("/join/{}", enc(&room)),
            json!({"join_authorised_via_users_server": bob.user_id}),
        )
        .await
        .ok();
    assert_eq!(v["room_id"], room.as_str());
    let member = state_content(&bob, &room, "m.room.member", &bob.user_id)
        .await
        .ok();
    assert_eq!(member["membership"], "join");
    assert_eq!(
        member["join_authorised_via_users_server"],
        alice.user_id.as_str(),
        "{member}"
    );

    // Once in, leaving the space does not matter; a rejoin after leaving the room does.
    bob.post(&format!("/rooms/{}/leave", enc(&space)), json!({}))
        .await
        .ok();
    bob.post(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await
        .ok();
    join_resp(&bob, &room).await.expect_err(403, "M_FORBIDDEN");
    // Through /rooms/{roomId}/join too.
    join(&bob, &space).await;
    bob.post(&format!("/rooms/{}/join", enc(&room)), json!({}))
        .await
        .ok();
}

#[tokio::test]
async fn a_restricted_join_needs_a_local_member_who_may_invite() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let space = space(&alice, "Space").await;
    let room = room_with_rule(&alice, "abandoned", "restricted", &[&space]).await;
    alice
        .post(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await
        .ok();
    join(&bob, &space).await;
    join_resp(&bob, &room)
        .await
        .expect_err(400, "M_UNABLE_TO_GRANT_JOIN");
}

#[tokio::test]
async fn knock_restricted_lets_members_of_an_allowed_room_join_and_anyone_knock() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let space = space(&alice, "Space").await;
    let room = room_with_rule(&alice, "knock or belong", "knock_restricted", &[&space]).await;

    // Carol is in no allowed room: she cannot join, but she may knock.
    join_resp(&carol, &room)
        .await
        .expect_err(403, "M_FORBIDDEN");
    carol
        .post(&format!("/knock/{}", enc(&room)), json!({}))
        .await
        .ok();
    let member = state_content(&alice, &room, "m.room.member", &carol.user_id)
        .await
        .ok();
    assert_eq!(member["membership"], "knock");

    join(&bob, &space).await;
    join_resp(&bob, &room).await.ok();
    let member = state_content(&bob, &room, "m.room.member", &bob.user_id)
        .await
        .ok();
    assert_eq!(
        member["join_authorised_via_users_server"],
        alice.user_id.as_str()
    );
}

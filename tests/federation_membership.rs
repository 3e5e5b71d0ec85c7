//! Federation: invites across servers (both ways, `is_direct` kept), accepting them by joining
//! through the inviting server, rejecting them (through it, or here alone when it is down),
//! invites withdrawn by their sender, and kicks and bans of other servers' users both ways.

use ruma::api::federation::membership::{RawStrippedState, create_invite::v2 as invite_api};
use ruma::{OwnedEventId, OwnedRoomId, RoomVersionId};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::common::{TestApp, User, enc, spawn_federating};
use crate::federation_rooms::{bob_of, members, name, say, sees_message, sign};

/// `user`'s /sync token now.
pub(crate) async fn since(user: &User) -> String {
    user.get("/sync").await.ok()["next_batch"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls `user`'s /sync since `since` (up to 10 s) until `check` holds of it; answers the last
/// response.
pub(crate) async fn sync_until(user: &User, since: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut sync = Value::Null;
    for _ in 0..20 {
        sync = user
            .get(&format!("/sync?since={since}&timeout=500"))
            .await
            .ok();
        if check(&sync) {
            break;
        }
    }
    sync
}

/// The stripped state events of `room_id`'s invite in a /sync response.
fn invite_state(sync: &Value, room_id: &str) -> Vec<Value> {
    sync["rooms"]["invite"][room_id]["invite_state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn stripped<'a>(events: &'a [Value], kind: &str, key: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["type"] == kind && e["state_key"] == key)
}

async fn create(user: &User, body: Value) -> String {
    user.post("/_matrix/client/v3/createRoom", body).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn invite(inviter: &User, room_id: &str, invitee: &str) {
    inviter
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(room_id)),
            json!({ "user_id": invitee }),
        )
        .await
        .ok();
}

/// `user`'s membership of `room_id` as `viewer` sees it in the room's state.
async fn membership(viewer: &User, room_id: &str, user: &str) -> Value {
    viewer
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(room_id),
            enc(user)
        ))
        .await
        .body
}

#[tokio::test]
async fn a_dm_invite_to_a_remote_user_arrives_with_is_direct_and_the_rooms_stripped_state() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create(
        &alice,
        json!({"preset": "trusted_private_chat", "is_direct": true, "name": "Tea",
               "invite": [carol.user_id]}),
    )
    .await;
    // The invite was signed by B before createRoom answered: B has it at once.
    let sync = carol.get("/sync").await.ok();
    let state = invite_state(&sync, &room_id);
    let own = stripped(&state, "m.room.member", &carol.user_id).expect("the invite itself");
    assert_eq!(own["content"]["membership"], "invite", "{sync}");
    assert_eq!(own["content"]["is_direct"], true, "{sync}");
    assert_eq!(own["sender"], alice.user_id.as_str());
    assert!(stripped(&state, "m.room.create", "").is_some(), "{sync}");
    assert_eq!(
        stripped(&state, "m.room.name", "").unwrap()["content"]["name"],
        "Tea"
    );
    let inviter = stripped(&state, "m.room.member", &alice.user_id).expect("the inviter");
    assert_eq!(inviter["content"]["membership"], "join");
    // A stored the invite, signed by both servers, with is_direct.
    let member = membership(&alice, &room_id, &carol.user_id).await;
    assert_eq!(member["membership"], "invite", "{member}");
    assert_eq!(member["is_direct"], true);
    let pdu: String = sqlx::query_scalar(
        "SELECT pdu FROM events WHERE room_id = $1 AND event_type = 'm.room.member' AND state_key = $2",
    )
    .bind(&room_id)
    .bind(&carol.user_id)
    .fetch_one(&a.db)
    .await
    .unwrap();
    let pdu: Value = serde_json::from_str(&pdu).unwrap();
    assert!(
        pdu["signatures"][b.state.server_name.as_str()].is_object(),
        "{pdu}"
    );
    assert!(pdu["signatures"][a.state.server_name.as_str()].is_object());
}

#[tokio::test]
async fn a_remote_invite_wakes_the_invitee_and_shows_in_sliding_sync_and_notifications() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create(&alice, json!({"name": "Plans"})).await;
    let since = carol.get("/sync").await.ok()["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = {
        let carol = carol.clone();
        tokio::spawn(async move {
            carol
                .get(&format!("/sync?since={since}&timeout=20000"))
                .await
                .ok()
        })
    };
    invite(&alice, &room_id, &carol.user_id).await;
    let woken = waiting.await.unwrap();
    assert!(
        !invite_state(&woken, &room_id).is_empty(),
        "the long poll answers with the invite: {woken}"
    );
    let notifications = carol.get("/notifications").await.ok();
    let first = &notifications["notifications"][0];
    assert_eq!(first["room_id"], room_id.as_str(), "{notifications}");
    assert_eq!(first["event"]["content"]["membership"], "invite");
    let sliding = carol
        .post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            json!({"lists": {"all": {"ranges": [[0, 5]], "timeline_limit": 5}}}),
        )
        .await
        .ok();
    let room = &sliding["rooms"][&room_id];
    let types: Vec<&str> = room["invite_state"]
        .as_array()
        .unwrap_or_else(|| panic!("{sliding}"))
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"m.room.name"), "{room}");
    assert_eq!(room["name"], "Plans", "{room}");
}

#[tokio::test]
async fn a_remote_invite_is_accepted_by_joining_through_the_inviting_server() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    for version in ["10", "12"] {
        let room_id = create(
            &alice,
            json!({"room_version": version, "invite": [carol.user_id]}),
        )
        .await;
        // Neither `via` nor a server in the room ID (v12 has none): the inviter's server.
        let joined = carol
            .post(
                &format!("/_matrix/client/v3/rooms/{}/join", enc(&room_id)),
                json!({}),
            )
            .await
            .ok();
        assert_eq!(joined["room_id"], room_id.as_str());
        assert!(
            members(&alice, &room_id)
                .await
                .get(&carol.user_id)
                .is_some(),
            "v{version}: A sees carol joined"
        );
        let sync = carol.get("/sync").await.ok();
        assert!(sync["rooms"]["join"][&room_id].is_object(), "{sync}");
        assert!(sync["rooms"]["invite"][&room_id].is_null(), "{sync}");
        say(&carol, &room_id, &format!("t{version}"), "thanks").await;
        assert!(sees_message(&alice, &room_id, "thanks").await, "B → A");
    }
}

#[tokio::test]
async fn an_invite_into_a_room_this_server_is_in_is_stored_as_any_event_of_it() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let dave = a.register("dave").await;
    let carol = b.register("carol").await;
    let room_id = create(&carol, json!({"preset": "public_chat", "name": "B's room"})).await;
    alice
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&room_id),
                enc(b.state.server_name.as_str())
            ),
            json!({}),
        )
        .await
        .ok();
    invite(&carol, &room_id, &dave.user_id).await;
    // A is in the room: the invite joins its timeline, and dave sees the room's state as A has it.
    let sync = dave.get("/sync").await.ok();
    let state = invite_state(&sync, &room_id);
    assert_eq!(
        stripped(&state, "m.room.name", "").unwrap()["content"]["name"],
        "B's room",
        "{sync}"
    );
    assert_eq!(
        membership(&alice, &room_id, &dave.user_id).await["membership"],
        "invite"
    );
    // Joining is local: A is in the room already.
    dave.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room_id)),
        json!({}),
    )
    .await
    .ok();
    let mut seen = false;
    for _ in 0..50 {
        if members(&carol, &room_id).await.get(&dave.user_id).is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "B sees dave join");
}

#[tokio::test]
async fn a_remote_invite_is_rejected_through_the_inviting_server() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create(&alice, json!({"invite": [carol.user_id]})).await;
    let token = since(&carol).await;
    carol
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)),
            json!({"reason": "no thanks"}),
        )
        .await
        .ok();
    let member = membership(&alice, &room_id, &carol.user_id).await;
    assert_eq!(member["membership"], "leave", "A applied it: {member}");
    assert_eq!(member["reason"], "no thanks");
    let sync = carol.get("/sync").await.ok();
    assert!(sync["rooms"]["invite"][&room_id].is_null(), "{sync}");
    let sync = carol.get(&format!("/sync?since={token}")).await.ok();
    assert!(sync["rooms"]["leave"][&room_id].is_object(), "{sync}");
    // Forgotten like any room left.
    carol
        .post(
            &format!("/_matrix/client/v3/rooms/{}/forget", enc(&room_id)),
            json!({}),
        )
        .await
        .ok();
}

#[tokio::test]
async fn a_rejection_is_recorded_here_alone_when_the_inviting_server_is_down() {
    let mut a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create(&alice, json!({"invite": [carol.user_id]})).await;
    let token = since(&carol).await;
    a.fed.as_mut().unwrap().stop().await;
    carol
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)),
            json!({}),
        )
        .await
        .ok();
    let sync = carol.get("/sync").await.ok();
    assert!(sync["rooms"]["invite"][&room_id].is_null(), "{sync}");
    let sync = carol.get(&format!("/sync?since={token}")).await.ok();
    let left = &sync["rooms"]["leave"][&room_id]["timeline"]["events"];
    let last = left.as_array().and_then(|e| e.last()).cloned();
    assert_eq!(
        last.as_ref().map(|e| e["content"]["membership"].clone()),
        Some(json!("leave")),
        "{sync}"
    );
    // Nothing waits to go to A: the leave was never A's to hear.
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM federation_outbox")
        .fetch_one(&b.db)
        .await
        .unwrap();
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn an_invite_withdrawn_by_the_inviter_disappears() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create(&alice, json!({"invite": [carol.user_id]})).await;
    assert!(!invite_state(&carol.get("/sync").await.ok(), &room_id).is_empty());
    let token = since(&carol).await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room_id)),
            json!({"user_id": carol.user_id}),
        )
        .await
        .ok();
    let sync = sync_until(&carol, &token, |s| {
        s["rooms"]["leave"][&room_id].is_object()
    })
    .await;
    assert!(
        sync["rooms"]["leave"][&room_id].is_object(),
        "withdrawn: {sync}"
    );
    let sync = carol.get("/sync").await.ok();
    assert!(sync["rooms"]["invite"][&room_id].is_null(), "{sync}");
}

#[tokio::test]
async fn an_invite_from_an_ignored_user_is_not_shown() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    carol
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                enc(&carol.user_id)
            ),
            json!({"ignored_users": {alice.user_id.clone(): {}}}),
        )
        .await
        .ok();
    let room_id = create(&alice, json!({"invite": [carol.user_id]})).await;
    let sync = carol.get("/sync").await.ok();
    assert!(sync["rooms"]["invite"][&room_id].is_null(), "{sync}");
}

/// An invite event of `b`'s bob for `invitee` into `room_id` (a room `a` need not know), as `b`
/// signs it: (event ID, PDU).
fn bobs_invite(
    b: &TestApp,
    room_id: &str,
    invitee: &str,
    edit: impl Fn(&mut Value),
) -> (String, Box<RawValue>) {
    let mut event = json!({
        "auth_events": [],
        "prev_events": [],
        "content": {"membership": "invite", "is_direct": true},
        "depth": 3,
        "origin_server_ts": axon::store::now_ms(),
        "room_id": room_id,
        "sender": bob_of(b).to_string(),
        "state_key": invitee,
        "type": "m.room.member",
    });
    edit(&mut event);
    sign(b, "10", event)
}

fn invite_request(
    room_id: &str,
    version: &str,
    (id, pdu): (String, Box<RawValue>),
    state: Vec<Value>,
) -> invite_api::Request {
    invite_api::Request::new(
        OwnedRoomId::try_from(room_id).unwrap(),
        OwnedEventId::try_from(id.as_str()).unwrap(),
        RoomVersionId::try_from(version).unwrap(),
        pdu,
        state
            .into_iter()
            .map(|e| RawStrippedState::Pdu(RawValue::from_string(e.to_string()).unwrap()))
            .collect(),
    )
}

#[tokio::test]
async fn the_invite_endpoint_checks_what_it_signs() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = format!("!elsewhere:{}", b.state.server_name);
    let refusal = |request: invite_api::Request| {
        let b = &b;
        let a = &a;
        async move {
            b.state
                .federation
                .send(&name(a), request)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let good = || bobs_invite(&b, &room_id, &alice.user_id, |_| {});
    let cases: Vec<(&str, invite_api::Request, &str)> = vec![
        (
            "an unknown room version",
            invite_request(&room_id, "99", good(), vec![]),
            "M_INCOMPATIBLE_ROOM_VERSION",
        ),
        (
            "not an invite",
            invite_request(
                &room_id,
                "10",
                bobs_invite(&b, &room_id, &alice.user_id, |e| {
                    e["content"]["membership"] = json!("join")
                }),
                vec![],
            ),
            "M_INVALID_PARAM",
        ),
        (
            "for another server's user",
            invite_request(
                &room_id,
                "10",
                bobs_invite(&b, &room_id, bob_of(&b).as_str(), |_| {}),
                vec![],
            ),
            "M_INVALID_PARAM",
        ),
        (
            "from another server's user",
            invite_request(
                &room_id,
                "10",
                bobs_invite(&b, &room_id, &alice.user_id, |e| {
                    e["sender"] = json!("@mallory:elsewhere.example")
                }),
                vec![],
            ),
            "M_INVALID_PARAM",
        ),
        (
            "an event ID that is not the event's",
            invite_request(&room_id, "10", ("$not-it".to_owned(), good().1), vec![]),
            "M_INVALID_PARAM",
        ),
    ];
    for (what, request, errcode) in cases {
        let text = refusal(request).await;
        assert!(text.contains(errcode), "{what}: {text}");
    }
    // Signed with another key than B's: 403.
    let stranger = spawn_federating(|_| {}).await;
    let forged = {
        let mut object: ruma::CanonicalJsonObject = serde_json::from_str(good().1.get()).unwrap();
        object.remove("signatures");
        ruma::signatures::sign_event(
            b.state.server_name.as_str(),
            &stranger.state.signing_key,
            &mut object,
            &crate::federation_rooms::rules_of("10").redaction,
        )
        .unwrap();
        let id = format!(
            "${}",
            ruma::signatures::reference_hash(&object, &crate::federation_rooms::rules_of("10"))
                .unwrap()
        );
        (
            id,
            RawValue::from_string(ruma::CanonicalJsonValue::Object(object).to_string()).unwrap(),
        )
    };
    let text = refusal(invite_request(&room_id, "10", forged, vec![])).await;
    assert!(text.contains("M_FORBIDDEN"), "a bad signature: {text}");
    assert!(
        alice.get("/sync").await.ok()["rooms"]["invite"][&room_id].is_null(),
        "nothing refused was kept"
    );

    // A good one: signed by A too, and shown to alice with the state B sent (the create event as
    // a full PDU, a name as stripped state, one of another room left out).
    let create = json!({"type": "m.room.create", "state_key": "", "sender": bob_of(&b).to_string(),
        "room_id": room_id, "content": {"room_version": "10"}, "auth_events": [], "prev_events": [],
        "hashes": {"sha256": "x"}, "signatures": {}, "depth": 1, "origin_server_ts": 1});
    let name_event = json!({"type": "m.room.name", "state_key": "", "sender": bob_of(&b).to_string(),
        "content": {"name": "Far away"}});
    let other = json!({"type": "m.room.topic", "state_key": "", "sender": bob_of(&b).to_string(),
        "room_id": "!other:elsewhere.example", "content": {"topic": "not this room"}});
    let (id, pdu) = good();
    let answer = b
        .state
        .federation
        .send(
            &name(&a),
            invite_request(
                &room_id,
                "10",
                (id.clone(), pdu),
                vec![create, name_event, other],
            ),
        )
        .await
        .unwrap();
    let signed: Value = serde_json::from_str(answer.event.get()).unwrap();
    assert!(
        signed["signatures"][a.state.server_name.as_str()].is_object(),
        "{signed}"
    );
    assert!(signed["signatures"][b.state.server_name.as_str()].is_object());
    let sync = alice.get("/sync").await.ok();
    let state = invite_state(&sync, &room_id);
    assert!(stripped(&state, "m.room.create", "").is_some(), "{sync}");
    assert_eq!(
        stripped(&state, "m.room.name", "").unwrap()["content"]["name"],
        "Far away"
    );
    assert!(stripped(&state, "m.room.topic", "").is_none(), "{sync}");
    let own = stripped(&state, "m.room.member", &alice.user_id).unwrap();
    assert_eq!(own["content"]["is_direct"], true, "a DM here too: {sync}");
}

#[tokio::test]
async fn an_invite_into_a_room_whose_acl_denies_the_inviting_server_is_refused() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let room_id = create(
        &alice,
        json!({"room_version": "10", "initial_state": [{"type": "m.room.server_acl",
            "state_key": "", "content": {"allow": ["*"], "deny": [b.state.server_name.host()]}}]}),
    )
    .await;
    let request = invite_request(
        &room_id,
        "10",
        bobs_invite(&b, &room_id, &alice.user_id, |_| {}),
        vec![],
    );
    let text = b
        .state
        .federation
        .send(&name(&a), request)
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("M_FORBIDDEN"), "{text}");
}

/// A public room of `b`'s carol that `a`'s alice joined: (room ID, alice, carol).
async fn shared_room(a: &TestApp, b: &TestApp) -> (String, User, User) {
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create(&carol, json!({"preset": "public_chat"})).await;
    alice
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&room_id),
                enc(b.state.server_name.as_str())
            ),
            json!({}),
        )
        .await
        .ok();
    (room_id, alice, carol)
}

/// The membership `user` was last given in `room_id`'s timeline of `sync` (joined or left).
fn last_membership(sync: &Value, room_id: &str, user: &str) -> Option<Value> {
    ["join", "leave"].iter().find_map(|section| {
        sync["rooms"][section][room_id]["timeline"]["events"]
            .as_array()?
            .iter()
            .rev()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == user)
            .map(|e| e["content"].clone())
    })
}

#[tokio::test]
async fn a_kick_of_a_remote_member_is_applied_by_their_server() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    // A room of A's moderator that B's member joined.
    let (room_id, member, moderator) = shared_room(&b, &a).await;
    let token = since(&member).await;
    moderator
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room_id)),
            json!({"user_id": member.user_id, "reason": "tidying up"}),
        )
        .await
        .ok();
    let sync = sync_until(&member, &token, |s| {
        last_membership(s, &room_id, &member.user_id).is_some()
    })
    .await;
    assert_eq!(
        last_membership(&sync, &room_id, &member.user_id),
        Some(json!({"membership": "leave", "reason": "tidying up"})),
        "B applied it: {sync}"
    );
    assert!(sync["rooms"]["leave"][&room_id].is_object(), "{sync}");
}

#[tokio::test]
async fn a_remote_moderators_kick_and_ban_reach_the_local_member() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let (room_id, alice, carol) = shared_room(&a, &b).await;
    let dave = a.register("dave").await;
    dave.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room_id)),
        json!({}),
    )
    .await
    .ok();
    for (user, action) in [(&alice, "kick"), (&dave, "ban")] {
        let token = since(user).await;
        carol
            .post(
                &format!("/_matrix/client/v3/rooms/{}/{action}", enc(&room_id)),
                json!({"user_id": user.user_id, "reason": action}),
            )
            .await
            .ok();
        let sync = sync_until(user, &token, |s| {
            last_membership(s, &room_id, &user.user_id).is_some()
        })
        .await;
        let want = if action == "ban" { "ban" } else { "leave" };
        assert_eq!(
            last_membership(&sync, &room_id, &user.user_id),
            Some(json!({"membership": want, "reason": action})),
            "{action}: {sync}"
        );
        assert!(sync["rooms"]["leave"][&room_id].is_object(), "{sync}");
    }
    // Banned: dave cannot come back.
    dave.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room_id)),
        json!({}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_remote_room_left_can_be_joined_again() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let (room_id, alice, carol) = shared_room(&a, &b).await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)),
            json!({}),
        )
        .await
        .ok();
    say(&carol, &room_id, "t1", "while alice was away").await;
    // A is no longer in the room: the join goes through B again, and A takes B's state.
    let joined = alice
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&room_id),
                enc(b.state.server_name.as_str())
            ),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(joined["room_id"], room_id.as_str());
    assert!(
        members(&carol, &room_id)
            .await
            .get(&alice.user_id)
            .is_some(),
        "B sees alice back"
    );
    say(&carol, &room_id, "t2", "welcome back").await;
    assert!(sees_message(&alice, &room_id, "welcome back").await);
}

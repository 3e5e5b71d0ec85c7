//! Account data, tags, receipts, read markers, typing, presence, push rules, unread counts,
//! notifications, pushers and the small start-up endpoints (issue #7).

use std::collections::HashMap;
use std::time::Duration;

use axon::service::auth_rules::RoomVersion;
use axon::service::events::EventDraft;
use axon::service::push::NewEvent;
use axon::service::writer::Target;
use axon::service::{account_data, presence, push, receipts, typing};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::rooms::join;

/// A v12 room created by `creator` (joined) through the writer, which the others then join.
async fn create_room(app: &TestApp, creator: &User, others: &[&User]) -> String {
    let c = creator.user_id.as_str();
    let drafts = vec![
        EventDraft::new("m.room.create", Some(""), c, json!({"room_version": "12"})),
        EventDraft::new(
            "m.room.member",
            Some(c),
            c,
            json!({"membership": "join", "displayname": "Creator"}),
        ),
        EventDraft::new(
            "m.room.power_levels",
            Some(""),
            c,
            json!({"users": {}, "users_default": 0}),
        ),
        EventDraft::new(
            "m.room.join_rules",
            Some(""),
            c,
            json!({"join_rule": "public"}),
        ),
    ];
    writer_room(app, RoomVersion::V12, drafts, others).await
}

/// Sends an event through the writer and returns it as the push evaluator receives it.
async fn send(
    app: &TestApp,
    room_id: &str,
    sender: &User,
    event_type: &str,
    content: Value,
) -> NewEvent {
    let draft = EventDraft::new(event_type, None, &sender.user_id, content.clone());
    let committed = app
        .state
        .writer
        .submit(Target::Existing(room_id.into()), vec![draft], None)
        .await
        .unwrap();
    let event_id = committed.event_ids[0].clone();
    let stream_ordering: i64 =
        sqlx::query_scalar("SELECT stream_ordering FROM events WHERE event_id = $1")
            .bind(&event_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let thread_id = (content["m.relates_to"]["rel_type"] == "m.thread").then(|| {
        content["m.relates_to"]["event_id"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    NewEvent {
        event_id,
        room_id: room_id.into(),
        sender: sender.user_id.clone(),
        event_type: event_type.into(),
        state_key: None,
        content,
        stream_ordering,
        thread_id,
    }
}

async fn send_and_evaluate(
    app: &TestApp,
    room_id: &str,
    sender: &User,
    event_type: &str,
    content: Value,
) -> NewEvent {
    let event = send(app, room_id, sender, event_type, content).await;
    push::process_new_events(&app.state, std::slice::from_ref(&event))
        .await
        .unwrap();
    event
}

async fn position(app: &TestApp) -> i64 {
    axon::store::stream::current(&app.db).await.unwrap()
}

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

fn adpath(user: &User, data_type: &str) -> String {
    format!(
        "/user/{}/account_data/{}",
        enc(&user.user_id),
        enc(data_type)
    )
}

fn room_adpath(user: &User, room_id: &str, data_type: &str) -> String {
    format!(
        "/user/{}/rooms/{}/account_data/{}",
        enc(&user.user_id),
        enc(room_id),
        enc(data_type)
    )
}

async fn counts(app: &TestApp, user: &User, room_id: &str) -> push::UnreadCounts {
    let all = push::unread_counts(
        &mut app.state.db.acquire().await.unwrap(),
        &user.user_id,
        &[room_id.to_owned()],
        i64::MAX,
    )
    .await
    .unwrap();
    all.get(room_id).cloned().unwrap_or_default()
}

// ---- account data ----

/// `user` starts typing in `room` for `timeout_ms`.
pub(crate) async fn start_typing(user: &User, room: &str, timeout_ms: u64) {
    user.put(
        &format!("/rooms/{}/typing/{}", enc(room), enc(&user.user_id)),
        json!({"typing": true, "timeout": timeout_ms}),
    )
    .await
    .ok();
}

#[tokio::test]
async fn m_direct_round_trips_through_get_and_sync() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let direct = json!({"@bob:test.local": ["!a:test.local", "!b:test.local"], "@carol:test.local": ["!c:test.local"]});
    alice
        .put(&adpath(&alice, "m.direct"), direct.clone())
        .await
        .ok();
    assert_eq!(alice.get(&adpath(&alice, "m.direct")).await.ok(), direct);

    let (global, rooms) = account_data::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        0,
        position(&app).await,
    )
    .await
    .unwrap();
    let found: Vec<&Value> = global.iter().filter(|e| e["type"] == "m.direct").collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["content"], direct);
    assert!(rooms.is_empty());
}

#[tokio::test]
async fn account_data_body_is_stored_byte_for_byte() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let body = br#"{"z": 1, "a": {"y": [3, 2, 1], "b": "x"}}"#.to_vec();
    let url = format!("/_matrix/client/v3{}", adpath(&alice, "org.example.order"));
    let r = app
        .raw(Method::PUT, &url, Some(&alice.token), body.clone())
        .await;
    assert_eq!(r.status, 200);
    let resp = app
        .http
        .get(format!("{}{}", app.base_url, url))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
}

#[tokio::test]
async fn account_data_changes_appear_in_sync_exactly_once() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    // Past position 0, which means a full sync.
    alice
        .put(&adpath(&alice, "org.example.first"), json!({}))
        .await
        .ok();
    let start = position(&app).await;
    alice
        .put(&adpath(&alice, "org.example.a"), json!({"v": 1}))
        .await
        .ok();
    let after_first = position(&app).await;
    let (global, _) = account_data::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        start,
        after_first,
    )
    .await
    .unwrap();
    assert_eq!(
        global,
        vec![json!({"type": "org.example.a", "content": {"v": 1}})]
    );
    // Nothing new since.
    let (global, _) = account_data::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        after_first,
        position(&app).await,
    )
    .await
    .unwrap();
    assert!(global.is_empty(), "{global:?}");
    alice
        .put(&adpath(&alice, "org.example.a"), json!({"v": 2}))
        .await
        .ok();
    let (global, _) = account_data::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        after_first,
        position(&app).await,
    )
    .await
    .unwrap();
    assert_eq!(
        global,
        vec![json!({"type": "org.example.a", "content": {"v": 2}})]
    );
}

#[tokio::test]
async fn account_data_write_wakes_the_users_sync() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let subscription = app.state.notifier.subscribe([alice.user_id.as_str()]);
    alice
        .put(&adpath(&alice, "org.example.a"), json!({}))
        .await
        .ok();
    assert!(subscription.wait(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn account_data_of_another_user_is_forbidden() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    alice
        .put(&adpath(&bob, "org.example.a"), json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .get(&adpath(&bob, "org.example.a"))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn account_data_must_be_a_json_object() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .put(&adpath(&alice, "org.example.a"), json!([1, 2]))
        .await
        .expect_err(400, "M_BAD_JSON");
    let url = format!("/_matrix/client/v3{}", adpath(&alice, "org.example.a"));
    app.raw(Method::PUT, &url, Some(&alice.token), b"{nope".to_vec())
        .await
        .expect_err(400, "M_NOT_JSON");
}

#[tokio::test]
async fn server_controlled_account_data_is_refused_with_405() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&app, &alice, &[]).await;
    for data_type in ["m.fully_read", "m.push_rules"] {
        alice
            .put(&adpath(&alice, data_type), json!({}))
            .await
            .expect_err(405, "M_BAD_JSON");
        alice
            .put(&room_adpath(&alice, &room, data_type), json!({}))
            .await
            .expect_err(405, "M_BAD_JSON");
    }
}

#[tokio::test]
async fn unset_account_data_is_not_found() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .get(&adpath(&alice, "org.example.none"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn push_rules_read_as_account_data() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let v = alice.get(&adpath(&alice, "m.push_rules")).await.ok();
    assert!(
        v["global"]["override"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.master")
    );
}

#[tokio::test]
async fn room_account_data_only_in_known_rooms() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, &[]).await;
    bob.put(&room_adpath(&bob, &room, "org.example.r"), json!({"x": 1}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    bob.put(&room_adpath(&bob, "not-a-room", "org.example.r"), json!({}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .put(
            &room_adpath(&alice, &room, "org.example.r"),
            json!({"x": 1}),
        )
        .await
        .ok();
    assert_eq!(
        alice
            .get(&room_adpath(&alice, &room, "org.example.r"))
            .await
            .ok(),
        json!({"x": 1})
    );
    alice
        .get(&room_adpath(&alice, &room, "org.example.other"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    let (_, rooms) = account_data::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        0,
        position(&app).await,
    )
    .await
    .unwrap();
    assert_eq!(
        rooms[&room],
        vec![json!({"type": "org.example.r", "content": {"x": 1}})]
    );
}

#[tokio::test]
async fn deleted_account_data_syncs_as_empty_content() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .put(&adpath(&alice, "org.example.a"), json!({"v": 1}))
        .await
        .ok();
    let before = position(&app).await;
    let unstable = format!(
        "/_matrix/client/unstable/org.matrix.msc3391{}",
        adpath(&alice, "org.example.a")
    );
    alice.delete(&unstable).await.ok();
    alice
        .get(&adpath(&alice, "org.example.a"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    let (global, _) = account_data::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        before,
        position(&app).await,
    )
    .await
    .unwrap();
    assert_eq!(
        global,
        vec![json!({"type": "org.example.a", "content": {}})]
    );
    let other = app.register("bob").await;
    let theirs = format!(
        "/_matrix/client/unstable/org.matrix.msc3391{}",
        adpath(&other, "org.example.a")
    );
    alice.delete(&theirs).await.expect_err(403, "M_FORBIDDEN");
}

// ---- tags ----

#[tokio::test]
async fn tags_are_set_listed_deleted_and_synced_as_m_tag() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&app, &alice, &[]).await;
    let base = format!("/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    assert_eq!(alice.get(&base).await.ok(), json!({"tags": {}}));
    alice
        .put(&format!("{base}/m.favourite"), json!({"order": 0.5}))
        .await
        .ok();
    alice.put(&format!("{base}/u.work"), json!({})).await.ok();
    assert_eq!(
        alice.get(&base).await.ok(),
        json!({"tags": {"m.favourite": {"order": 0.5}, "u.work": {}}})
    );
    alice.delete(&format!("{base}/u.work")).await.ok();
    assert_eq!(
        alice.get(&base).await.ok(),
        json!({"tags": {"m.favourite": {"order": 0.5}}})
    );
    let (_, rooms) = account_data::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        0,
        position(&app).await,
    )
    .await
    .unwrap();
    assert_eq!(
        rooms[&room],
        vec![json!({"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.5}}}})]
    );

    let bob = app.register("bob").await;
    alice
        .get(&format!(
            "/user/{}/rooms/{}/tags",
            enc(&bob.user_id),
            enc(&room)
        ))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .put(&format!("{base}/m.lowpriority"), json!({"order": "high"}))
        .await
        .expect_err(400, "M_BAD_JSON");
}

// ---- receipts and read markers ----

#[tokio::test]
async fn public_receipts_reach_members_and_private_ones_only_the_reader() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, &[&bob]).await;
    let event = send(&app, &room, &alice, "m.room.message", text("hi")).await;
    let start = position(&app).await;
    bob.post(
        &format!(
            "/rooms/{}/receipt/m.read/{}",
            enc(&room),
            enc(&event.event_id)
        ),
        json!({}),
    )
    .await
    .ok();
    bob.post(
        &format!(
            "/rooms/{}/receipt/m.read.private/{}",
            enc(&room),
            enc(&event.event_id)
        ),
        json!({}),
    )
    .await
    .ok();
    let upto = position(&app).await;
    let rooms = [room.clone()];

    let seen_by_alice = receipts::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        &rooms,
        start,
        upto,
    )
    .await
    .unwrap();
    let content = &seen_by_alice[&room]["content"][&event.event_id];
    assert_eq!(seen_by_alice[&room]["type"], "m.receipt");
    assert!(content["m.read"][&bob.user_id]["ts"].is_i64());
    assert!(
        content.get("m.read.private").is_none(),
        "private receipt leaked: {content}"
    );

    let seen_by_bob = receipts::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        &rooms,
        start,
        upto,
    )
    .await
    .unwrap();
    assert!(
        seen_by_bob[&room]["content"][&event.event_id]["m.read.private"][&bob.user_id]["ts"]
            .is_i64()
    );
    // Exactly once.
    assert!(
        receipts::for_sync(
            &mut app.state.db.acquire().await.unwrap(),
            &alice.user_id,
            &rooms,
            upto,
            position(&app).await
        )
        .await
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn threaded_receipts_carry_their_thread_id() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&app, &alice, &[]).await;
    let event = send(&app, &room, &alice, "m.room.message", text("hi")).await;
    let path = format!(
        "/rooms/{}/receipt/m.read/{}",
        enc(&room),
        enc(&event.event_id)
    );
    alice.post(&path, json!({"thread_id": "main"})).await.ok();
    let all = receipts::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        std::slice::from_ref(&room),
        0,
        position(&app).await,
    )
    .await
    .unwrap();
    assert_eq!(
        all[&room]["content"][&event.event_id]["m.read"][&alice.user_id]["thread_id"],
        "main"
    );
    alice
        .post(&path, json!({"thread_id": ""}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .post(&path, json!({"thread_id": 5}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    let fully_read = format!(
        "/rooms/{}/receipt/m.fully_read/{}",
        enc(&room),
        enc(&event.event_id)
    );
    alice
        .post(&fully_read, json!({"thread_id": "main"}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn receipt_errors() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let stranger = app.register("stranger").await;
    let room = create_room(&app, &alice, &[]).await;
    let event = send(&app, &room, &alice, "m.room.message", text("hi")).await;
    let id = enc(&event.event_id);
    alice
        .post(
            &format!("/rooms/{}/receipt/m.unknown/{id}", enc(&room)),
            json!({}),
        )
        .await
        .expect_err(400, "M_INVALID_PARAM");
    stranger
        .post(
            &format!("/rooms/{}/receipt/m.read/{id}", enc(&room)),
            json!({}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    let missing = enc("$nosuchevent");
    alice
        .post(
            &format!("/rooms/{}/receipt/m.read/{missing}", enc(&room)),
            json!({}),
        )
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn receipt_wakes_the_rooms_syncs() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&app, &alice, &[]).await;
    let event = send(&app, &room, &alice, "m.room.message", text("hi")).await;
    let subscription = app.state.notifier.subscribe([room.as_str()]);
    alice
        .post(
            &format!(
                "/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&event.event_id)
            ),
            json!({}),
        )
        .await
        .ok();
    assert!(subscription.wait(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn read_markers_set_fully_read_and_receipts() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, &[&bob]).await;
    let first = send(&app, &room, &alice, "m.room.message", text("one")).await;
    let second = send(&app, &room, &alice, "m.room.message", text("two")).await;
    let body = json!({"m.fully_read": first.event_id, "m.read": second.event_id, "m.read.private": second.event_id});
    bob.post(&format!("/rooms/{}/read_markers", enc(&room)), body)
        .await
        .ok();
    assert_eq!(
        bob.get(&room_adpath(&bob, &room, "m.fully_read"))
            .await
            .ok(),
        json!({"event_id": first.event_id})
    );
    let (_, rooms) = account_data::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        0,
        position(&app).await,
    )
    .await
    .unwrap();
    assert_eq!(
        rooms[&room],
        vec![json!({"type": "m.fully_read", "content": {"event_id": first.event_id}})]
    );
    let seen = receipts::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        std::slice::from_ref(&room),
        0,
        position(&app).await,
    )
    .await
    .unwrap();
    let by_type = &seen[&room]["content"][&second.event_id];
    assert!(
        by_type["m.read"][&bob.user_id].is_object()
            && by_type["m.read.private"][&bob.user_id].is_object()
    );
    // The receipt endpoint's m.fully_read is the same marker.
    bob.post(
        &format!(
            "/rooms/{}/receipt/m.fully_read/{}",
            enc(&room),
            enc(&second.event_id)
        ),
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        bob.get(&room_adpath(&bob, &room, "m.fully_read"))
            .await
            .ok(),
        json!({"event_id": second.event_id})
    );
    let stranger = app.register("stranger").await;
    stranger
        .post(
            &format!("/rooms/{}/read_markers", enc(&room)),
            json!({"m.read": first.event_id}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
}

// ---- typing ----

#[tokio::test]
async fn typing_is_seen_by_members_and_expires() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, &[&bob]).await;
    let rooms = [room.clone()];
    let (_, token) = typing::for_sync(&app.state, &rooms, 0);
    let subscription = app.state.notifier.subscribe([room.as_str()]);
    start_typing(&alice, &room, 300).await;
    assert!(
        subscription.wait(Duration::from_secs(2)).await,
        "typing did not wake the room"
    );
    let (events, token2) = typing::for_sync(&app.state, &rooms, token);
    assert_eq!(
        events[&room],
        json!({"type": "m.typing", "content": {"user_ids": [alice.user_id]}})
    );
    assert!(token2 > token);
    // Unchanged since: nothing to report.
    assert!(typing::for_sync(&app.state, &rooms, token2).0.is_empty());
    // Expiry wakes the room again and reports the empty set.
    let subscription = app.state.notifier.subscribe([room.as_str()]);
    assert!(
        subscription.wait(Duration::from_secs(3)).await,
        "expiry did not wake the room"
    );
    let (events, _) = typing::for_sync(&app.state, &rooms, token2);
    assert_eq!(events[&room]["content"]["user_ids"], json!([]));
}

#[tokio::test]
async fn typing_stops_on_request() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&app, &alice, &[]).await;
    let path = format!("/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));
    alice
        .put(&path, json!({"typing": true, "timeout": 30000}))
        .await
        .ok();
    let (events, token) = typing::for_sync(&app.state, std::slice::from_ref(&room), 0);
    assert_eq!(events[&room]["content"]["user_ids"], json!([alice.user_id]));
    alice.put(&path, json!({"typing": false})).await.ok();
    let (events, _) = typing::for_sync(&app.state, std::slice::from_ref(&room), token);
    assert_eq!(events[&room]["content"]["user_ids"], json!([]));
}

#[tokio::test]
async fn typing_only_for_yourself_in_joined_rooms() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, &[&bob]).await;
    let body = json!({"typing": true, "timeout": 1000});
    alice
        .put(
            &format!("/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id)),
            body.clone(),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    let stranger = app.register("stranger").await;
    stranger
        .put(
            &format!("/rooms/{}/typing/{}", enc(&room), enc(&stranger.user_id)),
            body,
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .put(
            &format!("/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id)),
            json!({"timeout": 5}),
        )
        .await
        .expect_err(400, "M_BAD_JSON");
    // Without a timeout, typing lasts the usual 30 s (as Synapse).
    alice
        .put(
            &format!("/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id)),
            json!({"typing": true}),
        )
        .await
        .ok();
    let (events, _) = typing::for_sync(&app.state, std::slice::from_ref(&room), 0);
    assert_eq!(events[&room]["content"]["user_ids"], json!([alice.user_id]));
}

#[tokio::test]
async fn typing_reaches_other_instances() {
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let alice = app.register("alice").await;
    let room = create_room(&app, &alice, &[]).await;
    let subscription = peer.state.notifier.subscribe([room.as_str()]);
    start_typing(&alice, &room, 30000).await;
    // The room's creation may still be on its way to the peer and wake it first: wait for the
    // wake-up that brings the typing.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            subscription.wait(remaining).await,
            "the peer was not woken with the typing"
        );
        let (events, _) = typing::for_sync(&peer.state, std::slice::from_ref(&room), 0);
        if let Some(event) = events.get(&room) {
            assert_eq!(event["content"]["user_ids"], json!([alice.user_id]));
            break;
        }
    }
}

// ---- presence ----

#[tokio::test]
async fn presence_is_visible_only_to_users_sharing_a_room() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let stranger = app.register("stranger").await;
    create_room(&app, &alice, &[&bob]).await;
    let start = position(&app).await;
    let path = format!("/presence/{}/status", enc(&alice.user_id));
    alice
        .put(
            &path,
            json!({"presence": "unavailable", "status_msg": "lunch"}),
        )
        .await
        .ok();
    let mine = alice.get(&path).await.ok();
    assert_eq!(
        (mine["presence"].as_str(), mine["status_msg"].as_str()),
        (Some("unavailable"), Some("lunch"))
    );
    assert_eq!(bob.get(&path).await.ok()["presence"], "unavailable");
    stranger.get(&path).await.expect_err(403, "M_FORBIDDEN");

    let upto = position(&app).await;
    let for_bob = presence::for_sync(
        &app.state,
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        start,
        upto,
    )
    .await
    .unwrap();
    assert_eq!(for_bob.len(), 1);
    assert_eq!(for_bob[0]["sender"], alice.user_id.as_str());
    assert_eq!(for_bob[0]["type"], "m.presence");
    assert_eq!(for_bob[0]["content"]["status_msg"], "lunch");
    assert!(
        presence::for_sync(
            &app.state,
            &mut app.state.db.acquire().await.unwrap(),
            &stranger.user_id,
            start,
            upto
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert!(
        presence::for_sync(
            &app.state,
            &mut app.state.db.acquire().await.unwrap(),
            &bob.user_id,
            upto,
            position(&app).await
        )
        .await
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn presence_errors() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    alice
        .put(
            &format!("/presence/{}/status", enc(&bob.user_id)),
            json!({"presence": "online"}),
        )
        .await
        .expect_err(403, "M_FORBIDDEN");
    let own = format!("/presence/{}/status", enc(&alice.user_id));
    alice
        .put(&own, json!({"presence": "dancing"}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .put(&own, json!({"status_msg": "x"}))
        .await
        .expect_err(400, "M_BAD_JSON");
}

#[tokio::test]
async fn sync_sets_presence_and_inactivity_turns_it_offline() {
    let mut config = test_config();
    config.presence.idle_after_ms = 300;
    config.presence.offline_after_ms = 600;
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let path = format!("/presence/{}/status", enc(&alice.user_id));
    presence::on_sync(&app.state, &alice.user_id, None, presence::Until::Committed)
        .await
        .unwrap();
    assert_eq!(alice.get(&path).await.ok()["presence"], "online");
    presence::on_sync(
        &app.state,
        &alice.user_id,
        Some("unavailable"),
        presence::Until::Committed,
    )
    .await
    .unwrap();
    assert_eq!(alice.get(&path).await.ok()["presence"], "unavailable");
    presence::on_sync(&app.state, &alice.user_id, None, presence::Until::Committed)
        .await
        .unwrap();
    assert_eq!(
        presence_after_sweeps(&alice, "offline", 40).await,
        "offline"
    );
}

/// The user's presence once it reads `wanted`, or after `tries` looks 100 ms apart.
async fn presence_after_sweeps(user: &User, wanted: &str, tries: usize) -> String {
    let path = format!("/presence/{}/status", enc(&user.user_id));
    let mut state = String::new();
    for _ in 0..tries {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = user.get(&path).await.ok()["presence"]
            .as_str()
            .unwrap()
            .to_owned();
        if state == wanted {
            break;
        }
    }
    state
}

#[tokio::test]
async fn idle_users_become_unavailable() {
    let mut config = test_config();
    config.presence.idle_after_ms = 200;
    config.presence.offline_after_ms = 60_000;
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let path = format!("/presence/{}/status", enc(&alice.user_id));
    alice.put(&path, json!({"presence": "online"})).await.ok();
    assert_eq!(
        presence_after_sweeps(&alice, "unavailable", 30).await,
        "unavailable"
    );
}

/// Presence writes that arrive together commit together: each still takes its own stream position,
/// and a room mate's next sync reports every one of them, once.
#[tokio::test]
async fn a_crowd_coming_online_at_once_is_each_reported_once() {
    let app = spawn_app().await;
    let watcher = app.register("watcher").await;
    let mut crowd = Vec::new();
    for i in 0..16 {
        crowd.push(app.register(&format!("crowd{i}")).await);
    }
    create_room(&app, &watcher, &crowd.iter().collect::<Vec<_>>()).await;
    let token = watcher.get("/sync?timeout=0").await.ok()["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = position(&app).await;
    let syncs = crowd.iter().map(|u| u.get("/sync?timeout=0"));
    for answer in futures_util::future::join_all(syncs).await {
        answer.ok();
    }
    let positions: Vec<i64> = sqlx::query_scalar(
        "SELECT stream_position FROM presence WHERE user_id LIKE '@crowd%' ORDER BY stream_position",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let mut distinct = positions.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 16, "one position per change: {positions:?}");
    assert!(positions.iter().all(|p| *p > start));

    let news = watcher
        .get(&format!("/sync?timeout=0&since={token}"))
        .await
        .ok();
    let mut online: Vec<&str> = news["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["content"]["presence"] == "online")
        .map(|e| e["sender"].as_str().unwrap())
        .filter(|sender| *sender != watcher.user_id)
        .collect();
    online.sort_unstable();
    let mut expected: Vec<&str> = crowd.iter().map(|u| u.user_id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(online, expected);
}

#[tokio::test]
async fn presence_can_be_switched_off() {
    let mut config = test_config();
    config.presence.enabled = false;
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let path = format!("/presence/{}/status", enc(&alice.user_id));
    alice.put(&path, json!({"presence": "online"})).await.ok();
    presence::on_sync(&app.state, &alice.user_id, None, presence::Until::Committed)
        .await
        .unwrap();
    assert_eq!(alice.get(&path).await.ok()["presence"], "offline");
    assert!(
        presence::for_sync(
            &app.state,
            &mut app.state.db.acquire().await.unwrap(),
            &alice.user_id,
            0,
            position(&app).await
        )
        .await
        .unwrap()
        .is_empty()
    );
}

// ---- push rules ----

#[tokio::test]
async fn default_push_rules_are_served() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let all = alice.get("/pushrules/").await.ok();
    let ids = |kind: &str| -> Vec<String> {
        all["global"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("override")[0], ".m.rule.master");
    assert!(ids("override").contains(&".m.rule.suppress_notices".to_owned()));
    assert!(ids("underride").contains(&".m.rule.message".to_owned()));
    // Kinds without rules are served empty, not left out.
    assert_eq!(all["global"]["room"], json!([]));
    assert_eq!(all["global"]["sender"], json!([]));
    assert_eq!(alice.get("/pushrules/global/").await.ok(), all["global"]);
    let rule = alice
        .get("/pushrules/global/override/.m.rule.master")
        .await
        .ok();
    assert_eq!(
        (rule["default"].as_bool(), rule["enabled"].as_bool()),
        (Some(true), Some(false))
    );
    // The full-sync account data carries them too.
    let (global, _) = account_data::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        0,
        position(&app).await,
    )
    .await
    .unwrap();
    assert!(
        global
            .iter()
            .any(|e| e["type"] == "m.push_rules" && e["content"]["global"]["override"].is_array())
    );
}

#[tokio::test]
async fn user_push_rules_crud_and_ordering() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let actions = json!({"actions": ["notify"], "pattern": "cake*"});
    alice
        .put("/pushrules/global/content/a", actions.clone())
        .await
        .ok();
    alice
        .put("/pushrules/global/content/b", actions.clone())
        .await
        .ok();
    alice
        .put("/pushrules/global/content/c?after=b", actions.clone())
        .await
        .ok();
    alice
        .put("/pushrules/global/content/d?before=a", actions.clone())
        .await
        .ok();
    let content = alice.get("/pushrules/global/").await.ok()["content"].clone();
    let ids: Vec<&str> = content
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(&ids[..4], &["b", "c", "d", "a"]);

    let rule = alice.get("/pushrules/global/content/a").await.ok();
    assert_eq!(
        (
            rule["pattern"].as_str(),
            rule["enabled"].as_bool(),
            rule["default"].as_bool()
        ),
        (Some("cake*"), Some(true), Some(false))
    );
    alice
        .put(
            "/pushrules/global/content/a/enabled",
            json!({"enabled": false}),
        )
        .await
        .ok();
    assert_eq!(
        alice.get("/pushrules/global/content/a/enabled").await.ok(),
        json!({"enabled": false})
    );
    alice
        .put(
            "/pushrules/global/content/a/actions",
            json!({"actions": []}),
        )
        .await
        .ok();
    assert_eq!(
        alice.get("/pushrules/global/content/a/actions").await.ok(),
        json!({"actions": []})
    );
    alice.delete("/pushrules/global/content/a").await.ok();
    alice
        .get("/pushrules/global/content/a")
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .delete("/pushrules/global/content/a")
        .await
        .expect_err(404, "M_NOT_FOUND");

    let override_rule = json!({"actions": ["notify"], "conditions": [{"kind": "event_match", "key": "type", "pattern": "org.example"}]});
    alice
        .put("/pushrules/global/override/mine", override_rule)
        .await
        .ok();
    let overrides = alice.get("/pushrules/global/").await.ok()["override"].clone();
    assert_eq!(overrides[0]["rule_id"], ".m.rule.master");
    assert_eq!(overrides[1]["rule_id"], "mine");
}

#[tokio::test]
async fn push_rule_errors() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .get("/pushrules/global/override/nope")
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .get("/pushrules/global/override/nope/enabled")
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .put(
            "/pushrules/global/override/nope/enabled",
            json!({"enabled": true}),
        )
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .put(
            "/pushrules/global/override/nope/actions",
            json!({"actions": []}),
        )
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .delete("/pushrules/global/override/.m.rule.master")
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .put("/pushrules/global/override/.mine", json!({"actions": []}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .put(
            "/pushrules/global/override/x?before=.m.rule.master",
            json!({"actions": []}),
        )
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .put(
            "/pushrules/global/override/x?after=missing",
            json!({"actions": []}),
        )
        .await
        .expect_err(400, "M_UNKNOWN");
    alice
        .put("/pushrules/global/content/x", json!({"actions": []}))
        .await
        .expect_err(400, "M_MISSING_PARAM");
    alice
        .put("/pushrules/global/room/not-a-room", json!({"actions": []}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .get("/pushrules/global/sideways/x")
        .await
        .expect_err(400, "M_UNRECOGNIZED");
    alice
        .put("/pushrules/global/override/x", json!({}))
        .await
        .expect_err(400, "M_BAD_JSON");
    // A server-default rule can be switched off and its actions changed, and that sticks.
    alice
        .put(
            "/pushrules/global/override/.m.rule.master/enabled",
            json!({"enabled": true}),
        )
        .await
        .ok();
    assert_eq!(
        alice
            .get("/pushrules/global/override/.m.rule.master/enabled")
            .await
            .ok(),
        json!({"enabled": true})
    );
}

#[tokio::test]
async fn push_rule_change_reaches_sync_and_wakes() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    alice
        .put(&adpath(&alice, "org.example.first"), json!({}))
        .await
        .ok();
    let start = position(&app).await;
    let subscription = app.state.notifier.subscribe([alice.user_id.as_str()]);
    alice
        .put(
            "/pushrules/global/underride/.m.rule.message/enabled",
            json!({"enabled": false}),
        )
        .await
        .ok();
    assert!(subscription.wait(Duration::from_secs(2)).await);
    let (global, _) = account_data::for_sync(
        &mut app.state.db.acquire().await.unwrap(),
        &alice.user_id,
        start,
        position(&app).await,
    )
    .await
    .unwrap();
    assert_eq!(global.len(), 1);
    let underride = global[0]["content"]["global"]["underride"]
        .as_array()
        .unwrap();
    assert!(
        underride
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.message" && r["enabled"] == false)
    );
}

// ---- evaluation, counts, notifications ----

#[tokio::test]
async fn an_invite_notifies_the_invited_local_user() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, &[]).await;
    let content = json!({"membership": "invite"});
    let draft = EventDraft::new(
        "m.room.member",
        Some(&bob.user_id),
        &alice.user_id,
        content.clone(),
    );
    let committed = app
        .state
        .writer
        .submit(Target::Existing(room.clone()), vec![draft], None)
        .await
        .unwrap();
    let event_id = committed.event_ids[0].clone();
    let stream_ordering: i64 =
        sqlx::query_scalar("SELECT stream_ordering FROM events WHERE event_id = $1")
            .bind(&event_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let event = NewEvent {
        event_id: event_id.clone(),
        room_id: room.clone(),
        sender: alice.user_id.clone(),
        event_type: "m.room.member".into(),
        state_key: Some(bob.user_id.clone()),
        content,
        stream_ordering,
        thread_id: None,
    };
    push::process_new_events(&app.state, &[event])
        .await
        .unwrap();
    let list = bob.get("/notifications").await.ok();
    assert_eq!(
        list["notifications"][0]["event"]["event_id"],
        event_id.as_str()
    );
    assert_eq!(counts(&app, &bob, &room).await.notification_count, 1);
}

#[tokio::test]
async fn default_rules_count_messages_mentions_and_skip_notices() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&app, &alice, &[&bob, &carol]).await;

    send_and_evaluate(&app, &room, &alice, "m.room.message", text("hello")).await;
    assert_eq!(
        counts(&app, &bob, &room).await,
        push::UnreadCounts {
            notification_count: 1,
            highlight_count: 0,
            threads: Default::default()
        }
    );
    // The sender is never notified of their own events.
    assert_eq!(counts(&app, &alice, &room).await.notification_count, 0);

    send_and_evaluate(
        &app,
        &room,
        &alice,
        "m.room.message",
        json!({"msgtype": "m.notice", "body": "bot"}),
    )
    .await;
    assert_eq!(
        counts(&app, &bob, &room).await.notification_count,
        1,
        "notices are suppressed"
    );

    let mention =
        json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}});
    send_and_evaluate(&app, &room, &alice, "m.room.message", mention).await;
    let bob_counts = counts(&app, &bob, &room).await;
    assert_eq!(
        (bob_counts.notification_count, bob_counts.highlight_count),
        (2, 1)
    );
    let carol_counts = counts(&app, &carol, &room).await;
    assert_eq!(
        (
            carol_counts.notification_count,
            carol_counts.highlight_count
        ),
        (2, 0)
    );

    // @room from a user without the power to notify the room is a plain message.
    let at_room = json!({"msgtype": "m.text", "body": "@room", "m.mentions": {"room": true}});
    send_and_evaluate(&app, &room, &bob, "m.room.message", at_room.clone()).await;
    assert_eq!(counts(&app, &carol, &room).await.highlight_count, 0);
    // The creator (v12: unlimited power) may.
    send_and_evaluate(&app, &room, &alice, "m.room.message", at_room).await;
    assert_eq!(counts(&app, &carol, &room).await.highlight_count, 1);
}

#[tokio::test]
async fn direct_messages_notify_with_sound() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, &[&bob]).await;
    send_and_evaluate(&app, &room, &alice, "m.room.message", text("psst")).await;
    let list = bob.get("/notifications").await.ok();
    let actions = &list["notifications"][0]["actions"];
    assert!(
        actions.as_array().unwrap().contains(&json!("notify")),
        "{actions}"
    );
    assert!(
        actions
            .as_array()
            .unwrap()
            .contains(&json!({"set_tweak": "sound", "value": "default"})),
        "{actions}"
    );
    assert_eq!(counts(&app, &bob, &room).await.notification_count, 1);
}

#[tokio::test]
async fn evaluating_an_event_twice_counts_it_once() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, &[&bob]).await;
    let event = send_and_evaluate(&app, &room, &alice, "m.room.message", text("hi")).await;
    push::process_new_events(&app.state, &[event])
        .await
        .unwrap();
    assert_eq!(counts(&app, &bob, &room).await.notification_count, 1);
}

#[tokio::test]
async fn receipts_reset_unread_counts_and_threads_count_apart() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&app, &alice, &[&bob, &carol]).await;
    let root = send_and_evaluate(&app, &room, &alice, "m.room.message", text("root")).await;
    let in_thread = json!({"msgtype": "m.text", "body": "reply", "m.relates_to": {"rel_type": "m.thread", "event_id": root.event_id}});
    let reply = send_and_evaluate(&app, &room, &alice, "m.room.message", in_thread.clone()).await;
    let c = counts(&app, &bob, &room).await;
    assert_eq!(c.notification_count, 2);
    assert_eq!(c.threads.get(&root.event_id), Some(&(1, 0)));

    // A threaded receipt on the main timeline clears only the main timeline.
    bob.post(
        &format!(
            "/rooms/{}/receipt/m.read/{}",
            enc(&room),
            enc(&root.event_id)
        ),
        json!({"thread_id": "main"}),
    )
    .await
    .ok();
    let c = counts(&app, &bob, &room).await;
    assert_eq!(c.notification_count, 1);
    assert_eq!(c.threads.get(&root.event_id), Some(&(1, 0)));

    // An unthreaded receipt clears everything up to its event.
    let subscription = app.state.notifier.subscribe([bob.user_id.as_str()]);
    bob.post(
        &format!(
            "/rooms/{}/receipt/m.read/{}",
            enc(&room),
            enc(&reply.event_id)
        ),
        json!({}),
    )
    .await
    .ok();
    assert!(
        subscription.wait(Duration::from_secs(2)).await,
        "the reader was not woken"
    );
    assert_eq!(
        counts(&app, &bob, &room).await,
        push::UnreadCounts::default()
    );
    // Private receipts count as read as well.
    send_and_evaluate(&app, &room, &alice, "m.room.message", text("more")).await;
    let latest = send_and_evaluate(&app, &room, &alice, "m.room.message", text("more")).await;
    assert_eq!(counts(&app, &carol, &room).await.notification_count, 4);
    carol
        .post(
            &format!(
                "/rooms/{}/receipt/m.read.private/{}",
                enc(&room),
                enc(&latest.event_id)
            ),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(counts(&app, &carol, &room).await.notification_count, 0);
    // Counts of several rooms at once; rooms with nothing unread are absent.
    let all: HashMap<String, push::UnreadCounts> = push::unread_counts(
        &mut app.state.db.acquire().await.unwrap(),
        &carol.user_id,
        &[room.clone(), "!other:test.local".into()],
        i64::MAX,
    )
    .await
    .unwrap();
    assert!(all.is_empty(), "{all:?}");
    let all = push::unread_counts(
        &mut app.state.db.acquire().await.unwrap(),
        &bob.user_id,
        std::slice::from_ref(&room),
        i64::MAX,
    )
    .await
    .unwrap();
    assert_eq!(all[&room].notification_count, 2);
}

#[tokio::test]
async fn notifications_list_pages_and_filters_highlights() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&app, &alice, &[&bob, &carol]).await;
    send_and_evaluate(&app, &room, &alice, "m.room.message", text("one")).await;
    let mention =
        json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [bob.user_id]}});
    let highlighted = send_and_evaluate(&app, &room, &alice, "m.room.message", mention).await;
    let last = send_and_evaluate(&app, &room, &alice, "m.room.message", text("three")).await;

    let page = bob.get("/notifications?limit=2").await.ok();
    let list = page["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["event"]["event_id"], last.event_id.as_str());
    assert_eq!(list[0]["room_id"], room.as_str());
    assert!(list[0]["event"].get("room_id").is_none());
    assert_eq!(list[0]["read"], false);
    assert!(list[0]["ts"].is_i64());
    let next = page["next_token"].as_str().unwrap();
    let rest = bob
        .get(&format!("/notifications?limit=2&from={next}"))
        .await
        .ok();
    assert_eq!(rest["notifications"].as_array().unwrap().len(), 1);

    let highlights = bob.get("/notifications?only=highlight").await.ok();
    let list = highlights["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["event"]["event_id"], highlighted.event_id.as_str());

    bob.post(
        &format!(
            "/rooms/{}/receipt/m.read/{}",
            enc(&room),
            enc(&last.event_id)
        ),
        json!({}),
    )
    .await
    .ok();
    let all = bob.get("/notifications").await.ok();
    assert!(
        all["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["read"] == true)
    );
    bob.get("/notifications?from=abc")
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

// ---- pushers ----

fn pusher(url: &str, pushkey: &str) -> Value {
    json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "App",
        "device_display_name": "Phone", "lang": "en", "data": {"url": url, "format": "event_id_only", "custom": 1},
    })
}

#[tokio::test]
async fn pushers_are_validated_stored_and_deleted() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    assert_eq!(alice.get("/pushers").await.ok(), json!({"pushers": []}));
    let url = "https://push.example.org/_matrix/push/v1/notify";
    alice.post("/pushers/set", pusher(url, "key1")).await.ok();
    let listed = alice.get("/pushers").await.ok();
    assert_eq!(listed["pushers"][0]["pushkey"], "key1");
    assert_eq!(listed["pushers"][0]["data"]["url"], url);
    assert_eq!(listed["pushers"][0]["app_display_name"], "App");

    alice
        .post(
            "/pushers/set",
            pusher("https://push.example.org/wrong", "k"),
        )
        .await
        .expect_err(400, "M_INVALID_PARAM");
    let mut no_url = pusher(url, "k");
    no_url["data"] = json!({});
    alice
        .post("/pushers/set", no_url)
        .await
        .expect_err(400, "M_MISSING_PARAM");
    let mut missing = pusher(url, "k");
    missing.as_object_mut().unwrap().remove("lang");
    alice
        .post("/pushers/set", missing)
        .await
        .expect_err(400, "M_MISSING_PARAM");
    alice
        .post("/pushers/set", json!({"kind": "http"}))
        .await
        .expect_err(400, "M_BAD_JSON");

    // append=false hands the pushkey over to the new user; append=true shares it.
    let mut shared = pusher(url, "key1");
    shared["append"] = json!(true);
    bob.post("/pushers/set", shared).await.ok();
    assert_eq!(
        alice.get("/pushers").await.ok()["pushers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    bob.post("/pushers/set", pusher(url, "key1")).await.ok();
    assert_eq!(alice.get("/pushers").await.ok(), json!({"pushers": []}));

    // A device's pushers go with it (for logout and device deletion).
    alice.post("/pushers/set", pusher(url, "key2")).await.ok();
    push::remove_device_pushers(&app.state, &alice.user_id, &alice.device_id)
        .await
        .unwrap();
    assert_eq!(alice.get("/pushers").await.ok(), json!({"pushers": []}));

    let mut delete = pusher(url, "key1");
    delete["kind"] = Value::Null;
    bob.post("/pushers/set", delete).await.ok();
    assert_eq!(bob.get("/pushers").await.ok(), json!({"pushers": []}));
}

#[tokio::test]
async fn a_pusher_receives_notifications_on_its_gateway() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    // The gateway fails once: delivery must retry.
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gateway = axum::Router::new().route(
        "/_matrix/push/v1/notify",
        post(move |axum::Json(body): axum::Json<Value>| {
            let tx = tx.clone();
            let failures = failures.clone();
            async move {
                if failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({})),
                    );
                }
                tx.send(body).unwrap();
                (
                    axum::http::StatusCode::OK,
                    axum::Json(json!({"rejected": []})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, gateway).await.unwrap() });

    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, &[&bob]).await;
    bob.post(
        "/pushers/set",
        pusher(
            &format!("http://{address}/_matrix/push/v1/notify"),
            "bobkey",
        ),
    )
    .await
    .ok();
    let event = send_and_evaluate(&app, &room, &alice, "m.room.message", text("ping")).await;

    let body = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no push arrived")
        .unwrap();
    let n = &body["notification"];
    assert_eq!(n["event_id"], event.event_id.as_str());
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["counts"]["unread"], 1);
    assert_eq!(n["devices"][0]["pushkey"], "bobkey");
    assert_eq!(n["devices"][0]["app_id"], "org.example.app");
    assert_eq!(
        n["devices"][0]["data"],
        json!({"format": "event_id_only", "custom": 1})
    );
    assert_eq!(n["devices"][0]["tweaks"]["sound"], "default");
    // event_id_only: no event details.
    assert!(n.get("content").is_none() && n.get("sender").is_none());
}

// ---- small endpoints ----

#[tokio::test]
async fn turn_server_is_empty_without_settings() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    assert_eq!(alice.get("/voip/turnServer").await.ok(), json!({}));
}

#[tokio::test]
async fn turn_server_hands_out_shared_secret_credentials() {
    use base64::Engine;
    use hmac::Mac;
    let mut config = test_config();
    config.turn.uris = vec!["turn:turn.example.org:3478?transport=udp".into()];
    config.turn.shared_secret = Some("s3cret".into());
    config.turn.ttl = 600;
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let v = alice.get("/voip/turnServer").await.ok();
    let username = v["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, alice.user_id);
    let now = axon::store::now_ms() / 1000;
    let expiry: i64 = expiry.parse().unwrap();
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "{expiry} vs {now}"
    );
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(v["password"], expected.as_str());
    assert_eq!(v["ttl"], 600);
    assert_eq!(
        v["uris"],
        json!(["turn:turn.example.org:3478?transport=udp"])
    );
    app.get("/_matrix/client/v3/voip/turnServer")
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn thirdparty_protocols_are_empty() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    assert_eq!(alice.get("/thirdparty/protocols").await.ok(), json!({}));
    alice
        .get("/thirdparty/protocol/irc")
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn push_rule_changes_apply_to_the_next_message_on_every_process() {
    // The writer keeps rulesets in memory: a change made through either process must count for the
    // very next message written by process A.
    let app_a = spawn_app().await;
    let app_b = spawn_peer(&app_a).await;
    let alice = app_a.register("alice").await;
    let bob = app_a.register("bob").await;
    let carol = app_a.register("carol").await;
    let room = crate::rooms::create_room(&alice, json!({"preset": "public_chat"})).await;
    // Three members: .m.rule.message decides (not .m.rule.room_one_to_one).
    for user in [&bob, &carol] {
        join(user, &room).await;
    }
    let unread = |bob: User, room: String| async move {
        let s = bob.get("/sync").await.ok();
        s["rooms"]["join"][&room]["unread_notifications"]["notification_count"].clone()
    };
    crate::messaging::send_ok(&alice, &room, "one").await;
    assert_eq!(unread(bob.clone(), room.clone()).await, json!(1));
    let rule = "/pushrules/global/underride/.m.rule.message/enabled";
    // Switched off through B.
    app_b
        .as_user(&bob)
        .put(rule, json!({"enabled": false}))
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    crate::messaging::send_ok(&alice, &room, "two").await;
    assert_eq!(unread(bob.clone(), room.clone()).await, json!(1));
    // Back on through A.
    bob.put(rule, json!({"enabled": true})).await.ok();
    crate::messaging::send_ok(&alice, &room, "three").await;
    assert_eq!(unread(bob.clone(), room.clone()).await, json!(2));
}

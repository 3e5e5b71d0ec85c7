//! Long polling: a waiting /sync returns as soon as a change for its user arrives, with the change
//! in it, whichever process the change was made through; it sleeps through everything else and
//! returns empty at its timeout.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::ephemeral::start_typing;
use crate::messaging::send_ok;
use crate::rooms::{create_room, join};
use crate::sync::{bodies, last_left_event, long_poll, next_batch, sync, sync_token, timeline};

/// Where a change is made: `Same` is the process the long poll waits on; `Other` is a second
/// process on the same database.
#[derive(Clone, Copy, Debug)]
enum Via {
    Same,
    Other,
}

/// Two public rooms of Alice's that Bob joined. For each `Via`, Bob long-polls the first process,
/// `trigger` makes a change (in the `n`th room) through that process, and `check` looks for the
/// change in the response that woke him.
async fn wakes_on(
    trigger: impl AsyncFn(&User, &User, &str, usize),
    check: impl Fn(&Value, &User, &User, &str),
) {
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut rooms = Vec::new();
    for _ in 0..2 {
        let room = create_room(&alice, json!({"preset": "public_chat"})).await;
        join(&bob, &room).await;
        rooms.push(room);
    }
    let mut since = sync_token(&bob, "").await;
    for (n, via) in [Via::Same, Via::Other].into_iter().enumerate() {
        let waiting = long_poll(&bob, &since, "");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "{via:?}: returned before the change"
        );
        let instance = match via {
            Via::Same => &app,
            Via::Other => &peer,
        };
        let started = Instant::now();
        trigger(
            &instance.as_user(&alice),
            &instance.as_user(&bob),
            &rooms[n],
            n,
        )
        .await;
        let s = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| panic!("{via:?}: not woken"))
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{via:?}: woken late"
        );
        check(&s, &alice, &bob, &rooms[n]);
        since = next_batch(&s);
    }
}

fn events_of_type<'a>(events: &'a Value, event_type: &str) -> Vec<&'a Value> {
    events
        .as_array()
        .map(|events| events.iter().filter(|e| e["type"] == event_type).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_message_wakes_the_members_long_poll() {
    wakes_on(
        async |alice, _, room, n| {
            send_ok(alice, room, &format!("message {n}")).await;
        },
        |s, _, _, room| {
            let body = bodies(&timeline(s, room)["events"]);
            assert_eq!(body.len(), 1, "{s}");
            assert!(body[0].starts_with("message "), "{s}");
        },
    )
    .await;
}

#[tokio::test]
async fn an_invite_wakes_the_invitees_long_poll() {
    wakes_on(
        async |alice, bob, _, n| {
            alice
                .post(
                    "/createRoom",
                    json!({"name": format!("invited {n}"), "invite": [bob.user_id]}),
                )
                .await
                .ok();
        },
        |s, alice, bob, _| {
            let invites = s["rooms"]["invite"].as_object().unwrap();
            assert_eq!(invites.len(), 1, "{s}");
            let stripped = &invites.values().next().unwrap()["invite_state"]["events"];
            let member = events_of_type(stripped, "m.room.member")
                .into_iter()
                .find(|e| e["state_key"] == bob.user_id.as_str())
                .expect("the invite member event");
            assert_eq!(member["content"]["membership"], "invite");
            assert_eq!(member["sender"], alice.user_id.as_str());
        },
    )
    .await;
}

#[tokio::test]
async fn account_data_wakes_its_users_long_poll() {
    wakes_on(
        async |_, bob, _, n| {
            bob.put(
                &format!("/user/{}/account_data/org.example.pref", enc(&bob.user_id)),
                json!({"round": n}),
            )
            .await
            .ok();
        },
        |s, _, _, _| {
            let data = events_of_type(&s["account_data"]["events"], "org.example.pref");
            assert_eq!(data.len(), 1, "{s}");
            assert!(data[0]["content"]["round"].is_number());
        },
    )
    .await;
}

#[tokio::test]
async fn room_account_data_wakes_its_users_long_poll() {
    wakes_on(
        async |_, bob, room, n| {
            bob.put(
                &format!(
                    "/user/{}/rooms/{}/account_data/org.example.room_pref",
                    enc(&bob.user_id),
                    enc(room)
                ),
                json!({"round": n}),
            )
            .await
            .ok();
        },
        |s, _, _, room| {
            let data = events_of_type(
                &s["rooms"]["join"][room]["account_data"]["events"],
                "org.example.room_pref",
            );
            assert_eq!(data.len(), 1, "{s}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_read_receipt_wakes_the_members_long_poll() {
    wakes_on(
        async |alice, _, room, _| {
            let page = alice
                .get(&format!("/rooms/{}/messages?dir=b&limit=1", enc(room)))
                .await
                .ok();
            let event_id = page["chunk"][0]["event_id"].as_str().unwrap().to_owned();
            alice
                .post(
                    &format!("/rooms/{}/receipt/m.read/{}", enc(room), enc(&event_id)),
                    json!({}),
                )
                .await
                .ok();
        },
        |s, alice, _, room| {
            let ephemeral = &s["rooms"]["join"][room]["ephemeral"]["events"];
            let receipts = events_of_type(ephemeral, "m.receipt");
            assert_eq!(receipts.len(), 1, "{s}");
            let readers: Vec<&Value> = receipts[0]["content"]
                .as_object()
                .unwrap()
                .values()
                .map(|by_type| &by_type["m.read"])
                .collect();
            assert!(
                readers
                    .iter()
                    .any(|r| r.get(alice.user_id.as_str()).is_some()),
                "{s}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn typing_wakes_the_members_long_poll() {
    wakes_on(
        async |alice, _, room, _| {
            start_typing(alice, room, 20000).await;
        },
        |s, alice, _, room| {
            let ephemeral = &s["rooms"]["join"][room]["ephemeral"]["events"];
            let typing = events_of_type(ephemeral, "m.typing");
            assert_eq!(typing.len(), 1, "{s}");
            assert_eq!(typing[0]["content"]["user_ids"], json!([alice.user_id]));
        },
    )
    .await;
}

#[tokio::test]
async fn a_to_device_message_wakes_the_devices_long_poll() {
    wakes_on(
        async |alice, bob, _, n| {
            let body =
                json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"round": n}}}});
            alice
                .put(&format!("/sendToDevice/org.example.ping/t{n}"), body)
                .await
                .ok();
        },
        |s, alice, _, _| {
            let messages = s["to_device"]["events"].as_array().unwrap();
            assert_eq!(messages.len(), 1, "{s}");
            assert_eq!(messages[0]["type"], "org.example.ping");
            assert_eq!(messages[0]["sender"], alice.user_id.as_str());
            assert!(messages[0]["content"]["round"].is_number());
        },
    )
    .await;
}

#[tokio::test]
async fn a_new_device_of_a_room_mate_wakes_the_long_poll() {
    wakes_on(
        async |alice, _, _, _| {
            // Logging in again gives Alice a new device: her device list changes.
            let localpart = alice.user_id[1..].split(':').next().unwrap().to_owned();
            let login = json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": "correct horse",
            });
            alice.post("/login", login).await.ok();
        },
        |s, alice, _, _| {
            assert_eq!(s["device_lists"]["changed"], json!([alice.user_id]), "{s}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_kick_wakes_the_kicked_users_long_poll() {
    wakes_on(
        async |alice, bob, room, _| {
            alice
                .post(
                    &format!("/rooms/{}/kick", enc(room)),
                    json!({"user_id": bob.user_id, "reason": "testing"}),
                )
                .await
                .ok();
        },
        |s, alice, bob, room| {
            let last = last_left_event(s, room);
            assert_eq!(last["type"], "m.room.member");
            assert_eq!(last["state_key"], bob.user_id.as_str());
            assert_eq!(last["sender"], alice.user_id.as_str());
            assert_eq!(last["content"]["membership"], "leave");
            assert_eq!(last["content"]["reason"], "testing");
            assert!(s["rooms"]["join"].get(room).is_none());
        },
    )
    .await;
}

#[tokio::test]
async fn leaving_on_another_device_wakes_the_long_poll() {
    wakes_on(
        async |_, bob, room, _| {
            bob.post(&format!("/rooms/{}/leave", enc(room)), json!({}))
                .await
                .ok();
        },
        |s, _, bob, room| {
            let last = last_left_event(s, room);
            assert_eq!(last["sender"], bob.user_id.as_str());
            assert_eq!(last["content"]["membership"], "leave");
        },
    )
    .await;
}

/// Everything here concerns other users or rooms Bob is not in, made through both processes.
#[tokio::test]
async fn a_long_poll_sleeps_through_what_is_not_for_its_user() {
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let shared = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &shared).await;
    let elsewhere = create_room(&carol, json!({"preset": "public_chat"})).await;
    join(&alice, &elsewhere).await;
    // Alice is online before Bob starts waiting: her presence will not change meanwhile.
    sync(&alice, "").await;
    let since = sync_token(&bob, "").await;
    // The batch of deferred wake-ups announcing both presence changes to the room has gone out.
    tokio::time::sleep(axon::service::notifier::DEFERRED_WAKE_INTERVAL * 2).await;
    let started = Instant::now();
    let waiting = {
        let bob = bob.clone();
        tokio::spawn(async move { sync(&bob, &format!("since={since}&timeout=2500")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Bob's keys, watched directly: nothing below may even wake his poll to look again.
    let device_key = format!("device:{}:{}", bob.user_id, bob.device_id);
    let watch =
        app.state
            .notifier
            .subscribe([bob.user_id.as_str(), device_key.as_str(), shared.as_str()]);
    for (n, instance) in [&app, &peer].into_iter().enumerate() {
        let carol = instance.as_user(&carol);
        let alice = instance.as_user(&alice);
        send_ok(&carol, &elsewhere, "not for bob").await;
        start_typing(&carol, &elsewhere, 20000).await;
        alice
            .put(
                &format!("/user/{}/account_data/org.example.x", enc(&alice.user_id)),
                json!({"n": n}),
            )
            .await
            .ok();
        let to_alice = json!({"messages": {alice.user_id.clone(): {"*": {"n": n}}}});
        carol
            .put(&format!("/sendToDevice/org.example.ping/q{n}"), to_alice)
            .await
            .ok();
        create_room(&carol, json!({"invite": [alice.user_id]})).await;
    }
    assert!(!waiting.is_finished(), "answered changes for others");
    assert!(
        !watch.wait(Duration::from_millis(300)).await,
        "woken by changes for others"
    );
    let s = waiting.await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(2400),
        "returned early: {s}"
    );
    assert_eq!(s["rooms"]["join"], json!({}), "{s}");
    assert_eq!(s["rooms"]["invite"], json!({}), "{s}");
    assert_eq!(s["to_device"]["events"], json!([]), "{s}");
    assert_eq!(s["account_data"]["events"], json!([]), "{s}");
}

#[tokio::test]
async fn a_long_poll_with_nothing_new_returns_empty_at_its_timeout() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    send_ok(&alice, &room, "before").await;
    let since = sync_token(&alice, "").await;
    let started = Instant::now();
    let s = sync(&alice, &format!("since={since}&timeout=700")).await;
    assert!(started.elapsed() >= Duration::from_millis(650), "{s}");
    for section in ["join", "invite", "leave", "knock"] {
        assert_eq!(s["rooms"][section], json!({}), "{section}: {s}");
    }
    for list in ["account_data", "presence", "to_device"] {
        assert_eq!(s[list]["events"], json!([]), "{list}: {s}");
    }
    assert_eq!(s["device_lists"]["changed"], json!([]), "{s}");
    // Its token goes on from where the last one was: the next message is the next sync's news.
    send_ok(&alice, &room, "after").await;
    let s = sync(&alice, &format!("since={}", next_batch(&s))).await;
    assert_eq!(bodies(&timeline(&s, &room)["events"]), vec!["after"]);
}

/// A filter without presence: the initial sync does not wait for the user's presence to be
/// committed (its answer does not show it), yet the write is made, and the change is not news that
/// wakes the first long poll.
#[tokio::test]
async fn without_presence_in_the_filter_the_first_long_poll_still_waits() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    send_ok(&alice, &room, "before").await;
    let filter = enc(r#"{"presence":{"types":[]}}"#);
    let s = sync(&alice, &format!("filter={filter}")).await;
    assert_eq!(bodies(&timeline(&s, &room)["events"]), vec!["before"]);
    let path = format!("/presence/{}/status", enc(&alice.user_id));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = alice.get(&path).await.ok();
        if status["presence"] == "online" {
            break;
        }
        assert!(Instant::now() < deadline, "never online: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let s = sync(
        &alice,
        &format!("filter={filter}&since={}&timeout=700", next_batch(&s)),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(650), "{s}");
    assert_eq!(s["rooms"]["join"], json!({}), "{s}");
    assert_eq!(s["presence"]["events"], json!([]), "{s}");
}

/// Tokens are positions in the database's stream, not in a process's memory.
#[tokio::test]
async fn a_sync_token_is_good_on_a_process_started_later() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    send_ok(&alice, &room, "one").await;
    let since = sync_token(&alice, "").await;
    send_ok(&alice, &room, "two").await;
    // A process that starts now has never seen the token: it continues exactly from it.
    let restarted = spawn_peer(&app).await;
    let s = restarted
        .request(
            Method::GET,
            &format!("/_matrix/client/v3/sync?since={since}"),
            Some(&alice.token),
            None,
        )
        .await
        .ok();
    assert_eq!(bodies(&timeline(&s, &room)["events"]), vec!["two"]);
}

/// The LISTEN connection drops (a database restart, a network cut): notifications sent meanwhile are
/// lost, so every waiting poll is woken to look again, and notifications flow again afterwards.
#[tokio::test]
async fn a_lost_listen_connection_wakes_every_waiter_and_is_restored() {
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let watch = app.state.notifier.subscribe([bob.user_id.as_str()]);
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(axon::service::notifier::LISTENER_APPLICATION_NAME)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(
        !terminated.is_empty(),
        "the listener connections were found"
    );
    assert!(
        watch.wait(Duration::from_secs(5)).await,
        "waiters are woken once the listener is back"
    );
    // Listening again: a message sent through the other process wakes a poll here.
    let since = sync_token(&bob, "").await;
    let waiting = long_poll(&bob, &since, "");
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_ok(&peer.as_user(&alice), &room, "after the outage").await;
    let s = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken through the restored listener")
        .unwrap();
    assert_eq!(
        bodies(&timeline(&s, &room)["events"]),
        vec!["after the outage"]
    );
}

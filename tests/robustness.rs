//! Robustness under load and faults: more concurrent database-path syncs than the pool has
//! connections, one account flooding /sync, one bad event in a writer batch, lost connections and a
//! PostgreSQL restart. Every answer is a 200 or a prompt 503 with `retry_after_ms`, never a 500.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use crate::common::*;
use crate::messaging::send_ok;
use crate::rooms::create_room;

/// A 503 is allowed only with a retry hint, in the body and the header.
fn assert_ok_or_unavailable(resp: &Resp, what: &str) {
    match resp.status.as_u16() {
        200 => {}
        503 => {
            assert!(
                resp.body["retry_after_ms"].as_u64().is_some(),
                "{what}: 503 without retry_after_ms: {:?}",
                resp.body
            );
            assert!(
                resp.headers.get("retry-after").is_some(),
                "{what}: 503 without Retry-After"
            );
        }
        other => panic!("{what}: {other} {:?}", resp.body),
    }
}

/// Users with a room and a few messages each: an initial sync of theirs reads several tables.
async fn busy_users(app: &TestApp, n: usize) -> Vec<(User, String)> {
    let mut users = Vec::new();
    for i in 0..n {
        let user = app.register(&format!("user{i}")).await;
        let room = create_room(&user, json!({"preset": "private_chat", "name": "busy"})).await;
        for m in 0..3 {
            send_ok(&user, &room, &format!("message {m}")).await;
        }
        users.push((user, room));
    }
    users
}

#[tokio::test]
async fn more_database_syncs_than_connections_answer_200_or_a_prompt_503() {
    // Four connections; 24 syncs that each read the database (initial syncs), and one other
    // user's /messages among them. Before each sync used one connection, they held the pool and
    // waited for more until the pool timed out, and everything got 500s.
    let app = spawn_app_with_pool(test_config(), 4).await;
    let users = busy_users(&app, 6).await;
    let (reader, room) = &users[0];
    let started = Instant::now();
    let syncs = users.iter().cycle().take(24).map(|(user, _)| async move {
        let resp = user.get("/sync?timeout=0").await;
        (resp, started.elapsed())
    });
    let messages = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let at = Instant::now();
        let resp = reader
            .get(&format!("/rooms/{}/messages?dir=b&limit=5", enc(room)))
            .await;
        (resp, at.elapsed())
    };
    let (answers, (messages, messages_took)) = tokio::join!(join_all(syncs), messages);
    let mut ok = 0;
    for (resp, took) in &answers {
        assert_ok_or_unavailable(resp, "sync");
        assert!(*took < Duration::from_secs(10), "a sync took {took:?}");
        ok += usize::from(resp.status == 200);
    }
    assert!(ok > 0, "some syncs are served");
    assert_eq!(messages.status, 200, "{:?}", messages.body);
    assert!(
        messages_took < Duration::from_secs(3),
        "/messages waited {messages_took:?} behind the syncs"
    );
}

#[tokio::test]
async fn one_account_firing_many_syncs_does_not_stall_another() {
    let app = spawn_app_with_pool(test_config(), 4).await;
    let users = busy_users(&app, 2).await;
    let (flooder, _) = &users[0];
    let (other, room) = &users[1];
    let flood = join_all((0..32).map(|_| flooder.get("/sync?timeout=0")));
    let others = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let at = Instant::now();
        let messages = other
            .get(&format!("/rooms/{}/messages?dir=b&limit=5", enc(room)))
            .await;
        let sync = other.get("/sync?timeout=0").await;
        (messages, sync, at.elapsed())
    };
    let (flood, (messages, sync, took)) = tokio::join!(flood, others);
    for resp in &flood {
        assert_ok_or_unavailable(resp, "flooding sync");
    }
    assert_eq!(messages.status, 200, "{:?}", messages.body);
    assert_eq!(sync.status, 200, "{:?}", sync.body);
    assert!(
        took < Duration::from_secs(3),
        "another user's requests waited {took:?}"
    );
}

#[tokio::test]
async fn a_bad_event_fails_only_its_own_request() {
    use axon::service::events::EventDraft;
    use axon::service::writer::Target;
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mallory = app.register("mallory").await;
    let room = create_room(&alice, json!({"preset": "private_chat"})).await;
    let own = create_room(&mallory, json!({"preset": "private_chat"})).await;
    // An event type PostgreSQL cannot store (a NUL), submitted straight to the writer among good events
    // so that they share batches. (The API refuses a NUL before it gets this far.)
    let bad = (0..5).map(|i| {
        let draft = EventDraft::new(
            &format!("m.bad\u{0}{i}"),
            None,
            &mallory.user_id,
            json!({"body": "an event type with a NUL"}),
        );
        app.state
            .writer
            .submit(Target::Existing(own.clone()), vec![draft], None)
    });
    let good_direct = (0..20).map(|i| {
        let draft = EventDraft::new(
            "m.room.message",
            None,
            &alice.user_id,
            json!({"msgtype": "m.text", "body": format!("good {i}")}),
        );
        app.state
            .writer
            .submit(Target::Existing(room.clone()), vec![draft], None)
    });
    let good_http = (0..20).map(|i| {
        let alice = alice.clone();
        let room = room.clone();
        async move {
            crate::messaging::send(
                &alice,
                &room,
                json!({"msgtype": "m.text", "body": format!("over http {i}")}),
                &format!("txn{i}"),
            )
            .await
        }
    });
    let (bad, good_direct, good_http) =
        tokio::join!(join_all(bad), join_all(good_direct), join_all(good_http));
    for outcome in bad {
        match outcome {
            Err(e) => assert_eq!(e.errcode(), "M_BAD_JSON", "{e}"),
            Ok(_) => panic!("a NUL was stored"),
        }
    }
    for outcome in good_direct {
        outcome.expect("a good event failed beside a bad one");
    }
    for resp in good_http {
        assert_eq!(resp.status, 200, "{:?}", resp.body);
    }
}

/// Ends every connection of the app's database but the caller's (as a PostgreSQL restart does).
async fn terminate_connections(app: &TestApp) -> usize {
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    ended.len()
}

#[tokio::test]
async fn requests_after_connections_are_lost_get_fresh_ones() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"preset": "private_chat"})).await;
    // Warm connections in both pools, then end them all.
    join_all((0..8).map(|i| {
        let (alice, room) = (alice.clone(), room.clone());
        async move {
            send_ok(&alice, &room, &format!("before {i}")).await;
            alice.get("/sync?timeout=0").await.ok();
        }
    }))
    .await;
    assert!(terminate_connections(&app).await > 0);
    let requests = (0..16).map(|i| {
        let alice = alice.clone();
        let room = room.clone();
        async move {
            let send = crate::messaging::send(
                &alice,
                &room,
                json!({"msgtype": "m.text", "body": format!("after {i}")}),
                &format!("after{i}"),
            )
            .await;
            let sync = alice.get("/sync?timeout=0").await;
            let messages = alice
                .get(&format!("/rooms/{}/messages?dir=b&limit=3", enc(&room)))
                .await;
            [send, sync, messages]
        }
    });
    for answers in join_all(requests).await {
        for (resp, what) in answers.iter().zip(["send", "sync", "messages"]) {
            assert_eq!(resp.status, 200, "{what}: {:?}", resp.body);
        }
    }
}

#[tokio::test]
async fn a_postgresql_restart_under_load_gives_no_500() {
    use axon::postgres::Cluster;
    // A cluster of this test's own, so that it can be stopped and started.
    let dir = tempfile::Builder::new()
        .prefix("axon-restart-")
        .tempdir_in("/tmp")
        .unwrap();
    let cluster = Cluster::init(dir.path()).unwrap();
    let mut server = cluster.spawn_ephemeral().unwrap();
    let pool = wait_for_database(&cluster).await;
    let mut config = test_config();
    config.database.acquire_timeout_ms = 1000;
    let app = spawn_on_pool(config, pool).await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"preset": "private_chat"})).await;
    send_ok(&alice, &room, "before").await;

    let load = {
        let alice = alice.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let until = Instant::now() + Duration::from_secs(6);
            let mut i = 0;
            while Instant::now() < until {
                i += 1;
                let txn = format!("load{i}");
                let send = crate::messaging::send(
                    &alice,
                    &room,
                    json!({"msgtype": "m.text", "body": format!("load {i}")}),
                    &txn,
                );
                let sync = alice.get("/sync?timeout=0");
                let (send, sync) = tokio::join!(send, sync);
                answers.push(send);
                answers.push(sync);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A fast shutdown (SIGINT), as `pg_ctl restart -m fast` does, then the server again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    server.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server = cluster.spawn_ephemeral().unwrap();
    let answers = load.await.unwrap();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status.as_u16()).collect();
    for (resp, status) in answers.iter().zip(&statuses) {
        assert!(
            *status == 200 || *status == 503,
            "{status} {:?} during a restart",
            resp.body
        );
        assert_ok_or_unavailable(resp, "during a restart");
    }
    assert!(
        statuses.ends_with(&[200, 200]),
        "served again after the restart: {statuses:?}"
    );
    // Everything acknowledged is there.
    let acknowledged = answers
        .iter()
        .filter(|r| r.status == 200 && r.body["event_id"].is_string())
        .count();
    let stored = alice
        .get(&format!("/rooms/{}/messages?dir=b&limit=1000", enc(&room)))
        .await
        .ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("load"))
        })
        .count();
    assert!(
        stored >= acknowledged,
        "{stored} stored, {acknowledged} acknowledged"
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// Presence comes in crowds (everyone reconnecting after a restart): room mates' polls are woken
/// once per batch for all of it, not once per change, and the poll's answer carries every change
/// of the batch.
#[tokio::test]
async fn presence_changes_wake_room_mates_in_batches() {
    use axon::service::notifier::DEFERRED_WAKE_INTERVAL;
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let mut mates = Vec::new();
    for i in 0..4 {
        let mate = app.register(&format!("mate{i}")).await;
        crate::rooms::join(&mate, &room).await;
        mates.push(mate);
    }
    let since = crate::sync::sync_token(&alice, "").await;
    // Counts the wake-ups of a subscriber of the room while the mates change their presence, one
    // after another (each change used to wake the room at once: four wake-ups).
    let key = axon::service::notifier::presence_key(&room);
    let watch = app.state.notifier.subscribe([key.as_str()]);
    let counting = tokio::spawn(async move {
        let mut wakes = 0;
        let until = Instant::now() + DEFERRED_WAKE_INTERVAL * 3;
        while Instant::now() < until {
            if watch.wait(until - Instant::now()).await {
                wakes += 1;
            }
        }
        wakes
    });
    for mate in &mates {
        mate.put(
            &format!("/presence/{}/status", enc(&mate.user_id)),
            json!({"presence": "unavailable", "status_msg": "away"}),
        )
        .await
        .ok();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let wakes = counting.await.unwrap();
    assert!(
        (1..=2).contains(&wakes),
        "{wakes} wake-ups for {} presence changes",
        mates.len()
    );
    let s = crate::sync::sync(&alice, &format!("since={since}&timeout=5000")).await;
    let senders: Vec<&str> = s["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["content"]["status_msg"] == "away")
        .map(|e| e["sender"].as_str().unwrap())
        .collect();
    assert_eq!(senders.len(), mates.len(), "{s}");
}

/// Room mates' presence wakes only the long polls that show presence: a client whose filter
/// leaves presence out (bots, the crowd of a big room) is not woken for it.
#[tokio::test]
async fn presence_wakes_only_polls_that_want_presence() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let key = axon::service::notifier::presence_key(&room);
    let since = crate::sync::sync_token(&alice, "").await;
    let no_presence = enc(r#"{"presence":{"types":[]}}"#);
    let quiet = crate::sync::long_poll(&alice, &since, &format!("filter={no_presence}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.state.notifier.subscribers(&key), 0);
    let listening = crate::sync::long_poll(&alice, &since, "");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.state.notifier.subscribers(&key), 1);
    quiet.abort();
    listening.abort();
}

/// A long poll woken by presence gets the change without a database read when this process
/// wrote it, and the same content the database path gives.
#[tokio::test]
async fn a_presence_wake_is_answered_like_the_database_path() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    crate::rooms::join(&bob, &room).await;
    let since = crate::sync::sync_token(&alice, "set_presence=offline").await;
    let waiting = crate::sync::long_poll(&alice, &since, "set_presence=offline");
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.put(
        &format!("/presence/{}/status", enc(&bob.user_id)),
        json!({"presence": "online", "status_msg": "here"}),
    )
    .await
    .ok();
    let woken = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken by the presence change")
        .unwrap();
    let from_db = crate::sync::sync(&alice, &format!("since={since}&set_presence=offline")).await;
    let bobs = |s: &serde_json::Value| -> Vec<serde_json::Value> {
        s["presence"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["sender"] == bob.user_id.as_str())
            .map(|e| {
                let mut e = e.clone();
                e["content"]
                    .as_object_mut()
                    .unwrap()
                    .remove("last_active_ago");
                e
            })
            .collect()
    };
    assert_eq!(bobs(&woken).len(), 1, "{woken}");
    assert_eq!(bobs(&woken), bobs(&from_db));
}

/// A request cancelled while its `BEGIN` was on the wire leaves its connection inside that
/// transaction (sqlx 0.8 queues a rollback only once the `BEGIN` completed): the pool ends it when
/// the connection comes back, so the next user neither runs in a read-only snapshot nor leaves its
/// autocommitted writes uncommitted.
#[tokio::test]
async fn a_connection_left_in_a_transaction_comes_back_outside_it() {
    let (name, _) = fresh_database().await;
    let pool = test_pool(&name, 1).await;
    {
        let mut conn = pool.acquire().await.unwrap();
        // What a cancelled BEGIN leaves behind: a transaction sqlx does not know of.
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    // The pool's one connection, back from the release.
    let mut conn = pool.acquire().await.unwrap();
    let read_only: String = sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        read_only, "off",
        "the connection came back inside the read-only transaction"
    );
    sqlx::query("CREATE TABLE written_after (x int)")
        .execute(&mut *conn)
        .await
        .expect("a write on the connection after it");
}

//! Federation, the outbound queue (issue #19): nothing committed is lost to a crash, a server
//! that contacts us is retried at once, a dead process's destinations are taken over, and the
//! queue is measured. Two or three Axons on loopback: A is the local server, B the remote one.

use std::time::Duration;

use serde_json::json;

use crate::common::{TestApp, User, crash_and_restart, enc, serve_metrics, spawn_federating};
use crate::operations::{sample, scrape};

fn name(app: &TestApp) -> String {
    app.state.server_name.to_string()
}

/// Alice's public room on `a`, which `carol` of `b` joins through `a`.
async fn shared_room(a: &TestApp, alice: &User, carol: &User) -> String {
    let room_id = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"preset": "public_chat"}),
        )
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    carol
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?server_name={}",
                enc(&room_id),
                enc(&name(a))
            ),
            json!({}),
        )
        .await
        .ok();
    room_id
}

async fn say(user: &User, room_id: &str, txn: &str, body: &str) {
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room_id)
        ),
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
    .ok();
}

/// How many times `user`'s /sync shows `body` in `room_id`'s timeline, once it shows it (waiting
/// up to 15 s); 0 if it never does.
async fn times_seen(user: &User, room_id: &str, body: &str) -> usize {
    for _ in 0..30 {
        let filter = enc(r#"{"room":{"timeline":{"limit":50}}}"#);
        let sync = user
            .get(&format!("/_matrix/client/v3/sync?filter={filter}"))
            .await
            .ok();
        let events = &sync["rooms"]["join"][room_id]["timeline"]["events"];
        let seen = events
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["content"]["body"] == body)
            .count();
        if seen > 0 {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    0
}

/// Waits (up to 10 s) until `query` (one bigint) on `app`'s database answers at least `want`.
async fn wait_for(app: &TestApp, query: &str, want: i64) -> i64 {
    let mut got = 0;
    for _ in 0..200 {
        got = sqlx::query_scalar::<_, i64>(query)
            .fetch_one(&app.db)
            .await
            .unwrap();
        if got >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

/// The transactions `b` received from `a`: (PDUs in them, how many).
async fn received_from(b: &TestApp, a: &TestApp) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(sum(pdu_count), 0)::bigint, count(*) FROM federation_inbound_txns
         WHERE origin = $1",
    )
    .bind(name(a))
    .fetch_one(&b.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_event_committed_before_a_crash_is_sent_after_the_restart() {
    let mut a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = shared_room(&a, &alice, &carol).await;
    // A's sender stops between the commit and the send, and A dies before it sends anything.
    a.state.outbox.stop();
    say(&alice, &room_id, "t1", "committed, then the crash").await;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM federation_outbox")
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(queued, 1, "queued with its commit");
    let _restarted = crash_and_restart(&mut a).await;
    assert_eq!(
        times_seen(&carol, &room_id, "committed, then the crash").await,
        1,
        "B received the event from the restarted A"
    );
}

#[tokio::test]
async fn a_server_that_contacts_us_is_retried_at_once_despite_its_backoff() {
    let a = spawn_federating(|_| {}).await;
    let mut b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = shared_room(&a, &alice, &carol).await;
    b.fed.as_mut().unwrap().stop().await;
    say(&alice, &room_id, "t1", "while B was down").await;
    let failures = format!(
        "SELECT coalesce(max(failures), 0)::bigint FROM federation_destinations WHERE destination = '{}'",
        name(&b)
    );
    assert!(wait_for(&a, &failures, 1).await >= 1, "A failed to reach B");
    // B stays down long enough for the backoff to grow to its cap: the next try is an hour away.
    sqlx::query(
        "UPDATE federation_destinations SET failures = 10, retry_interval_ms = 3600000,
             retry_at_ts = $2 WHERE destination = $1",
    )
    .bind(name(&b))
    .bind(axon::store::now_ms() + 3_600_000)
    .execute(&a.db)
    .await
    .unwrap();
    let fed = b.fed.as_mut().unwrap();
    fed.restart(&b.state).await;
    // B is back and contacts A (carol's typing notice goes to A in a transaction).
    carol
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room_id),
                enc(&carol.user_id)
            ),
            json!({"typing": true, "timeout": 10000}),
        )
        .await
        .ok();
    assert_eq!(
        times_seen(&carol, &room_id, "while B was down").await,
        1,
        "A sent to B without waiting for its backoff"
    );
    let (interval, failures): (i64, i32) = sqlx::query_as(
        "SELECT retry_interval_ms, failures FROM federation_destinations WHERE destination = $1",
    )
    .bind(name(&b))
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert_eq!((interval, failures), (0, 0), "the backoff is over");
}

/// Accepts connections on `port` and never answers: a server that hangs.
async fn hang_on(port: u16) -> tokio::task::JoinHandle<()> {
    let mut listener = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let listener = listener.expect("the port is free");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    })
}

#[tokio::test]
async fn a_destination_whose_sender_dies_mid_transaction_is_taken_over_and_sent_once() {
    let a = spawn_federating(|_| {}).await;
    let mut b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = shared_room(&a, &alice, &carol).await;
    // B hangs: A's transaction stays in flight, A holding B's lease.
    let fed = b.fed.as_mut().unwrap();
    fed.stop().await;
    let hanging = hang_on(fed.port).await;
    a.state.outbox.set_lease(Duration::from_secs(2));
    say(&alice, &room_id, "t1", "in flight when A died").await;
    let leased = format!(
        "SELECT count(*) FROM federation_destinations WHERE destination = '{}' AND lease_owner IS NOT NULL",
        name(&b)
    );
    assert_eq!(wait_for(&a, &leased, 1).await, 1, "A holds B's lease");
    // A dies with the transaction in flight; another process on the same database runs on.
    a.state.outbox.stop();
    let peer = crate::common::spawn_peer(&a).await;
    peer.state.outbox.start();
    hanging.abort();
    let fed = b.fed.as_mut().unwrap();
    fed.restart(&b.state).await;
    assert_eq!(
        times_seen(&carol, &room_id, "in flight when A died").await,
        1,
        "the other process took B over"
    );
    // Nothing more goes out: the transaction was sent once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        received_from(&b, &a).await,
        (1, 1),
        "one transaction, one PDU"
    );
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM federation_outbox")
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn typing_notices_waiting_for_a_server_that_is_down_replace_each_other() {
    let a = spawn_federating(|_| {}).await;
    let mut b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = shared_room(&a, &alice, &carol).await;
    b.fed.as_mut().unwrap().stop().await;
    let queued = |typing: bool| {
        format!(
            "SELECT count(*) FROM federation_outbox WHERE destination = '{}' AND kind = 'edu'
               AND body::jsonb -> 'content' ->> 'typing' = '{typing}'",
            name(&b)
        )
    };
    for typing in [true, false, true] {
        alice
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/typing/{}",
                    enc(&room_id),
                    enc(&alice.user_id)
                ),
                json!({"typing": typing, "timeout": 10000}),
            )
            .await
            .ok();
        // Queued in the background: wait for it.
        assert_eq!(wait_for(&a, &queued(typing), 1).await, 1);
    }
    let edus: i64 = sqlx::query_scalar("SELECT count(*) FROM federation_outbox WHERE kind = 'edu'")
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(edus, 1, "the newest notice replaced the ones before");
}

/// The scrape's value of `name` with `labels` (0 when absent).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

#[tokio::test]
async fn federation_traffic_and_the_queue_are_measured() {
    let a = spawn_federating(|c| c.metrics.enabled = true).await;
    let mut b = spawn_federating(|_| {}).await;
    let metrics = serve_metrics(&a).await;
    let before = scrape(&metrics).await;
    let sent = "axon_federation_transactions_sent_total";
    let inbound = "axon_federation_inbound_transactions_total";
    let pdus = "axon_federation_inbound_pdus_total";
    let accepted = [("result", "accepted")];
    let keys = "axon_federation_key_fetches_total";
    let direct_ok = [("via", "direct"), ("result", "ok")];

    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = shared_room(&a, &alice, &carol).await;
    say(&alice, &room_id, "t1", "to B").await;
    assert_eq!(times_seen(&carol, &room_id, "to B").await, 1);
    say(&carol, &room_id, "t1", "to A").await;
    assert_eq!(times_seen(&alice, &room_id, "to A").await, 1);
    let text = scrape(&metrics).await;
    assert!(
        value(&text, sent, &[]) > value(&before, sent, &[]),
        "{text}"
    );
    assert!(value(&text, inbound, &[]) > value(&before, inbound, &[]));
    assert!(value(&text, pdus, &accepted) > value(&before, pdus, &accepted));
    assert!(value(&text, keys, &direct_ok) > value(&before, keys, &direct_ok));
    assert!(
        sample(
            &text,
            "axon_federation_transaction_duration_seconds_bucket",
            &[("le", "+Inf")]
        )
        .is_some()
    );
    assert!(text.contains("# TYPE axon_federation_queue_depth gauge"));

    // B goes down: the message waits, the transaction fails, B backs off.
    b.fed.as_mut().unwrap().stop().await;
    let failed = "axon_federation_transactions_failed_total";
    say(&alice, &room_id, "t2", "waits").await;
    let failures = format!(
        "SELECT coalesce(max(failures), 0)::bigint FROM federation_destinations WHERE destination = '{}'",
        name(&b)
    );
    assert!(wait_for(&a, &failures, 1).await >= 1);
    let text = scrape(&metrics).await;
    assert!(value(&text, failed, &[]) > value(&before, failed, &[]));
    assert!(
        value(&text, "axon_federation_queue_depth", &[("kind", "pdu")]) >= 1.0,
        "{text}"
    );
    assert!(value(&text, "axon_federation_destinations_backing_off", &[]) >= 1.0);
}

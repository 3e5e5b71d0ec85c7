//! Federation performance figures (issue #19), printed, never asserted: ignored in the normal run.
//!
//! ```sh
//! cargo test --release --test integration federation_bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Two Axons in this process (A local, B remote), on a durable PostgreSQL cluster of the harness's
//! own (fsync and synchronous_commit on, as a server runs; the tests' throwaway cluster has them
//! off), federating over TLS on loopback, on a two-worker runtime. `FED_BENCH_SCALE=n` multiplies
//! the sample counts.

use std::time::{Duration, Instant};

use axon::postgres::Cluster;
use ruma::api::federation::transactions::send_transaction_message::v1 as send;
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedServerName, RoomVersionId};
use serde_json::json;
use serde_json::value::RawValue;
use sqlx::{Connection, PgConnection, PgPool};

use crate::common::{TestApp, User, enc, spawn_federating_on};

/// A durable cluster, stopped when dropped.
struct Postgres {
    cluster: Cluster,
    _dir: tempfile::TempDir,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
    }
}

async fn durable_cluster() -> Postgres {
    let dir = tempfile::Builder::new()
        .prefix("axon-fedbench-")
        .tempdir_in("/tmp")
        .unwrap();
    let cluster = Cluster::init(dir.path()).unwrap();
    cluster.start().unwrap();
    Postgres { cluster, _dir: dir }
}

/// A migrated database `name` on `pg`, and a pool over it as the server opens one (plans made per
/// execution: a generic plan cached while a table was empty would scan it whole ever after).
async fn database(pg: &Postgres, name: &str) -> PgPool {
    let mut conn = None;
    for _ in 0..300 {
        match PgConnection::connect_with(&pg.cluster.connect_options("postgres")).await {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn.expect("PostgreSQL started"))
        .await
        .unwrap();
    let options = pg
        .cluster
        .connect_options(name)
        .options([("plan_cache_mode", "auto")]);
    let pool = axon::store::pool::options(16, Duration::from_secs(5))
        .connect_with(axon::store::pool::connect_options(options))
        .await
        .unwrap();
    axon::server::MIGRATOR.run(&pool).await.unwrap();
    pool
}

/// A and B on their own databases of a durable cluster.
async fn two_servers() -> (Postgres, TestApp, TestApp) {
    let pg = durable_cluster().await;
    let a = spawn_federating_on("a".into(), database(&pg, "a").await, |_| {}).await;
    let b = spawn_federating_on("b".into(), database(&pg, "b").await, |_| {}).await;
    (pg, a, b)
}

fn scale() -> usize {
    std::env::var("FED_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn name(app: &TestApp) -> OwnedServerName {
    OwnedServerName::try_from(app.state.server_name.as_str()).unwrap()
}

async fn create_room(alice: &User) -> String {
    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"preset": "public_chat"}),
        )
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `user` (of another server) joins `room_id` through `a`.
async fn join_through(a: &TestApp, user: &User, room_id: &str) {
    user.post(
        &format!(
            "/_matrix/client/v3/join/{}?server_name={}",
            enc(room_id),
            enc(a.state.server_name.as_str())
        ),
        json!({}),
    )
    .await
    .ok();
}

async fn send_message(user: &User, room_id: &str, txn: &str, body: &str) {
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

/// The value at quantile `q` of `samples` (sorted here).
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `room_id`'s state as `alice` sees it: (type, state key) → event ID.
async fn state_ids(
    alice: &User,
    room_id: &str,
) -> std::collections::HashMap<(String, String), String> {
    let state = alice
        .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room_id)))
        .await
        .ok();
    state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["state_key"].as_str().unwrap().to_owned(),
                ),
                e["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `n` transactions of 50 messages from `carol` (of `b`) into `room_id`, chained one after the
/// other and signed by `b`.
async fn transactions(
    alice: &User,
    b: &TestApp,
    carol: &User,
    room_id: &str,
    n: usize,
) -> Vec<send::Request> {
    let state = state_ids(alice, room_id).await;
    let version = "12";
    let rules = RoomVersionId::try_from(version).unwrap().rules().unwrap();
    let auth = vec![
        state[&("m.room.power_levels".to_owned(), String::new())].clone(),
        state[&("m.room.member".to_owned(), carol.user_id.clone())].clone(),
    ];
    let mut prev = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1",
            enc(room_id)
        ))
        .await
        .ok()["chunk"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut out = Vec::with_capacity(n);
    let mut depth = 1000;
    for t in 0..n {
        let mut request = send::Request::new(
            format!("bench{t}").into(),
            name(b),
            MilliSecondsSinceUnixEpoch::now(),
        );
        for i in 0..50 {
            depth += 1;
            let event = json!({
                "auth_events": auth,
                "prev_events": [prev],
                "content": {"msgtype": "m.text", "body": format!("inbound {t}/{i}")},
                "depth": depth,
                "origin_server_ts": axon::store::now_ms(),
                "room_id": room_id,
                "sender": carol.user_id,
                "type": "m.room.message",
            });
            let mut object: CanonicalJsonObject = serde_json::from_value(event).unwrap();
            ruma::signatures::hash_and_sign_event(
                b.state.server_name.as_str(),
                &b.state.signing_key,
                &mut object,
                &rules.redaction,
            )
            .unwrap();
            prev = format!(
                "${}",
                ruma::signatures::reference_hash(&object, &rules).unwrap()
            );
            request.pdus.push(
                RawValue::from_string(CanonicalJsonValue::Object(object).to_string()).unwrap(),
            );
        }
        out.push(request);
    }
    out
}

/// Inbound: a peer sends 50-PDU transactions into one room, one at a time (as a sender does: one
/// in flight per destination); every PDU's signatures, hashes and authorization are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it in a release build (see the file's doc)"]
async fn inbound_pdus_per_second() {
    let (_pg, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice).await;
    join_through(&a, &carol, &room_id).await;
    let count = 40 * scale();
    let mut all = transactions(&alice, &b, &carol, &room_id, count + 2).await;
    // Warm-up (keys fetched and cached, connections open), not timed.
    for request in all.drain(..2) {
        b.state.federation.send(&name(&a), request).await.unwrap();
    }
    let started = Instant::now();
    let mut refused = 0;
    for request in all {
        let answer = b.state.federation.send(&name(&a), request).await.unwrap();
        refused += answer.pdus.values().filter(|r| r.is_err()).count();
    }
    let elapsed = started.elapsed();
    let pdus = count * 50;
    println!(
        "inbound: {pdus} PDUs in {count} transactions of 50 in {:.2} s: {:.0} PDUs/s ({refused} refused)",
        elapsed.as_secs_f64(),
        pdus as f64 / elapsed.as_secs_f64()
    );
}

/// Outbound: from the acknowledgement of alice's send on A to the event in carol's /sync long
/// poll on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it in a release build (see the file's doc)"]
async fn outbound_send_to_remote_sync() {
    let (_pg, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let room_id = create_room(&alice).await;
    join_through(&a, &carol, &room_id).await;
    let filter = enc(r#"{"room":{"timeline":{"limit":5}},"presence":{"not_types":["*"]}}"#);
    let mut since = carol
        .get(&format!("/_matrix/client/v3/sync?filter={filter}"))
        .await
        .ok()["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let n = 200 * scale();
    let mut from_ack = Vec::with_capacity(n);
    let mut from_start = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let body = format!("outbound {i}");
        let poll = {
            let carol = carol.clone();
            let room_id = room_id.clone();
            let body = body.clone();
            let filter = filter.clone();
            let mut since = since.clone();
            tokio::spawn(async move {
                loop {
                    let sync = carol
                        .get(&format!(
                            "/_matrix/client/v3/sync?filter={filter}&timeout=10000&since={since}"
                        ))
                        .await
                        .ok();
                    let arrived = Instant::now();
                    since = sync["next_batch"].as_str().unwrap().to_owned();
                    let events = &sync["rooms"]["join"][&room_id]["timeline"]["events"];
                    if events
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| e["content"]["body"] == body.as_str())
                    {
                        return (arrived, since);
                    }
                }
            })
        };
        // The poll is waiting before the send starts.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let start = Instant::now();
        send_message(&alice, &room_id, &format!("o{i}"), &body).await;
        let acked = Instant::now();
        let (arrived, next) = poll.await.unwrap();
        since = next;
        if i >= 10 {
            from_ack.push(arrived.saturating_duration_since(acked));
            from_start.push(arrived.saturating_duration_since(start));
        }
    }
    println!(
        "outbound: send ack → remote /sync, {n} messages: p50 {}, p90 {}, p99 {}, max {}; from send start p50 {}, p99 {}",
        ms(quantile(&mut from_ack, 0.5)),
        ms(quantile(&mut from_ack, 0.9)),
        ms(quantile(&mut from_ack, 0.99)),
        ms(quantile(&mut from_ack, 1.0)),
        ms(quantile(&mut from_start, 0.5)),
        ms(quantile(&mut from_start, 0.99)),
    );
}

/// Local sends into a room with a remote member against one without: latency one at a time, and
/// throughput with 8 concurrent senders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it in a release build (see the file's doc)"]
async fn local_sends_with_and_without_a_remote_server() {
    let (_pg, a, mut b) = two_servers().await;
    let alice = a.register("alice").await;
    let carol = b.register("carol").await;
    let local_room = create_room(&alice).await;
    let shared_room = create_room(&alice).await;
    join_through(&a, &carol, &shared_room).await;
    let senders: Vec<User> = {
        let mut users = Vec::new();
        for i in 0..8 {
            let user = a.register(&format!("sender{i}")).await;
            for room in [&local_room, &shared_room] {
                user.post(&format!("/_matrix/client/v3/join/{}", enc(room)), json!({}))
                    .await
                    .ok();
            }
            users.push(user);
        }
        users
    };
    let n = 500 * scale();
    // Rounds 0 and 1 with B up (B's receiving shares this box's two cores and disk with A), then
    // round 2 with B's listener down: A's sends then pay only for queueing (the outbox rows in the
    // batch's statement), which is what the send path itself costs.
    for round in 0..3 {
        if round == 2 {
            b.fed.as_mut().expect("B federates").stop().await;
        }
        for (label, room) in [
            ("no remote server", &local_room),
            (
                if round == 2 {
                    "with a remote server that is down"
                } else {
                    "with a remote server"
                },
                &shared_room,
            ),
        ] {
            let mut latencies = Vec::with_capacity(n);
            for i in 0..n {
                let started = Instant::now();
                send_message(
                    &alice,
                    room,
                    &format!("l{round}-{label}-{i}"),
                    "one at a time",
                )
                .await;
                latencies.push(started.elapsed());
            }
            let started = Instant::now();
            let per_sender = n / 4;
            let mut tasks = Vec::new();
            for (s, user) in senders.iter().enumerate() {
                let user = user.clone();
                let room = room.clone();
                let label = label.to_owned();
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(per_sender);
                    for i in 0..per_sender {
                        let started = Instant::now();
                        send_message(
                            &user,
                            &room,
                            &format!("c{round}-{label}-{s}-{i}"),
                            "concurrent",
                        )
                        .await;
                        latencies.push(started.elapsed());
                    }
                    latencies
                }));
            }
            let mut concurrent = Vec::new();
            for task in tasks {
                concurrent.extend(task.await.unwrap());
            }
            let elapsed = started.elapsed();
            if round == 0 {
                continue;
            }
            println!(
                "local send, {label}: one at a time p50 {}, p99 {}; 8 senders {:.0} msg/s, p50 {}, p99 {}",
                ms(quantile(&mut latencies, 0.5)),
                ms(quantile(&mut latencies, 0.99)),
                concurrent.len() as f64 / elapsed.as_secs_f64(),
                ms(quantile(&mut concurrent, 0.5)),
                ms(quantile(&mut concurrent, 0.99)),
            );
        }
    }
    // What waits for B, which is down: the round's shared-room messages.
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM federation_outbox")
        .fetch_one(&a.db)
        .await
        .unwrap();
    println!("outbox left after the run (B down): {queued}");
}

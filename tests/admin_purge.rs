//! Purging history (the admin API's purge_history) and message retention (`m.room.retention`).

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_api::admin;
use crate::common::*;
use crate::messaging::send_ok;
use crate::rooms::{create_room, join};

const A: &str = "/_synapse/admin";

async fn purge_done(root: &User, purge_id: &str) -> Value {
    for _ in 0..100 {
        let v = root
            .get(&format!("{A}/v1/purge_history_status/{purge_id}"))
            .await
            .ok();
        if v["status"] != "active" {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the purge did not finish");
}

async fn event_status(user: &User, room: &str, event_id: &str) -> u16 {
    user.get(&format!("/rooms/{}/event/{}", enc(room), enc(event_id)))
        .await
        .status
        .as_u16()
}

async fn bodies(user: &User, room: &str) -> Vec<String> {
    let v = user
        .get(&format!("/rooms/{}/messages?dir=b&limit=100", enc(room)))
        .await
        .ok();
    v["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn purge_history_endpoints_refuse_non_admins() {
    let app = spawn_app().await;
    let bob = app.register("bob").await;
    let r = enc("!r:test.local");
    for (method, path) in [
        (Method::POST, format!("{A}/v1/purge_history/{r}")),
        (
            Method::POST,
            format!("{A}/v1/purge_history/{r}/{}", enc("$e")),
        ),
        (Method::GET, format!("{A}/v1/purge_history_status/x")),
    ] {
        bob.request(method.clone(), &path, Some(json!({})))
            .await
            .expect_err(403, "M_FORBIDDEN");
        let r = app.request(method, &path, None, Some(json!({}))).await;
        assert_eq!(r.status, 401);
    }
}

#[tokio::test]
async fn purging_up_to_an_event_deletes_older_messages_only() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "Kept"})).await;
    join(&bob, &room).await;
    let old = send_ok(&alice, &room, "old").await;
    let cut = send_ok(&alice, &room, "cut").await;
    let new = send_ok(&bob, &room, "new").await;
    let sync = bob.get("/sync").await.ok();
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    // Local events are kept unless delete_local_events says otherwise (as Synapse).
    let path = format!("{A}/v1/purge_history/{}", enc(&room));
    let v = root
        .post(&path, json!({"purge_up_to_event_id": cut}))
        .await
        .ok();
    assert_eq!(
        purge_done(&root, v["purge_id"].as_str().unwrap()).await["status"],
        "complete"
    );
    assert_eq!(event_status(&bob, &room, &old).await, 200);
    let v = root
        .post(
            &path,
            json!({"purge_up_to_event_id": cut, "delete_local_events": true}),
        )
        .await
        .ok();
    assert_eq!(
        purge_done(&root, v["purge_id"].as_str().unwrap()).await["status"],
        "complete"
    );
    assert_eq!(event_status(&bob, &room, &old).await, 404);
    assert_eq!(event_status(&bob, &room, &cut).await, 200);
    assert_eq!(event_status(&bob, &room, &new).await, 200);
    assert_eq!(bodies(&bob, &room).await, ["new", "cut"]);
    // The room works on: its state (name, members) is intact, sync and sending go on.
    let name = bob
        .get(&format!("/rooms/{}/state/m.room.name/", enc(&room)))
        .await
        .ok();
    assert_eq!(name["name"], "Kept");
    bob.get(&format!("/sync?since={since}&timeout=0"))
        .await
        .ok();
    let initial = bob.get("/sync").await.ok();
    let joined = &initial["rooms"]["join"][&room];
    assert!(
        joined["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "new")
    );
    send_ok(&alice, &room, "after").await;
    let carol = app.register("carol").await;
    join(&carol, &room).await;
    assert_eq!(bodies(&carol, &room).await[0], "after");
}

#[tokio::test]
async fn purging_up_to_a_time_keeps_state_and_the_newest_event() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"name": "Room"})).await;
    let first = send_ok(&alice, &room, "first").await;
    let last = send_ok(&alice, &room, "last").await;
    let future = axon::store::now_ms() + 60_000;
    let v = root
        .post(
            &format!("{A}/v1/purge_history/{}", enc(&room)),
            json!({"purge_up_to_ts": future, "delete_local_events": true}),
        )
        .await
        .ok();
    assert_eq!(
        purge_done(&root, v["purge_id"].as_str().unwrap()).await["status"],
        "complete"
    );
    assert_eq!(event_status(&alice, &room, &first).await, 404);
    // The room's newest event stays: it is what new events follow.
    assert_eq!(event_status(&alice, &room, &last).await, 200);
    let state = alice
        .get(&format!("/rooms/{}/state", enc(&room)))
        .await
        .ok();
    assert!(
        state
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );
    send_ok(&alice, &room, "more").await;
    assert_eq!(bodies(&alice, &room).await, ["more", "last"]);
}

#[tokio::test]
async fn purge_history_refuses_bad_requests() {
    let app = spawn_app().await;
    let root = admin(&app, "root").await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let other = create_room(&alice, json!({})).await;
    let elsewhere = send_ok(&alice, &other, "x").await;
    let path = format!("{A}/v1/purge_history/{}", enc(&room));
    root.post(&path, json!({}))
        .await
        .expect_err(400, "M_BAD_JSON");
    root.post(&path, json!({"purge_up_to_event_id": elsewhere}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    root.post(
        &format!("{A}/v1/purge_history/{}", enc("!nope:test.local")),
        json!({"purge_up_to_ts": 1}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    root.post(&path, json!({"purge_up_to_ts": "soon"}))
        .await
        .expect_err(400, "M_BAD_JSON");
    root.get(&format!("{A}/v1/purge_history_status/nope"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

fn retention_config(default_max: Option<i64>) -> axon::Config {
    let mut config = test_config();
    config.retention.enabled = true;
    config.retention.default_policy.max_lifetime = default_max;
    // The job itself runs only when the test says.
    config.retention.purge_interval_ms = 3_600_000;
    config
}

#[tokio::test]
async fn retention_deletes_expired_messages_of_rooms_whose_policy_says_so() {
    let app = spawn_app_with(retention_config(None)).await;
    let alice = app.register("alice").await;
    let short = create_room(&alice, json!({"name": "Short"})).await;
    alice
        .put(
            &format!("/rooms/{}/state/m.room.retention/", enc(&short)),
            json!({"max_lifetime": 500}),
        )
        .await
        .ok();
    let forever = create_room(&alice, json!({})).await;
    let expiring = send_ok(&alice, &short, "expiring").await;
    let kept = send_ok(&alice, &forever, "kept").await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let fresh = send_ok(&alice, &short, "fresh").await;
    let purged = axon::service::admin::purge::run_retention(&app.state)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(event_status(&alice, &short, &expiring).await, 404);
    assert_eq!(event_status(&alice, &short, &fresh).await, 200);
    assert_eq!(event_status(&alice, &forever, &kept).await, 200);
    // Old state stays: the name and the policy itself are older than the lifetime.
    let name = alice
        .get(&format!("/rooms/{}/state/m.room.name/", enc(&short)))
        .await
        .ok();
    assert_eq!(name["name"], "Short");
    alice.get("/sync").await.ok();
}

#[tokio::test]
async fn retention_default_policy_applies_to_rooms_without_one() {
    let app = spawn_app_with(retention_config(Some(300))).await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let a = send_ok(&alice, &room, "a").await;
    send_ok(&alice, &room, "newest").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    axon::service::admin::purge::run_retention(&app.state)
        .await
        .unwrap();
    assert_eq!(event_status(&alice, &room, &a).await, 404);
}

#[tokio::test]
async fn retention_lifetimes_are_raised_to_the_allowed_minimum() {
    let mut config = retention_config(None);
    // Rooms may not keep events shorter than 2 minutes: this room's 1 ms is raised.
    config.retention.allowed_lifetime_min = Some(120_000);
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    alice
        .put(
            &format!("/rooms/{}/state/m.room.retention/", enc(&room)),
            json!({"max_lifetime": 1}),
        )
        .await
        .ok();
    let b = send_ok(&alice, &room, "b").await;
    send_ok(&alice, &room, "newest").await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    axon::service::admin::purge::run_retention(&app.state)
        .await
        .unwrap();
    assert_eq!(event_status(&alice, &room, &b).await, 200);
}

#[tokio::test]
async fn housekeeping_prunes_old_transaction_ids_jobs_and_unused_media_ids() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    send_ok(&alice, &room, "x").await;
    let day = 24 * 3600 * 1000;
    let old = axon::store::now_ms() - 2 * day;
    sqlx::query("UPDATE event_txns SET created_ts = $1")
        .bind(old)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO admin_jobs (job_id, kind, room_id, status, created_ts, updated_ts)
         VALUES ('old', 'purge_history', '!r:test.local', 'complete', $1, $1),
                ('dead', 'purge_history', '!r:test.local', 'active', $1, $1)",
    )
    .bind(old - 7 * day)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO media (media_id, uploader, created_ts, unused_expires_ts) VALUES ('unused', $1, $2, $2)",
    )
    .bind(&alice.user_id)
    .bind(old)
    .execute(&app.db)
    .await
    .unwrap();
    axon::service::maintenance::prune_once(&app.state).await;
    let count = |sql: &'static str| async {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    assert_eq!(count("SELECT count(*) FROM event_txns").await, 0);
    assert_eq!(
        count("SELECT count(*) FROM admin_jobs WHERE job_id = 'old'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM admin_jobs WHERE status = 'failed'").await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM media WHERE media_id = 'unused'").await,
        0
    );
}

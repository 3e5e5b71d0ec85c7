//! Running Axon (issue #21): Prometheus metrics on their own listener, request IDs.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

/// The value of the sample `name` whose labels include every one of `labels`, in Prometheus
/// text `text`; None when there is none.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

pub(crate) async fn scrape(metrics_url: &str) -> String {
    let response = reqwest::get(format!("{metrics_url}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

pub async fn metrics_app() -> (TestApp, String) {
    let mut config = test_config();
    config.metrics.enabled = true;
    let app = spawn_app_with(config).await;
    let url = serve_metrics(&app).await;
    (app, url)
}

/// A request is counted under its endpoint template, method and status, in a latency histogram
/// with buckets.
#[tokio::test]
async fn requests_are_counted_by_endpoint_template_method_and_status() {
    let (app, metrics) = metrics_app().await;
    let alice = app.register("alice").await;
    let labels = [
        ("endpoint", "/_matrix/client/v3/profile/{user_id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    let count = "axon_http_request_duration_seconds_count";
    let before = sample(&scrape(&metrics).await, count, &labels).unwrap_or(0.0);
    alice
        .get(&format!("/profile/{}", enc(&alice.user_id)))
        .await
        .ok();
    alice
        .get(&format!("/profile/{}", enc(&alice.user_id)))
        .await
        .ok();
    let text = scrape(&metrics).await;
    let after = sample(&text, count, &labels).expect("the endpoint's count");
    assert!(after >= before + 2.0, "{before} → {after}");
    // A histogram with buckets, not a summary; the raw path (with the user ID) is no label.
    assert!(
        sample(
            &text,
            "axon_http_request_duration_seconds_bucket",
            &[labels[0], ("le", "0.005")]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "axon_http_request_duration_seconds_bucket",
            &[labels[0], ("le", "+Inf")]
        )
        .is_some()
    );
    assert!(text.contains("# TYPE axon_http_request_duration_seconds histogram"));
    assert!(!text.contains("@alice"), "a raw path became a label");
    // Errors have their status.
    alice.get("/rooms/!nope:test.local/state").await;
    let text = scrape(&metrics).await;
    assert!(
        sample(
            &text,
            count,
            &[
                ("endpoint", "/_matrix/client/v3/rooms/{room_id}/state"),
                ("status", "403")
            ]
        )
        .or_else(|| sample(
            &text,
            count,
            &[
                ("endpoint", "/_matrix/client/v3/rooms/{room_id}/state"),
                ("status", "404")
            ]
        ))
        .is_some(),
        "{text}"
    );
}

/// /metrics is served on the metrics listener only: the client port does not know it.
#[tokio::test]
async fn metrics_are_not_on_the_client_port() {
    let (app, metrics) = metrics_app().await;
    let client = app.get("/metrics").await;
    assert_eq!(client.status, 404);
    let text = scrape(&metrics).await;
    assert!(text.contains("process_resident_memory_bytes"));
    // Metrics off (the default): no router to serve.
    let plain = spawn_app().await;
    assert!(plain.state.metrics_router().is_none());
}

/// The writer's batches, the database pools, the process and stored media are all reported.
#[tokio::test]
async fn writer_pool_process_and_media_figures_are_reported() {
    let (app, metrics) = metrics_app().await;
    let alice = app.register("alice").await;
    let upload = app
        .http
        .post(format!("{}/_matrix/media/v3/upload", app.base_url))
        .bearer_auth(&alice.token)
        .header("content-type", "application/octet-stream")
        .body(vec![7u8; 12_345])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    let before =
        sample(&scrape(&metrics).await, "axon_writer_batch_size_count", &[]).unwrap_or(0.0);
    let room = alice.post("/createRoom", json!({})).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = alice
        .put(
            &format!("/rooms/{}/send/m.room.message/t1", enc(&room)),
            json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    sent.ok();
    let text = scrape(&metrics).await;
    let after = sample(&text, "axon_writer_batch_size_count", &[]).unwrap();
    assert!(after >= before + 2.0, "{before} → {after}");
    assert!(
        sample(&text, "axon_writer_batch_size_bucket", &[("le", "256")]).is_some(),
        "{text}"
    );
    assert!(sample(&text, "axon_writer_commit_duration_seconds_count", &[]).unwrap() >= 2.0);
    assert!(
        sample(
            &text,
            "axon_db_pool_acquire_duration_seconds_count",
            &[("pool", "writer")]
        )
        .is_some()
    );
    assert!(sample(&text, "axon_db_pool_connections", &[("pool", "requests")]).unwrap() >= 1.0);
    assert!(
        sample(
            &text,
            "axon_db_pool_idle_connections",
            &[("pool", "writer")]
        )
        .is_some()
    );
    assert!(
        sample(&text, "axon_media_stored_bytes", &[]).unwrap() >= 12_345.0,
        "{text}"
    );
    assert!(sample(&text, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(sample(&text, "process_cpu_seconds_total", &[]).unwrap() > 0.0);
    assert!(sample(&text, "process_open_fds", &[]).unwrap() > 3.0);
}

/// A waiting long poll is counted while it waits; its wake-up and where its answer came from
/// (memory) are counted.
#[tokio::test]
async fn long_polls_waiting_wakeups_and_answers_from_memory_are_counted() {
    let (app, metrics) = metrics_app().await;
    let alice = app.register("alice").await;
    let room = alice.post("/createRoom", json!({})).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = alice.get("/sync?timeout=0").await.ok()["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = scrape(&metrics).await;
    let wakeups = sample(&text, "axon_sync_wakeups_total", &[]).unwrap_or(0.0);
    let from_memory =
        sample(&text, "axon_sync_answers_total", &[("source", "memory")]).unwrap_or(0.0);
    assert!(sample(&text, "axon_sync_answers_total", &[("source", "database")]).unwrap() >= 1.0);
    let poller = alice.clone();
    let poll = tokio::spawn(async move {
        poller
            .get(&format!("/sync?timeout=10000&since={since}"))
            .await
    });
    // Waiting: the gauge shows it.
    let mut seen_waiting = false;
    for _ in 0..100 {
        if sample(&scrape(&metrics).await, "axon_sync_long_polls_waiting", &[]).unwrap_or(0.0)
            >= 1.0
        {
            seen_waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen_waiting, "the waiting long poll was not counted");
    alice
        .put(
            &format!("/rooms/{}/send/m.room.message/t1", enc(&room)),
            json!({"msgtype": "m.text", "body": "wake"}),
        )
        .await
        .ok();
    let answer = poll.await.unwrap().ok();
    assert!(answer["rooms"]["join"][&room].is_object(), "{answer}");
    let text = scrape(&metrics).await;
    assert!(sample(&text, "axon_sync_wakeups_total", &[]).unwrap() > wakeups);
    assert!(
        sample(&text, "axon_sync_answers_total", &[("source", "memory")]).unwrap() > from_memory
    );
}

/// Every response carries an `X-Request-Id`: a new one each time, or the one a proxy sent if it
/// is plain enough to log.
#[tokio::test]
async fn every_response_has_a_request_id() {
    let app = spawn_app().await;
    let a = app.get("/_matrix/client/versions").await;
    let b = app.get("/_matrix/client/versions").await;
    let id = |r: &Resp| {
        r.headers
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (a, b) = (id(&a).expect("a request ID"), id(&b).expect("a request ID"));
    assert_ne!(a, b);
    // Errors too.
    let missing = app.get("/_matrix/client/v3/nothing-here").await;
    assert_eq!(missing.status, 404);
    assert!(id(&missing).is_some());
    // A proxy's ID is kept; an unusable one is replaced.
    let with = |value: &'static str| {
        app.http
            .request(
                Method::GET,
                format!("{}/_matrix/client/versions", app.base_url),
            )
            .header("x-request-id", value)
            .send()
    };
    let kept = with("nginx-5f1c2e").await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "nginx-5f1c2e");
    let replaced = with("a b \" access_token=x").await.unwrap();
    let value = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(!value.contains(' ') && !value.is_empty(), "{value}");
}

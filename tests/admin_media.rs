//! The media part of Synapse's admin API: a user's media, deletion, cleanup by age, quarantine.

use serde_json::{Value, json};

use crate::admin_api::admin;
use crate::common::*;

const A: &str = "/_synapse/admin";

async fn media_app() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.media.path = Some(dir.path().to_path_buf());
    (spawn_app_with(config).await, dir)
}

/// Uploads `bytes` and returns the media ID.
async fn upload(user: &User, bytes: &[u8], name: &str) -> String {
    let url = format!(
        "{}/_matrix/media/v3/upload?filename={name}",
        user.app.base_url
    );
    let r = user
        .app
        .http
        .post(url)
        .bearer_auth(&user.token)
        .header("content-type", "text/plain")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let uri = v["content_uri"].as_str().unwrap();
    uri.rsplit('/').next().unwrap().to_owned()
}

async fn download_status(user: &User, media_id: &str) -> u16 {
    let url = format!(
        "{}/_matrix/client/v1/media/download/test.local/{media_id}",
        user.app.base_url
    );
    let r = user
        .app
        .http
        .get(url)
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// How many files the media store holds.
fn files(dir: &std::path::Path) -> usize {
    walk(&dir.join("sha256"))
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() { walk(&path) } else { 1 }
        })
        .sum()
}

#[tokio::test]
async fn media_admin_endpoints_refuse_non_admins() {
    let (app, _dir) = media_app().await;
    let bob = app.register("bob").await;
    for (method, path) in [
        (
            reqwest::Method::GET,
            format!("{A}/v1/users/{}/media", enc(&bob.user_id)),
        ),
        (
            reqwest::Method::DELETE,
            format!("{A}/v1/users/{}/media", enc(&bob.user_id)),
        ),
        (
            reqwest::Method::DELETE,
            format!("{A}/v1/media/test.local/abc"),
        ),
        (
            reqwest::Method::POST,
            format!("{A}/v1/media/delete?before_ts=1"),
        ),
        (
            reqwest::Method::POST,
            format!("{A}/v1/media/test.local/delete?before_ts=1"),
        ),
        (
            reqwest::Method::POST,
            format!("{A}/v1/media/quarantine/test.local/abc"),
        ),
        (
            reqwest::Method::POST,
            format!("{A}/v1/media/unquarantine/test.local/abc"),
        ),
    ] {
        let r = bob.request(method.clone(), &path, Some(json!({}))).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert_eq!(r.errcode(), "M_FORBIDDEN");
        let r = app
            .request(method.clone(), &path, None, Some(json!({})))
            .await;
        assert_eq!(r.status, 401, "{method} {path}");
    }
}

#[tokio::test]
async fn a_users_media_is_listed_newest_first() {
    let (app, _dir) = media_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let first = upload(&bob, b"one", "a.txt").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = upload(&bob, b"second", "b.txt").await;
    let path = format!("{A}/v1/users/{}/media", enc(&bob.user_id));
    let v = root.get(&path).await.ok();
    assert_eq!(v["total"], 2);
    assert_eq!(v["media"][0]["media_id"], second.as_str());
    assert_eq!(v["media"][0]["media_length"], 6);
    assert_eq!(v["media"][0]["media_type"], "text/plain");
    assert_eq!(v["media"][0]["upload_name"], "b.txt");
    assert_eq!(v["media"][0]["quarantined_by"], Value::Null);
    assert_eq!(v["media"][1]["media_id"], first.as_str());
    let v = root
        .get(&format!("{path}?order_by=media_length&limit=1"))
        .await
        .ok();
    assert_eq!(v["media"][0]["media_id"], first.as_str());
    assert_eq!(v["next_token"], 1);
    root.get(&format!("{path}?order_by=bogus"))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    root.get(&format!("{A}/v1/users/{}/media", enc("@nobody:test.local")))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn deleting_media_by_id_removes_row_and_file() {
    let (app, dir) = media_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let id = upload(&bob, b"delete me", "x.txt").await;
    let kept = upload(&bob, b"keep me", "y.txt").await;
    assert_eq!(files(dir.path()), 2);
    let v = root
        .delete(&format!("{A}/v1/media/test.local/{id}"))
        .await
        .ok();
    assert_eq!(v, json!({"deleted_media": [id], "total": 1}));
    assert_eq!(download_status(&bob, &id).await, 404);
    assert_eq!(download_status(&bob, &kept).await, 200);
    assert_eq!(files(dir.path()), 1);
    root.delete(&format!("{A}/v1/media/test.local/{id}"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    root.delete(&format!("{A}/v1/media/elsewhere.org/{id}"))
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn a_file_shared_by_two_uploads_stays_until_both_are_deleted() {
    let (app, dir) = media_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let a = upload(&bob, b"same bytes", "a.txt").await;
    let b = upload(&bob, b"same bytes", "b.txt").await;
    root.delete(&format!("{A}/v1/media/test.local/{a}"))
        .await
        .ok();
    assert_eq!(download_status(&bob, &b).await, 200);
    assert_eq!(files(dir.path()), 1);
    root.delete(&format!("{A}/v1/media/test.local/{b}"))
        .await
        .ok();
    assert_eq!(files(dir.path()), 0);
}

#[tokio::test]
async fn media_cleanup_by_age_and_size_keeps_avatars() {
    let (app, _dir) = media_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let small = upload(&bob, b"s", "s.txt").await;
    let big = upload(&bob, b"a much bigger file", "b.txt").await;
    let avatar = upload(&bob, b"my face, big enough", "f.txt").await;
    bob.put(
        &format!("/profile/{}/avatar_url", enc(&bob.user_id)),
        json!({"avatar_url": format!("mxc://test.local/{avatar}")}),
    )
    .await
    .ok();
    let now = axon::store::now_ms() + 1000;
    root.post(&format!("{A}/v1/media/delete"), json!({}))
        .await
        .expect_err(400, "M_MISSING_PARAM");
    // Nothing is older than an hour ago.
    let v = root
        .post(
            &format!("{A}/v1/media/delete?before_ts={}", now - 3_600_000),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(v["total"], 0);
    let v = root
        .post(
            &format!("{A}/v1/media/delete?before_ts={now}&size_gt=5"),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(v, json!({"deleted_media": [big], "total": 1}));
    assert_eq!(download_status(&bob, &small).await, 200);
    assert_eq!(download_status(&bob, &avatar).await, 200);
    let v = root
        .post(
            &format!("{A}/v1/media/test.local/delete?before_ts={now}&keep_profiles=false"),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(v["total"], 2);
    assert_eq!(download_status(&bob, &avatar).await, 404);
}

#[tokio::test]
async fn quarantined_media_is_not_served_until_released() {
    let (app, _dir) = media_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let id = upload(&bob, b"bad", "bad.txt").await;
    let q = format!("{A}/v1/media/quarantine/test.local/{id}");
    assert_eq!(root.post(&q, json!({})).await.ok(), json!({}));
    assert_eq!(download_status(&bob, &id).await, 404);
    let v = root
        .get(&format!("{A}/v1/users/{}/media", enc(&bob.user_id)))
        .await
        .ok();
    assert_eq!(v["media"][0]["quarantined_by"], "@root:test.local");
    root.post(
        &format!("{A}/v1/media/unquarantine/test.local/{id}"),
        json!({}),
    )
    .await
    .ok();
    assert_eq!(download_status(&bob, &id).await, 200);
    root.post(
        &format!("{A}/v1/media/quarantine/test.local/nope"),
        json!({}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn deleting_a_users_media() {
    let (app, _dir) = media_app().await;
    let root = admin(&app, "root").await;
    let bob = app.register("bob").await;
    let a = upload(&bob, b"a", "a.txt").await;
    let v = root
        .delete(&format!("{A}/v1/users/{}/media", enc(&bob.user_id)))
        .await
        .ok();
    assert_eq!(v, json!({"deleted_media": [a], "total": 1}));
    assert_eq!(download_status(&bob, &a).await, 404);
}

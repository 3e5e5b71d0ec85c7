//! Reporting content: events, rooms and users, kept for the admins and listed by `axon report list`.

use serde_json::{Value, json};

use crate::accounts::{axon_cli, cli_config};
use crate::common::*;
use crate::rooms::{create_room, join};

/// The stored reports, oldest first: (kind, reporter, room, event, user, reason).
type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn stored(app: &TestApp) -> Vec<Row> {
    sqlx::query_as(
        "SELECT kind, reporter, room_id, event_id, target_user_id, reason FROM reports ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn message(user: &User, room: &str, txn: &str) -> String {
    user.put(
        &format!("/rooms/{}/send/m.room.message/{txn}", enc(room)),
        json!({"msgtype": "m.text", "body": "bad words"}),
    )
    .await
    .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[tokio::test]
async fn reporting_an_event_is_stored_for_members_who_can_see_it() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let event = message(&alice, &room, "t1").await;
    let path = format!("/rooms/{}/report/{}", enc(&room), enc(&event));
    assert_eq!(
        bob.post(&path, json!({"reason": "rude", "score": -100}))
            .await
            .ok(),
        json!({})
    );
    // `reason` may be left out.
    bob.post(&path, json!({})).await.ok();
    assert_eq!(
        stored(&app).await,
        vec![
            (
                "event".into(),
                bob.user_id.clone(),
                s(&room),
                s(&event),
                None,
                s("rude")
            ),
            (
                "event".into(),
                bob.user_id.clone(),
                s(&room),
                s(&event),
                None,
                None
            ),
        ]
    );
    let content: Value = sqlx::query_scalar("SELECT content FROM reports ORDER BY id LIMIT 1")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(content, json!({"reason": "rude", "score": -100}));

    // Not joined (the room is world-visible history or not): 404.
    carol
        .post(&path, json!({"reason": "x"}))
        .await
        .expect_err(404, "M_NOT_FOUND");
    // An unknown event, or one of another room.
    let other = create_room(&bob, json!({})).await;
    let elsewhere = message(&bob, &other, "t2").await;
    bob.post(
        &format!("/rooms/{}/report/{}", enc(&room), enc(&elsewhere)),
        json!({"reason": "x"}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    bob.post(
        &format!("/rooms/{}/report/%24nope", enc(&room)),
        json!({"reason": "x"}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    // Bad bodies.
    bob.post(&path, json!({"reason": 5}))
        .await
        .expect_err(400, "M_BAD_JSON");
    bob.post(&path, json!({"score": "high"}))
        .await
        .expect_err(400, "M_BAD_JSON");
    // Bob may still see the event after leaving, but only members report.
    bob.post(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await
        .ok();
    bob.get(&format!("/rooms/{}/event/{}", enc(&room), enc(&event)))
        .await
        .ok();
    bob.post(&path, json!({"reason": "x"}))
        .await
        .expect_err(404, "M_NOT_FOUND");
    assert_eq!(stored(&app).await.len(), 2);
}

#[tokio::test]
async fn a_redacted_event_cannot_be_reported() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    let event = message(&alice, &room, "t1").await;
    alice
        .put(
            &format!("/rooms/{}/redact/{}/r1", enc(&room), enc(&event)),
            json!({}),
        )
        .await
        .ok();
    bob.post(
        &format!("/rooms/{}/report/{}", enc(&room), enc(&event)),
        json!({"reason": "gone"}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    assert!(stored(&app).await.is_empty());
}

#[tokio::test]
async fn a_room_can_be_reported_by_anyone() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({})).await;
    let path = format!("/rooms/{}/report", enc(&room));
    // Bob is not in the room; an empty reason is a reason.
    assert_eq!(bob.post(&path, json!({"reason": ""})).await.ok(), json!({}));
    assert_eq!(
        stored(&app).await,
        vec![(
            "room".into(),
            bob.user_id.clone(),
            s(&room),
            None,
            None,
            s("")
        )]
    );
    bob.post(&path, json!({}))
        .await
        .expect_err(400, "M_BAD_JSON");
    bob.post(&path, json!({"reason": ["x"]}))
        .await
        .expect_err(400, "M_BAD_JSON");
    bob.post("/rooms/!unknown:test.local/report", json!({"reason": "x"}))
        .await
        .expect_err(404, "M_NOT_FOUND");
    assert_eq!(stored(&app).await.len(), 1);
}

#[tokio::test]
async fn a_user_can_be_reported_and_unknown_users_are_not_revealed() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let path = format!("/users/{}/report", enc(&bob.user_id));
    assert_eq!(
        alice.post(&path, json!({"reason": "spam"})).await.ok(),
        json!({})
    );
    // Unknown and remote users: 200, nothing kept.
    alice
        .post("/users/%40ghost:test.local/report", json!({"reason": "x"}))
        .await
        .ok();
    alice
        .post(
            "/users/%40someone:elsewhere.org/report",
            json!({"reason": "x"}),
        )
        .await
        .ok();
    assert_eq!(
        stored(&app).await,
        vec![(
            "user".into(),
            alice.user_id.clone(),
            None,
            None,
            s(&bob.user_id),
            s("spam")
        )]
    );
    alice
        .post("/users/not-a-user/report", json!({"reason": "x"}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .post(&path, json!({"reason": "x".repeat(1001)}))
        .await
        .expect_err(400, "M_BAD_JSON");
    alice
        .post(&path, json!({}))
        .await
        .expect_err(400, "M_BAD_JSON");
    assert_eq!(stored(&app).await.len(), 1);
}

#[tokio::test]
async fn cli_lists_reports_newest_first() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&alice, json!({})).await;
    alice
        .post(
            &format!("/rooms/{}/report", enc(&room)),
            json!({"reason": "first\tline\nsecond"}),
        )
        .await
        .ok();
    alice
        .post(
            &format!("/users/{}/report", enc(&bob.user_id)),
            json!({"reason": "spam"}),
        )
        .await
        .ok();
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(&app, dir.path());
    let (ok, out, err) = axon_cli(&config, &["report", "list"], "").await;
    assert!(ok, "{out}{err}");
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0][2..],
        ["user", &alice.user_id, &bob.user_id, "spam"]
    );
    assert_eq!(
        lines[1][2..],
        ["room", &alice.user_id, &room, "first\\tline\\nsecond"]
    );
    let (ok, out, err) = axon_cli(&config, &["report", "list", "--limit", "1"], "").await;
    assert!(ok, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

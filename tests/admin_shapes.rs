//! The admin API's answers have the shapes the reference Synapse gave for the same steps: the
//! steps of `tests/synapse_admin_shapes/compare.py`, replayed here against Axon and checked against
//! the shapes that script recorded from Synapse (`synapse.json`), so a drift shows without Synapse.
//! A shape is the status, the errcode and the JSON's keys and value types (see compare.py; a null
//! on either side matches any type, and `content`, `signatures`, `hashes` are not compared).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::admin_api::admin;
use crate::common::*;

const FIXTURE: &str = include_str!("synapse_admin_shapes/synapse.json");
const A: &str = "/_synapse/admin";
const OPAQUE: [&str; 4] = ["content", "signatures", "hashes", "prev_content"];
const PASSWORD: &str = "correct horse battery staple";

fn shape(value: &Value) -> Value {
    match value {
        Value::Bool(_) => json!("bool"),
        Value::Number(n) if n.is_f64() => json!("float"),
        Value::Number(_) => json!("int"),
        Value::String(_) => json!("string"),
        Value::Null => json!("null"),
        Value::Array(items) => match items.iter().map(shape).reduce(merge) {
            Some(merged) => json!([merged]),
            None => json!([]),
        },
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let s = if OPAQUE.contains(&k.as_str()) {
                        json!("object")
                    } else {
                        shape(v)
                    };
                    (k.clone(), s)
                })
                .collect(),
        ),
    }
}

/// One shape for two items of a list: objects get the union of their keys.
fn merge(a: Value, b: Value) -> Value {
    match (a, b) {
        (a, b) if a == "null" => b,
        (a, b) if b == "null" => a,
        (Value::Object(mut a), Value::Object(b)) => {
            for (k, v) in b {
                let merged = match a.remove(&k) {
                    Some(old) => merge(old, v),
                    None => v,
                };
                a.insert(k, merged);
            }
            Value::Object(a)
        }
        (Value::Array(a), Value::Array(b)) => match (a.into_iter().next(), b.into_iter().next()) {
            (Some(x), Some(y)) => json!([merge(x, y)]),
            (Some(x), None) | (None, Some(x)) => json!([x]),
            (None, None) => json!([]),
        },
        (a, _) => a,
    }
}

/// Where Axon's shape departs from Synapse's.
fn differences(want: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    if want == "null" || got == "null" {
        return;
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for k in w.keys().filter(|k| !g.contains_key(*k)) {
                out.push(format!("{path}.{k}: missing (Synapse: {})", w[k]));
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{path}.{k}: not in Synapse's answer"));
            }
            for (k, wv) in w {
                if let Some(gv) = g.get(k) {
                    differences(wv, gv, &format!("{path}.{k}"), out);
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if let (Some(w), Some(g)) = (w.first(), g.first()) {
                differences(w, g, &format!("{path}[]"), out);
            }
        }
        _ if want != got => out.push(format!("{path}: {got}, Synapse {want}")),
        _ => {}
    }
}

/// The steps' answers, by step name.
#[derive(Default)]
struct Steps(BTreeMap<String, Value>);

impl Steps {
    fn record(&mut self, step: &str, r: &Resp) -> Value {
        let mut entry = Map::new();
        entry.insert("status".into(), json!(r.status.as_u16()));
        if r.status.as_u16() >= 400 {
            entry.insert("errcode".into(), r.body.get("errcode").cloned().into());
        }
        entry.insert("shape".into(), shape(&r.body));
        self.0.insert(step.to_owned(), Value::Object(entry));
        r.body.clone()
    }
}

async fn call(user: &User, method: Method, path: &str, body: Option<Value>) -> Resp {
    user.request(method, path, body).await
}

async fn login(app: &TestApp, user_id: &str, device_id: Option<&str>) -> User {
    let mut body = json!({"type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id}, "password": PASSWORD});
    if let Some(device) = device_id {
        body["device_id"] = json!(device);
    }
    let v = app
        .request(Method::POST, "/_matrix/client/v3/login", None, Some(body))
        .await
        .ok();
    User {
        app: AppHandle {
            base_url: app.base_url.clone(),
            http: app.http.clone(),
        },
        user_id: user_id.to_owned(),
        token: v["access_token"].as_str().unwrap().to_owned(),
        device_id: v["device_id"].as_str().unwrap().to_owned(),
    }
}

/// compare.py's steps for users and devices.
async fn user_steps(app: &TestApp, t: &User, s: &mut Steps) -> (String, String, String) {
    let alice = "@shapealice:test.local".to_owned();
    let bob = "@shapebob:test.local".to_owned();
    let carol = "@shapecarol:test.local".to_owned();
    let ghost = enc("@shapenobody:test.local");
    let (ea, eb, ec) = (enc(&alice), enc(&bob), enc(&carol));
    let r = call(t, Method::GET, &format!("{A}/v1/server_version"), None).await;
    s.record("server_version", &r);
    let r = app
        .request(Method::GET, &format!("{A}/v2/users"), None, None)
        .await;
    s.record("no_token", &r);
    let body = json!({"password": PASSWORD, "displayname": "Alice"});
    let r = t.put(&format!("{A}/v2/users/{ea}"), body).await;
    s.record("user_create", &r);
    let r = t
        .put(&format!("{A}/v2/users/{ea}"), json!({"displayname": "A."}))
        .await;
    s.record("user_modify", &r);
    let body = json!({"password": PASSWORD, "displayname": "Bob"});
    let r = t.put(&format!("{A}/v2/users/{eb}"), body).await;
    s.record("user_create_bob", &r);
    t.put(&format!("{A}/v2/users/{ec}"), json!({"password": PASSWORD}))
        .await;
    let bob_user = login(app, &bob, None).await;
    login(app, &alice, Some("ALICEDEV")).await;
    let r = bob_user.get(&format!("{A}/v2/users")).await;
    s.record("non_admin", &r);
    for (step, path) in [
        ("user_query", format!("{A}/v2/users/{ea}")),
        ("user_query_unknown", format!("{A}/v2/users/{ghost}")),
        (
            "user_query_remote",
            format!("{A}/v2/users/{}", enc("@x:elsewhere.example")),
        ),
        ("users_list", format!("{A}/v2/users?limit=1&name=shape")),
        (
            "users_list_last_page",
            format!("{A}/v2/users?from=2&limit=5&name=shape"),
        ),
        ("users_list_bad_dir", format!("{A}/v2/users?dir=x")),
        ("users_list_bad_limit", format!("{A}/v2/users?limit=-1")),
        (
            "users_list_bad_order",
            format!("{A}/v2/users?order_by=password"),
        ),
        ("whois", format!("{A}/v1/whois/{ea}")),
        ("devices", format!("{A}/v2/users/{ea}/devices")),
        ("device", format!("{A}/v2/users/{ea}/devices/ALICEDEV")),
        ("device_unknown", format!("{A}/v2/users/{ea}/devices/NOPE")),
    ] {
        let r = t.get(&path).await;
        s.record(step, &r);
    }
    let r = t
        .put(
            &format!("{A}/v2/users/{ea}/devices/ALICEDEV"),
            json!({"display_name": "phone"}),
        )
        .await;
    s.record("device_rename", &r);
    login(app, &alice, Some("SPARE1")).await;
    login(app, &alice, Some("SPARE2")).await;
    let r = t.delete(&format!("{A}/v2/users/{ea}/devices/SPARE1")).await;
    s.record("device_delete", &r);
    let r = t
        .post(
            &format!("{A}/v2/users/{ea}/delete_devices"),
            json!({"devices": ["SPARE2"]}),
        )
        .await;
    s.record("devices_delete", &r);
    (alice, bob, carol)
}

/// compare.py's steps for rooms and event reports; returns the room and its messages.
async fn room_steps(
    app: &TestApp,
    t: &User,
    s: &mut Steps,
    alice: &str,
    bob: &str,
) -> (String, Vec<String>) {
    let alice_user = login(app, alice, None).await;
    let bob_user = login(app, bob, None).await;
    let body = json!({"name": "Shapes", "topic": "t", "preset": "public_chat",
                      "room_alias_name": "shapes"});
    let room_id = alice_user.post("/createRoom", body).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = enc(&room_id);
    let body = json!({"name": "Shapes two"});
    alice_user.post("/createRoom", body).await.ok();
    bob_user.post(&format!("/join/{r}"), json!({})).await.ok();
    let mut event_ids = Vec::new();
    for i in 0..3 {
        let body = json!({"msgtype": "m.text", "body": format!("hello {i}")});
        let v = alice_user
            .put(&format!("/rooms/{r}/send/m.room.message/t{i}"), body)
            .await
            .ok();
        event_ids.push(v["event_id"].as_str().unwrap().to_owned());
    }
    let ghost = enc("@shapenobody:test.local");
    for (step, path) in [
        (
            "joined_rooms",
            format!("{A}/v1/users/{}/joined_rooms", enc(alice)),
        ),
        (
            "joined_rooms_unknown",
            format!("{A}/v1/users/{ghost}/joined_rooms"),
        ),
        (
            "rooms_list",
            format!("{A}/v1/rooms?limit=1&search_term=Shapes"),
        ),
        (
            "rooms_list_all",
            format!("{A}/v1/rooms?order_by=joined_members&dir=b"),
        ),
        (
            "rooms_list_bad_order",
            format!("{A}/v1/rooms?order_by=nonsense"),
        ),
        ("room_details", format!("{A}/v1/rooms/{r}")),
        (
            "room_details_unknown",
            format!("{A}/v1/rooms/{}", enc("!nope:test.local")),
        ),
        ("room_members", format!("{A}/v1/rooms/{r}/members")),
        ("room_state", format!("{A}/v1/rooms/{r}/state")),
    ] {
        let resp = t.get(&path).await;
        s.record(step, &resp);
    }
    let resp = t
        .post(
            &format!("{A}/v1/rooms/{r}/make_room_admin"),
            json!({"user_id": bob}),
        )
        .await;
    s.record("make_room_admin", &resp);
    let report = json!({"reason": "spam", "score": -100});
    bob_user
        .post(&format!("/rooms/{r}/report/{}", enc(&event_ids[0])), report)
        .await
        .ok();
    let resp = t
        .get(&format!("{A}/v1/event_reports?limit=1&room_id={r}"))
        .await;
    let reports = s.record("event_reports", &resp);
    let id = reports["event_reports"][0]["id"].as_i64().unwrap();
    for (step, path) in [
        ("event_report", format!("{A}/v1/event_reports/{id}")),
        (
            "event_report_unknown",
            format!("{A}/v1/event_reports/99999999"),
        ),
        ("event_report_bad_id", format!("{A}/v1/event_reports/abc")),
    ] {
        let resp = t.get(&path).await;
        s.record(step, &resp);
    }
    let resp = t.delete(&format!("{A}/v1/event_reports/{id}")).await;
    s.record("event_report_delete", &resp);
    (room_id, event_ids)
}

/// compare.py's steps for media and registration tokens.
async fn media_and_token_steps(app: &TestApp, t: &User, s: &mut Steps, alice: &str) {
    let alice_user = login(app, alice, None).await;
    let mut media_ids = Vec::new();
    for (name, bytes) in [("a.txt", &b"hello media"[..]), ("b.txt", b"more media")] {
        let path = format!("/_matrix/media/v3/upload?filename={name}");
        let v = app
            .raw(Method::POST, &path, Some(&alice_user.token), bytes.to_vec())
            .await
            .ok();
        let uri = v["content_uri"].as_str().unwrap();
        media_ids.push(uri.rsplit('/').next().unwrap().to_owned());
    }
    let media_id = &media_ids[0];
    let ea = enc(alice);
    let r = t.get(&format!("{A}/v1/users/{ea}/media?limit=1")).await;
    s.record("user_media", &r);
    let server = "test.local";
    for (step, path) in [
        (
            "media_quarantine",
            format!("{A}/v1/media/quarantine/{server}/{media_id}"),
        ),
        (
            "media_unquarantine",
            format!("{A}/v1/media/unquarantine/{server}/{media_id}"),
        ),
    ] {
        let r = t.post(&path, json!({})).await;
        s.record(step, &r);
    }
    let r = t.delete(&format!("{A}/v1/media/{server}/{media_id}")).await;
    s.record("media_delete", &r);
    let r = t
        .delete(&format!("{A}/v1/media/{server}/nosuchmedia"))
        .await;
    s.record("media_delete_unknown", &r);
    let day_ago = axon::store::now_ms() - 86_400_000;
    for (step, path) in [
        (
            "media_delete_old_1970",
            format!("{A}/v1/media/delete?before_ts=1000"),
        ),
        (
            "media_delete_old",
            format!("{A}/v1/media/delete?before_ts={day_ago}"),
        ),
        ("media_delete_old_no_ts", format!("{A}/v1/media/delete")),
    ] {
        let r = t.post(&path, json!({})).await;
        s.record(step, &r);
    }
    let r = t.delete(&format!("{A}/v1/users/{ea}/media")).await;
    s.record("user_media_delete", &r);

    let tokens = format!("{A}/v1/registration_tokens");
    let body = json!({"token": "shapetok", "uses_allowed": 3});
    let r = t.post(&format!("{tokens}/new"), body).await;
    s.record("token_new", &r);
    let r = t
        .post(&format!("{tokens}/new"), json!({"uses_allowed": "x"}))
        .await;
    s.record("token_new_bad", &r);
    let r = t.get(&tokens).await;
    s.record("token_list", &r);
    let r = t.get(&format!("{tokens}/shapetok")).await;
    s.record("token_get", &r);
    let body = json!({"expiry_time": 4_102_444_800_000_i64});
    let r = t.put(&format!("{tokens}/shapetok"), body).await;
    s.record("token_update", &r);
    let r = t.delete(&format!("{tokens}/shapetok")).await;
    s.record("token_delete", &r);
    let r = t.get(&format!("{tokens}/shapetok")).await;
    s.record("token_unknown", &r);
}

/// compare.py's last steps: notices (off), shadow ban, login as, purge, deletion, deactivation.
async fn closing_steps(t: &User, s: &mut Steps, users: (&str, &str, &str), room: (&str, &str)) {
    let (alice, bob, carol) = users;
    let (room_id, purge_to) = room;
    let notice = json!({"user_id": bob, "content": {"msgtype": "m.text", "body": "hi"}});
    let r = t
        .post(&format!("{A}/v1/send_server_notice"), notice.clone())
        .await;
    s.record("server_notice", &r);
    let r = t
        .put(&format!("{A}/v1/send_server_notice/shape"), notice)
        .await;
    s.record("server_notice_txn", &r);
    let ec = enc(carol);
    let r = t
        .post(&format!("{A}/v1/users/{ec}/shadow_ban"), json!({}))
        .await;
    s.record("shadow_ban", &r);
    let r = t.delete(&format!("{A}/v1/users/{ec}/shadow_ban")).await;
    s.record("shadow_ban_lift", &r);
    let r = t.post(&format!("{A}/v1/users/{ec}/login"), json!({})).await;
    s.record("login_as", &r);
    let ghost = enc("@shapenobody:test.local");
    let r = t
        .post(&format!("{A}/v1/users/{ghost}/login"), json!({}))
        .await;
    s.record("login_as_unknown", &r);
    let body = json!({"new_password": "another password", "logout_devices": false});
    let r = t.post(&format!("{A}/v1/reset_password/{ec}"), body).await;
    s.record("reset_password", &r);

    let r = enc(room_id);
    let resp = t
        .post(
            &format!("{A}/v1/purge_history/{r}"),
            json!({"purge_up_to_event_id": purge_to}),
        )
        .await;
    let purge = s.record("purge_history", &resp);
    let purge_id = purge["purge_id"].as_str().unwrap().to_owned();
    let status = format!("{A}/v1/purge_history_status/{purge_id}");
    wait_while(t, &status, &["active"]).await;
    let resp = t.get(&status).await;
    s.record("purge_status", &resp);
    let resp = t
        .get(&format!("{A}/v1/purge_history_status/nosuchpurge"))
        .await;
    s.record("purge_status_unknown", &resp);
    let resp = t
        .post(&format!("{A}/v1/purge_history/{r}"), json!({}))
        .await;
    s.record("purge_history_no_point", &resp);
    let body = json!({"block": true, "purge": true});
    let resp = t
        .request(Method::DELETE, &format!("{A}/v2/rooms/{r}"), Some(body))
        .await;
    let deletion = s.record("room_delete", &resp);
    let delete_id = deletion["delete_id"].as_str().unwrap().to_owned();
    let status = format!("{A}/v2/rooms/delete_status/{delete_id}");
    wait_while(
        t,
        &status,
        &["scheduled", "active", "purging", "shutting_down"],
    )
    .await;
    let resp = t.get(&status).await;
    s.record("room_delete_status", &resp);
    let resp = t.get(&format!("{A}/v2/rooms/{r}/delete_status")).await;
    s.record("room_delete_status_of_room", &resp);
    let resp = t
        .get(&format!("{A}/v2/rooms/delete_status/nosuchdelete"))
        .await;
    s.record("room_delete_status_unknown", &resp);
    let ea = enc(alice);
    let resp = t
        .post(&format!("{A}/v1/deactivate/{ea}"), json!({"erase": false}))
        .await;
    s.record("deactivate", &resp);
    let resp = t.get(&format!("{A}/v2/users/{ea}")).await;
    s.record("user_query_deactivated", &resp);
}

/// Waits (boundedly) while a job's status is one of `busy`.
async fn wait_while(t: &User, path: &str, busy: &[&str]) {
    for _ in 0..100 {
        let v = t.get(path).await.body;
        if !busy.contains(&v["status"].as_str().unwrap_or("")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn admin_answers_have_the_shapes_synapse_gives() {
    let fixture: BTreeMap<String, Value> = serde_json::from_str(FIXTURE).unwrap();
    let mut config = test_config();
    config.admin.allow_login_as = true;
    let app = spawn_app_with(config).await;
    let root = admin(&app, "shapesadmin").await;
    let mut steps = Steps::default();
    let (alice, bob, carol) = user_steps(&app, &root, &mut steps).await;
    let (room_id, events) = room_steps(&app, &root, &mut steps, &alice, &bob).await;
    media_and_token_steps(&app, &root, &mut steps, &alice).await;
    closing_steps(
        &root,
        &mut steps,
        (&alice, &bob, &carol),
        (&room_id, &events[1]),
    )
    .await;

    let mut failures = Vec::new();
    for (step, want) in &fixture {
        let Some(got) = steps.0.get(step) else {
            failures.push(format!("{step}: not called"));
            continue;
        };
        let mut diffs = Vec::new();
        for key in ["status", "errcode"] {
            if want.get(key) != got.get(key) {
                diffs.push(format!(
                    "{key} {}, Synapse {}",
                    got.get(key).unwrap_or(&Value::Null),
                    want.get(key).unwrap_or(&Value::Null)
                ));
            }
        }
        if diffs.is_empty() {
            differences(&want["shape"], &got["shape"], "$", &mut diffs);
        }
        failures.extend(
            diffs
                .into_iter()
                .map(|d| format!("{step} ({}): {d}", want["request"])),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(steps.0.len(), fixture.len(), "steps not in the fixture");
}

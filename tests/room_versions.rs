//! Every stable room version, 1 to 12: created, messaged, redacted and upgraded over HTTP, each
//! with its own event format, redaction algorithm and authorization rules.

use serde_json::{Value, json};

use crate::common::*;
use crate::messaging::send_ok;
use crate::rooms::{create_room, join, state_content};

const VERSIONS: std::ops::RangeInclusive<u32> = 1..=12;

async fn get_event(user: &User, room: &str, event_id: &str) -> Value {
    user.get(&format!("/rooms/{}/event/{}", enc(room), enc(event_id)))
        .await
        .ok()
}

async fn put_state(user: &User, room: &str, event_type: &str, content: Value) -> Resp {
    user.put(
        &format!("/rooms/{}/state/{event_type}/", enc(room)),
        content,
    )
    .await
}

async fn redact(user: &User, room: &str, event_id: &str) -> String {
    let txn = axon::service::auth::random_string(8);
    user.put(
        &format!("/rooms/{}/redact/{}/{txn}", enc(room), enc(event_id)),
        json!({"reason": "tidy"}),
    )
    .await
    .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The stored PDU of an event.
async fn pdu(app: &TestApp, event_id: &str) -> Value {
    let text: String = sqlx::query_scalar("SELECT pdu FROM events WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The PDU's format: v1/v2 carry their event ID and cite `[id, {"sha256": hash}]` pairs, the hash
/// being the cited event's *reference* hash (the spec's pdu_v1 "Event IDs and reference hashes";
/// Synapse's `add_event_hashes`), not its content hash; v3+ cite IDs alone and their ID is the
/// reference hash. `origin` is gone from v11.
async fn assert_pdu_format(app: &TestApp, version: u32, event_id: &str) {
    let pdu = pdu(app, event_id).await;
    assert_eq!(
        pdu.get("origin").is_some(),
        version <= 10,
        "v{version}: {pdu}"
    );
    let prev = &pdu["prev_events"][0];
    if version <= 2 {
        assert_eq!(pdu["event_id"], event_id, "v{version}");
        let rules = ruma::RoomVersionId::try_from(version.to_string())
            .unwrap()
            .rules()
            .unwrap();
        let cited = pdu["prev_events"]
            .as_array()
            .unwrap()
            .iter()
            .chain(pdu["auth_events"].as_array().unwrap());
        for cited in cited {
            let cited_pdu = self::pdu(app, cited[0].as_str().unwrap()).await;
            let object: ruma::CanonicalJsonObject = serde_json::from_value(cited_pdu).unwrap();
            let reference = ruma::signatures::reference_hash(&object, &rules).unwrap();
            assert_eq!(cited[1]["sha256"], reference, "v{version}: {pdu}");
        }
        assert!(
            !pdu["auth_events"].as_array().unwrap().is_empty(),
            "v{version}: {pdu}"
        );
    } else {
        assert!(pdu.get("event_id").is_none(), "v{version}");
        assert!(prev.is_string(), "v{version}: {pdu}");
        let object: ruma::CanonicalJsonObject = serde_json::from_value(pdu).unwrap();
        let rules = ruma::RoomVersionId::try_from(version.to_string())
            .unwrap()
            .rules()
            .unwrap();
        let hash = ruma::signatures::reference_hash(&object, &rules).unwrap();
        assert_eq!(event_id, format!("${hash}"), "v{version}");
    }
}

/// The event ID shape of `version`: `$opaque:server` (v1, v2), `$` and 43 characters of
/// standard (v3) or URL-safe (v4+) unpadded base64.
fn assert_event_id_shape(version: u32, id: &str) {
    let body = id.strip_prefix('$').unwrap_or_else(|| panic!("{id}"));
    if version <= 2 {
        assert!(id.ends_with(":test.local"), "v{version}: {id}");
    } else {
        assert_eq!(body.len(), 43, "v{version}: {id}");
        let url_safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        let standard = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
        let ok = if version == 3 {
            body.chars().all(standard)
        } else {
            body.chars().all(url_safe)
        };
        assert!(ok, "v{version}: {id}");
    }
}

/// Each version: create, name and topic, a message, a second user, redactions (of a message and of
/// the create event, whose content v11 keeps and older versions cut to `creator`), event IDs in
/// /sync and /messages, then an upgrade to 12.
#[tokio::test]
async fn every_version_is_created_messaged_redacted_and_upgraded() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    for v in VERSIONS {
        let version = v.to_string();
        let room = create_room(
            &alice,
            json!({"room_version": version, "preset": "public_chat", "name": "n"}),
        )
        .await;
        assert_eq!(room.ends_with(":test.local"), v < 12, "v{v}: {room}");
        let create = state_content(&alice, &room, "m.room.create", "").await.ok();
        assert_eq!(create["room_version"], version.as_str());
        assert_eq!(create.get("creator").is_some(), v <= 10, "v{v}: {create}");

        put_state(&alice, &room, "m.room.topic", json!({"topic": "t"}))
            .await
            .ok();
        put_state(&alice, &room, "m.room.name", json!({"name": "named"}))
            .await
            .ok();
        let hello = send_ok(&alice, &room, "hello").await;
        assert_event_id_shape(v, &hello);
        join(&bob, &room).await;
        let bobs = send_ok(&bob, &room, "mine").await;
        assert_event_id_shape(v, &bobs);

        // Alice (100) redacts Bob's message.
        let redaction = redact(&alice, &room, &bobs).await;
        assert_event_id_shape(v, &redaction);
        let redacted = get_event(&alice, &room, &bobs).await;
        assert_eq!(redacted["content"], json!({}), "v{v}");
        let r = get_event(&alice, &room, &redaction).await;
        assert_eq!(r["redacts"], bobs.as_str(), "v{v}");
        assert_eq!(r["content"].get("redacts").is_some(), v >= 11, "v{v}: {r}");

        // The power levels: v1–v10 keep users and the levels the rules read but not `invite`,
        // which v11 added to what redaction keeps.
        let levels = alice
            .get(&format!("/rooms/{}/state/m.room.power_levels/", enc(&room)))
            .await
            .ok();
        assert_eq!(levels["invite"], 50, "v{v}");
        let first = alice
            .get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(&room)))
            .await
            .ok();
        let levels_id = first["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "m.room.power_levels")
            .unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_event_id_shape(v, &levels_id);
        redact(&alice, &room, &levels_id).await;
        let after = get_event(&alice, &room, &levels_id).await;
        assert_eq!(
            after["content"].get("invite").is_some(),
            v >= 11,
            "v{v}: {after}"
        );
        assert!(after["content"]["users"].is_object(), "v{v}");
        assert!(after["content"].get("historical").is_none(), "v{v}");
        // The room still works after that, its state read back from the store.
        let still = send_ok(&bob, &room, "still here").await;
        assert_pdu_format(&app, v, &still).await;
        assert_pdu_format(&app, v, &hello).await;

        // Event IDs as /messages and /sync serve them.
        let chunk = alice
            .get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(&room)))
            .await
            .ok();
        let chunk = chunk["chunk"].as_array().unwrap();
        assert!(chunk.len() > 8, "v{v}");
        for e in chunk {
            assert_event_id_shape(v, e["event_id"].as_str().unwrap());
        }
        let sync = bob.get("/sync").await.ok();
        let events = sync["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .unwrap();
        assert!(!events.is_empty(), "v{v}");
        for e in events {
            assert_event_id_shape(v, e["event_id"].as_str().unwrap());
        }

        // Upgrade to 12.
        let new = alice
            .post(
                &format!("/rooms/{}/upgrade", enc(&room)),
                json!({"new_version": "12"}),
            )
            .await
            .ok()["replacement_room"]
            .as_str()
            .unwrap()
            .to_owned();
        let tombstone = state_content(&alice, &room, "m.room.tombstone", "")
            .await
            .ok();
        assert_eq!(tombstone["replacement_room"], new.as_str(), "v{v}");
        let create = state_content(&alice, &new, "m.room.create", "").await.ok();
        assert_eq!(create["room_version"], "12");
        assert_eq!(create["predecessor"]["room_id"], room.as_str());
        join(&bob, &new).await;
        send_ok(&bob, &new, "moved").await;
    }
}

/// Down as well as up: a v12 room upgraded to each older version, which then takes messages.
#[tokio::test]
async fn a_v12_room_upgrades_to_every_older_version() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut room = create_room(&alice, json!({"preset": "public_chat", "name": "n"})).await;
    join(&bob, &room).await;
    for v in (1..=11).rev() {
        let version = v.to_string();
        let new = alice
            .post(
                &format!("/rooms/{}/upgrade", enc(&room)),
                json!({"new_version": version}),
            )
            .await
            .ok()["replacement_room"]
            .as_str()
            .unwrap()
            .to_owned();
        let create = state_content(&alice, &new, "m.room.create", "").await.ok();
        assert_eq!(create["room_version"], version.as_str());
        assert_eq!(create["predecessor"]["room_id"], room.as_str());
        assert_eq!(
            state_content(&alice, &new, "m.room.name", "").await.ok()["name"],
            "n"
        );
        assert_event_id_shape(v, &send_ok(&alice, &new, "hi").await);
        join(&bob, &new).await;
        assert_event_id_shape(v, &send_ok(&bob, &new, "hi").await);
        room = new;
    }
}

async fn room_with_join_rule(owner: &User, version: u32, join_rules: Value) -> String {
    create_room(
        owner,
        json!({"room_version": version.to_string(), "preset": "public_chat",
               "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": join_rules}]}),
    )
    .await
}

/// Knocking arrived in room version 7: a `knock` membership in a v6 room is refused.
#[tokio::test]
async fn knocking_needs_version_7() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    for (v, allowed) in [(6, false), (7, true)] {
        let room = room_with_join_rule(&alice, v, json!({"join_rule": "knock"})).await;
        let r = bob.post(&format!("/knock/{}", enc(&room)), json!({})).await;
        if allowed {
            r.ok();
        } else {
            r.expect_err(403, "M_FORBIDDEN");
        }
    }
}

/// Restricted rooms arrived in room version 8: before, the `restricted` join rule lets nobody in
/// uninvited, members of the allowed room included.
#[tokio::test]
async fn restricted_joins_need_version_8() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let lobby = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &lobby).await;
    let rule = json!({"join_rule": "restricted",
                      "allow": [{"type": "m.room_membership", "room_id": lobby}]});
    for (v, allowed) in [(7, false), (8, true)] {
        let room = room_with_join_rule(&alice, v, rule.clone()).await;
        let r = bob.post(&format!("/join/{}", enc(&room)), json!({})).await;
        if allowed {
            r.ok();
        } else {
            r.expect_err(403, "M_FORBIDDEN");
        }
    }
}

/// Power levels held in strings are valid until room version 10 made them integers only.
#[tokio::test]
async fn string_power_levels_until_version_10() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    for v in [1, 5, 9, 10, 12] {
        let room = create_room(
            &alice,
            json!({"room_version": v.to_string(), "preset": "public_chat"}),
        )
        .await;
        join(&bob, &room).await;
        let mut levels = state_content(&alice, &room, "m.room.power_levels", "")
            .await
            .ok();
        levels["users"][&bob.user_id] = json!("50");
        levels["state_default"] = json!("50");
        let r = put_state(&alice, &room, "m.room.power_levels", levels).await;
        if v < 10 {
            r.ok();
            // Bob's level "50" counts: he may now set the topic.
            put_state(&bob, &room, "m.room.topic", json!({"topic": "mine"}))
                .await
                .ok();
        } else {
            r.expect_err(403, "M_FORBIDDEN");
            put_state(&bob, &room, "m.room.topic", json!({"topic": "mine"}))
                .await
                .expect_err(403, "M_FORBIDDEN");
        }
    }
}

/// Upgrading a room whose power levels hold strings gives the new room integer levels.
#[tokio::test]
async fn upgrade_turns_string_power_levels_into_integers() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = create_room(&alice, json!({"room_version": "9"})).await;
    let mut levels = state_content(&alice, &room, "m.room.power_levels", "")
        .await
        .ok();
    levels["ban"] = json!("60");
    levels["events"]["m.room.topic"] = json!("20");
    put_state(&alice, &room, "m.room.power_levels", levels)
        .await
        .ok();
    let new = alice
        .post(
            &format!("/rooms/{}/upgrade", enc(&room)),
            json!({"new_version": "11"}),
        )
        .await
        .ok()["replacement_room"]
        .as_str()
        .unwrap()
        .to_owned();
    let levels = state_content(&alice, &new, "m.room.power_levels", "")
        .await
        .ok();
    assert_eq!(levels["ban"], 60);
    assert_eq!(levels["events"]["m.room.topic"], 20);
}

/// Unknown versions are refused, on creation and on upgrade.
#[tokio::test]
async fn unknown_versions_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for bad in ["0", "13", "1.0", "org.example.custom"] {
        alice
            .post("/createRoom", json!({"room_version": bad}))
            .await
            .expect_err(400, "M_UNSUPPORTED_ROOM_VERSION");
    }
}

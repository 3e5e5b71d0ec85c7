//! The table of authorization cases, driven through ruma's rules ([`super::check`]). A case
//! names the reason it expects in words; ruma words its refusals its own way, so the harness
//! checks the verdict and prints ruma's reason when a verdict is wrong.
use super::{AuthError, EventFields, PduView};
use crate::service::auth_rules::*;
use RoomVersion::{V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12};
use serde_json::{Value, json};
use std::collections::HashMap;

const CREATE: &str = "m.room.create";
const MEMBER: &str = "m.room.member";
const POWER_LEVELS: &str = "m.room.power_levels";
const JOIN_RULES: &str = "m.room.join_rules";
const THIRD_PARTY_INVITE: &str = "m.room.third_party_invite";

const ALL: &[RoomVersion] = &[V10, V11, V12];
const PRE12: &[RoomVersion] = &[V10, V11];
const ONLY12: &[RoomVersion] = &[V12];

const ALICE: &str = "@alice:x"; // create sender (creator everywhere)
const CO: &str = "@co:x"; // additional creator (a creator only in v12)
const ADMIN: &str = "@admin:x"; // 100
const ADMIN2: &str = "@admin2:x"; // 100
const MOD: &str = "@mod:x"; // 50
const MOD2: &str = "@mod2:x"; // 50
const BOB: &str = "@bob:x"; // joined, 0
const CAROL: &str = "@carol:x"; // never in the room
const DAN: &str = "@dan:x"; // invited
const KIM: &str = "@kim:x"; // knocked
const LEO: &str = "@leo:x"; // left
const EVE: &str = "@eve:x"; // banned

#[derive(Default, Clone)]
struct TestState {
    events: HashMap<(String, String), (String, Value)>,
}

impl RoomState for TestState {
    fn get(&self, event_type: &str, state_key: &str) -> Option<StateEvent<'_>> {
        self.events
            .get(&(event_type.to_owned(), state_key.to_owned()))
            .map(|(sender, content)| StateEvent { sender, content })
    }
}

/// An event to authorise.
struct Ev {
    event_type: String,
    state_key: Option<String>,
    sender: String,
    content: Value,
}

fn ev(t: &str, k: Option<&str>, sender: &str, content: &Value) -> Ev {
    Ev {
        event_type: t.to_owned(),
        state_key: k.map(str::to_owned),
        sender: sender.to_owned(),
        content: content.clone(),
    }
}

fn event_id(t: &str, k: &str) -> String {
    let key: String = format!("{t}{k}")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("${key}:x")
}

/// Runs `event` through the rules of `v` against `state`, as the writer does: the state's
/// events seen through [`PduView`], the event's `prev_events` the room's head (the create
/// event when it is alone).
fn check(v: RoomVersion, event: &Ev, state: &TestState) -> Result<(), AuthError> {
    let views: HashMap<(String, String), PduView> = state
        .events
        .iter()
        .map(|((t, k), (sender, content))| {
            let id = event_id(t, k);
            let view = PduView::new(
                EventFields {
                    event_id: Some(&id),
                    room_id: None,
                    sender,
                    event_type: t,
                    state_key: Some(k),
                    prev_events: &[],
                    redacts: None,
                },
                content,
                "x",
            )
            .unwrap();
            ((t.clone(), k.clone()), view)
        })
        .collect();
    let prev = match state.events.len() {
        0 => vec![],
        1 => vec![event_id(CREATE, "")],
        _ => vec!["$head:x".to_owned()],
    };
    let is_create = event.event_type == CREATE;
    let room_id = (!(is_create && v.room_id_from_create())).then_some("!room:x");
    let view = PduView::new(
        EventFields {
            event_id: None,
            room_id,
            sender: &event.sender,
            event_type: &event.event_type,
            state_key: event.state_key.as_deref(),
            prev_events: &prev,
            redacts: event.content.get("redacts").and_then(Value::as_str),
        },
        &event.content,
        "x",
    )?;
    super::check(v, &view, |t, k| views.get(&(t.to_owned(), k.to_owned())))
}

impl TestState {
    fn set(&mut self, event_type: &str, state_key: &str, sender: &str, content: Value) {
        self.events.insert(
            (event_type.to_owned(), state_key.to_owned()),
            (sender.to_owned(), content),
        );
    }
    fn remove(&mut self, event_type: &str, state_key: &str) {
        self.events
            .remove(&(event_type.to_owned(), state_key.to_owned()));
    }
    fn member(&mut self, user: &str, membership: &str) {
        self.set(MEMBER, user, user, json!({ "membership": membership }));
    }
    fn join_rule(&mut self, rule: &str) {
        self.set(JOIN_RULES, "", ALICE, json!({ "join_rule": rule }));
    }
    /// Changes one top-level field of the current power levels.
    fn pl_field(&mut self, field: &str, value: Value) {
        let mut content = self.get(POWER_LEVELS, "").unwrap().content.clone();
        content[field] = value;
        self.set(POWER_LEVELS, "", ALICE, content);
    }
    fn pl_content(&self) -> Value {
        self.get(POWER_LEVELS, "").unwrap().content.clone()
    }
}

fn create_content(version: RoomVersion) -> Value {
    let mut c = json!({ "room_version": version.as_str(), "additional_creators": [CO] });
    if version.create_has_creator_field() {
        c["creator"] = json!(ALICE);
    }
    c
}

/// Only the create event.
fn fresh_room(version: RoomVersion) -> TestState {
    let mut s = TestState::default();
    s.set(CREATE, "", ALICE, create_content(version));
    s
}

fn std_power_levels(version: RoomVersion) -> Value {
    let mut users = json!({ ADMIN: 100, ADMIN2: 100, MOD: 50, MOD2: 50 });
    if version != V12 {
        users[ALICE] = json!(100);
    }
    json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.power_levels": 50,
            "m.room.topic": 0,
            "m.room.tombstone": 100,
            "org.example.status": 0,
        },
        "state_default": 50,
        "events_default": 0,
        "ban": 50,
        "kick": 50,
        "invite": 0,
        "redact": 50,
        "notifications": { "room": 50 },
    })
}

/// A populated room with the given join rule.
fn std_room(version: RoomVersion, rule: &str) -> TestState {
    let mut s = fresh_room(version);
    for u in [ALICE, CO, ADMIN, ADMIN2, MOD, MOD2, BOB] {
        s.member(u, "join");
    }
    s.set(MEMBER, DAN, MOD, json!({ "membership": "invite" }));
    s.member(KIM, "knock");
    s.member(LEO, "leave");
    s.set(MEMBER, EVE, MOD, json!({ "membership": "ban" }));
    s.set(POWER_LEVELS, "", ALICE, std_power_levels(version));
    s.join_rule(rule);
    s
}

fn member(m: &str) -> Value {
    json!({ "membership": m })
}

fn pl_with(version: RoomVersion, f: impl FnOnce(&mut Value)) -> Value {
    let mut c = std_power_levels(version);
    f(&mut c);
    c
}

type Setup = Box<dyn Fn(&mut TestState, RoomVersion)>;

struct Case {
    name: &'static str,
    versions: &'static [RoomVersion],
    rule: &'static str,
    setup: Option<Setup>,
    event_type: &'static str,
    state_key: Option<&'static str>,
    sender: &'static str,
    content: Box<dyn Fn(RoomVersion) -> Value>,
    /// `None`: allowed; `Some(text)`: refused with a reason containing `text`.
    refused: Option<&'static str>,
}

#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    versions: &'static [RoomVersion],
    rule: &'static str,
    event_type: &'static str,
    state_key: Option<&'static str>,
    sender: &'static str,
    content: Value,
    refused: Option<&'static str>,
) -> Case {
    Case {
        name,
        versions,
        rule,
        setup: None,
        event_type,
        state_key,
        sender,
        content: Box::new(move |_| content.clone()),
        refused,
    }
}

fn mem(
    name: &'static str,
    versions: &'static [RoomVersion],
    rule: &'static str,
    sender: &'static str,
    target: &'static str,
    membership: &'static str,
    refused: Option<&'static str>,
) -> Case {
    case(
        name,
        versions,
        rule,
        MEMBER,
        Some(target),
        sender,
        member(membership),
        refused,
    )
}

/// `joiner` joins with `join_authorised_via_users_server` naming `authoriser`.
fn authorised(
    name: &'static str,
    rule: &'static str,
    joiner: &'static str,
    authoriser: &'static str,
    refused: Option<&'static str>,
) -> Case {
    case(
        name,
        ALL,
        rule,
        MEMBER,
        Some(joiner),
        joiner,
        json!({ "membership": "join", AUTHORISING_USER: authoriser }),
        refused,
    )
}

fn with_setup(mut c: Case, f: impl Fn(&mut TestState, RoomVersion) + 'static) -> Case {
    c.setup = Some(Box::new(f));
    c
}

fn pl_case(
    name: &'static str,
    versions: &'static [RoomVersion],
    sender: &'static str,
    edit: impl Fn(&mut Value) + 'static,
    refused: Option<&'static str>,
) -> Case {
    Case {
        name,
        versions,
        rule: "invite",
        setup: None,
        event_type: POWER_LEVELS,
        state_key: Some(""),
        sender,
        content: Box::new(move |v| pl_with(v, &edit)),
        refused,
    }
}

fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        for &v in c.versions {
            let mut state = std_room(v, c.rule);
            if let Some(setup) = &c.setup {
                setup(&mut state, v);
            }
            let content = (c.content)(v);
            let e = ev(c.event_type, c.state_key, c.sender, &content);
            let got = check(v, &e, &state);
            let ok = got.is_ok() == c.refused.is_none();
            if !ok {
                failures.push(format!(
                    "{} [{v:?}]: expected {:?}, got {got:?}",
                    c.name, c.refused
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// -----------------------------------------------------------------------

#[test]
    #[rustfmt::skip]
    fn membership_transitions() {
        let ok = None;
        run(vec![
            // join, public
            mem("public: outsider joins", ALL, "public", CAROL, CAROL, "join", ok),
            mem("public: invited user joins", ALL, "public", DAN, DAN, "join", ok),
            mem("public: knocking user joins", ALL, "public", KIM, KIM, "join", ok),
            mem("public: user who left rejoins", ALL, "public", LEO, LEO, "join", ok),
            mem("public: member updates profile", ALL, "public", BOB, BOB, "join", ok),
            mem("public: banned user rejoins", ALL, "public", EVE, EVE, "join", Some("@eve:x is banned from this room")),
            mem("public: join someone else", ALL, "public", BOB, CAROL, "join", Some("cannot make @carol:x join")),
            // join, invite
            mem("invite: outsider joins", ALL, "invite", CAROL, CAROL, "join", Some("has not been invited")),
            mem("invite: invited user joins", ALL, "invite", DAN, DAN, "join", ok),
            mem("invite: member updates profile", ALL, "invite", BOB, BOB, "join", ok),
            mem("invite: knocker joins without invite", ALL, "invite", KIM, KIM, "join", Some("has not been invited")),
            mem("invite: user who left rejoins", ALL, "invite", LEO, LEO, "join", Some("has not been invited")),
            mem("invite: banned user", ALL, "invite", EVE, EVE, "join", Some("banned")),
            // join, knock
            mem("knock: outsider joins", ALL, "knock", CAROL, CAROL, "join", Some("has not been invited")),
            mem("knock: knocker joins without invite", ALL, "knock", KIM, KIM, "join", Some("has not been invited")),
            mem("knock: invited user joins", ALL, "knock", DAN, DAN, "join", ok),
            // join, restricted
            mem("restricted: outsider joins", ALL, "restricted", CAROL, CAROL, "join", Some("names no authorising user")),
            mem("restricted: invited user joins", ALL, "restricted", DAN, DAN, "join", ok),
            mem("knock_restricted: outsider joins", ALL, "knock_restricted", CAROL, CAROL, "join", Some("names no authorising user")),
            mem("knock_restricted: knocker joins", ALL, "knock_restricted", KIM, KIM, "join", Some("names no authorising user")),
            authorised("restricted: vouched for by a member who may invite", "restricted", CAROL, BOB, ok),
            authorised("knock_restricted: vouched for by a member who may invite", "knock_restricted", KIM, BOB, ok),
            authorised("restricted: user who left rejoins, vouched for", "restricted", LEO, ADMIN, ok),
            authorised("restricted: vouched for by someone not in the room", "restricted", CAROL, LEO, Some("@leo:x is not in the room")),
            authorised("restricted: vouched for by an invitee", "restricted", CAROL, DAN, Some("is not in the room")),
            with_setup(
                authorised("restricted: vouched for by a member who may not invite", "restricted", CAROL, BOB, Some("cannot invite")),
                |s, _| s.pl_field("invite", json!(50)),
            ),
            with_setup(
                authorised("restricted: vouched for by a moderator at the invite level", "restricted", CAROL, MOD, ok),
                |s, _| s.pl_field("invite", json!(50)),
            ),
            authorised("restricted: banned user, vouched for", "restricted", EVE, BOB, Some("banned")),
            authorised("invite rule ignores a voucher", "invite", CAROL, BOB, Some("has not been invited")),
            mem("knock_restricted: invited user joins", ALL, "knock_restricted", DAN, DAN, "join", ok),
            mem("knock_restricted: member profile", ALL, "knock_restricted", BOB, BOB, "join", ok),
            // join, unknown / missing rule
            mem("private join rule", ALL, "private", CAROL, CAROL, "join", Some("does not allow joining")),
            mem("private join rule, invited", ALL, "private", DAN, DAN, "join", Some("does not allow joining")),
            with_setup(
                mem("no join rules", ALL, "public", CAROL, CAROL, "join", Some("no join rules")),
                |s, _| s.remove(JOIN_RULES, ""),
            ),
            // invite
            mem("member invites outsider", ALL, "invite", BOB, CAROL, "invite", ok),
            mem("member re-invites invited user", ALL, "invite", BOB, DAN, "invite", ok),
            mem("member invites knocker", ALL, "invite", BOB, KIM, "invite", ok),
            mem("member invites user who left", ALL, "invite", BOB, LEO, "invite", ok),
            mem("invite joined user", ALL, "invite", BOB, MOD, "invite", Some("@mod:x is already in the room")),
            mem("invite banned user", ALL, "invite", MOD, EVE, "invite", Some("@eve:x is banned from this room")),
            mem("outsider invites", ALL, "public", CAROL, LEO, "invite", Some("@carol:x is not in the room")),
            mem("invited user invites", ALL, "invite", DAN, CAROL, "invite", Some("@dan:x is invited but has not joined")),
            mem("banned user invites", ALL, "invite", EVE, CAROL, "invite", Some("@eve:x is banned")),
            with_setup(
                mem("invite below invite level", ALL, "invite", BOB, CAROL, "invite", Some("you need power level 50 to invite users (you have 0)")),
                |s, _| s.pl_field("invite", json!(50)),
            ),
            with_setup(
                mem("invite at invite level", ALL, "invite", MOD, CAROL, "invite", ok),
                |s, _| s.pl_field("invite", json!(50)),
            ),
            case("third-party invite", ALL, "invite", MEMBER, Some(CAROL), MOD, json!({ "membership": "invite", "third_party_invite": { "display_name": "c", "signed": {} } }), Some("third-party invites are not supported")),
            // leave, own
            mem("member leaves", ALL, "invite", BOB, BOB, "leave", ok),
            mem("invitee rejects invite", ALL, "invite", DAN, DAN, "leave", ok),
            mem("knocker rescinds knock", ALL, "knock", KIM, KIM, "leave", ok),
            mem("outsider leaves", ALL, "invite", CAROL, CAROL, "leave", Some("@carol:x is not in the room")),
            mem("leave twice", ALL, "invite", LEO, LEO, "leave", Some("@leo:x is not in the room")),
            mem("banned user unbans self", ALL, "invite", EVE, EVE, "leave", Some("banned")),
            mem("creator leaves", ALL, "invite", ALICE, ALICE, "leave", ok),
            // kick
            mem("mod kicks member", ALL, "invite", MOD, BOB, "leave", ok),
            mem("mod kicks invitee (revokes invite)", ALL, "invite", MOD, DAN, "leave", ok),
            mem("mod kicks knocker (rejects knock)", ALL, "knock", MOD, KIM, "leave", ok),
            mem("mod kicks outsider", ALL, "invite", MOD, CAROL, "leave", ok),
            mem("member kicks member", ALL, "invite", BOB, MOD2, "leave", Some("you need power level 50 to kick users (you have 0)")),
            mem("kick with equal power", ALL, "invite", MOD, MOD2, "leave", Some("their power level (50) is not lower than yours (50)")),
            mem("kick higher power", ALL, "invite", MOD, ADMIN, "leave", Some("not lower than yours")),
            mem("admin kicks mod", ALL, "invite", ADMIN, MOD, "leave", ok),
            mem("invited user kicks", ALL, "invite", DAN, BOB, "leave", Some("@dan:x is invited but has not joined")),
            mem("outsider kicks", ALL, "public", CAROL, BOB, "leave", Some("@carol:x is not in the room")),
            with_setup(
                mem("kick level raised", ALL, "invite", MOD, BOB, "leave", Some("you need power level 60 to kick users (you have 50)")),
                |s, _| s.pl_field("kick", json!(60)),
            ),
            with_setup(
                mem("kick level one above sender", ALL, "invite", MOD, BOB, "leave", Some("you need power level 51 to kick users (you have 50)")),
                |s, _| s.pl_field("kick", json!(51)),
            ),
            with_setup(
                mem("ban level one above sender", ALL, "invite", MOD, BOB, "ban", Some("you need power level 51 to ban users (you have 50)")),
                |s, _| s.pl_field("ban", json!(51)),
            ),
            with_setup(
                mem("unban: ban level one above sender", ALL, "invite", MOD, EVE, "leave", Some("you need power level 51 to unban users (you have 50)")),
                |s, _| s.pl_field("ban", json!(51)),
            ),
            with_setup(
                mem("invite level one above sender", ALL, "invite", BOB, CAROL, "invite", Some("you need power level 1 to invite users (you have 0)")),
                |s, _| s.pl_field("invite", json!(1)),
            ),
            // unban
            mem("mod unbans", ALL, "invite", MOD, EVE, "leave", ok),
            mem("member unbans", ALL, "invite", BOB, EVE, "leave", Some("you need power level 50 to unban users (you have 0)")),
            with_setup(
                mem("unban needs ban level", ALL, "invite", MOD, EVE, "leave", Some("you need power level 60 to unban users (you have 50)")),
                |s, _| s.pl_field("ban", json!(60)),
            ),
            with_setup(
                mem("unban needs kick level too", ALL, "invite", MOD, EVE, "leave", Some("you need power level 60 to unban users (you have 50)")),
                |s, _| s.pl_field("kick", json!(60)),
            ),
            with_setup(
                mem("unban needs to outrank target", ALL, "invite", MOD, EVE, "leave", Some("you cannot unban @eve:x")),
                |s, _| {
                    let mut c = s.pl_content();
                    c["users"][EVE] = json!(50);
                    s.set(POWER_LEVELS, "", ALICE, c);
                },
            ),
            // ban
            mem("mod bans member", ALL, "invite", MOD, BOB, "ban", ok),
            mem("mod bans outsider", ALL, "invite", MOD, CAROL, "ban", ok),
            mem("mod bans invitee", ALL, "invite", MOD, DAN, "ban", ok),
            mem("mod re-bans banned user", ALL, "invite", MOD, EVE, "ban", ok),
            mem("member bans", ALL, "invite", BOB, CAROL, "ban", Some("you need power level 50 to ban users (you have 0)")),
            mem("ban equal power", ALL, "invite", MOD, MOD2, "ban", Some("their power level (50) is not lower than yours (50)")),
            mem("ban self", ALL, "invite", MOD, MOD, "ban", Some("not lower than yours")),
            mem("ban higher power", ALL, "invite", MOD, ADMIN, "ban", Some("not lower")),
            mem("invited user bans", ALL, "invite", DAN, CAROL, "ban", Some("@dan:x is invited but has not joined")),
            mem("banned user bans", ALL, "invite", EVE, BOB, "ban", Some("@eve:x is banned")),
            with_setup(
                mem("ban level raised", ALL, "invite", MOD, BOB, "ban", Some("you need power level 75 to ban users (you have 50)")),
                |s, _| s.pl_field("ban", json!(75)),
            ),
            // knock
            mem("outsider knocks", ALL, "knock", CAROL, CAROL, "knock", ok),
            mem("outsider knocks (knock_restricted)", ALL, "knock_restricted", CAROL, CAROL, "knock", ok),
            mem("user who left knocks", ALL, "knock", LEO, LEO, "knock", ok),
            mem("knocker knocks again", ALL, "knock", KIM, KIM, "knock", ok),
            mem("knock on invite-only room", ALL, "invite", CAROL, CAROL, "knock", Some("does not accept knocks")),
            mem("knock on public room", ALL, "public", CAROL, CAROL, "knock", Some("does not accept knocks")),
            mem("knock on restricted room", ALL, "restricted", CAROL, CAROL, "knock", Some("does not accept knocks")),
            mem("knock for someone else", ALL, "knock", BOB, CAROL, "knock", Some("cannot knock on behalf of @carol:x")),
            mem("invited user knocks", ALL, "knock", DAN, DAN, "knock", Some("already invited")),
            mem("member knocks", ALL, "knock", BOB, BOB, "knock", Some("already in the room")),
            mem("banned user knocks", ALL, "knock", EVE, EVE, "knock", Some("banned")),
            // malformed
            mem("unknown membership", ALL, "public", BOB, BOB, "foo", Some("unknown membership")),
            case("no membership", ALL, "public", MEMBER, Some(BOB), BOB, json!({}), Some("content.membership")),
            case("non-string membership", ALL, "public", MEMBER, Some(BOB), BOB, json!({ "membership": 1 }), Some("unknown membership")),
            case("member without state key", ALL, "public", MEMBER, None, BOB, member("join"), Some("need a state key")),
        ]);
    }

#[test]
    #[rustfmt::skip]
    fn creators_and_versions() {
        let ok = None;
        run(vec![
            // Creators in v12 are infinitely powerful and cannot be kicked or banned.
            mem("admin kicks create sender (v12)", ONLY12, "invite", ADMIN, ALICE, "leave", Some("room creators cannot be kicked")),
            mem("admin bans create sender (v12)", ONLY12, "invite", ADMIN, ALICE, "ban", Some("room creators cannot be banned")),
            mem("admin kicks additional creator (v12)", ONLY12, "invite", ADMIN, CO, "leave", Some("room creators cannot be kicked")),
            mem("creator kicks co-creator (v12)", ONLY12, "invite", ALICE, CO, "leave", Some("room creators cannot be kicked")),
            mem("creator bans admin (v12)", ONLY12, "invite", ALICE, ADMIN, "ban", ok),
            mem("co-creator kicks admin (v12)", ONLY12, "invite", CO, ADMIN, "leave", ok),
            // In v10/v11 the creator is just a user with level 100 and co is nobody special.
            mem("admin kicks creator (equal, v10/11)", PRE12, "invite", ADMIN, ALICE, "leave", Some("their power level (100) is not lower than yours (100)")),
            mem("creator bans admin (equal, v10/11)", PRE12, "invite", ALICE, ADMIN, "ban", Some("not lower")),
            mem("co kicks admin (v10/11)", PRE12, "invite", CO, ADMIN, "leave", Some("you need power level 50 to kick users (you have 0)")),
            mem("admin kicks co (v10/11)", PRE12, "invite", ADMIN, CO, "leave", ok),
            case("co sends state (v12)", ONLY12, "invite", "m.room.name", Some(""), CO, json!({"name": "n"}), ok),
            case("co sends state (v10/11)", PRE12, "invite", "m.room.name", Some(""), CO, json!({"name": "n"}), Some("you need power level 50 to send m.room.name (you have 0)")),
            case("creator sends tombstone (v12 infinite)", ONLY12, "invite", "m.room.tombstone", Some(""), ALICE, json!({"body": "b", "replacement_room": "!r"}), ok),
            with_setup(
                case("creator sends high-level event (v10/11)", PRE12, "invite", "m.room.tombstone", Some(""), ALICE, json!({"body": "b", "replacement_room": "!r"}), Some("you need power level 200 to send m.room.tombstone (you have 100)")),
                |s, _| {
                    let mut c = s.pl_content();
                    c["events"]["m.room.tombstone"] = json!(200);
                    s.set(POWER_LEVELS, "", ALICE, c);
                },
            ),
        ]);
    }

#[test]
    #[rustfmt::skip]
    fn non_member_events() {
        let ok = None;
        run(vec![
            case("member sends message", ALL, "invite", "m.room.message", None, BOB, json!({"body": "hi"}), ok),
            case("outsider sends message", ALL, "public", "m.room.message", None, CAROL, json!({}), Some("@carol:x is not in the room")),
            case("invited user sends message", ALL, "invite", "m.room.message", None, DAN, json!({}), Some("@dan:x is invited but has not joined the room")),
            case("knocker sends message", ALL, "knock", "m.room.message", None, KIM, json!({}), Some("@kim:x has knocked")),
            case("left user sends message", ALL, "invite", "m.room.message", None, LEO, json!({}), Some("@leo:x is not in the room")),
            case("banned user sends message", ALL, "invite", "m.room.message", None, EVE, json!({}), Some("@eve:x is banned from this room")),
            case("member sets name", ALL, "invite", "m.room.name", Some(""), BOB, json!({"name": "n"}), Some("you need power level 50 to send m.room.name (you have 0)")),
            case("mod sets name", ALL, "invite", "m.room.name", Some(""), MOD, json!({"name": "n"}), ok),
            case("member sets topic (events override)", ALL, "invite", "m.room.topic", Some(""), BOB, json!({"topic": "t"}), ok),
            case("mod sets tombstone", ALL, "invite", "m.room.tombstone", Some(""), MOD, json!({}), Some("you need power level 100 to send m.room.tombstone (you have 50)")),
            case("non-object content", ALL, "invite", "m.room.message", None, BOB, json!("x"), Some("must be a JSON object")),
            with_setup(
                case("events_default raised", ALL, "invite", "m.room.message", None, BOB, json!({}), Some("you need power level 10 to send m.room.message (you have 0)")),
                |s, _| s.pl_field("events_default", json!(10)),
            ),
            with_setup(
                case("state_default lowered", ALL, "invite", "m.room.name", Some(""), BOB, json!({}), ok),
                |s, _| s.pl_field("state_default", json!(0)),
            ),
            with_setup(
                case("users_default raised", ALL, "invite", "m.room.name", Some(""), BOB, json!({}), ok),
                |s, _| s.pl_field("users_default", json!(50)),
            ),
            // state keys that are user IDs
            case("own @ state key", ALL, "invite", "org.example.status", Some(BOB), BOB, json!({}), ok),
            case("other's @ state key", ALL, "invite", "org.example.status", Some(MOD), BOB, json!({}), Some("the state key @mod:x belongs to another user")),
            case("admin writes other's @ state key", ALL, "invite", "org.example.status", Some(BOB), ADMIN, json!({}), Some("belongs to another user")),
            case("creator writes other's @ state key", ALL, "invite", "org.example.status", Some(BOB), ALICE, json!({}), Some("belongs to another user")),
            case("non-@ state key", ALL, "invite", "org.example.status", Some("bob"), BOB, json!({}), ok),
            case("@ state key with suffix", ALL, "invite", "org.example.status", Some("@bob:x_device"), BOB, json!({}), Some("belongs to another user")),
            // redactions
            case("member redacts (auth rules ignore redact level)", ALL, "invite", "m.room.redaction", None, BOB, json!({"redacts": "$e"}), ok),
            with_setup(
                case("redaction event level", ALL, "invite", "m.room.redaction", None, BOB, json!({}), Some("you need power level 50 to send m.room.redaction (you have 0)")),
                |s, _| {
                    let mut c = s.pl_content();
                    c["events"]["m.room.redaction"] = json!(50);
                    s.set(POWER_LEVELS, "", ALICE, c);
                },
            ),
            // third-party invite state events
            case("m.room.third_party_invite by member", ALL, "invite", THIRD_PARTY_INVITE, Some("tok"), BOB, json!({}), ok),
            case("m.room.third_party_invite by outsider", ALL, "invite", THIRD_PARTY_INVITE, Some("tok"), CAROL, json!({}), Some("not in the room")),
            with_setup(
                case("m.room.third_party_invite below invite level", ALL, "invite", THIRD_PARTY_INVITE, Some("tok"), BOB, json!({}), Some("you need power level 50 to invite users")),
                |s, _| s.pl_field("invite", json!(50)),
            ),
            // create event in an existing room
            case("second create", ALL, "invite", CREATE, Some(""), ALICE, json!({"room_version": "12"}), Some("already exists")),
            // m.federate = false
            with_setup(
                case("m.federate false, foreign sender", ALL, "public", MEMBER, Some("@zed:y"), "@zed:y", member("join"), Some("does not federate")),
                |s, v| {
                    let mut c = create_content(v);
                    c["m.federate"] = json!(false);
                    s.set(CREATE, "", ALICE, c);
                },
            ),
            with_setup(
                case("m.federate false, local sender", ALL, "public", MEMBER, Some(CAROL), CAROL, member("join"), ok),
                |s, v| {
                    let mut c = create_content(v);
                    c["m.federate"] = json!(false);
                    s.set(CREATE, "", ALICE, c);
                },
            ),
            case("m.federate default, foreign sender", ALL, "public", MEMBER, Some("@zed:y"), "@zed:y", member("join"), ok),
        ]);
    }

const V1_TO_5: &[RoomVersion] = &[V1, V2, V3, V4, V5];
const V1_TO_9: &[RoomVersion] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9];
const V1_TO_6: &[RoomVersion] = &[V1, V2, V3, V4, V5, V6];
const V1_TO_7: &[RoomVersion] = &[V1, V2, V3, V4, V5, V6, V7];
const V6_TO_12: &[RoomVersion] = &[V6, V7, V8, V9, V10, V11, V12];
const V7_TO_12: &[RoomVersion] = &[V7, V8, V9, V10, V11, V12];
const V3_TO_12: &[RoomVersion] = &[V3, V4, V5, V6, V7, V8, V9, V10, V11, V12];

/// Where the rules of room versions differ.
    #[test]
    #[rustfmt::skip]
    fn versions_differ() {
        let ok = None;
        let vouched = |name, versions, rule| Case {
            versions,
            ..authorised(name, rule, CAROL, BOB, None)
        };
        let refused = |mut c: Case, why| { c.refused = Some(why); c };
        run(vec![
            // Knocking arrived in v7.
            mem("knock, v7+", V7_TO_12, "knock", CAROL, CAROL, "knock", ok),
            mem("knock, v1-v6", V1_TO_6, "knock", CAROL, CAROL, "knock", Some("unknown membership")),
            mem("invited user joins a knock room, v1-v6", V1_TO_6, "knock", DAN, DAN, "join", Some("not public")),
            // Restricted joins arrived in v8, knock_restricted in v10.
            vouched("restricted, v8+", &[V8, V9, V10, V11, V12], "restricted"),
            refused(vouched("restricted, v1-v7", V1_TO_7, "restricted"), "not public"),
            vouched("knock_restricted, v10+", ALL, "knock_restricted"),
            refused(vouched("knock_restricted, v1-v9", V1_TO_9, "knock_restricted"), "not public"),
            mem("knock on knock_restricted, v1-v9", V1_TO_9, "knock_restricted", CAROL, CAROL, "knock", Some("no knocks")),
            // Power levels held in strings: fine until v10.
            pl_case("string levels, v1-v9", V1_TO_9, ADMIN, |c| { c["ban"] = json!("60"); c["users"][BOB] = json!("10"); }, ok),
            pl_case("string levels, v10+", ALL, ADMIN, |c| { c["ban"] = json!("60"); }, Some("integer")),
            pl_case("string user level, v10+", ALL, ADMIN, |c| { c["users"][BOB] = json!("10"); }, Some("integer")),
            // Notification levels are limited like the others since v6.
            pl_case("mod raises notifications.room, v1-v5", V1_TO_5, MOD, |c| { c["notifications"]["room"] = json!(100); }, ok),
            pl_case("mod raises notifications.room, v6+", V6_TO_12, MOD, |c| { c["notifications"]["room"] = json!(100); }, Some("notification")),
            // m.room.aliases: the sender's server's own key, with no power needed, until v6.
            case("aliases for own server, v1-v5", V1_TO_5, "invite", "m.room.aliases", Some("x"), BOB, json!({"aliases": []}), ok),
            case("aliases for another server, v1-v5", V1_TO_5, "invite", "m.room.aliases", Some("y"), ADMIN, json!({"aliases": []}), Some("server name")),
            case("aliases, v6+: an ordinary state event", V6_TO_12, "invite", "m.room.aliases", Some("y"), ADMIN, json!({"aliases": []}), ok),
            case("aliases by a member, v6+", V6_TO_12, "invite", "m.room.aliases", Some("x"), BOB, json!({"aliases": []}), Some("power")),
            // v1/v2: a redaction needs the redact level unless it targets an event of the same server.
            case("redaction of another server's event, v1-v2", &[V1, V2], "invite", "m.room.redaction", None, BOB, json!({"redacts": "$other:y"}), Some("allow rules")),
            case("member content with other keys of any type", ALL, "public", MEMBER, Some(CAROL), CAROL, json!({"membership": "join", "creator": 5, "room_version": []}), ok),
            case("redaction of this server's event, v1-v2", &[V1, V2], "invite", "m.room.redaction", None, BOB, json!({"redacts": "$mine:x"}), ok),
            case("redaction of another server's event, v3+", V3_TO_12, "invite", "m.room.redaction", None, BOB, json!({"redacts": "$other:y"}), ok),
        ]);
    }

#[test]
    #[rustfmt::skip]
    fn power_level_changes() {
        let ok = None;
        run(vec![
            // shape
            pl_case("unchanged", ALL, MOD, |_| {}, ok),
            pl_case("string level", ALL, ADMIN, |c| c["ban"] = json!("50"), Some("ban must be an integer")),
            pl_case("float level", ALL, ADMIN, |c| c["kick"] = json!(50.5), Some("kick must be an integer")),
            pl_case("float that looks integral", ALL, ADMIN, |c| c["kick"] = json!(50.0), Some("kick must be an integer")),
            pl_case("null level", ALL, ADMIN, |c| c["invite"] = Value::Null, Some("invite must be an integer")),
            pl_case("out of canonical range", ALL, ADMIN, |c| c["users_default"] = json!(1i64 << 53), Some("users_default must be an integer")),
            pl_case("events value string", ALL, ADMIN, |c| c["events"]["m.room.name"] = json!("50"), Some("events.m.room.name must be an integer")),
            pl_case("events not an object", ALL, ADMIN, |c| c["events"] = json!([]), Some("events must be an object")),
            pl_case("notifications value string", ALL, ADMIN, |c| c["notifications"]["room"] = json!("50"), Some("notifications.room must be an integer")),
            pl_case("users not an object", ALL, ADMIN, |c| c["users"] = json!(5), Some("users must be an object")),
            pl_case("users key not a user ID", ALL, ADMIN, |c| c["users"]["bob"] = json!(0), Some("\"bob\", which is not a valid user ID")),
            pl_case("users key bad server", ALL, ADMIN, |c| c["users"]["@bob:"] = json!(0), Some("not a valid user ID")),
            pl_case("users value string", ALL, ADMIN, |c| c["users"][BOB] = json!("10"), Some("the level of @bob:x must be an integer")),
            // v12: creators may not be listed
            pl_case("list create sender (v12)", ONLY12, ADMIN, |c| c["users"][ALICE] = json!(100), Some("@alice:x is a room creator")),
            pl_case("list additional creator (v12)", ONLY12, ADMIN, |c| c["users"][CO] = json!(0), Some("@co:x is a room creator")),
            pl_case("creator lists themself (v12)", ONLY12, ALICE, |c| c["users"][ALICE] = json!(100), Some("room creator")),
            pl_case("list co as ordinary user (v10/11)", PRE12, ADMIN, |c| c["users"][CO] = json!(50), ok),
            // sender's permission to send power levels
            pl_case("member sends power levels", ALL, BOB, |_| {}, Some("you need power level 50 to send m.room.power_levels (you have 0)")),
            // users
            pl_case("mod promotes member to own level", ALL, MOD, |c| c["users"][BOB] = json!(50), ok),
            pl_case("mod promotes member above own level", ALL, MOD, |c| c["users"][BOB] = json!(51), Some("you cannot give @bob:x power level 51")),
            pl_case("mod demotes equal", ALL, MOD, |c| c["users"][MOD2] = json!(0), Some("you cannot change the power level of @mod2:x (50)")),
            pl_case(
                "mod removes equal",
                ALL,
                MOD,
                |c| {
                    c["users"].as_object_mut().unwrap().remove(MOD2);
                },
                Some("@mod2:x"),
            ),
            pl_case("mod demotes higher", ALL, MOD, |c| c["users"][ADMIN] = json!(0), Some("@admin:x (100)")),
            pl_case("mod demotes self", ALL, MOD, |c| c["users"][MOD] = json!(10), ok),
            pl_case(
                "mod removes self",
                ALL,
                MOD,
                |c| {
                    c["users"].as_object_mut().unwrap().remove(MOD);
                },
                ok,
            ),
            pl_case("mod promotes self", ALL, MOD, |c| c["users"][MOD] = json!(60), Some("you cannot give @mod:x power level 60")),
            pl_case("admin promotes mod to 100", ALL, ADMIN, |c| c["users"][MOD] = json!(100), ok),
            pl_case("admin demotes mod", ALL, ADMIN, |c| c["users"][MOD] = json!(0), ok),
            pl_case("admin demotes admin2", ALL, ADMIN, |c| c["users"][ADMIN2] = json!(50), Some("@admin2:x (100)")),
            pl_case("admin demotes creator (v10/11)", PRE12, ADMIN, |c| c["users"][ALICE] = json!(50), Some("@alice:x (100)")),
            pl_case("creator above 100 (v12)", ONLY12, ALICE, |c| c["users"][ADMIN] = json!(1000), ok),
            pl_case("creator demotes admin (v12)", ONLY12, ALICE, |c| c["users"][ADMIN] = json!(0), ok),
            pl_case("creator above 100 (v10/11)", PRE12, ALICE, |c| c["users"][BOB] = json!(1000), Some("you cannot give @bob:x power level 1000")),
            pl_case("co-creator changes admins (v12)", ONLY12, CO, |c| c["users"][ADMIN2] = json!(0), ok),
            pl_case("co edits power levels (v10/11)", PRE12, CO, |c| c["users"][ADMIN2] = json!(0), Some("you need power level 50 to send m.room.power_levels")),
            // top-level fields
            pl_case("mod lowers kick", ALL, MOD, |c| c["kick"] = json!(40), ok),
            pl_case("mod raises ban above own", ALL, MOD, |c| c["ban"] = json!(60), Some("you cannot set ban to 60")),
            pl_case("mod raises users_default to own", ALL, MOD, |c| c["users_default"] = json!(50), ok),
            pl_case("mod raises users_default above own", ALL, MOD, |c| c["users_default"] = json!(51), Some("users_default to 51")),
            pl_case(
                "mod removes state_default (50)",
                ALL,
                MOD,
                |c| {
                    c.as_object_mut().unwrap().remove("state_default");
                },
                ok,
            ),
            pl_case(
                "mod adds field within level",
                ALL,
                MOD,
                |c| {
                    c.as_object_mut().unwrap().remove("invite");
                },
                ok,
            ),
            with_setup(
                pl_case(
                    "mod removes field above own",
                    ALL,
                    MOD,
                    |c| {
                        c.as_object_mut().unwrap().remove("redact");
                    },
                    Some("you cannot change redact: its current value 100"),
                ),
                |s, _| s.pl_field("redact", json!(100)),
            ),
            with_setup(
                pl_case("mod changes field above own", ALL, MOD, |c| c["redact"] = json!(50), Some("you cannot change redact")),
                |s, _| s.pl_field("redact", json!(100)),
            ),
            with_setup(
                pl_case("mod keeps field above own unchanged", ALL, MOD, |c| c["redact"] = json!(100), ok),
                |s, _| s.pl_field("redact", json!(100)),
            ),
            // events / notifications
            pl_case("mod adds event level at own", ALL, MOD, |c| c["events"]["m.room.name"] = json!(50), ok),
            pl_case("mod adds event level above own", ALL, MOD, |c| c["events"]["m.room.name"] = json!(60), Some("events.m.room.name to 60")),
            pl_case(
                "mod removes low event level",
                ALL,
                MOD,
                |c| {
                    c["events"].as_object_mut().unwrap().remove("m.room.topic");
                },
                ok,
            ),
            pl_case("mod lowers high event level", ALL, MOD, |c| c["events"]["m.room.tombstone"] = json!(50), Some("events.m.room.tombstone: its current value 100")),
            pl_case(
                "mod removes high event level",
                ALL,
                MOD,
                |c| {
                    c["events"]
                        .as_object_mut()
                        .unwrap()
                        .remove("m.room.tombstone");
                },
                Some("m.room.tombstone"),
            ),
            pl_case(
                "mod removes events entirely",
                ALL,
                MOD,
                |c| {
                    c.as_object_mut().unwrap().remove("events");
                },
                Some("m.room.tombstone"),
            ),
            pl_case("mod lowers @room level", ALL, MOD, |c| c["notifications"]["room"] = json!(0), ok),
            pl_case("mod raises @room level above own", ALL, MOD, |c| c["notifications"]["room"] = json!(70), Some("notifications.room to 70")),
            pl_case("admin lowers high event level", ALL, ADMIN, |c| c["events"]["m.room.tombstone"] = json!(50), ok),
        ]);
    }

// -----------------------------------------------------------------------

#[test]
fn create_event() {
    let empty = TestState::default();
    for v in ALL.iter().copied() {
        let c = create_content(v);
        assert_eq!(
            check(v, &ev(CREATE, Some(""), ALICE, &c), &empty),
            Ok(()),
            "{v:?}"
        );
        let bad_key = check(v, &ev(CREATE, Some("x"), ALICE, &c), &empty);
        assert!(bad_key.unwrap_err().0.contains("empty state key"));
        // The room ID's server must be the sender's (v1–v11).
        assert_eq!(
            check(v, &ev(CREATE, Some(""), "@alice:y", &c), &empty).is_ok(),
            v.room_id_from_create()
        );
        let no_key = check(v, &ev(CREATE, None, ALICE, &c), &empty);
        assert!(no_key.is_err());

        let mut no_version = c.clone();
        no_version.as_object_mut().unwrap().remove("room_version");
        let e = check(v, &ev(CREATE, Some(""), ALICE, &no_version), &empty).unwrap_err();
        assert!(e.0.contains("room_version"), "{e}");

        let mut other = c.clone();
        other["room_version"] = json!("9");
        let e = check(v, &ev(CREATE, Some(""), ALICE, &other), &empty).unwrap_err();
        assert!(e.0.contains("does not match"), "{e}");
        other["room_version"] = json!(12);
        assert!(check(v, &ev(CREATE, Some(""), ALICE, &other), &empty).is_err());

        // A second create event (it has a previous event).
        let existing = fresh_room(v);
        let e = check(v, &ev(CREATE, Some(""), ALICE, &c), &existing).unwrap_err();
        assert!(e.0.contains("previous events"), "{e}");
    }

    // v10 requires `creator`; v11/v12 do not.
    let c = json!({ "room_version": "10" });
    let e = check(V10, &ev(CREATE, Some(""), ALICE, &c), &empty).unwrap_err();
    assert!(e.0.contains("creator"), "{e}");
    let c = json!({ "room_version": "10", "creator": 5 });
    assert!(check(V10, &ev(CREATE, Some(""), ALICE, &c), &empty).is_err());
    for v in [V11, V12] {
        let c = json!({ "room_version": v.as_str() });
        assert_eq!(check(v, &ev(CREATE, Some(""), ALICE, &c), &empty), Ok(()));
        // A leftover `creator` is harmless.
        let c = json!({ "room_version": v.as_str(), "creator": ALICE });
        assert_eq!(check(v, &ev(CREATE, Some(""), ALICE, &c), &empty), Ok(()));
    }

    // v12 validates additional_creators; v10/v11 ignore it.
    let bad: &[Value] = &[
        json!("@co:x"),
        json!(["co"]),
        json!(["@co:x", 5]),
        json!(["@co"]),
        json!(["@co:bad host"]),
        json!([format!("@{}:x", "a".repeat(260))]),
    ];
    for extra in bad {
        let mut c = create_content(V12);
        c["additional_creators"] = extra.clone();
        let e = check(V12, &ev(CREATE, Some(""), ALICE, &c), &empty);
        assert!(e.is_err(), "{extra} should be refused");
        for v in PRE12.iter().copied() {
            let mut c = create_content(v);
            c["additional_creators"] = extra.clone();
            assert_eq!(
                check(v, &ev(CREATE, Some(""), ALICE, &c), &empty),
                Ok(()),
                "{v:?} {extra}"
            );
        }
    }
    let good = json!(["@co:x", "@d:example.org:8448", "@e:[::1]", "@f:1.2.3.4:80"]);
    let mut c = create_content(V12);
    c["additional_creators"] = good;
    assert_eq!(check(V12, &ev(CREATE, Some(""), ALICE, &c), &empty), Ok(()));
    let mut c = create_content(V12);
    c["additional_creators"] = json!([]);
    assert_eq!(check(V12, &ev(CREATE, Some(""), ALICE, &c), &empty), Ok(()));
}

#[test]
fn no_create_event() {
    let empty = TestState::default();
    for v in ALL.iter().copied() {
        let c = json!({"body": "x"});
        let e = check(v, &ev("m.room.message", None, ALICE, &c), &empty).unwrap_err();
        assert!(e.0.contains("no `m.room.create` event"), "{e}");
        let m = member("join");
        assert!(check(v, &ev(MEMBER, Some(ALICE), ALICE, &m), &empty).is_err());
    }
}

#[test]
fn first_join_after_create() {
    let join = member("join");
    for v in ALL.iter().copied() {
        let s = fresh_room(v);
        assert_eq!(
            check(v, &ev(MEMBER, Some(ALICE), ALICE, &join), &s),
            Ok(()),
            "{v:?}"
        );
        // Nobody else can join yet (no join rules), not even an additional creator.
        assert!(check(v, &ev(MEMBER, Some(BOB), BOB, &join), &s).is_err());
        assert!(check(v, &ev(MEMBER, Some(CO), CO, &join), &s).is_err());
        // Nobody can join the creator in.
        assert!(check(v, &ev(MEMBER, Some(ALICE), BOB, &join), &s).is_err());
        // The creator cannot send anything else before joining.
        let name = json!({"name": "n"});
        let e = check(v, &ev("m.room.name", Some(""), ALICE, &name), &s).unwrap_err();
        assert!(e.0.contains("membership is not `join`"), "{e}");

        // Once the creator has left, the shortcut no longer applies.
        let mut s2 = s.clone();
        s2.member(ALICE, "leave");
        assert!(check(v, &ev(MEMBER, Some(ALICE), ALICE, &join), &s2).is_err());
    }
    // v10 uses content.creator, not the sender, for the creator.
    let mut s = TestState::default();
    s.set(
        CREATE,
        "",
        ALICE,
        json!({"room_version": "10", "creator": "@zed:x"}),
    );
    assert!(check(V10, &ev(MEMBER, Some(ALICE), ALICE, &join), &s).is_err());
    assert_eq!(
        check(V10, &ev(MEMBER, Some("@zed:x"), "@zed:x", &join), &s),
        Ok(())
    );
    assert_eq!(user_power_level(V10, &s, "@zed:x"), 100);
    assert_eq!(user_power_level(V10, &s, ALICE), 0);
    // ... while v11 ignores content.creator.
    let mut s = TestState::default();
    s.set(
        CREATE,
        "",
        ALICE,
        json!({"room_version": "11", "creator": "@zed:x"}),
    );
    assert_eq!(
        check(V11, &ev(MEMBER, Some(ALICE), ALICE, &join), &s),
        Ok(())
    );
    assert!(check(V11, &ev(MEMBER, Some("@zed:x"), "@zed:x", &join), &s).is_err());
    assert_eq!(user_power_level(V11, &s, ALICE), 100);
    assert_eq!(user_power_level(V11, &s, "@zed:x"), 0);
}

#[test]
fn missing_power_levels() {
    for v in ALL.iter().copied() {
        let mut s = fresh_room(v);
        for u in [ALICE, CO, BOB] {
            s.member(u, "join");
        }
        s.join_rule("public");
        let creator_level = if v == V12 { CREATOR_POWER_LEVEL } else { 100 };
        assert_eq!(user_power_level(v, &s, ALICE), creator_level);
        assert_eq!(user_power_level(v, &s, BOB), 0);
        assert_eq!(
            user_power_level(v, &s, CO),
            if v == V12 { CREATOR_POWER_LEVEL } else { 0 }
        );
        assert_eq!(required_event_level(v, &s, "m.room.name", true), 50);
        assert_eq!(required_event_level(v, &s, "m.room.message", false), 0);
        assert_eq!(
            (
                invite_level(&s),
                kick_level(&s),
                ban_level(&s),
                redact_level(&s)
            ),
            (0, 50, 50, 50)
        );
        assert_eq!(notification_level(&s, "room"), 50);

        let name = json!({"name": "n"});
        assert_eq!(
            check(v, &ev("m.room.name", Some(""), ALICE, &name), &s),
            Ok(())
        );
        let e = check(v, &ev("m.room.name", Some(""), BOB, &name), &s).unwrap_err();
        assert!(e.0.contains("not have enough power"), "{e}");
        let msg = json!({"body": "b"});
        assert_eq!(check(v, &ev("m.room.message", None, BOB, &msg), &s), Ok(()));
        let kick = member("leave");
        assert_eq!(check(v, &ev(MEMBER, Some(BOB), ALICE, &kick), &s), Ok(()));
        assert!(check(v, &ev(MEMBER, Some(ALICE), BOB, &kick), &s).is_err());
        assert_eq!(
            check(v, &ev(MEMBER, Some(CAROL), BOB, &member("invite")), &s),
            Ok(())
        );

        // First power levels event: only the shape is checked (and the v12 creator rule).
        let first = json!({"users": {BOB: 1000}, "state_default": 9000});
        assert_eq!(
            check(v, &ev(POWER_LEVELS, Some(""), ALICE, &first), &s),
            Ok(())
        );
        assert!(check(v, &ev(POWER_LEVELS, Some(""), BOB, &first), &s).is_err());
        let with_creator = json!({"users": {ALICE: 100}});
        let r = check(v, &ev(POWER_LEVELS, Some(""), ALICE, &with_creator), &s);
        assert_eq!(r.is_ok(), v != V12, "{v:?}: {r:?}");
        let bad = json!({"ban": "50"});
        assert!(check(v, &ev(POWER_LEVELS, Some(""), ALICE, &bad), &s).is_err());
    }
}

#[test]
fn power_level_helpers() {
    for v in ALL.iter().copied() {
        let s = std_room(v, "invite");
        assert_eq!(user_power_level(v, &s, MOD), 50);
        assert_eq!(user_power_level(v, &s, ADMIN), 100);
        assert_eq!(user_power_level(v, &s, BOB), 0);
        assert_eq!(user_power_level(v, &s, CAROL), 0);
        assert_eq!(
            user_power_level(v, &s, ALICE),
            if v == V12 { CREATOR_POWER_LEVEL } else { 100 }
        );
        assert_eq!(
            user_power_level(v, &s, CO),
            if v == V12 { CREATOR_POWER_LEVEL } else { 0 }
        );
        assert_eq!(required_event_level(v, &s, "m.room.topic", true), 0);
        assert_eq!(required_event_level(v, &s, "m.room.tombstone", true), 100);
        assert_eq!(required_event_level(v, &s, "m.room.name", true), 50);
        assert_eq!(required_event_level(v, &s, "m.room.message", false), 0);
        assert_eq!(required_event_level(v, &s, "m.room.power_levels", true), 50);

        assert!(is_creator(v, &s, ALICE));
        assert_eq!(is_creator(v, &s, CO), v == V12);
        assert!(!is_creator(v, &s, ADMIN));
        assert_eq!(is_sole_creator(v, &s, ALICE), v != V12);
        let expected: Vec<String> = if v == V12 {
            vec![ALICE.into(), CO.into()]
        } else {
            vec![ALICE.into()]
        };
        assert_eq!(creators(v, &s), expected);

        assert_eq!(membership(&s, BOB), Some("join"));
        assert_eq!(membership(&s, EVE), Some("ban"));
        assert_eq!(membership(&s, CAROL), None);
        assert_eq!(join_rule(&s), Some("invite"));

        // Redactions.
        assert_eq!(may_redact(v, &s, BOB, BOB), Ok(()));
        assert_eq!(may_redact(v, &s, MOD, BOB), Ok(()));
        let e = may_redact(v, &s, BOB, MOD).unwrap_err();
        assert_eq!(
            e.0,
            "you need power level 50 to redact other users' events (you have 0)"
        );
    }
    // users_default applies to unlisted users.
    let mut s = std_room(V11, "invite");
    s.pl_field("users_default", json!(7));
    assert_eq!(user_power_level(V11, &s, CAROL), 7);
    assert_eq!(user_power_level(V11, &s, MOD), 50);
}

#[test]
fn user_id_grammar() {
    for good in [
        "@a:x",
        "@alice:example.org",
        "@a:example.org:8448",
        "@a:[::1]",
        "@a:[1234:5678::abcd]:5678",
        "@a:1.2.3.4",
        "@Ünïcode:x",
        "@:x",
    ] {
        assert!(is_valid_user_id(good), "{good}");
    }
    for bad in [
        "a:x",
        "@a",
        "@a:",
        "@a:x:",
        "@a:x:123456",
        "@a:x:p",
        "@a:[::1",
        "@a:[zz]",
        "@a:ex ample",
        "@a\0b:x",
        "#a:x",
    ] {
        assert!(!is_valid_user_id(bad), "{bad}");
    }
    assert!(!is_valid_user_id(&format!("@{}:x", "a".repeat(253))));
    assert!(is_valid_user_id(&format!("@{}:x", "a".repeat(252))));
}

/// The sequence of events a homeserver sends when creating a room, then others joining.
#[test]
fn room_creation_flow() {
    for v in ALL.iter().copied() {
        let mut s = TestState::default();
        let send = |s: &mut TestState, t: &str, k: Option<&str>, sender: &str, content: Value| {
            let r = check(v, &ev(t, k, sender, &content), s);
            if r.is_ok()
                && let Some(k) = k
            {
                s.set(t, k, sender, content);
            }
            r
        };
        let mut create = json!({ "room_version": v.as_str() });
        if v.create_has_creator_field() {
            create["creator"] = json!(ALICE);
        }
        send(&mut s, CREATE, Some(""), ALICE, create).unwrap();
        send(&mut s, MEMBER, Some(ALICE), ALICE, member("join")).unwrap();
        let mut pl = json!({ "users": {}, "events": { "m.room.tombstone": 150 } });
        if v != V12 {
            pl["users"][ALICE] = json!(100);
        }
        send(&mut s, POWER_LEVELS, Some(""), ALICE, pl).unwrap();
        send(
            &mut s,
            JOIN_RULES,
            Some(""),
            ALICE,
            json!({"join_rule": "invite"}),
        )
        .unwrap();
        send(
            &mut s,
            "m.room.history_visibility",
            Some(""),
            ALICE,
            json!({"history_visibility": "shared"}),
        )
        .unwrap();
        send(
            &mut s,
            "m.room.name",
            Some(""),
            ALICE,
            json!({"name": "Room"}),
        )
        .unwrap();

        // Bob cannot join uninvited; after an invite he can.
        assert!(send(&mut s, MEMBER, Some(BOB), BOB, member("join")).is_err());
        send(&mut s, MEMBER, Some(BOB), ALICE, member("invite")).unwrap();
        send(&mut s, MEMBER, Some(BOB), BOB, member("join")).unwrap();
        send(&mut s, "m.room.message", None, BOB, json!({"body": "hi"})).unwrap();
        assert!(
            send(
                &mut s,
                "m.room.name",
                Some(""),
                BOB,
                json!({"name": "mine"})
            )
            .is_err()
        );

        // Alice bans Bob; he cannot come back until unbanned and re-invited.
        send(&mut s, MEMBER, Some(BOB), ALICE, member("ban")).unwrap();
        let e = send(&mut s, MEMBER, Some(BOB), BOB, member("join")).unwrap_err();
        assert!(e.0.contains("banned"), "{e}");
        assert!(send(&mut s, MEMBER, Some(BOB), ALICE, member("invite")).is_err());
        send(&mut s, MEMBER, Some(BOB), ALICE, member("leave")).unwrap();
        assert!(send(&mut s, MEMBER, Some(BOB), BOB, member("join")).is_err());
        send(&mut s, MEMBER, Some(BOB), ALICE, member("invite")).unwrap();
        send(&mut s, MEMBER, Some(BOB), BOB, member("join")).unwrap();

        // Alice makes Bob a moderator; Bob can neither demote nor kick Alice.
        let mut pl = s.pl_content();
        pl["users"][BOB] = json!(50);
        send(&mut s, POWER_LEVELS, Some(""), ALICE, pl).unwrap();
        let mut pl = s.pl_content();
        if v == V12 {
            pl["users"][ALICE] = json!(0);
            let e = send(&mut s, POWER_LEVELS, Some(""), BOB, pl).unwrap_err();
            assert!(e.0.contains("creator"), "{e}");
        } else {
            pl["users"][ALICE] = json!(0);
            let e = send(&mut s, POWER_LEVELS, Some(""), BOB, pl).unwrap_err();
            assert!(e.0.contains("@alice:x"), "{e}");
        }
        assert!(send(&mut s, MEMBER, Some(ALICE), BOB, member("leave")).is_err());
        send(
            &mut s,
            "m.room.name",
            Some(""),
            BOB,
            json!({"name": "mine"}),
        )
        .unwrap();
        // Only the creator may send the tombstone.
        assert!(send(&mut s, "m.room.tombstone", Some(""), BOB, json!({})).is_err());
        let r = send(&mut s, "m.room.tombstone", Some(""), ALICE, json!({}));
        assert_eq!(r.is_ok(), v == V12, "{v:?}: {r:?}");
    }
}

/// The cost of authorising one message (the draft's view included), in a room with `members`
/// listed in the power levels. Run with `--ignored --nocapture`.
#[test]
#[ignore]
fn auth_check_cost() {
    for members in [10usize, 1000] {
        let v = V12;
        let mut s = std_room(v, "invite");
        let mut pl = s.pl_content();
        for i in 0..members {
            let u = format!("@u{i}:x");
            s.member(&u, "join");
            pl["users"][&u] = json!(10);
        }
        s.set(POWER_LEVELS, "", ALICE, pl);
        let views: HashMap<(String, String), PduView> = s
            .events
            .iter()
            .map(|((t, k), (sender, content))| {
                let id = event_id(t, k);
                let f = EventFields {
                    event_id: Some(&id),
                    room_id: None,
                    sender,
                    event_type: t,
                    state_key: Some(k),
                    prev_events: &[],
                    redacts: None,
                };
                (
                    (t.clone(), k.clone()),
                    PduView::new(f, content, "x").unwrap(),
                )
            })
            .collect();
        let content = json!({"msgtype": "m.text", "body": "hello"});
        let map = content.as_object().unwrap().clone();
        let prev = vec!["$head:x".to_owned()];
        let n = 2000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let f = EventFields {
                event_id: None,
                room_id: None,
                sender: BOB,
                event_type: "m.room.message",
                state_key: None,
                prev_events: &prev,
                redacts: None,
            };
            let view = PduView::new(f, &map, "x").unwrap();
            super::check(v, &view, |t, k| views.get(&(t.to_owned(), k.to_owned()))).unwrap();
        }
        let new = start.elapsed() / n;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let f = EventFields {
                event_id: None,
                room_id: None,
                sender: BOB,
                event_type: "m.room.message",
                state_key: None,
                prev_events: &prev,
                redacts: None,
            };
            std::hint::black_box(PduView::new(f, &map, "x").unwrap());
        }
        println!("view alone {:?}", start.elapsed() / n);
        let no_pl: HashMap<_, _> = views
            .iter()
            .filter(|(k, _)| k.0 != POWER_LEVELS)
            .map(|(k, v)| (k.clone(), v))
            .collect();
        let f = EventFields {
            event_id: None,
            room_id: None,
            sender: ALICE,
            event_type: "m.room.message",
            state_key: None,
            prev_events: &prev,
            redacts: None,
        };
        let view = PduView::new(f, &map, "x").unwrap();
        let start = std::time::Instant::now();
        for _ in 0..n {
            super::check(v, &view, |t, k| {
                no_pl.get(&(t.to_owned(), k.to_owned())).copied()
            })
            .unwrap();
        }
        println!("check without power levels {:?}", start.elapsed() / n);
        println!("{members} users in power levels: {new:?} per message");
    }
}

/// What a check that does not change the power levels is given of them: everything but the
/// `users` entries of other users.
#[test]
fn power_levels_with_only_the_users_looked_up() {
    let content = json!({"ban": "50", "users": {"@a:x": 100, "@b:x": "20", "@c:x": 5},
                             "events": {"m.room.name": 50}, "users_default": 1});
    let split =
        super::PowerLevelsSplit::of(&serde_json::value::to_raw_value(&content).unwrap()).unwrap();
    let slim = split.content_for(&["@b:x", "@z:x", "@b:x"]).unwrap();
    let slim: Value = serde_json::from_str(slim.get()).unwrap();
    assert_eq!(
        slim,
        json!({"ban": "50", "users": {"@b:x": "20"}, "events": {"m.room.name": 50}, "users_default": 1})
    );
    let none = split.content_for(&[]).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(none.get()).unwrap()["users"],
        json!({})
    );
    // Shapes ruma must judge whole.
    for odd in [json!({"users": []}), json!([1])] {
        let raw = serde_json::value::to_raw_value(&odd).unwrap();
        assert!(super::PowerLevelsSplit::of(&raw).is_none(), "{odd}");
    }
}

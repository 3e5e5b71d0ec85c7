//! The server-default push rules: the spec's predefined rules, in the spec's order.
//!
//! ruma's `Ruleset::server_default` follows spec v1.19, which dropped the legacy mention rules
//! (`.m.rule.contains_display_name`, `.m.rule.roomnotif`, `.m.rule.contains_user_name`; MSC4210,
//! spec v1.17). Axon serves spec versions up to v1.14, where they are predefined rules, and clients
//! that do not send `m.mentions` still rely on them to highlight a user's name; Synapse serves them
//! too (rust/src/push/base_rules.rs). ruma still evaluates them, and skips them for events that
//! carry `m.mentions`, as the spec (v1.7–v1.16) asks.

use ruma::UserId;
use ruma::push::{
    Action, AnyPushRuleRef, ConditionalPushRule, FlattenedJson, PatternedPushRule,
    PushConditionRoomCtx, Ruleset,
};
use serde_json::{Value, json};

/// The actions of the legacy rules that highlight a user's name.
fn name_actions() -> serde_json::Value {
    json!(["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}])
}

fn contains_display_name() -> ConditionalPushRule {
    serde_json::from_value(json!({
        "rule_id": ".m.rule.contains_display_name",
        "default": true,
        "enabled": true,
        "conditions": [{"kind": "contains_display_name"}],
        "actions": name_actions(),
    }))
    .expect("a valid predefined rule")
}

fn roomnotif() -> ConditionalPushRule {
    serde_json::from_value(json!({
        "rule_id": ".m.rule.roomnotif",
        "default": true,
        "enabled": true,
        "conditions": [
            {"kind": "event_match", "key": "content.body", "pattern": "@room"},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        "actions": ["notify", {"set_tweak": "highlight"}],
    }))
    .expect("a valid predefined rule")
}

fn contains_user_name(user: &UserId) -> PatternedPushRule {
    serde_json::from_value(json!({
        "rule_id": ".m.rule.contains_user_name",
        "default": true,
        "enabled": true,
        "pattern": user.localpart(),
        "actions": name_actions(),
    }))
    .expect("a valid predefined rule")
}

/// `rules` with `rule` right after the rule `anchor` (at the end if there is none).
fn insert_after<I>(rules: I, anchor: &str, rule: ConditionalPushRule) -> Vec<ConditionalPushRule>
where
    I: IntoIterator<Item = ConditionalPushRule>,
{
    let mut rules: Vec<ConditionalPushRule> = rules.into_iter().collect();
    let at = rules
        .iter()
        .position(|r| r.rule_id == anchor)
        .map_or(rules.len(), |i| i + 1);
    rules.insert(at, rule);
    rules
}

/// The predefined rules for `user`.
pub fn server_default(user: &UserId) -> Ruleset {
    let mut rules = Ruleset::server_default(user);
    let overrides = insert_after(
        std::mem::take(&mut rules.override_),
        ".m.rule.is_user_mention",
        contains_display_name(),
    );
    rules.override_ = insert_after(overrides, ".m.rule.is_room_mention", roomnotif())
        .into_iter()
        .collect();
    rules.content.insert(contains_user_name(user));
    rules
}

/// The predefined rules that name their user (an invite for them, a mention of their ID, their
/// localpart in a body): the only ones in which two users' predefined rulesets differ.
const RULES_NAMING_THE_USER: [&str; 3] = [
    ".m.rule.invite_for_me",
    ".m.rule.is_user_mention",
    ".m.rule.contains_user_name",
];

/// The predefined rules, evaluated for any user who has not changed theirs without a ruleset of
/// their own in memory (a crowd of members would otherwise hold thousands of copies).
///
/// One ruleset made for a stand-in user serves everyone: for an event that cannot match a rule
/// naming the user (see [`Singling::might_single_out`]), a user's own ruleset and the shared one
/// agree on every rule but those naming a user, so they agree on the first rule that matches
/// unless it is one naming the stand-in. In every other case the user's own ruleset is made and
/// evaluated, so the answer is always exactly the user's.
pub struct SharedDefaults {
    rules: Ruleset,
}

impl SharedDefaults {
    pub fn new(server_name: &str) -> Self {
        let stand_in = UserId::parse(format!("@_axon_push_stand_in:{server_name}"))
            .unwrap_or_else(|_| UserId::parse("@_axon_push_stand_in:localhost").expect("valid"));
        SharedDefaults {
            rules: server_default(&stand_in),
        }
    }

    /// The actions of `user`'s predefined rules for `event` (whose strings naming anyone are in
    /// `singling`).
    pub async fn actions(
        &self,
        user: &UserId,
        event: &FlattenedJson,
        singling: &Singling,
        ctx: &PushConditionRoomCtx,
    ) -> Vec<Action> {
        if !singling.might_single_out(user) {
            match first_match(&self.rules, event, ctx).await {
                None => return Vec::new(),
                Some(rule) if !RULES_NAMING_THE_USER.contains(&rule.rule_id()) => {
                    return rule.actions().to_vec();
                }
                Some(_) => {}
            }
        }
        actions(&server_default(user), event, ctx).await
    }
}

/// The first of `rules` that applies to `event` for the context's user: ruma's
/// `Ruleset::get_match` for an event flattened once, where `get_match` flattens it again (and
/// opens a span) for every member it is asked about — most of a big room's evaluation.
pub async fn first_match<'a>(
    rules: &'a Ruleset,
    event: &FlattenedJson,
    ctx: &PushConditionRoomCtx,
) -> Option<AnyPushRuleRef<'a>> {
    // No rule applies to the user's own events.
    if event.get_str("sender") == Some(ctx.user_id.as_str()) {
        return None;
    }
    for rule in rules {
        if rule.applies(event, ctx).await {
            return Some(rule);
        }
    }
    None
}

/// The actions of the first of `rules` that applies (none when none does).
pub async fn actions(
    rules: &Ruleset,
    event: &FlattenedJson,
    ctx: &PushConditionRoomCtx,
) -> Vec<Action> {
    first_match(rules, event, ctx)
        .await
        .map(|rule| rule.actions().to_vec())
        .unwrap_or_default()
}

/// What of an event the rules naming a user look at, lowercased (their matching ignores case):
/// the state key, the body, the mentioned user IDs.
#[derive(Debug, Default)]
pub struct Singling {
    strings: Vec<String>,
}

impl Singling {
    pub fn of(state_key: Option<&str>, content: &Value) -> Self {
        let mentioned = content
            .get("m.mentions")
            .and_then(|m| m.get("user_ids"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        let body = content.get("body").and_then(Value::as_str);
        Singling {
            strings: state_key
                .into_iter()
                .chain(body)
                .chain(mentioned)
                .map(str::to_lowercase)
                .collect(),
        }
    }

    /// Whether a rule naming `user` could match: each needs the user's localpart in one of the
    /// strings (a superset of the matches, never fewer).
    pub fn might_single_out(&self, user: &UserId) -> bool {
        let localpart = user.localpart().to_lowercase();
        self.strings.iter().any(|s| s.contains(&localpart))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> ruma::OwnedUserId {
        UserId::parse("@alice:example.org").unwrap()
    }

    #[test]
    fn legacy_rules_sit_where_the_spec_lists_them() {
        let rules = server_default(&user());
        let ids: Vec<&str> = rules.override_.iter().map(|r| r.rule_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                ".m.rule.master",
                ".m.rule.suppress_notices",
                ".m.rule.invite_for_me",
                ".m.rule.member_event",
                ".m.rule.is_user_mention",
                ".m.rule.contains_display_name",
                ".m.rule.is_room_mention",
                ".m.rule.roomnotif",
                ".m.rule.tombstone",
                ".m.rule.reaction",
                ".m.rule.room.server_acl",
                ".m.rule.suppress_edits",
            ]
        );
        let content: Vec<(&str, &str)> = rules
            .content
            .iter()
            .map(|r| (r.rule_id.as_str(), r.pattern.as_str()))
            .collect();
        assert_eq!(content, [(".m.rule.contains_user_name", "alice")]);
    }

    #[test]
    fn a_missing_anchor_appends() {
        let rules = insert_after(Vec::new(), ".m.rule.nowhere", roomnotif());
        assert_eq!(rules.len(), 1);
    }

    /// Every kind of event the predefined rules tell apart, for users singled out and not, with
    /// and without display names, in rooms of two and of many: the shared rules answer exactly
    /// what each user's own predefined ruleset answers.
    #[tokio::test]
    async fn shared_defaults_answer_as_each_users_own_rules() {
        let shared = SharedDefaults::new("example.org");
        let users = [
            "@alice:example.org",
            "@bob:example.org",
            "@_axon_push_stand_in:example.org",
            "@al:example.org",
        ];
        let member = |membership: &str, key: &str| {
            (
                "m.room.member",
                Some(key.to_owned()),
                json!({"membership": membership}),
            )
        };
        let message = |content: Value| ("m.room.message", None, content);
        let events = [
            message(json!({"msgtype": "m.text", "body": "hello everyone"})),
            message(json!({"msgtype": "m.text", "body": "hi alice!"})),
            message(json!({"msgtype": "m.text", "body": "hi ALICE"})),
            message(json!({"msgtype": "m.text", "body": "really"})),
            message(json!({"msgtype": "m.text", "body": "hi Alice Liddell"})),
            message(json!({"msgtype": "m.text", "body": "@room look"})),
            message(json!({"msgtype": "m.notice", "body": "alice"})),
            message(json!({"msgtype": "m.text", "body": "x",
                "m.mentions": {"user_ids": ["@alice:example.org"]}})),
            message(json!({"msgtype": "m.text", "body": "x",
                "m.mentions": {"user_ids": ["@_axon_push_stand_in:example.org"]}})),
            message(json!({"msgtype": "m.text", "body": "_axon_push_stand_in"})),
            message(json!({"msgtype": "m.text", "body": "x", "m.mentions": {"room": true}})),
            member("invite", "@alice:example.org"),
            member("invite", "@_axon_push_stand_in:example.org"),
            member("join", "@bob:example.org"),
            (
                "m.room.encrypted",
                None,
                json!({"algorithm": "m.megolm.v1.aes-sha2"}),
            ),
            ("m.call.invite", None, json!({"call_id": "c"})),
            ("m.reaction", None, json!({"m.relates_to": {}})),
            (
                "m.room.tombstone",
                Some(String::new()),
                json!({"body": "gone"}),
            ),
        ];
        let room = ruma::OwnedRoomId::try_from("!r:example.org").unwrap();
        for (event_type, state_key, content) in &events {
            let mut event = json!({
                "event_id": "$e", "room_id": room, "sender": "@carol:example.org",
                "type": event_type, "content": content,
            });
            if let Some(key) = state_key {
                event["state_key"] = json!(key);
            }
            let raw: ruma::serde::Raw<Value> = ruma::serde::Raw::new(&event).unwrap();
            let flat = FlattenedJson::from_raw(&raw);
            let singling = Singling::of(state_key.as_deref(), content);
            for user in users {
                let user = UserId::parse(user).unwrap();
                for members in [2u32, 30] {
                    for name in [None, Some("Alice Liddell")] {
                        let ctx = PushConditionRoomCtx::new(
                            room.clone(),
                            members.into(),
                            user.clone(),
                            name.unwrap_or(user.localpart()).to_owned(),
                        );
                        let own = server_default(&user).get_actions(&raw, &ctx).await.to_vec();
                        let got = shared.actions(&user, &flat, &singling, &ctx).await;
                        let direct = actions(&server_default(&user), &flat, &ctx).await;
                        assert_eq!(
                            serde_json::to_value(&direct).unwrap(),
                            serde_json::to_value(&own).unwrap(),
                            "flattened once, {user} {members} {name:?}: {event}"
                        );
                        assert_eq!(
                            serde_json::to_value(&got).unwrap(),
                            serde_json::to_value(&own).unwrap(),
                            "{user} {members} {name:?}: {event}"
                        );
                    }
                }
            }
        }
    }
}

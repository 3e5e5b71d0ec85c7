//! The server-default push rules: the spec's predefined rules, in the spec's order.
//!
//! ruma's `Ruleset::server_default` follows spec v1.19, which dropped the legacy mention rules
//! (`.m.rule.contains_display_name`, `.m.rule.roomnotif`, `.m.rule.contains_user_name`; MSC4210,
//! spec v1.17). Axon serves spec versions up to v1.14, where they are predefined rules, and clients
//! that do not send `m.mentions` still rely on them to highlight a user's name; Synapse serves them
//! too (rust/src/push/base_rules.rs). ruma still evaluates them, and skips them for events that
//! carry `m.mentions`, as the spec (v1.7–v1.16) asks.

use ruma::UserId;
use ruma::push::{ConditionalPushRule, PatternedPushRule, Ruleset};
use serde_json::json;

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
}

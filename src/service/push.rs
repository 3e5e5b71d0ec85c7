//! Push rules (the spec's defaults plus the user's own), their evaluation for new events
//! (notifications and unread counts), pushers and delivery to HTTP push gateways.
//!
//! A user's rules are stored as global account data `m.push_rules` (`{"global": ruleset}`, the
//! format /sync serves), written only by this module. Reading merges them over the current server
//! defaults, so a server upgrade that changes a default rule reaches every user.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ruma::push::{
    Action, AnyPushRuleRef, ConditionalPushRule, FlattenedJson, InsertPushRuleError,
    NewConditionalPushRule, NewPatternedPushRule, NewPushRule, NewSimplePushRule,
    PatternedPushRule, PushCondition, PushConditionPowerLevelsCtx, PushConditionRoomCtx,
    RemovePushRuleError, RuleKind, Ruleset,
};
use ruma::serde::Raw;
use ruma::{Int, OwnedRoomId, OwnedUserId, UInt, UserId};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;

use crate::service::room_cache::RoomSnapshot;
use crate::service::{account_data, notifier, push_defaults, room_versions, writer};
use crate::store::push::PusherRow;
use crate::store::receipts::NewNotification;
use crate::{AppState, Error, Result, store};

pub const KINDS: [&str; 5] = ["override", "underride", "sender", "room", "content"];
const PUSH_RULES: &str = "m.push_rules";
/// Delivery attempts to a push gateway, with doubling waits in between.
const DELIVERY_ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_millis(500);

fn parse_user(user_id: &str) -> Result<OwnedUserId> {
    UserId::parse(user_id).map_err(|e| Error::internal(format!("bad user ID {user_id}: {e}")))
}

/// The user's ruleset: `stored` (the account data content) merged over the server defaults.
pub fn normalise(user_id: &str, stored: Option<&str>) -> Result<Ruleset> {
    let user = parse_user(user_id)?;
    Ok(own_rules(&user, stored).unwrap_or_else(|| push_defaults::server_default(&user)))
}

/// The user's ruleset when rules of their own are stored (`None`: the predefined rules apply).
fn own_rules(user: &UserId, stored: Option<&str>) -> Option<Ruleset> {
    let stored = stored?;
    let Some(saved) = serde_json::from_str::<Value>(stored)
        .ok()
        .and_then(|v| v.get("global").cloned())
        .and_then(|g| serde_json::from_value::<Ruleset>(g).ok())
    else {
        tracing::warn!(%user, "unreadable stored push rules; using the defaults");
        return None;
    };
    Some(merge(push_defaults::server_default(user), saved))
}

/// Defaults keep their definitions but take the user's enabled/actions; the user's own rules come
/// first in each kind (after .m.rule.master among overrides), in the user's order. (User rules can
/// only be placed relative to each other, so they always form one block.)
fn merge(defaults: Ruleset, saved: Ruleset) -> Ruleset {
    fn conditional<'a>(
        defaults: impl Iterator<Item = &'a ConditionalPushRule>,
        saved: impl Iterator<Item = &'a ConditionalPushRule>,
        after_master: bool,
    ) -> Vec<ConditionalPushRule> {
        let mut own = Vec::new();
        let mut chosen: HashMap<&str, (bool, &[Action])> = HashMap::new();
        for rule in saved {
            if rule.default {
                chosen.insert(&rule.rule_id, (rule.enabled, &rule.actions));
            } else {
                own.push(rule.clone());
            }
        }
        let mut out = Vec::new();
        for rule in defaults {
            let mut rule = rule.clone();
            if let Some((enabled, actions)) = chosen.get(rule.rule_id.as_str()) {
                rule.enabled = *enabled;
                rule.actions = actions.to_vec();
            }
            out.push(rule);
        }
        let at =
            usize::from(after_master && out.first().is_some_and(|r| r.rule_id == ".m.rule.master"));
        out.splice(at..at, own);
        out
    }
    let mut merged = Ruleset::new();
    merged.override_ = conditional(defaults.override_.iter(), saved.override_.iter(), true)
        .into_iter()
        .collect();
    merged.underride = conditional(defaults.underride.iter(), saved.underride.iter(), false)
        .into_iter()
        .collect();
    let mut content: Vec<PatternedPushRule> = saved
        .content
        .iter()
        .filter(|r| !r.default)
        .cloned()
        .collect();
    for rule in &defaults.content {
        let mut rule = rule.clone();
        if let Some(s) = saved.content.get(rule.rule_id.as_str()) {
            rule.enabled = s.enabled;
            rule.actions = s.actions.clone();
        }
        content.push(rule);
    }
    merged.content = content.into_iter().collect();
    merged.room = saved.room.iter().filter(|r| !r.default).cloned().collect();
    merged.sender = saved
        .sender
        .iter()
        .filter(|r| !r.default)
        .cloned()
        .collect();
    merged
}

/// A ruleset as clients receive it: every kind present, empty ones as [] (as Synapse serves it).
pub fn ruleset_json(rules: &Ruleset) -> Value {
    let mut value = serde_json::to_value(rules).unwrap_or_else(|_| json!({}));
    if let Some(map) = value.as_object_mut() {
        for kind in KINDS {
            map.entry(kind).or_insert_with(|| json!([]));
        }
    }
    value
}

/// Users' rulesets, kept in memory: the writer evaluates them for every member on every event.
/// Only users with rules of their own hold a ruleset; the others share the predefined one
/// (`push_defaults::SharedDefaults`). A change (m.push_rules written, here or on another process)
/// forgets the user's entry.
#[derive(Default)]
pub struct RulesetCache {
    inner: Mutex<RulesetCacheInner>,
    defaults: OnceLock<push_defaults::SharedDefaults>,
}

#[derive(Default)]
struct RulesetCacheInner {
    /// `None`: the user has no rules of their own.
    by_user: HashMap<String, Option<Arc<Ruleset>>>,
    /// Moves on every change: a read that raced one is not cached.
    generation: u64,
}

const MAX_CACHED_RULESETS: usize = 100_000;

impl RulesetCache {
    pub fn forget(&self, user_id: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.by_user.remove(user_id);
        inner.generation += 1;
    }

    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.by_user.clear();
        inner.generation += 1;
    }

    fn defaults(&self, server_name: &str) -> &push_defaults::SharedDefaults {
        self.defaults
            .get_or_init(|| push_defaults::SharedDefaults::new(server_name))
    }
}

/// Each user's own rules (`None`: the predefined ones).
async fn rulesets_of(
    state: &AppState,
    users: &[String],
) -> Result<HashMap<String, Option<Arc<Ruleset>>>> {
    let cache = &state.push_rules;
    let (mut found, missing, generation) = {
        let inner = cache.inner.lock().unwrap();
        let mut found = HashMap::with_capacity(users.len());
        let mut missing = Vec::new();
        for user in users {
            match inner.by_user.get(user) {
                Some(rules) => {
                    found.insert(user.clone(), rules.clone());
                }
                None => missing.push(user.clone()),
            }
        }
        (found, missing, inner.generation)
    };
    if missing.is_empty() {
        return Ok(found);
    }
    let stored: HashMap<String, String> =
        store::account_data::global_of_users(&state.db, &missing, PUSH_RULES)
            .await?
            .into_iter()
            .collect();
    let mut fresh = Vec::with_capacity(missing.len());
    for user in missing {
        let id = parse_user(&user)?;
        let rules = own_rules(&id, stored.get(&user).map(String::as_str)).map(Arc::new);
        fresh.push((user, rules));
    }
    let mut inner = cache.inner.lock().unwrap();
    let keep = inner.generation == generation;
    if keep && inner.by_user.len() + fresh.len() > MAX_CACHED_RULESETS {
        inner.by_user.clear();
    }
    for (user, rules) in fresh {
        if keep {
            inner.by_user.insert(user.clone(), rules.clone());
        }
        found.insert(user, rules);
    }
    Ok(found)
}

/// The user's current ruleset.
pub async fn rules_for(state: &AppState, user_id: &str) -> Result<Ruleset> {
    let stored = store::account_data::get(&state.db, user_id, "", PUSH_RULES).await?;
    normalise(user_id, stored.as_deref())
}

/// Changes the user's rules under a lock; /sync then reports the new m.push_rules.
async fn modify(
    state: &AppState,
    user_id: &str,
    change: impl FnOnce(&mut Ruleset) -> Result<()>,
) -> Result<()> {
    account_data::update(state, user_id, "", PUSH_RULES, |current| {
        let mut rules = normalise(user_id, current.as_deref())?;
        change(&mut rules)?;
        Ok(Some(json!({ "global": rules }).to_string()))
    })
    .await
}

fn kind_of(kind: &str) -> Result<RuleKind> {
    if !KINDS.contains(&kind) {
        // As Synapse.
        return Err(Error::unrecognized_request(format!(
            "Unknown push rule kind {kind}"
        )));
    }
    Ok(RuleKind::from(kind))
}

fn check_scope(scope: &str) -> Result<()> {
    if scope != "global" {
        return Err(Error::invalid_param("The only push rule scope is global"));
    }
    Ok(())
}

fn rule_json(rule: AnyPushRuleRef<'_>) -> Result<Value> {
    let value = match rule {
        AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => serde_json::to_value(r),
        AnyPushRuleRef::Content(r) => serde_json::to_value(r),
        AnyPushRuleRef::Room(r) => serde_json::to_value(r),
        AnyPushRuleRef::Sender(r) => serde_json::to_value(r),
        _ => return Err(Error::not_found("Unknown push rule")),
    };
    value.map_err(Error::internal)
}

fn not_found() -> Error {
    Error::not_found("The push rule was not found")
}

/// GET /pushrules/global/{kind}/: the user's rules of one kind, in order (as Synapse serves it).
pub async fn kind_rules(state: &AppState, user_id: &str, scope: &str, kind: &str) -> Result<Value> {
    check_scope(scope)?;
    kind_of(kind)?;
    let rules = rules_for(state, user_id).await?;
    Ok(ruleset_json(&rules)[kind].take())
}

/// The attributes of a rule that have their own path: `enabled` and `actions`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RuleAttr {
    Enabled,
    Actions,
}

impl RuleAttr {
    /// Any other attribute is 400 M_UNRECOGNIZED, as in Synapse.
    pub fn parse(attr: &str) -> Result<Self> {
        match attr {
            "enabled" => Ok(Self::Enabled),
            "actions" => Ok(Self::Actions),
            _ => Err(Error::unrecognized_request(format!(
                "Unknown push rule attribute {attr}"
            ))),
        }
    }
}

/// GET /pushrules/global/{kind}/{ruleId}[/{attr}].
pub async fn get_rule(
    state: &AppState,
    user_id: &str,
    scope: &str,
    kind: &str,
    rule_id: &str,
    attr: Option<RuleAttr>,
) -> Result<Value> {
    check_scope(scope)?;
    let kind = kind_of(kind)?;
    let rules = rules_for(state, user_id).await?;
    let rule = rules.get(kind, rule_id).ok_or_else(not_found)?;
    Ok(match attr {
        None => rule_json(rule)?,
        Some(RuleAttr::Enabled) => json!({ "enabled": rule.enabled() }),
        Some(RuleAttr::Actions) => json!({ "actions": rule.actions() }),
    })
}

/// The body of PUT /pushrules/global/{kind}/{ruleId}.
#[derive(serde::Deserialize)]
pub struct RuleBody {
    pub actions: Vec<Action>,
    #[serde(default)]
    pub conditions: Option<Vec<PushCondition>>,
    #[serde(default)]
    pub pattern: Option<String>,
}

/// Where PUT places a rule among the user's own rules of its kind.
#[derive(Default, Clone, Copy)]
pub struct RulePosition<'a> {
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
}

pub async fn put_rule(
    state: &AppState,
    user_id: &str,
    scope: &str,
    kind: &str,
    rule_id: &str,
    position: RulePosition<'_>,
    body: RuleBody,
) -> Result<()> {
    let RulePosition { before, after } = position;
    check_scope(scope)?;
    let rule = match kind_of(kind)? {
        RuleKind::Override => NewPushRule::Override(NewConditionalPushRule::new(
            rule_id.to_owned(),
            body.conditions.unwrap_or_default(),
            body.actions,
        )),
        RuleKind::Underride => NewPushRule::Underride(NewConditionalPushRule::new(
            rule_id.to_owned(),
            body.conditions.unwrap_or_default(),
            body.actions,
        )),
        RuleKind::Content => {
            let pattern = body
                .pattern
                .ok_or_else(|| Error::missing_param("Content rules need a pattern"))?;
            NewPushRule::Content(NewPatternedPushRule::new(
                rule_id.to_owned(),
                pattern,
                body.actions,
            ))
        }
        RuleKind::Room => {
            let room = OwnedRoomId::try_from(rule_id)
                .map_err(|_| Error::invalid_param("The rule ID of a room rule is a room ID"))?;
            NewPushRule::Room(NewSimplePushRule::new(room, body.actions))
        }
        RuleKind::Sender => {
            let sender = OwnedUserId::try_from(rule_id)
                .map_err(|_| Error::invalid_param("The rule ID of a sender rule is a user ID"))?;
            NewPushRule::Sender(NewSimplePushRule::new(sender, body.actions))
        }
        _ => return Err(Error::invalid_param("Unknown push rule kind")),
    };
    modify(state, user_id, |rules| {
        rules.insert(rule, after, before).map_err(|e| match e {
            InsertPushRuleError::ServerDefaultRuleId => Error::invalid_param(
                "Rule IDs starting with a dot are reserved for server-default rules",
            ),
            InsertPushRuleError::InvalidRuleId => {
                Error::invalid_param("Rule IDs cannot contain / or \\")
            }
            InsertPushRuleError::RelativeToServerDefaultRule => {
                Error::invalid_param("Rules cannot be placed relative to server-default rules")
            }
            InsertPushRuleError::UnknownRuleId => Error::matrix(
                axum::http::StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "before/after rule not found",
            ),
            _ => Error::matrix(
                axum::http::StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                e.to_string(),
            ),
        })
    })
    .await
}

pub async fn delete_rule(
    state: &AppState,
    user_id: &str,
    scope: &str,
    kind: &str,
    rule_id: &str,
) -> Result<()> {
    check_scope(scope)?;
    let kind = kind_of(kind)?;
    modify(state, user_id, |rules| {
        rules.remove(kind, rule_id).map_err(|e| match e {
            // As Synapse: only the user's own rules exist to be deleted.
            RemovePushRuleError::ServerDefault => {
                Error::not_found("Server-default rules cannot be deleted")
            }
            _ => not_found(),
        })
    })
    .await
}

pub async fn set_enabled(
    state: &AppState,
    user_id: &str,
    scope: &str,
    kind: &str,
    rule_id: &str,
    enabled: bool,
) -> Result<()> {
    check_scope(scope)?;
    let kind = kind_of(kind)?;
    modify(state, user_id, |rules| {
        rules
            .set_enabled(kind, rule_id, enabled)
            .map_err(|_| not_found())
    })
    .await
}

pub async fn set_actions(
    state: &AppState,
    user_id: &str,
    scope: &str,
    kind: &str,
    rule_id: &str,
    actions: Vec<Action>,
) -> Result<()> {
    check_scope(scope)?;
    let kind = kind_of(kind)?;
    modify(state, user_id, |rules| {
        rules
            .set_actions(kind, rule_id, actions)
            .map_err(|_| not_found())
    })
    .await
}

/// Copies the user's enabled rules that name room `old` to room `new` (Synapse's
/// `copy_push_rules_from_room_to_room_for_user`, synapse/storage/databases/main/push_rule.py):
/// room rules, and the user's override and underride rules with a `room_id` condition on `old`,
/// whose copies take `new` as their rule ID and in that condition.
pub async fn copy_room_rules(state: &AppState, user_id: &str, old: &str, new: &str) -> Result<()> {
    let rules = rules_for(state, user_id).await?;
    let new_room = OwnedRoomId::try_from(new).map_err(Error::internal)?;
    let mut copies: Vec<NewPushRule> = rules
        .room
        .iter()
        .filter(|r| r.enabled && !r.default && r.rule_id == old)
        .map(|r| NewPushRule::Room(NewSimplePushRule::new(new_room.clone(), r.actions.clone())))
        .collect();
    let names_old = |c: &PushCondition| matches!(c, PushCondition::EventMatch(m) if m.key == "room_id" && m.pattern == old);
    for (overrides, set) in [(true, &rules.override_), (false, &rules.underride)] {
        for rule in set.iter().filter(|r| r.enabled && !r.default) {
            if !rule.conditions.iter().any(names_old) {
                continue;
            }
            let conditions = rule
                .conditions
                .iter()
                .map(|c| match c {
                    PushCondition::EventMatch(m) if names_old(c) => PushCondition::EventMatch(
                        ruma::push::EventMatchConditionData::new(m.key.clone(), new.to_owned()),
                    ),
                    other => other.clone(),
                })
                .collect();
            let copy =
                NewConditionalPushRule::new(new.to_owned(), conditions, rule.actions.clone());
            copies.push(if overrides {
                NewPushRule::Override(copy)
            } else {
                NewPushRule::Underride(copy)
            });
        }
    }
    if copies.is_empty() {
        return Ok(());
    }
    modify(state, user_id, |rules| {
        for rule in copies {
            rules.insert(rule, None, None).map_err(Error::internal)?;
        }
        Ok(())
    })
    .await
}

/// Unread notification counts of one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnreadCounts {
    /// Over the whole room, threads included.
    pub notification_count: i64,
    pub highlight_count: i64,
    /// Thread root event ID → (notification_count, highlight_count), for threads only (not "main").
    pub threads: BTreeMap<String, (i64, i64)>,
}

impl UnreadCounts {
    /// Counts one more notification (in a thread unless `thread_id` is "main").
    pub fn add(&mut self, thread_id: &str, highlight: bool) {
        let h = i64::from(highlight);
        self.notification_count += 1;
        self.highlight_count += h;
        if thread_id != "main" {
            let thread = self.threads.entry(thread_id.to_owned()).or_default();
            thread.0 += 1;
            thread.1 += h;
        }
    }
}

/// unread_notifications and unread_thread_notifications per room for the user, counting
/// notifications up to stream position `upto`. Rooms without unread notifications are absent (their
/// counts are 0).
pub async fn unread_counts(
    db: &mut PgConnection,
    user_id: &str,
    rooms: &[String],
    upto: i64,
) -> Result<HashMap<String, UnreadCounts>> {
    let mut out: HashMap<String, UnreadCounts> = HashMap::new();
    for row in store::receipts::unread(db, user_id, rooms, upto).await? {
        let counts = out.entry(row.room_id).or_default();
        counts.notification_count += row.notifications;
        counts.highlight_count += row.highlights;
        if row.thread_id != "main" {
            counts
                .threads
                .insert(row.thread_id, (row.notifications, row.highlights));
        }
    }
    Ok(out)
}

/// The `profile_tag` /notifications items carry: that of the user's pushers (the oldest one that
/// has one). Notifications are the user's, not a pusher's, so the tag is the pushers' current one.
async fn profile_tag_of(state: &AppState, user_id: &str) -> Result<Option<String>> {
    let pushers = store::push::of_user(&state.db, user_id).await?;
    Ok(pushers
        .into_iter()
        .filter_map(|p| p.profile_tag)
        .find(|tag| !tag.is_empty()))
}

/// GET /notifications.
pub async fn notifications(
    state: &AppState,
    user_id: &str,
    from: Option<&str>,
    limit: Option<i64>,
    only: Option<&str>,
) -> Result<Value> {
    let before = match from {
        None | Some("") => i64::MAX,
        Some(token) => token
            .parse::<i64>()
            .map_err(|_| Error::invalid_param("Invalid from token"))?,
    };
    let limit = limit.unwrap_or(20).clamp(1, 100);
    let only_highlight = only.is_some_and(|o| o.contains("highlight"));
    let rows = store::receipts::list(&state.db, user_id, before, limit, only_highlight).await?;
    let next_token = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.stream_ordering.to_string()))
        .flatten();
    let profile_tag = profile_tag_of(state, user_id).await?;
    let mut notifications = Vec::with_capacity(rows.len());
    for row in rows {
        let mut event: Value = serde_json::from_str(&row.client_json).map_err(Error::internal)?;
        if let Some(map) = event.as_object_mut() {
            map.remove("room_id");
        }
        let actions: Value = serde_json::from_str(&row.actions).map_err(Error::internal)?;
        let mut item = json!({
            "actions": actions,
            "event": event,
            "read": row.read,
            "room_id": row.room_id,
            "ts": row.ts,
        });
        if let Some(tag) = &profile_tag {
            item["profile_tag"] = json!(tag);
        }
        notifications.push(item);
    }
    let mut body = json!({ "notifications": notifications });
    if let Some(token) = next_token {
        body["next_token"] = json!(token);
    }
    Ok(body)
}

/// A newly committed event, as the writer hands it over.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub content: Value,
    pub stream_ordering: i64,
    /// The thread root for events in a thread; None for the main timeline.
    pub thread_id: Option<String>,
}

/// What push rule evaluation needs of a room, computed once per room.
struct RoomContext {
    snapshot: Arc<RoomSnapshot>,
    members: Vec<String>,
    power_levels: Option<PushConditionPowerLevelsCtx>,
}

fn room_context(state: &AppState, snapshot: Arc<RoomSnapshot>) -> RoomContext {
    let suffix = format!(":{}", state.server_name);
    let members: Vec<String> = snapshot
        .members_with("join")
        .filter(|u| u.ends_with(&suffix))
        .map(str::to_owned)
        .collect();
    let power_levels = power_levels_ctx(&snapshot);
    RoomContext {
        snapshot,
        members,
        power_levels,
    }
}

/// The display name `.m.rule.contains_display_name` looks for. ruma matches it as a glob, so a name
/// with `*` or `?` (which would match other words, or every message) or a blank one is replaced by
/// the localpart, which `.m.rule.contains_user_name` matches anyway. (Synapse matches the name
/// literally and ignores blank ones.)
fn name_to_match(display_name: Option<&str>, localpart: &str) -> String {
    match display_name {
        Some(name) if !name.trim().is_empty() && !name.contains(['*', '?']) => name.to_owned(),
        _ => localpart.to_owned(),
    }
}

/// The local user an m.room.member invite event is for.
fn local_invitee(event: &NewEvent, local_suffix: &str) -> Option<String> {
    let target = event.state_key.as_deref()?;
    let is_invite = event.event_type == "m.room.member"
        && event.content.get("membership").and_then(Value::as_str) == Some("invite");
    (is_invite && target.ends_with(local_suffix)).then(|| target.to_owned())
}

/// The room's power levels as the @room rule needs them (who may notify the whole room).
fn power_levels_ctx(snapshot: &RoomSnapshot) -> Option<PushConditionPowerLevelsCtx> {
    let int = |v: &Value| crate::service::auth_rules::as_level(v).and_then(Int::new);
    let content = snapshot
        .entry("m.room.power_levels", "")
        .map(|e| e.content.clone())
        .unwrap_or_else(|| json!({}));
    let mut users = BTreeMap::new();
    if let Some(map) = content.get("users").and_then(Value::as_object) {
        for (user, level) in map {
            if let (Ok(user), Some(level)) = (OwnedUserId::try_from(user.as_str()), int(level)) {
                users.insert(user, level);
            }
        }
    }
    let users_default = content
        .get("users_default")
        .and_then(int)
        .unwrap_or_default();
    let notifications = content
        .get("notifications")
        .cloned()
        .and_then(|n| serde_json::from_value(n).ok())
        .unwrap_or_default();
    let mut creators: Vec<OwnedUserId> = Vec::new();
    if let Some(create) = snapshot.entry("m.room.create", "") {
        creators.extend(OwnedUserId::try_from(create.sender.as_str()).ok());
        if let Some(extra) = create
            .content
            .get("additional_creators")
            .and_then(Value::as_array)
        {
            creators.extend(
                extra
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|u| OwnedUserId::try_from(u).ok()),
            );
        }
    }
    let rules = room_versions::rules(snapshot.version);
    let rules = ruma::room_version_rules::RoomPowerLevelsRules::new(&rules.authorization, creators);
    Some(PushConditionPowerLevelsCtx::new(
        users,
        users_default,
        notifications,
        rules,
    ))
}

/// What the push rules decided for a batch of events: notification rows to record (in the same
/// transaction as the events, so counts never lag behind the timeline) and pushes to deliver after.
#[derive(Default)]
pub struct Evaluation {
    pub rows: Vec<NewNotification>,
    /// Index into `rows`' events, the user, the actions.
    pushes: Vec<(usize, String, Vec<Action>)>,
    rooms: HashMap<String, Arc<RoomSnapshot>>,
}

/// Evaluates the push rules of each room's local members (and invited local users) for new events.
/// Reads only: the caller records `rows` (see `record`) and then calls `deliver`. `snapshots` are
/// rooms whose state is not the cached one (`None`: the room's events are not evaluated).
pub async fn evaluate(
    state: &AppState,
    events: &[NewEvent],
    snapshots: &HashMap<String, Option<Arc<RoomSnapshot>>>,
) -> Result<Evaluation> {
    let mut rooms: HashMap<&str, RoomContext> = HashMap::new();
    for event in events {
        if rooms.contains_key(event.room_id.as_str()) {
            continue;
        }
        let snapshot = match snapshots.get(&event.room_id) {
            Some(given) => given.clone(),
            None => writer::room_snapshot(state, &event.room_id).await?,
        };
        if let Some(snapshot) = snapshot {
            rooms.insert(&event.room_id, room_context(state, snapshot));
        }
    }
    let suffix = format!(":{}", state.server_name);
    let invitees: HashSet<String> = events
        .iter()
        .filter_map(|e| local_invitee(e, &suffix))
        .collect();
    let everyone: Vec<String> = rooms
        .values()
        .flat_map(|r| r.members.iter().cloned())
        .chain(invitees)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if everyone.is_empty() {
        return Ok(Evaluation::default());
    }
    let rulesets = rulesets_of(state, &everyone).await?;
    let defaults = state.push_rules.defaults(state.server_name.as_str());

    let now = store::now_ms();
    let mut rows: Vec<NewNotification> = Vec::new();
    let mut pushes: Vec<(usize, String, Vec<Action>)> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let Some(room) = rooms.get(event.room_id.as_str()) else {
            continue;
        };
        let Ok(room_id) = OwnedRoomId::try_from(event.room_id.as_str()) else {
            continue;
        };
        let mut json_event = json!({
            "event_id": event.event_id,
            "room_id": event.room_id,
            "sender": event.sender,
            "type": event.event_type,
            "content": event.content,
        });
        if let Some(key) = &event.state_key {
            json_event["state_key"] = json!(key);
        }
        let raw: Raw<Value> = Raw::new(&json_event).map_err(Error::internal)?;
        // Flattened once for every member (ruma's `get_actions` flattens per call).
        let flat = FlattenedJson::from_raw(&raw);
        let singling = push_defaults::Singling::of(event.state_key.as_deref(), &event.content);
        let member_count =
            UInt::try_from(room.snapshot.member_lists().join.len() as u64).unwrap_or_default();
        // An invited local user is not a member yet, but .m.rule.invite_for_me is for them.
        let invitee = local_invitee(event, &suffix).filter(|u| !room.members.contains(u));
        for user in room.members.iter().chain(invitee.as_ref()) {
            if *user == event.sender {
                continue;
            }
            let Ok(user_id) = OwnedUserId::try_from(user.as_str()) else {
                continue;
            };
            let display_name = name_to_match(
                room.snapshot
                    .entry("m.room.member", user)
                    .and_then(|m| m.content.get("displayname").and_then(Value::as_str)),
                user_id.localpart(),
            );
            let mut ctx =
                PushConditionRoomCtx::new(room_id.clone(), member_count, user_id, display_name);
            if let Some(power_levels) = &room.power_levels {
                ctx = ctx.with_power_levels(power_levels.clone());
            }
            let actions = match &rulesets[user.as_str()] {
                Some(own) => push_defaults::actions(own, &flat, &ctx).await,
                None => defaults.actions(&ctx.user_id, &flat, &singling, &ctx).await,
            };
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            rows.push(NewNotification {
                user_id: user.clone(),
                room_id: event.room_id.clone(),
                stream_ordering: event.stream_ordering,
                event_id: event.event_id.clone(),
                thread_id: event.thread_id.clone().unwrap_or_else(|| "main".into()),
                actions: serde_json::to_string(&actions).map_err(Error::internal)?,
                highlight: actions.iter().any(Action::is_highlight),
                ts: now,
            });
            pushes.push((index, user.clone(), actions));
        }
    }
    let rooms = rooms
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.snapshot))
        .collect();
    Ok(Evaluation {
        rows,
        pushes,
        rooms,
    })
}

/// Evaluates, records and delivers on its own: for events committed without the writer's help.
pub async fn process_new_events(state: &AppState, events: &[NewEvent]) -> Result<()> {
    let evaluation = evaluate(state, events, &HashMap::new()).await?;
    // Only rows not recorded before count: evaluating an event twice changes nothing.
    let notified: HashSet<String> =
        store::receipts::insert_notifications(&state.db, &evaluation.rows)
            .await?
            .into_iter()
            .collect();
    if notified.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = notified.iter().cloned().collect();
    store::stream::notify(&state.db, notifier::CHANNEL, &state.notifier.payload(&keys)).await?;
    state.notifier.wake(keys.iter().map(String::as_str));
    deliver(state, events, evaluation, &notified).await
}

/// Sends the pushes of an evaluation to the users' HTTP pushers (in the background).
pub async fn deliver(
    state: &AppState,
    events: &[NewEvent],
    evaluation: Evaluation,
    notified: &HashSet<String>,
) -> Result<()> {
    let Evaluation {
        mut pushes, rooms, ..
    } = evaluation;
    pushes.retain(|(_, user, _)| notified.contains(user));
    if pushes.is_empty() {
        return Ok(());
    }
    let push_users: Vec<String> = pushes
        .iter()
        .map(|(_, u, _)| u.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let pushers = store::push::of_users(&state.db, &push_users).await?;
    if pushers.is_empty() {
        return Ok(());
    }
    let mut unread: HashMap<String, i64> = HashMap::new();
    for user in &push_users {
        if pushers.iter().any(|p| &p.user_id == user) {
            unread.insert(
                user.clone(),
                store::receipts::total_unread(&state.db, user).await?,
            );
        }
    }
    for (index, user, actions) in pushes {
        let event = &events[index];
        let Some(room) = rooms.get(event.room_id.as_str()) else {
            continue;
        };
        for pusher in pushers
            .iter()
            .filter(|p| p.user_id == user && p.kind == "http")
        {
            let body = gateway_body(
                event,
                room,
                pusher,
                &actions,
                unread.get(&user).copied().unwrap_or(0),
            );
            tokio::spawn(deliver_one(state.clone(), pusher.clone(), body));
        }
    }
    Ok(())
}

/// The /_matrix/push/v1/notify request for one pusher.
fn gateway_body(
    event: &NewEvent,
    room: &RoomSnapshot,
    pusher: &PusherRow,
    actions: &[Action],
    unread: i64,
) -> Value {
    let mut data: Map<String, Value> = serde_json::from_str(&pusher.data).unwrap_or_default();
    data.remove("url");
    let event_id_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
    let mut tweaks = Map::new();
    for action in actions {
        let Ok(Value::Object(obj)) = serde_json::to_value(action) else {
            continue;
        };
        if let Some(Value::String(name)) = obj.get("set_tweak") {
            tweaks.insert(
                name.clone(),
                obj.get("value").cloned().unwrap_or(Value::Bool(true)),
            );
        }
    }
    let device = json!({
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.created_ts / 1000,
        "data": data,
        "tweaks": tweaks,
    });
    let mut notification = json!({
        "event_id": event.event_id,
        "room_id": event.room_id,
        "counts": { "unread": unread },
        "devices": [device],
        "prio": if tweaks.contains_key("highlight") || tweaks.contains_key("sound") { "high" } else { "low" },
    });
    if !event_id_only {
        notification["type"] = json!(event.event_type);
        notification["sender"] = json!(event.sender);
        notification["content"] = event.content.clone();
        if let Some(name) = room
            .entry("m.room.member", &event.sender)
            .and_then(|m| m.content.get("displayname").and_then(Value::as_str))
        {
            notification["sender_display_name"] = json!(name);
        }
        if let Some(name) = room
            .entry("m.room.name", "")
            .and_then(|n| n.content.get("name").and_then(Value::as_str))
        {
            notification["room_name"] = json!(name);
        }
        if event.event_type == "m.room.member" {
            notification["user_is_target"] =
                json!(event.state_key.as_deref() == Some(pusher.user_id.as_str()));
        }
    }
    json!({ "notification": notification })
}

/// Posts to the gateway, retrying with doubling waits; pushkeys the gateway rejects are removed.
async fn deliver_one(state: AppState, pusher: PusherRow, body: Value) {
    let url = serde_json::from_str::<Value>(&pusher.data)
        .ok()
        .and_then(|d| d.get("url").and_then(Value::as_str).map(str::to_owned));
    let Some(url) = url else { return };
    let client = crate::service::federation::net::client_builder(&state.extra_roots)
        .timeout(Duration::from_secs(15))
        .build();
    let Ok(client) = client else { return };
    let mut wait = FIRST_RETRY;
    for attempt in 1..=DELIVERY_ATTEMPTS {
        match client.post(&url).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                let rejected = answer
                    .get("rejected")
                    .and_then(Value::as_array)
                    .is_some_and(|r| {
                        r.iter()
                            .any(|k| k.as_str() == Some(pusher.pushkey.as_str()))
                    });
                let removal = match rejected {
                    true => {
                        store::push::delete(
                            &state.db,
                            &pusher.user_id,
                            &pusher.app_id,
                            &pusher.pushkey,
                        )
                        .await
                    }
                    false => Ok(()),
                };
                if let Err(e) = removal {
                    tracing::warn!(error = %e, "could not remove a rejected pusher");
                }
                return;
            }
            // A gateway refusing the request itself will refuse it again.
            Ok(response) if response.status().is_client_error() => {
                tracing::warn!(status = %response.status(), app_id = %pusher.app_id, "push gateway refused a notification");
                return;
            }
            Ok(response) => {
                tracing::debug!(status = %response.status(), attempt, "push gateway failed")
            }
            Err(e) => tracing::debug!(error = %e, attempt, "push gateway unreachable"),
        }
        if attempt < DELIVERY_ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::warn!(app_id = %pusher.app_id, "giving up on a push notification");
}

/// The body of POST /pushers/set.
#[derive(serde::Deserialize)]
pub struct SetPusher {
    pub pushkey: String,
    pub kind: Option<String>,
    pub app_id: String,
    pub app_display_name: Option<String>,
    pub device_display_name: Option<String>,
    pub profile_tag: Option<String>,
    pub lang: Option<String>,
    pub data: Option<Map<String, Value>>,
    #[serde(default)]
    pub append: bool,
}

pub async fn set_pusher(
    state: &AppState,
    user_id: &str,
    device_id: &str,
    body: SetPusher,
) -> Result<()> {
    if body.pushkey.len() > 512 {
        return Err(Error::invalid_param("pushkey is at most 512 bytes"));
    }
    if body.app_id.chars().count() > 64 {
        return Err(Error::invalid_param("app_id is at most 64 characters"));
    }
    let Some(kind) = body.kind else {
        store::push::delete(&state.db, user_id, &body.app_id, &body.pushkey).await?;
        return Ok(());
    };
    if kind != "http" {
        return Err(Error::invalid_param(format!(
            "Unsupported pusher kind {kind}"
        )));
    }
    let mut missing = Vec::new();
    if body.app_display_name.is_none() {
        missing.push("app_display_name");
    }
    if body.device_display_name.is_none() {
        missing.push("device_display_name");
    }
    if body.lang.is_none() {
        missing.push("lang");
    }
    if body.data.is_none() {
        missing.push("data");
    }
    if !missing.is_empty() {
        return Err(Error::missing_param(format!(
            "Missing parameters: {}",
            missing.join(", ")
        )));
    }
    let data = body.data.unwrap_or_default();
    let url = data
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::missing_param("data.url is required for http pushers"))?;
    let path_ok = url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .is_some_and(|path| path.split(['?', '#']).next() == Some("/_matrix/push/v1/notify"));
    if !path_ok {
        return Err(Error::invalid_param(
            "data.url must be an http(s) URL with the path /_matrix/push/v1/notify",
        ));
    }
    let row = PusherRow {
        user_id: user_id.to_owned(),
        app_id: body.app_id,
        pushkey: body.pushkey,
        kind,
        app_display_name: body.app_display_name.unwrap_or_default(),
        device_display_name: body.device_display_name.unwrap_or_default(),
        profile_tag: body.profile_tag,
        lang: body.lang.unwrap_or_default(),
        data: Value::Object(data).to_string(),
        created_ts: store::now_ms(),
    };
    let mut tx = state.db.begin().await?;
    if !body.append {
        store::push::delete_others(&mut *tx, user_id, &row.app_id, &row.pushkey).await?;
    }
    store::push::upsert(&mut tx, &row, device_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes the pushers a device set: call when the device is logged out or deleted, as Synapse does.
pub async fn remove_device_pushers(state: &AppState, user_id: &str, device_id: &str) -> Result<()> {
    store::push::delete_for_device(&state.db, user_id, device_id).await?;
    Ok(())
}

/// GET /pushers.
pub async fn pushers(state: &AppState, user_id: &str) -> Result<Value> {
    let rows = store::push::of_user(&state.db, user_id).await?;
    let pushers: Vec<Value> = rows
        .into_iter()
        .map(|p| {
            let mut v = json!({
                "pushkey": p.pushkey,
                "kind": p.kind,
                "app_id": p.app_id,
                "app_display_name": p.app_display_name,
                "device_display_name": p.device_display_name,
                "lang": p.lang,
                "data": serde_json::from_str::<Value>(&p.data).unwrap_or_else(|_| json!({})),
            });
            if let Some(tag) = p.profile_tag {
                v["profile_tag"] = json!(tag);
            }
            v
        })
        .collect();
    Ok(json!({ "pushers": pushers }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(rules: &Ruleset) -> String {
        json!({ "global": rules }).to_string()
    }

    #[test]
    fn display_names_that_would_match_as_globs_are_not_matched() {
        assert_eq!(name_to_match(Some("Bobby Tables"), "bob"), "Bobby Tables");
        assert_eq!(name_to_match(Some("*"), "bob"), "bob");
        assert_eq!(name_to_match(Some("B?b"), "bob"), "bob");
        assert_eq!(name_to_match(Some("  "), "bob"), "bob");
        assert_eq!(name_to_match(None, "bob"), "bob");
    }

    #[test]
    fn no_stored_rules_means_the_defaults() {
        let rules = normalise("@a:x", None).unwrap();
        assert_eq!(
            rules.override_.first().map(|r| r.rule_id.as_str()),
            Some(".m.rule.master")
        );
        assert!(
            rules
                .underride
                .iter()
                .any(|r| r.rule_id == ".m.rule.message")
        );
    }

    #[test]
    fn user_rules_follow_master_and_default_changes_stick() {
        let mut rules = normalise("@a:x", None).unwrap();
        let mine = NewConditionalPushRule::new("mine".into(), vec![], vec![Action::Notify]);
        rules
            .insert(NewPushRule::Override(mine), None, None)
            .unwrap();
        rules
            .set_enabled(RuleKind::Underride, ".m.rule.message", false)
            .unwrap();
        let merged = normalise("@a:x", Some(&stored(&rules))).unwrap();
        let ids: Vec<&str> = merged
            .override_
            .iter()
            .map(|r| r.rule_id.as_str())
            .collect();
        assert_eq!(&ids[..2], &[".m.rule.master", "mine"]);
        assert_eq!(
            merged.override_.len(),
            crate::service::push_defaults::server_default(&parse_user("@a:x").unwrap())
                .override_
                .len()
                + 1
        );
        assert!(!merged.underride.get(".m.rule.message").unwrap().enabled);
    }

    #[test]
    fn stale_default_rules_are_refreshed_and_unknown_ones_dropped() {
        let mut rules = normalise("@a:x", None).unwrap();
        let mut old = rules.underride.get(".m.rule.message").unwrap().clone();
        old.conditions.clear();
        rules.underride.replace(old);
        let mut gone = rules.underride.get(".m.rule.call").unwrap().clone();
        gone.rule_id = ".m.rule.retired".into();
        rules.underride.insert(gone);
        let merged = normalise("@a:x", Some(&stored(&rules))).unwrap();
        assert!(
            !merged
                .underride
                .get(".m.rule.message")
                .unwrap()
                .conditions
                .is_empty()
        );
        assert!(merged.underride.get(".m.rule.retired").is_none());
    }

    #[test]
    fn unreadable_stored_rules_fall_back_to_defaults() {
        let merged = normalise("@a:x", Some("not json")).unwrap();
        assert_eq!(
            merged.override_.len(),
            crate::service::push_defaults::server_default(&parse_user("@a:x").unwrap())
                .override_
                .len()
        );
    }
}

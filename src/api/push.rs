//! Push rules, pushers and the notifications list.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use ruma::push::Action;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::Requester;
use crate::api::extract::{Json, Path, Query};
use crate::service::push;
use crate::{AppState, Error, Result};

/// The push rules API at the spec's paths, with Synapse's answers around them: a kind's rules at
/// `{kind}/`, and 400 M_UNRECOGNIZED for a path without a rule ID or with an unknown attribute.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pushrules", get(all_rules))
        .route("/pushrules/", get(all_rules))
        .route("/pushrules/{scope}", get(scope_rules))
        .route("/pushrules/{scope}/", get(scope_rules))
        .route(
            "/pushrules/{scope}/{kind}",
            get(no_rule_id).put(no_rule_id).delete(no_rule_id),
        )
        .route(
            "/pushrules/{scope}/{kind}/",
            get(kind_rules).put(no_rule_id).delete(no_rule_id),
        )
        .route(
            "/pushrules/{scope}/{kind}/{rule_id}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .route(
            "/pushrules/{scope}/{kind}/{rule_id}/{attr}",
            get(get_attr).put(put_attr),
        )
        .route("/pushers", get(pushers))
        .route("/pushers/set", post(set_pusher))
        .route("/notifications", get(notifications))
}

async fn all_rules(
    State(state): State<AppState>,
    requester: Requester,
) -> Result<JsonResponse<Value>> {
    let rules = push::rules_for(&state, requester.user_id.as_str()).await?;
    Ok(JsonResponse(
        json!({ "global": push::ruleset_json(&rules) }),
    ))
}

async fn scope_rules(
    State(state): State<AppState>,
    requester: Requester,
    Path(scope): Path<String>,
) -> Result<JsonResponse<Value>> {
    if scope != "global" {
        return Err(Error::invalid_param("The only push rule scope is global"));
    }
    let rules = push::rules_for(&state, requester.user_id.as_str()).await?;
    Ok(JsonResponse(push::ruleset_json(&rules)))
}

/// `{kind}` or `{kind}/` where a rule is meant: as Synapse, 400 M_UNRECOGNIZED.
async fn no_rule_id(_requester: Requester) -> Result<JsonResponse<Value>> {
    Err(Error::unrecognized_request(
        "Unrecognised request: a push rule ID is missing",
    ))
}

async fn kind_rules(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    let user = requester.user_id.as_str();
    Ok(JsonResponse(
        push::kind_rules(&state, user, &scope, &kind).await?,
    ))
}

type RulePath = Path<(String, String, String)>;
type AttrPath = Path<(String, String, String, String)>;

async fn get_rule(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind, rule_id)): RulePath,
) -> Result<JsonResponse<Value>> {
    let user = requester.user_id.as_str();
    Ok(JsonResponse(
        push::get_rule(&state, user, &scope, &kind, &rule_id, None).await?,
    ))
}

#[derive(Deserialize)]
struct Placement {
    before: Option<String>,
    after: Option<String>,
}

async fn put_rule(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind, rule_id)): RulePath,
    Query(placement): Query<Placement>,
    Json(body): Json<push::RuleBody>,
) -> Result<JsonResponse<Value>> {
    let user = requester.user_id.as_str();
    let position = push::RulePosition {
        before: placement.before.as_deref(),
        after: placement.after.as_deref(),
    };
    push::put_rule(&state, user, &scope, &kind, &rule_id, position, body).await?;
    Ok(JsonResponse(json!({})))
}

async fn delete_rule(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind, rule_id)): RulePath,
) -> Result<JsonResponse<Value>> {
    push::delete_rule(&state, requester.user_id.as_str(), &scope, &kind, &rule_id).await?;
    Ok(JsonResponse(json!({})))
}

async fn get_attr(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind, rule_id, attr)): AttrPath,
) -> Result<JsonResponse<Value>> {
    let attr = push::RuleAttr::parse(&attr)?;
    let user = requester.user_id.as_str();
    Ok(JsonResponse(
        push::get_rule(&state, user, &scope, &kind, &rule_id, Some(attr)).await?,
    ))
}

#[derive(Deserialize)]
struct EnabledBody {
    enabled: bool,
}

#[derive(Deserialize)]
struct ActionsBody {
    actions: Vec<Action>,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: Value) -> Result<T> {
    serde_json::from_value(body).map_err(|e| Error::bad_json(format!("Invalid JSON: {e}")))
}

async fn put_attr(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind, rule_id, attr)): AttrPath,
    Json(body): Json<Value>,
) -> Result<JsonResponse<Value>> {
    let user = requester.user_id.as_str();
    match push::RuleAttr::parse(&attr)? {
        push::RuleAttr::Enabled => {
            let EnabledBody { enabled } = parse_body(body)?;
            push::set_enabled(&state, user, &scope, &kind, &rule_id, enabled).await?;
        }
        push::RuleAttr::Actions => {
            let ActionsBody { actions } = parse_body(body)?;
            push::set_actions(&state, user, &scope, &kind, &rule_id, actions).await?;
        }
    }
    Ok(JsonResponse(json!({})))
}

async fn pushers(
    State(state): State<AppState>,
    requester: Requester,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        push::pushers(&state, requester.user_id.as_str()).await?,
    ))
}

async fn set_pusher(
    State(state): State<AppState>,
    requester: Requester,
    Json(body): Json<push::SetPusher>,
) -> Result<JsonResponse<Value>> {
    push::set_pusher(
        &state,
        requester.user_id.as_str(),
        requester.device_id.as_str(),
        body,
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

#[derive(Deserialize)]
struct NotificationsQuery {
    from: Option<String>,
    limit: Option<i64>,
    only: Option<String>,
}

async fn notifications(
    State(state): State<AppState>,
    requester: Requester,
    Query(q): Query<NotificationsQuery>,
) -> Result<JsonResponse<Value>> {
    let user = requester.user_id.as_str();
    Ok(JsonResponse(
        push::notifications(&state, user, q.from.as_deref(), q.limit, q.only.as_deref()).await?,
    ))
}

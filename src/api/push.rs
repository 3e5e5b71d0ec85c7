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

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pushrules", get(all_rules))
        .route("/pushrules/", get(all_rules))
        .route("/pushrules/{scope}", get(scope_rules))
        .route("/pushrules/{scope}/", get(scope_rules))
        .route(
            "/pushrules/{scope}/{kind}/{rule_id}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .route(
            "/pushrules/{scope}/{kind}/{rule_id}/enabled",
            get(get_enabled).put(put_enabled),
        )
        .route(
            "/pushrules/{scope}/{kind}/{rule_id}/actions",
            get(get_actions).put(put_actions),
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

type RulePath = Path<(String, String, String)>;

async fn get_rule(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind, rule_id)): RulePath,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        push::get_rule(
            &state,
            requester.user_id.as_str(),
            &scope,
            &kind,
            &rule_id,
            None,
        )
        .await?,
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

async fn get_enabled(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind, rule_id)): RulePath,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        push::get_rule(
            &state,
            requester.user_id.as_str(),
            &scope,
            &kind,
            &rule_id,
            Some("enabled"),
        )
        .await?,
    ))
}

#[derive(Deserialize)]
struct EnabledBody {
    enabled: bool,
}

async fn put_enabled(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind, rule_id)): RulePath,
    Json(body): Json<EnabledBody>,
) -> Result<JsonResponse<Value>> {
    push::set_enabled(
        &state,
        requester.user_id.as_str(),
        &scope,
        &kind,
        &rule_id,
        body.enabled,
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

async fn get_actions(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind, rule_id)): RulePath,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        push::get_rule(
            &state,
            requester.user_id.as_str(),
            &scope,
            &kind,
            &rule_id,
            Some("actions"),
        )
        .await?,
    ))
}

#[derive(Deserialize)]
struct ActionsBody {
    actions: Vec<Action>,
}

async fn put_actions(
    State(state): State<AppState>,
    requester: Requester,
    Path((scope, kind, rule_id)): RulePath,
    Json(body): Json<ActionsBody>,
) -> Result<JsonResponse<Value>> {
    push::set_actions(
        &state,
        requester.user_id.as_str(),
        &scope,
        &kind,
        &rule_id,
        body.actions,
    )
    .await?;
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

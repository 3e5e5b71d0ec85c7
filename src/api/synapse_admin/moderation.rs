//! Synapse's registration token and event report admin APIs.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::AdminRequester;
use crate::api::extract::{Json, Path, Query};
use crate::service::admin::reports::{self, EventReportRow, ReportQuery};
use crate::service::admin::tokens::{self, NewToken, RegistrationToken};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/registration_tokens", get(list_tokens))
        .route(
            "/_synapse/admin/v1/registration_tokens/new",
            post(new_token),
        )
        .route(
            "/_synapse/admin/v1/registration_tokens/{token}",
            get(get_token).put(update_token).delete(delete_token),
        )
        .route("/_synapse/admin/v1/event_reports", get(list_reports))
        .route(
            "/_synapse/admin/v1/event_reports/{report_id}",
            get(get_report).delete(delete_report),
        )
}

/// A token as Synapse shows it (`pending`: Axon counts a use only when registration completes).
fn token_json(t: &RegistrationToken) -> Value {
    json!({
        "token": t.token,
        "uses_allowed": t.uses_allowed,
        "pending": 0,
        "completed": t.completed,
        "expiry_time": t.expiry_ts,
    })
}

#[derive(Deserialize)]
struct ListTokensQuery {
    valid: Option<bool>,
}

async fn list_tokens(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Query(q): Query<ListTokensQuery>,
) -> Result<JsonResponse<Value>> {
    let tokens = tokens::list(&state, q.valid).await?;
    let list: Vec<Value> = tokens.iter().map(token_json).collect();
    Ok(JsonResponse(json!({"registration_tokens": list})))
}

/// The integer fields of the token bodies; a wrong type is 400 `M_INVALID_PARAM` as Synapse.
fn int_field(body: &Value, field: &str) -> Result<Option<Option<i64>>> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => v
            .as_i64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| Error::invalid_param(format!("{field} must be an integer or null"))),
    }
}

async fn new_token(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Json(body): Json<Value>,
) -> Result<JsonResponse<Value>> {
    let token = match body.get("token") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(Error::invalid_param("token must be a string")),
    };
    let new = NewToken {
        token,
        length: int_field(&body, "length")?.flatten(),
        uses_allowed: int_field(&body, "uses_allowed")?.flatten(),
        expiry_ts: int_field(&body, "expiry_time")?.flatten(),
    };
    Ok(JsonResponse(token_json(
        &tokens::create(&state, new).await?,
    )))
}

async fn get_token(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(token): Path<String>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(token_json(
        &tokens::get(&state, &token).await?,
    )))
}

async fn update_token(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(token): Path<String>,
    Json(body): Json<Value>,
) -> Result<JsonResponse<Value>> {
    let uses = int_field(&body, "uses_allowed")?;
    let expiry = int_field(&body, "expiry_time")?;
    let updated = tokens::update(&state, &token, uses, expiry).await?;
    Ok(JsonResponse(token_json(&updated)))
}

async fn delete_token(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(token): Path<String>,
) -> Result<JsonResponse<Value>> {
    tokens::delete(&state, &token).await?;
    Ok(JsonResponse(json!({})))
}

fn report_json(r: &EventReportRow) -> Value {
    json!({
        "id": r.id,
        "received_ts": r.received_ts,
        "room_id": r.room_id,
        "name": r.room_name,
        "event_id": r.event_id,
        "user_id": r.reporter,
        "reason": r.reason,
        "score": r.score,
        "sender": r.sender,
        "canonical_alias": r.canonical_alias,
    })
}

#[derive(Deserialize)]
struct ListReportsQuery {
    from: Option<i64>,
    limit: Option<i64>,
    dir: Option<String>,
    user_id: Option<String>,
    room_id: Option<String>,
    event_sender_user_id: Option<String>,
}

async fn list_reports(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Query(q): Query<ListReportsQuery>,
) -> Result<JsonResponse<Value>> {
    let query = ReportQuery {
        from: q.from,
        limit: q.limit,
        dir: q.dir,
        user_id: q.user_id,
        room_id: q.room_id,
        event_sender_user_id: q.event_sender_user_id,
    };
    let (rows, total, next) = reports::event_reports(&state, query).await?;
    let mut body = json!({
        "event_reports": rows.iter().map(report_json).collect::<Vec<_>>(),
        "total": total,
    });
    if let Some(next) = next {
        body["next_token"] = json!(next);
    }
    Ok(JsonResponse(body))
}

/// A report ID: a non-negative integer, else 400 as Synapse.
fn report_id(text: &str) -> Result<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| {
            Error::invalid_param(
                "The report_id parameter must be a string representing a positive integer.",
            )
        })
}

async fn get_report(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let report = reports::event_report(&state, report_id(&id)?).await?;
    let mut body = report_json(&report);
    // As Synapse: the event as federation carries it, with `unsigned.age_ts`.
    let mut event: Value = match &report.event_json {
        Some(text) => serde_json::from_str(text).map_err(Error::internal)?,
        None => Value::Null,
    };
    if let Some(pdu) = event.as_object_mut() {
        let ts = pdu.get("origin_server_ts").cloned().unwrap_or(Value::Null);
        let unsigned = pdu.entry("unsigned").or_insert_with(|| json!({}));
        if let Some(unsigned) = unsigned.as_object_mut() {
            unsigned.entry("age_ts").or_insert(ts);
        }
    }
    body["event_json"] = event;
    Ok(JsonResponse(body))
}

async fn delete_report(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(id): Path<String>,
) -> Result<JsonResponse<Value>> {
    reports::delete_event_report(&state, report_id(&id)?).await?;
    Ok(JsonResponse(json!({})))
}

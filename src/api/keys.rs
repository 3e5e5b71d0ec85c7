//! End-to-end encryption keys: /keys/upload, /keys/query, /keys/claim, /keys/changes, and
//! cross-signing (/keys/device_signing/upload, /keys/signatures/upload).

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Request, State};
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::api::auth::{GuestAllowed, Requester, UiaJson};
use crate::api::extract::{Json, Query, body_bytes};
use crate::service::e2ee::{self, cross_signing, keys};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/keys/upload", post(upload))
        .route("/keys/query", post(query))
        .route("/keys/claim", post(claim))
        .route("/keys/changes", get(changes))
        .route("/keys/device_signing/upload", post(upload_cross_signing))
        .route("/keys/signatures/upload", post(upload_signatures))
}

/// The unstable paths of cross-signing (MSC1756) that clients still call, answered like v3.
pub fn unstable_routes() -> Router<AppState> {
    let prefix = "/_matrix/client/unstable/keys";
    Router::new()
        .route(
            &format!("{prefix}/device_signing/upload"),
            post(upload_cross_signing),
        )
        .route(
            &format!("{prefix}/signatures/upload"),
            post(upload_signatures),
        )
}

/// A JSON body parsed straight from its bytes, so `RawValue` fields keep the client's exact text
/// (the shared `Json` goes through `Value`, which cannot hold raw JSON). Same errors as `Json`.
pub struct RawJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for RawJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = body_bytes(req, state).await?;
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::not_json("Content not UTF-8"))?;
        let text = if text.trim().is_empty() { "{}" } else { text };
        let raw: &RawValue = serde_json::from_str(text)
            .map_err(|e| Error::not_json(format!("Content not JSON: {e}")))?;
        serde_json::from_str(raw.get())
            .map(RawJson)
            .map_err(|e| Error::bad_json(format!("Invalid JSON: {e}")))
    }
}

async fn upload(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    RawJson(body): RawJson<keys::KeysUpload>,
) -> Result<JsonResponse<Value>> {
    let counts = keys::upload(
        &state,
        requester.user_id.as_str(),
        requester.device_id.as_str(),
        body,
    )
    .await?;
    Ok(JsonResponse(json!({ "one_time_key_counts": counts })))
}

#[derive(Deserialize)]
struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
}

async fn query(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Json(body): Json<QueryBody>,
) -> Result<JsonResponse<Value>> {
    let cost = body.device_keys.len().min(keys::MAX_QUERY_USERS);
    state.rate_limiter.key_lookups(&requester, cost)?;
    Ok(JsonResponse(
        keys::query(&state, requester.user_id.as_str(), &body.device_keys).await?,
    ))
}

#[derive(Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

async fn claim(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Json(body): Json<ClaimBody>,
) -> Result<JsonResponse<Value>> {
    let devices: usize = body.one_time_keys.values().map(BTreeMap::len).sum();
    state
        .rate_limiter
        .key_lookups(&requester, devices.min(keys::MAX_CLAIM_DEVICES))?;
    Ok(JsonResponse(
        keys::claim(&state, &body.one_time_keys).await?,
    ))
}

#[derive(Deserialize)]
struct ChangesQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn changes(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Query(query): Query<ChangesQuery>,
) -> Result<JsonResponse<Value>> {
    let from = query
        .from
        .ok_or_else(|| Error::missing_param("Missing 'from'"))?;
    let to = query
        .to
        .ok_or_else(|| Error::missing_param("Missing 'to'"))?;
    let (changed, left) =
        e2ee::changes_between(&state, requester.user_id.as_str(), &from, &to).await?;
    Ok(JsonResponse(json!({ "changed": changed, "left": left })))
}

async fn upload_cross_signing(
    State(state): State<AppState>,
    requester: Requester,
    UiaJson { body, operation }: UiaJson<cross_signing::CrossSigningUpload>,
) -> Result<JsonResponse<Value>> {
    cross_signing::upload_keys(&state, requester.user_id.as_str(), &operation, body).await?;
    Ok(JsonResponse(json!({})))
}

async fn upload_signatures(
    State(state): State<AppState>,
    requester: Requester,
    Json(body): Json<BTreeMap<String, BTreeMap<String, Value>>>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        cross_signing::upload_signatures(&state, requester.user_id.as_str(), &body).await?,
    ))
}

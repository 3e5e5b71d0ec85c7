//! /sync and filters.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{GuestAllowed, Requester};
use crate::api::extract::{Json, Path, Query};
use crate::service::sync::{SyncRequest, SyncResponse};
use crate::service::{filter, sync};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sync", get(get_sync))
        .route("/user/{user_id}/filter", post(create_filter))
        .route("/user/{user_id}/filter/{filter_id}", get(get_filter))
}

#[derive(Deserialize)]
struct SyncParams {
    since: Option<String>,
    timeout: Option<String>,
    full_state: Option<String>,
    set_presence: Option<String>,
    filter: Option<String>,
}

async fn get_sync(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Query(p): Query<SyncParams>,
) -> Result<SyncBody> {
    let timeout_ms = match p.timeout.as_deref() {
        None | Some("") => 0,
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| Error::invalid_param("timeout must be a non-negative integer"))?,
    };
    let full_state = match p.full_state.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Error::invalid_param("full_state must be true or false")),
    };
    if let Some(presence) = p.set_presence.as_deref()
        && !matches!(presence, "online" | "offline" | "unavailable")
    {
        return Err(Error::invalid_param(
            "set_presence must be online, offline or unavailable",
        ));
    }
    // Both boxed: a waiting long poll then holds only the sync's own state, not the largest of
    // these steps' (kilobytes per connection with thousands of clients polling).
    let filter = Box::pin(filter::resolve(
        &state,
        requester.user_id.as_str(),
        p.filter.as_deref(),
    ))
    .await?;
    let request = SyncRequest {
        since: p.since,
        timeout_ms,
        full_state,
        set_presence: p.set_presence,
        filter,
    };
    Ok(SyncBody(
        Box::pin(sync::sync(&state, &requester, request)).await?,
    ))
}

/// A sync response as JSON, written into a buffer sized for a woken long poll's answer at once:
/// axum's `Json` starts at 128 bytes and doubles, four reallocations for that kilobyte on every
/// wake-up of every poller.
struct SyncBody(SyncResponse);

/// Room for a woken long poll's answer (a message and its counts: about 950 bytes).
const SYNC_BODY_CAPACITY: usize = 1024;

impl IntoResponse for SyncBody {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(SYNC_BODY_CAPACITY);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(e) => Error::internal(e).into_response(),
        }
    }
}

fn require_self(requester: &Requester, user_id: &str) -> Result<()> {
    if requester.user_id.as_str() != user_id {
        return Err(Error::forbidden("You can only manage your own filters"));
    }
    Ok(())
}

async fn create_filter(
    State(state): State<AppState>,
    requester: Requester,
    Path(user_id): Path<String>,
    Json(body): Json<Value>,
) -> Result<JsonResponse<Value>> {
    require_self(&requester, &user_id)?;
    if !body.is_object() {
        return Err(Error::bad_json("A filter must be a JSON object"));
    }
    let id = filter::create(&state, &user_id, body).await?;
    Ok(JsonResponse(json!({ "filter_id": id })))
}

async fn get_filter(
    State(state): State<AppState>,
    requester: Requester,
    Path((user_id, filter_id)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    require_self(&requester, &user_id)?;
    Ok(JsonResponse(
        filter::get(&state, &user_id, &filter_id).await?,
    ))
}

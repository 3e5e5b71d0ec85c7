//! POST /search (server-side search).

use axum::extract::State;
use axum::routing::post;
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;

use crate::api::auth::Requester;
use crate::api::extract::{Json, Query};
use crate::service::search::request::SearchRequest;
use crate::service::search::{self, SearchResponse};
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new().route("/search", post(search_events))
}

#[derive(Deserialize)]
struct SearchParams {
    next_batch: Option<String>,
}

async fn search_events(
    State(state): State<AppState>,
    requester: Requester,
    Query(p): Query<SearchParams>,
    Json(body): Json<SearchRequest>,
) -> Result<JsonResponse<SearchResponse>> {
    Ok(JsonResponse(
        search::search(&state, &requester, body, p.next_batch.as_deref()).await?,
    ))
}

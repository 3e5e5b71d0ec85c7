//! Spaces and room previews: GET /v1/rooms/{roomId}/hierarchy and GET /v1/room_summary/{roomIdOrAlias}
//! (also under MSC3266's unstable paths, as Synapse serves them).

use axum::extract::State;
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::api::auth::{MaybeRequester, Requester};
use crate::api::extract::{Path, Query};
use crate::service::spaces::{self, HierarchyRequest};
use crate::{AppState, Result};

/// Routes under /_matrix/client/v1.
pub fn v1_routes() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room_id}/hierarchy", get(hierarchy))
        .route("/room_summary/{room_id_or_alias}", get(summary))
}

/// MSC3266's unstable room summary paths (the second one deprecated), at the root.
pub fn unstable_routes() -> Router<AppState> {
    const PREFIX: &str = "/_matrix/client/unstable/im.nheko.summary";
    Router::new()
        .route(
            &format!("{PREFIX}/summary/{{room_id_or_alias}}"),
            get(summary),
        )
        .route(
            &format!("{PREFIX}/rooms/{{room_id_or_alias}}/summary"),
            get(summary),
        )
}

#[derive(Deserialize)]
struct HierarchyQuery {
    #[serde(default)]
    suggested_only: bool,
    max_depth: Option<i64>,
    limit: Option<i64>,
    from: Option<String>,
}

async fn hierarchy(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Query(q): Query<HierarchyQuery>,
) -> Result<JsonResponse<Value>> {
    let req = HierarchyRequest {
        suggested_only: q.suggested_only,
        max_depth: q.max_depth,
        limit: q.limit,
        from: q.from.as_deref(),
    };
    Ok(JsonResponse(
        spaces::hierarchy(&state, &requester, &room_id, req).await?,
    ))
}

/// Without an access token, only rooms anyone may preview. `via` is accepted and unused: without
/// federation there is no other server to ask.
async fn summary(
    State(state): State<AppState>,
    MaybeRequester(requester): MaybeRequester,
    Path(room_id_or_alias): Path<String>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        spaces::summary(&state, requester.as_ref(), &room_id_or_alias).await?,
    ))
}

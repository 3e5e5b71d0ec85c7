//! History: /messages, /context, and the v1 endpoints /relations, /threads, /timestamp_to_event.

use axum::extract::State;
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::api::auth::{GuestAllowed, Requester};
use crate::api::extract::{Path, Query};
use crate::service::messages::{self, Context, MessagesPage, MessagesQuery, RelationsPage};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room_id}/messages", get(get_messages))
        .route("/rooms/{room_id}/context/{event_id}", get(context))
}

/// Endpoints that only exist under /_matrix/client/v1.
pub fn v1_routes() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room_id}/relations/{event_id}", get(relations))
        .route(
            "/rooms/{room_id}/relations/{event_id}/{rel_type}",
            get(relations_of_type),
        )
        .route(
            "/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}",
            get(relations_of_type_and_event),
        )
        .route("/rooms/{room_id}/threads", get(threads))
        .route(
            "/rooms/{room_id}/timestamp_to_event",
            get(timestamp_to_event),
        )
}

#[derive(Deserialize)]
struct MessagesParams {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    limit: Option<String>,
    filter: Option<String>,
}

fn parse_limit(limit: Option<&str>) -> Result<Option<i64>> {
    limit
        .map(|l| {
            l.parse::<i64>()
                .map_err(|_| Error::invalid_param("limit must be an integer"))
        })
        .transpose()
}

async fn get_messages(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path(room_id): Path<String>,
    Query(p): Query<MessagesParams>,
) -> Result<JsonResponse<MessagesPage>> {
    let query = MessagesQuery {
        from: p.from,
        to: p.to,
        dir: p.dir.unwrap_or_else(|| "b".into()),
        limit: parse_limit(p.limit.as_deref())?,
        filter: p.filter,
    };
    Ok(JsonResponse(
        messages::messages(&state, &requester, &room_id, query).await?,
    ))
}

#[derive(Deserialize)]
struct ContextParams {
    limit: Option<String>,
    filter: Option<String>,
}

async fn context(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((room_id, event_id)): Path<(String, String)>,
    Query(p): Query<ContextParams>,
) -> Result<JsonResponse<Context>> {
    let limit = parse_limit(p.limit.as_deref())?;
    Ok(JsonResponse(
        messages::context(
            &state,
            &requester,
            &room_id,
            &event_id,
            limit,
            p.filter.as_deref(),
        )
        .await?,
    ))
}

#[derive(Deserialize)]
struct RelationsParams {
    from: Option<String>,
    dir: Option<String>,
    limit: Option<String>,
}

async fn relations(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((room_id, event_id)): Path<(String, String)>,
    Query(p): Query<RelationsParams>,
) -> Result<JsonResponse<RelationsPage>> {
    relations_inner(state, requester, room_id, event_id, None, None, p).await
}

async fn relations_of_type(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((room_id, event_id, rel_type)): Path<(String, String, String)>,
    Query(p): Query<RelationsParams>,
) -> Result<JsonResponse<RelationsPage>> {
    relations_inner(state, requester, room_id, event_id, Some(rel_type), None, p).await
}

async fn relations_of_type_and_event(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((room_id, event_id, rel_type, event_type)): Path<(String, String, String, String)>,
    Query(p): Query<RelationsParams>,
) -> Result<JsonResponse<RelationsPage>> {
    relations_inner(
        state,
        requester,
        room_id,
        event_id,
        Some(rel_type),
        Some(event_type),
        p,
    )
    .await
}

async fn relations_inner(
    state: AppState,
    requester: Requester,
    room_id: String,
    event_id: String,
    rel_type: Option<String>,
    event_type: Option<String>,
    p: RelationsParams,
) -> Result<JsonResponse<RelationsPage>> {
    let limit = parse_limit(p.limit.as_deref())?;
    let page = messages::relations(
        &state,
        &requester,
        &room_id,
        &event_id,
        rel_type.as_deref(),
        event_type.as_deref(),
        p.from.as_deref(),
        p.dir.as_deref(),
        limit,
    )
    .await?;
    Ok(JsonResponse(page))
}

#[derive(Deserialize)]
struct ThreadsParams {
    include: Option<String>,
    from: Option<String>,
    limit: Option<String>,
}

async fn threads(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Query(p): Query<ThreadsParams>,
) -> Result<JsonResponse<RelationsPage>> {
    let limit = parse_limit(p.limit.as_deref())?;
    Ok(JsonResponse(
        messages::threads(
            &state,
            &requester,
            &room_id,
            p.include.as_deref(),
            p.from.as_deref(),
            limit,
        )
        .await?,
    ))
}

#[derive(Deserialize)]
struct TimestampParams {
    ts: Option<String>,
    dir: Option<String>,
}

async fn timestamp_to_event(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Query(p): Query<TimestampParams>,
) -> Result<JsonResponse<Value>> {
    let ts =
        p.ts.ok_or_else(|| Error::missing_param("ts is required"))?
            .parse::<i64>()
            .map_err(|_| Error::invalid_param("ts must be an integer"))?;
    let dir = p
        .dir
        .ok_or_else(|| Error::missing_param("dir is required"))?;
    Ok(JsonResponse(
        messages::timestamp_to_event(&state, &requester, &room_id, ts, &dir).await?,
    ))
}

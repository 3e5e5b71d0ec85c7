//! Server-side key backup: /room_keys/version[/{version}] and /room_keys/keys[/{roomId}[/{sessionId}]].

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::Requester;
use crate::api::extract::{Json, Path, Query};
use crate::service::e2ee::backup::{self, RoomSessions, SessionBody, VersionBody};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/room_keys/version",
            get(current_version).post(create_version),
        )
        .route(
            "/room_keys/version/{version}",
            get(get_version).put(update_version).delete(delete_version),
        )
        .route(
            "/room_keys/keys",
            get(get_all).put(put_all).delete(delete_all),
        )
        .route(
            "/room_keys/keys/{room_id}",
            get(get_room).put(put_room).delete(delete_room),
        )
        .route(
            "/room_keys/keys/{room_id}/{session_id}",
            get(get_session).put(put_session).delete(delete_session),
        )
}

async fn current_version(
    State(state): State<AppState>,
    requester: Requester,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        backup::get_version(&state, requester.user_id.as_str(), None).await?,
    ))
}

async fn create_version(
    State(state): State<AppState>,
    requester: Requester,
    Json(body): Json<VersionBody>,
) -> Result<JsonResponse<Value>> {
    let version = backup::create_version(&state, requester.user_id.as_str(), &body).await?;
    Ok(JsonResponse(json!({ "version": version })))
}

async fn get_version(
    State(state): State<AppState>,
    requester: Requester,
    Path(version): Path<String>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        backup::get_version(&state, requester.user_id.as_str(), Some(&version)).await?,
    ))
}

async fn update_version(
    State(state): State<AppState>,
    requester: Requester,
    Path(version): Path<String>,
    Json(body): Json<VersionBody>,
) -> Result<JsonResponse<Value>> {
    backup::update_version(&state, requester.user_id.as_str(), &version, &body).await?;
    Ok(JsonResponse(json!({})))
}

async fn delete_version(
    State(state): State<AppState>,
    requester: Requester,
    Path(version): Path<String>,
) -> Result<JsonResponse<Value>> {
    backup::delete_version(&state, requester.user_id.as_str(), &version).await?;
    Ok(JsonResponse(json!({})))
}

#[derive(Deserialize)]
struct VersionQuery {
    version: Option<String>,
}

impl VersionQuery {
    fn required(self) -> Result<String> {
        self.version
            .ok_or_else(|| Error::missing_param("Missing the 'version' query parameter"))
    }
}

#[derive(Deserialize)]
struct AllRoomsBody {
    rooms: BTreeMap<String, RoomBody>,
}

#[derive(Deserialize)]
struct RoomBody {
    sessions: BTreeMap<String, SessionBody>,
}

fn stored(etag: String, count: i64) -> JsonResponse<Value> {
    JsonResponse(json!({ "etag": etag, "count": count }))
}

async fn put_all(
    State(state): State<AppState>,
    requester: Requester,
    Query(query): Query<VersionQuery>,
    Json(body): Json<AllRoomsBody>,
) -> Result<JsonResponse<Value>> {
    let rooms: RoomSessions = body
        .rooms
        .into_iter()
        .map(|(room, r)| (room, r.sessions))
        .collect();
    let (etag, count) = backup::put_keys(
        &state,
        requester.user_id.as_str(),
        &query.required()?,
        &rooms,
    )
    .await?;
    Ok(stored(etag, count))
}

async fn put_room(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Query(query): Query<VersionQuery>,
    Json(body): Json<RoomBody>,
) -> Result<JsonResponse<Value>> {
    let rooms = RoomSessions::from([(room_id, body.sessions)]);
    let (etag, count) = backup::put_keys(
        &state,
        requester.user_id.as_str(),
        &query.required()?,
        &rooms,
    )
    .await?;
    Ok(stored(etag, count))
}

async fn put_session(
    State(state): State<AppState>,
    requester: Requester,
    Path((room_id, session_id)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
    Json(body): Json<SessionBody>,
) -> Result<JsonResponse<Value>> {
    let rooms = RoomSessions::from([(room_id, BTreeMap::from([(session_id, body)]))]);
    let (etag, count) = backup::put_keys(
        &state,
        requester.user_id.as_str(),
        &query.required()?,
        &rooms,
    )
    .await?;
    Ok(stored(etag, count))
}

async fn get_all(
    State(state): State<AppState>,
    requester: Requester,
    Query(query): Query<VersionQuery>,
) -> Result<JsonResponse<Value>> {
    let rows = backup::get_keys(
        &state,
        requester.user_id.as_str(),
        &query.required()?,
        None,
        None,
    )
    .await?;
    Ok(JsonResponse(json!({ "rooms": backup::rooms_json(rows)? })))
}

async fn get_room(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<JsonResponse<Value>> {
    let rows = backup::get_keys(
        &state,
        requester.user_id.as_str(),
        &query.required()?,
        Some(&room_id),
        None,
    )
    .await?;
    let room = backup::rooms_json(rows)?
        .remove(&room_id)
        .unwrap_or_else(|| json!({ "sessions": {} }));
    Ok(JsonResponse(room))
}

async fn get_session(
    State(state): State<AppState>,
    requester: Requester,
    Path((room_id, session_id)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<JsonResponse<Value>> {
    let rows = backup::get_keys(
        &state,
        requester.user_id.as_str(),
        &query.required()?,
        Some(&room_id),
        Some(&session_id),
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| Error::not_found("Key not found"))?;
    Ok(JsonResponse(backup::session_json(row)?))
}

async fn delete_all(
    State(state): State<AppState>,
    requester: Requester,
    Query(query): Query<VersionQuery>,
) -> Result<JsonResponse<Value>> {
    let (etag, count) = backup::delete_keys(
        &state,
        requester.user_id.as_str(),
        &query.required()?,
        None,
        None,
    )
    .await?;
    Ok(stored(etag, count))
}

async fn delete_room(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<JsonResponse<Value>> {
    let (etag, count) = backup::delete_keys(
        &state,
        requester.user_id.as_str(),
        &query.required()?,
        Some(&room_id),
        None,
    )
    .await?;
    Ok(stored(etag, count))
}

async fn delete_session(
    State(state): State<AppState>,
    requester: Requester,
    Path((room_id, session_id)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<JsonResponse<Value>> {
    let (etag, count) = backup::delete_keys(
        &state,
        requester.user_id.as_str(),
        &query.required()?,
        Some(&room_id),
        Some(&session_id),
    )
    .await?;
    Ok(stored(etag, count))
}

//! Directories: room aliases, the public room list, the user directory.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{GuestAllowed, Requester};
use crate::api::extract::{Json, Path, Query};
use crate::service::directory;
use crate::service::federation::directory::{self as remote, Networks};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/directory/room/{alias}",
            get(get_alias).put(put_alias).delete(delete_alias),
        )
        .route(
            "/directory/list/room/{room_id}",
            get(get_visibility).put(put_visibility),
        )
        .route(
            "/publicRooms",
            get(get_public_rooms).post(post_public_rooms),
        )
        .route("/user_directory/search", post(search_users))
}

async fn get_alias(
    State(state): State<AppState>,
    Path(alias): Path<String>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        directory::resolve_alias(&state, &alias).await?,
    ))
}

#[derive(Deserialize)]
struct AliasBody {
    room_id: String,
}

async fn put_alias(
    State(state): State<AppState>,
    requester: Requester,
    Path(alias): Path<String>,
    Json(body): Json<AliasBody>,
) -> Result<JsonResponse<Value>> {
    directory::create_alias(&state, &requester, &alias, &body.room_id).await?;
    Ok(JsonResponse(json!({})))
}

async fn delete_alias(
    State(state): State<AppState>,
    requester: Requester,
    Path(alias): Path<String>,
) -> Result<JsonResponse<Value>> {
    directory::delete_alias(&state, &requester, &alias).await?;
    Ok(JsonResponse(json!({})))
}

async fn get_visibility(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        directory::get_visibility(&state, &room_id).await?,
    ))
}

#[derive(Deserialize)]
struct VisibilityBody {
    visibility: String,
}

async fn put_visibility(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Json(body): Json<VisibilityBody>,
) -> Result<JsonResponse<Value>> {
    directory::set_visibility(&state, &requester, &room_id, &body.visibility).await?;
    Ok(JsonResponse(json!({})))
}

#[derive(Deserialize)]
struct PublicRoomsQuery {
    limit: Option<String>,
    since: Option<String>,
    server: Option<String>,
}

/// `GET /publicRooms`: this server's list for anyone; another server's (`server`) only for a
/// user (a guest too), as Synapse: Axon does not ask other servers for strangers.
async fn get_public_rooms(
    State(state): State<AppState>,
    mut parts: axum::http::request::Parts,
    Query(q): Query<PublicRoomsQuery>,
) -> Result<JsonResponse<Value>> {
    use axum::extract::FromRequestParts;
    let server = q.server.as_deref();
    if server.is_some_and(|s| s != state.server_name.as_str()) {
        GuestAllowed::from_request_parts(&mut parts, &state).await?;
    }
    let limit = q
        .limit
        .as_deref()
        .map(str::parse::<i64>)
        .transpose()
        .map_err(|_| Error::invalid_param("limit must be an integer"))?;
    let since = q.since.as_deref();
    Ok(JsonResponse(
        remote::for_client(&state, server, limit, since, None, Networks::Matrix).await?,
    ))
}

#[derive(Deserialize)]
struct PublicRoomsBody {
    limit: Option<i64>,
    since: Option<String>,
    filter: Option<PublicRoomsFilter>,
    #[serde(default)]
    include_all_networks: bool,
    third_party_instance_id: Option<String>,
}

#[derive(Deserialize)]
struct PublicRoomsFilter {
    generic_search_term: Option<String>,
}

#[derive(Deserialize)]
struct ServerQuery {
    server: Option<String>,
}

async fn post_public_rooms(
    State(state): State<AppState>,
    _requester: Requester,
    Query(q): Query<ServerQuery>,
    Json(body): Json<PublicRoomsBody>,
) -> Result<JsonResponse<Value>> {
    let term = body.filter.and_then(|f| f.generic_search_term);
    let networks = Networks::of(body.include_all_networks, body.third_party_instance_id)?;
    Ok(JsonResponse(
        remote::for_client(
            &state,
            q.server.as_deref(),
            body.limit,
            body.since.as_deref(),
            term.as_deref(),
            networks,
        )
        .await?,
    ))
}

#[derive(Deserialize)]
struct SearchBody {
    search_term: String,
    limit: Option<i64>,
}

async fn search_users(
    State(state): State<AppState>,
    requester: Requester,
    Json(body): Json<SearchBody>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        directory::search_users(&state, &requester, &body.search_term, body.limit).await?,
    ))
}

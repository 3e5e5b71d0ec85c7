//! Account data (global and per room) and room tags.

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json as JsonResponse, Router};
use serde_json::{Map, Value, json};

use crate::api::auth::Requester;
use crate::api::extract::{Json, Path, body_bytes};
use crate::service::account_data;
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/user/{user_id}/account_data/{data_type}",
            get(get_global).put(put_global),
        )
        .route(
            "/user/{user_id}/rooms/{room_id}/account_data/{data_type}",
            get(get_room).put(put_room),
        )
        .route("/user/{user_id}/rooms/{room_id}/tags", get(get_tags))
        .route(
            "/user/{user_id}/rooms/{room_id}/tags/{tag}",
            put(put_tag).delete(delete_tag),
        )
}

/// Deleting account data is MSC3391, not yet in the spec: served under its unstable prefix.
pub fn other_routes() -> Router<AppState> {
    let prefix = "/_matrix/client/unstable/org.matrix.msc3391";
    Router::new()
        .route(
            &format!("{prefix}/user/{{user_id}}/account_data/{{data_type}}"),
            delete(delete_global),
        )
        .route(
            &format!("{prefix}/user/{{user_id}}/rooms/{{room_id}}/account_data/{{data_type}}"),
            delete(delete_room),
        )
}

/// The stored JSON text, served as it is.
fn json_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn get_global(
    State(state): State<AppState>,
    requester: Requester,
    Path((user_id, data_type)): Path<(String, String)>,
) -> Result<Response> {
    let text =
        account_data::get_by_client(&state, requester.user_id.as_str(), &user_id, "", &data_type)
            .await?;
    Ok(json_text(text))
}

async fn put_global(
    State(state): State<AppState>,
    requester: Requester,
    Path((user_id, data_type)): Path<(String, String)>,
    request: Request,
) -> Result<JsonResponse<Value>> {
    let content = account_data::parse_content(&body_bytes(request, &state).await?)?;
    account_data::set_by_client(
        &state,
        requester.user_id.as_str(),
        &user_id,
        "",
        &data_type,
        &content,
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

async fn delete_global(
    State(state): State<AppState>,
    requester: Requester,
    Path((user_id, data_type)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    account_data::delete_by_client(&state, requester.user_id.as_str(), &user_id, "", &data_type)
        .await?;
    Ok(JsonResponse(json!({})))
}

async fn get_room(
    State(state): State<AppState>,
    requester: Requester,
    Path((user_id, room_id, data_type)): Path<(String, String, String)>,
) -> Result<Response> {
    let text = account_data::get_by_client(
        &state,
        requester.user_id.as_str(),
        &user_id,
        &room_id,
        &data_type,
    )
    .await?;
    Ok(json_text(text))
}

async fn put_room(
    State(state): State<AppState>,
    requester: Requester,
    Path((user_id, room_id, data_type)): Path<(String, String, String)>,
    request: Request,
) -> Result<JsonResponse<Value>> {
    let content = account_data::parse_content(&body_bytes(request, &state).await?)?;
    account_data::set_by_client(
        &state,
        requester.user_id.as_str(),
        &user_id,
        &room_id,
        &data_type,
        &content,
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

async fn delete_room(
    State(state): State<AppState>,
    requester: Requester,
    Path((user_id, room_id, data_type)): Path<(String, String, String)>,
) -> Result<JsonResponse<Value>> {
    account_data::delete_by_client(
        &state,
        requester.user_id.as_str(),
        &user_id,
        &room_id,
        &data_type,
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

async fn get_tags(
    State(state): State<AppState>,
    requester: Requester,
    Path((user_id, room_id)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(
        account_data::tags(&state, requester.user_id.as_str(), &user_id, &room_id).await?,
    ))
}

async fn put_tag(
    State(state): State<AppState>,
    requester: Requester,
    Path((user_id, room_id, tag)): Path<(String, String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> Result<JsonResponse<Value>> {
    account_data::set_tag(
        &state,
        requester.user_id.as_str(),
        &user_id,
        &room_id,
        &tag,
        Some(body),
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

async fn delete_tag(
    State(state): State<AppState>,
    requester: Requester,
    Path((user_id, room_id, tag)): Path<(String, String, String)>,
) -> Result<JsonResponse<Value>> {
    account_data::set_tag(
        &state,
        requester.user_id.as_str(),
        &user_id,
        &room_id,
        &tag,
        None,
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

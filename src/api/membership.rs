//! Membership: invite, join, knock, leave, kick, ban, unban, forget.

use axum::extract::State;
use axum::routing::post;
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::auth::{GuestAllowed, Requester};
use crate::api::extract::{Json, Path};
use crate::service::rooms;
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room_id}/invite", post(invite))
        .route("/rooms/{room_id}/join", post(join_by_id))
        .route("/join/{room_id_or_alias}", post(join))
        .route("/knock/{room_id_or_alias}", post(knock))
        .route("/rooms/{room_id}/leave", post(leave))
        .route("/rooms/{room_id}/kick", post(kick))
        .route("/rooms/{room_id}/ban", post(ban))
        .route("/rooms/{room_id}/unban", post(unban))
        .route("/rooms/{room_id}/forget", post(forget))
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct TargetBody {
    user_id: String,
    reason: Option<String>,
}

async fn invite(
    state: State<AppState>,
    requester: Requester,
    room: Path<String>,
    body: Json<TargetBody>,
) -> Result<JsonResponse<Value>> {
    targeted(state, requester, room, body, "invite").await
}

async fn join_by_id(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path(room_id): Path<String>,
    Json(body): Json<ReasonBody>,
) -> Result<JsonResponse<Value>> {
    // Synapse's /rooms/{roomId}/join keeps only the reason of the body (room.py).
    let mut content = Map::new();
    if let Some(reason) = body.reason {
        content.insert("reason".into(), Value::String(reason));
    }
    entered(rooms::join(&state, &requester, &room_id, content).await)
}

async fn join(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path(room_id_or_alias): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    Json(body): Json<Map<String, Value>>,
) -> Result<JsonResponse<Value>> {
    // `via` (and the older `server_name`): servers to ask when the room is on other servers.
    let via: Vec<String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "via" || k == "server_name")
        .map(|(_, v)| v.into_owned())
        .collect();
    // The whole body becomes the member event's content, as in Synapse's JoinRoomAliasServlet.
    entered(rooms::join_via(&state, &requester, &room_id_or_alias, &via, body).await)
}

async fn knock(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id_or_alias): Path<String>,
    Json(body): Json<ReasonBody>,
) -> Result<JsonResponse<Value>> {
    let reason = body.reason.as_deref();
    entered(rooms::knock(&state, &requester, &room_id_or_alias, reason).await)
}

/// The answer to a join or a knock: the room's ID.
fn entered(room_id: Result<String>) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(json!({ "room_id": room_id? })))
}

async fn leave(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path(room_id): Path<String>,
    Json(body): Json<ReasonBody>,
) -> Result<JsonResponse<Value>> {
    let me = requester.user_id.to_string();
    rooms::change_membership(
        &state,
        &requester,
        &room_id,
        &me,
        "leave",
        body.reason.as_deref(),
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

async fn kick(
    state: State<AppState>,
    requester: Requester,
    room: Path<String>,
    body: Json<TargetBody>,
) -> Result<JsonResponse<Value>> {
    targeted(state, requester, room, body, "kick").await
}

async fn ban(
    state: State<AppState>,
    requester: Requester,
    room: Path<String>,
    body: Json<TargetBody>,
) -> Result<JsonResponse<Value>> {
    targeted(state, requester, room, body, "ban").await
}

async fn unban(
    state: State<AppState>,
    requester: Requester,
    room: Path<String>,
    body: Json<TargetBody>,
) -> Result<JsonResponse<Value>> {
    targeted(state, requester, room, body, "unban").await
}

/// A membership change aimed at another user: invite, kick, ban, unban.
async fn targeted(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
    Json(body): Json<TargetBody>,
    membership: &str,
) -> Result<JsonResponse<Value>> {
    rooms::change_membership(
        &state,
        &requester,
        &room_id,
        &body.user_id,
        membership,
        body.reason.as_deref(),
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

async fn forget(
    State(state): State<AppState>,
    requester: Requester,
    Path(room_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    rooms::forget(&state, &requester, &room_id).await?;
    Ok(JsonResponse(json!({})))
}

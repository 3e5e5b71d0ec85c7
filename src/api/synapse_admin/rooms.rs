//! Synapse's room admin API: list, details, members, state.

use axum::extract::State;
use axum::routing::{delete, get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::auth::AdminRequester;
use crate::api::extract::{Json, Path, Query};
use crate::service::admin::purge::{self, PurgePoint};
use crate::service::admin::room_delete::{self, DeleteRoom};
use crate::service::admin::rooms::{self, AdminRoomRow, RoomQuery};
use crate::store::admin_jobs::JobRow;
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/rooms", get(list))
        .route("/_synapse/admin/v1/rooms/{room_id}", get(details))
        .route("/_synapse/admin/v1/rooms/{room_id}/members", get(members))
        .route(
            "/_synapse/admin/v1/rooms/{room_id}/state",
            get(state_events),
        )
        .route("/_synapse/admin/v2/rooms/{room_id}", delete(delete_room))
        .route(
            "/_synapse/admin/v2/rooms/{room_id}/delete_status",
            get(delete_status_of_room),
        )
        .route(
            "/_synapse/admin/v2/rooms/delete_status/{delete_id}",
            get(delete_status),
        )
        .route(
            "/_synapse/admin/v1/purge_history/{room_id}",
            post(purge_history),
        )
        .route(
            "/_synapse/admin/v1/purge_history/{room_id}/{event_id}",
            post(purge_history_to_event),
        )
        .route(
            "/_synapse/admin/v1/purge_history_status/{purge_id}",
            get(purge_status),
        )
        .route(
            "/_synapse/admin/v1/rooms/{room_id}/make_room_admin",
            post(make_room_admin),
        )
}

/// A room as Synapse's room listing shows it (no federation yet: every member is local).
fn room_json(r: &AdminRoomRow) -> Value {
    json!({
        "room_id": r.room_id,
        "name": r.name,
        "canonical_alias": r.canonical_alias,
        "joined_members": r.joined_members,
        "joined_local_members": r.joined_members,
        "version": r.version,
        "creator": r.creator,
        "encryption": r.encryption,
        "federatable": r.federate.as_deref() != Some("false"),
        "public": r.public,
        "join_rules": r.join_rules,
        "guest_access": r.guest_access,
        "history_visibility": r.history_visibility,
        "state_events": r.state_events,
        "room_type": r.room_type,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    from: Option<i64>,
    limit: Option<i64>,
    order_by: Option<String>,
    dir: Option<String>,
    search_term: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Query(q): Query<ListQuery>,
) -> Result<JsonResponse<Value>> {
    let page = rooms::list(
        &state,
        RoomQuery {
            from: q.from,
            limit: q.limit,
            order_by: q.order_by,
            dir: q.dir,
            search_term: q.search_term,
        },
    )
    .await?;
    let mut body = json!({
        "rooms": page.rooms.iter().map(room_json).collect::<Vec<_>>(),
        "offset": page.offset,
        "total_rooms": page.total,
    });
    if let Some(next) = page.next_batch {
        body["next_batch"] = json!(next);
    }
    if let Some(prev) = page.prev_batch {
        body["prev_batch"] = json!(prev);
    }
    Ok(JsonResponse(body))
}

async fn details(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(room_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let (room, devices, replacement) = rooms::details(&state, &room_id).await?;
    let mut body = room_json(&room);
    body["tombstoned"] = json!(replacement.is_some());
    body["replacement_room"] = json!(replacement);
    body["avatar"] = json!(room.avatar);
    body["topic"] = json!(room.topic);
    body["joined_local_devices"] = json!(devices);
    body["forgotten"] = json!(false);
    Ok(JsonResponse(body))
}

async fn members(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(room_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let members = rooms::members(&state, &room_id).await?;
    Ok(JsonResponse(
        json!({"total": members.len(), "members": members}),
    ))
}

async fn state_events(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(room_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let events = rooms::current_state(&state, &room_id).await?;
    let now = crate::store::now_ms();
    let mut list = Vec::with_capacity(events.len());
    for raw in events {
        let mut event: Map<String, Value> =
            serde_json::from_str(raw.get()).map_err(Error::internal)?;
        // As Synapse serialises them here: the legacy `user_id` and `age` beside the client format.
        let age = event
            .get("origin_server_ts")
            .and_then(Value::as_i64)
            .map(|ts| now - ts);
        let sender = event.get("sender").cloned().unwrap_or(Value::Null);
        event.insert("user_id".into(), sender);
        event.insert("age".into(), json!(age));
        let unsigned = event.entry("unsigned").or_insert_with(|| json!({}));
        if let Some(unsigned) = unsigned.as_object_mut() {
            unsigned.insert("age".into(), json!(age));
        }
        list.push(Value::Object(event));
    }
    Ok(JsonResponse(json!({"state": list})))
}

/// The body of DELETE /v2/rooms/{roomId}.
#[derive(Deserialize)]
struct DeleteBody {
    new_room_user_id: Option<String>,
    room_name: Option<String>,
    message: Option<String>,
    #[serde(default)]
    block: bool,
    purge: Option<bool>,
    /// Synapse's: purge even if local users could not be moved out. Axon always purges when asked.
    #[serde(default)]
    #[allow(dead_code)]
    force_purge: bool,
}

async fn delete_room(
    State(state): State<AppState>,
    AdminRequester(admin): AdminRequester,
    Path(room_id): Path<String>,
    Json(body): Json<DeleteBody>,
) -> Result<JsonResponse<Value>> {
    let req = DeleteRoom {
        admin: admin.user_id.to_string(),
        new_room_user_id: body.new_room_user_id,
        room_name: body
            .room_name
            .unwrap_or_else(|| room_delete::DEFAULT_ROOM_NAME.into()),
        message: body
            .message
            .unwrap_or_else(|| room_delete::DEFAULT_MESSAGE.into()),
        block: body.block,
        purge: body.purge.unwrap_or(true),
    };
    let delete_id = room_delete::start(&state, &room_id, req).await?;
    Ok(JsonResponse(json!({"delete_id": delete_id})))
}

/// A deletion as Synapse's status endpoints show it.
fn job_json(job: &JobRow) -> Value {
    let mut body = json!({
        "delete_id": job.job_id,
        "room_id": job.room_id,
        "status": job.status,
        "shutdown_room": job.result.clone().unwrap_or_else(|| json!({
            "kicked_users": [], "failed_to_kick_users": [], "local_aliases": [], "new_room_id": null
        })),
    });
    if let Some(error) = &job.error {
        body["error"] = json!(error);
    }
    body
}

async fn delete_status(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(delete_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let job = room_delete::status(&state, &delete_id).await?;
    Ok(JsonResponse(job_json(&job)))
}

async fn delete_status_of_room(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(room_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let jobs = room_delete::statuses_of_room(&state, &room_id).await?;
    let results: Vec<Value> = jobs.iter().map(job_json).collect();
    Ok(JsonResponse(json!({"results": results})))
}

/// The body of POST /v1/purge_history/{roomId}.
#[derive(Deserialize)]
struct PurgeBody {
    #[serde(default)]
    delete_local_events: bool,
    purge_up_to_event_id: Option<String>,
    purge_up_to_ts: Option<i64>,
}

async fn purge_history(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(room_id): Path<String>,
    Json(body): Json<PurgeBody>,
) -> Result<JsonResponse<Value>> {
    let point = match (body.purge_up_to_event_id, body.purge_up_to_ts) {
        (Some(event_id), _) => PurgePoint::Event(event_id),
        (None, Some(ts)) => PurgePoint::Timestamp(ts),
        (None, None) => {
            return Err(Error::bad_json(
                "must specify purge_up_to_event_id or purge_up_to_ts",
            ));
        }
    };
    let purge_id = purge::start_purge(&state, &room_id, point, body.delete_local_events).await?;
    Ok(JsonResponse(json!({"purge_id": purge_id})))
}

/// The older form, naming the event in the path.
async fn purge_history_to_event(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path((room_id, event_id)): Path<(String, String)>,
    Json(body): Json<PurgeBody>,
) -> Result<JsonResponse<Value>> {
    let point = PurgePoint::Event(event_id);
    let purge_id = purge::start_purge(&state, &room_id, point, body.delete_local_events).await?;
    Ok(JsonResponse(json!({"purge_id": purge_id})))
}

async fn purge_status(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(purge_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let job = purge::status(&state, &purge_id).await?;
    let mut body = json!({"status": job.status});
    if let Some(error) = job.error {
        body["error"] = json!(error);
    }
    Ok(JsonResponse(body))
}

#[derive(Deserialize)]
struct MakeRoomAdminBody {
    user_id: Option<String>,
}

/// The user named in the body (the calling admin by default) becomes an admin of the room.
async fn make_room_admin(
    State(state): State<AppState>,
    AdminRequester(admin): AdminRequester,
    Path(room): Path<String>,
    Json(body): Json<MakeRoomAdminBody>,
) -> Result<JsonResponse<Value>> {
    let user_id = body.user_id.unwrap_or_else(|| admin.user_id.to_string());
    rooms::make_room_admin(&state, &room, &user_id).await?;
    Ok(JsonResponse(json!({})))
}

//! Device management: GET /devices, GET/PUT/DELETE /devices/{deviceId}, POST /delete_devices.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::auth::{ClientIp, GuestAllowed, Requester, UiaJson};
use crate::api::extract::{Json, Path};
use crate::service::accounts::{self, Device};
use crate::service::uia::{self, Purpose};
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/devices", get(list))
        .route(
            "/devices/{device_id}",
            get(one).put(rename).delete(delete_one),
        )
        .route("/delete_devices", post(delete_many))
}

/// A device as the spec shows it: absent fields are left out rather than null.
fn device_json(device: Device) -> Value {
    let mut object = Map::new();
    object.insert("device_id".into(), json!(device.device_id));
    if let Some(name) = device.display_name {
        object.insert("display_name".into(), json!(name));
    }
    if let Some(ip) = device.last_seen_ip {
        object.insert("last_seen_ip".into(), json!(ip));
    }
    if let Some(ts) = device.last_seen_ts {
        object.insert("last_seen_ts".into(), json!(ts));
    }
    Value::Object(object)
}

async fn list(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
) -> Result<JsonResponse<Value>> {
    let devices = accounts::devices(&state, requester.user_id.as_str()).await?;
    Ok(JsonResponse(
        json!({ "devices": devices.into_iter().map(device_json).collect::<Vec<_>>() }),
    ))
}

async fn one(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path(device_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let device = accounts::device(&state, requester.user_id.as_str(), &device_id).await?;
    Ok(JsonResponse(device_json(device)))
}

#[derive(Deserialize)]
struct RenameBody {
    display_name: Option<String>,
}

async fn rename(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path(device_id): Path<String>,
    Json(body): Json<RenameBody>,
) -> Result<JsonResponse<Value>> {
    accounts::rename_device(
        &state,
        requester.user_id.as_str(),
        &device_id,
        body.display_name.as_deref(),
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

#[derive(Deserialize)]
struct DeleteBody {
    auth: Option<uia::AuthData>,
}

async fn delete_one(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    requester: Requester,
    Path(device_id): Path<String>,
    UiaJson { body, operation }: UiaJson<DeleteBody>,
) -> Result<JsonResponse<Value>> {
    let target = vec![device_id];
    delete(&state, ip, &requester, &operation, target, body.auth).await
}

#[derive(Deserialize)]
struct DeleteManyBody {
    devices: Vec<String>,
    auth: Option<uia::AuthData>,
}

async fn delete_many(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    requester: Requester,
    UiaJson { body, operation }: UiaJson<DeleteManyBody>,
) -> Result<JsonResponse<Value>> {
    delete(&state, ip, &requester, &operation, body.devices, body.auth).await
}

/// Deleting devices needs the password. Devices that are already gone count as deleted, and
/// deleting nothing needs no authentication.
async fn delete(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    requester: &Requester,
    operation: &uia::Operation,
    device_ids: Vec<String>,
    auth: Option<uia::AuthData>,
) -> Result<JsonResponse<Value>> {
    let user_id = requester.user_id.as_str();
    let existing = accounts::devices(state, user_id).await?;
    let targets: Vec<String> = device_ids
        .into_iter()
        .filter(|id| existing.iter().any(|d| &d.device_id == id))
        .collect();
    if targets.is_empty() {
        return Ok(JsonResponse(json!({})));
    }
    let request = uia::Request {
        purpose: Purpose::DeleteDevices,
        operation,
        user_id: Some(user_id),
        flows: &[&[uia::PASSWORD]],
        ip,
    };
    let passed = uia::check(state, request, auth.as_ref()).await?;
    accounts::remove_devices(state, user_id, &targets).await?;
    uia::finish(state, &passed).await?;
    Ok(JsonResponse(json!({})))
}

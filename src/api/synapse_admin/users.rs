//! Synapse's user admin API: /_synapse/admin/v2/users…, reset_password, whois, deactivate.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::auth::AdminRequester;
use crate::api::extract::{Json, Path, Query};
use crate::service::accounts::Device;
use crate::service::admin::users::{self, UserChanges, UserQuery};
use crate::store::user_admin::AdminUserRow;
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v2/users", get(list))
        .route(
            "/_synapse/admin/v2/users/{user_id}",
            get(query).put(create_or_modify),
        )
        .route(
            "/_synapse/admin/v1/reset_password/{user_id}",
            post(reset_password),
        )
        .route("/_synapse/admin/v1/deactivate/{user_id}", post(deactivate))
        .route("/_synapse/admin/v1/whois/{user_id}", get(whois))
        .route(
            "/_synapse/admin/v1/users/{user_id}/joined_rooms",
            get(joined_rooms),
        )
        .route("/_synapse/admin/v2/users/{user_id}/devices", get(devices))
        .route(
            "/_synapse/admin/v2/users/{user_id}/devices/{device_id}",
            get(device).put(rename_device).delete(delete_device),
        )
        .route(
            "/_synapse/admin/v2/users/{user_id}/delete_devices",
            post(delete_devices),
        )
        .route("/_synapse/admin/v1/users/{user_id}/login", post(login_as))
        .route(
            "/_synapse/admin/v1/users/{user_id}/shadow_ban",
            post(shadow_ban).delete(lift_shadow_ban),
        )
}

/// A user as Synapse's admin API shows it. `creation_ts` is in seconds, as Synapse stores it.
fn user_json(u: &AdminUserRow) -> Map<String, Value> {
    let value = json!({
        "name": u.user_id,
        "is_guest": u.is_guest,
        "admin": u.is_admin,
        "user_type": null,
        "deactivated": u.deactivated,
        "erased": u.erased,
        "shadow_banned": u.shadow_banned,
        "displayname": u.displayname,
        "avatar_url": u.avatar_url,
        "creation_ts": u.created_ts / 1000,
        "last_seen_ts": u.last_seen_ts,
        "locked": u.locked,
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object"),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    from: Option<i64>,
    limit: Option<i64>,
    user_id: Option<String>,
    name: Option<String>,
    guests: Option<bool>,
    deactivated: Option<bool>,
    admins: Option<bool>,
    locked: Option<bool>,
    order_by: Option<String>,
    dir: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Query(q): Query<ListQuery>,
) -> Result<JsonResponse<Value>> {
    let page = users::list(
        &state,
        UserQuery {
            from: q.from,
            limit: q.limit,
            // Synapse ignores user_id when name is given.
            user_id: q.user_id.filter(|_| q.name.is_none()),
            name: q.name,
            guests: q.guests,
            deactivated: q.deactivated,
            admins: q.admins,
            locked: q.locked,
            order_by: q.order_by,
            dir: q.dir,
        },
    )
    .await?;
    let mut body = json!({
        "users": page.users.iter().map(user_json).collect::<Vec<_>>(),
        "total": page.total,
    });
    if let Some(next) = page.next {
        body["next_token"] = json!(next.to_string());
    }
    Ok(JsonResponse(body))
}

async fn details(state: &AppState, user_id: &str) -> Result<Value> {
    let (user, threepids) = users::get(state, user_id).await?;
    let mut body = user_json(&user);
    body.insert("threepids".into(), json!(threepids));
    body.insert("external_ids".into(), json!([]));
    body.insert("appservice_id".into(), Value::Null);
    body.insert("consent_server_notice_sent".into(), Value::Null);
    body.insert("consent_version".into(), Value::Null);
    body.insert("consent_ts".into(), Value::Null);
    body.insert("suspended".into(), json!(false));
    Ok(Value::Object(body))
}

async fn query(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(details(&state, &user_id).await?))
}

/// The body of PUT /v2/users/{userId}: display name and avatar may be null or "" to remove them.
#[derive(Deserialize)]
struct UserBody {
    password: Option<String>,
    logout_devices: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    displayname: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    avatar_url: Option<Option<String>>,
    admin: Option<bool>,
    deactivated: Option<bool>,
    locked: Option<bool>,
}

/// A field that is present (possibly null) becomes `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

async fn create_or_modify(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
    Json(body): Json<UserBody>,
) -> Result<(StatusCode, JsonResponse<Value>)> {
    if body.password.as_ref().is_some_and(|p| p.len() > 512) {
        return Err(Error::invalid_param("Invalid password"));
    }
    let changes = UserChanges {
        password: body.password,
        logout_devices: body.logout_devices.unwrap_or(true),
        displayname: body.displayname,
        avatar_url: body.avatar_url,
        admin: body.admin,
        deactivated: body.deactivated,
        locked: body.locked,
    };
    let created = users::create_or_modify(&state, &user_id, changes).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, JsonResponse(details(&state, &user_id).await?)))
}

#[derive(Deserialize)]
struct ResetPasswordBody {
    new_password: String,
    logout_devices: Option<bool>,
}

async fn reset_password(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
    Json(body): Json<ResetPasswordBody>,
) -> Result<JsonResponse<Value>> {
    let logout = body.logout_devices.unwrap_or(true);
    users::reset_password(&state, &user_id, body.new_password, logout).await?;
    Ok(JsonResponse(json!({})))
}

#[derive(Deserialize)]
struct DeactivateBody {
    #[serde(default)]
    erase: bool,
}

async fn deactivate(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
    Json(body): Json<DeactivateBody>,
) -> Result<JsonResponse<Value>> {
    users::deactivate(&state, &user_id, body.erase).await?;
    Ok(JsonResponse(json!({"id_server_unbind_result": "success"})))
}

/// As Synapse: every connection under one device keyed "".
async fn whois(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let connections: Vec<Value> = users::devices(&state, &user_id)
        .await?
        .into_iter()
        .filter(|d| d.last_seen_ts.is_some())
        .map(|d| json!({"ip": d.last_seen_ip, "last_seen": d.last_seen_ts, "user_agent": d.last_seen_user_agent}))
        .collect();
    Ok(JsonResponse(json!({
        "user_id": user_id,
        "devices": {"": {"sessions": [{"connections": connections}]}},
    })))
}

async fn joined_rooms(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let rooms = users::joined_rooms(&state, &user_id).await?;
    Ok(JsonResponse(
        json!({"total": rooms.len(), "joined_rooms": rooms}),
    ))
}

fn device_json(user_id: &str, d: &Device) -> Value {
    json!({
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ip": d.last_seen_ip,
        "last_seen_ts": d.last_seen_ts,
        "last_seen_user_agent": d.last_seen_user_agent,
        "user_id": user_id,
    })
}

async fn devices(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    let devices = users::devices(&state, &user_id).await?;
    let list: Vec<Value> = devices.iter().map(|d| device_json(&user_id, d)).collect();
    Ok(JsonResponse(json!({"total": list.len(), "devices": list})))
}

async fn device(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path((user_id, device_id)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    let device = users::device(&state, &user_id, &device_id).await?;
    Ok(JsonResponse(device_json(&user_id, &device)))
}

#[derive(Deserialize)]
struct RenameBody {
    display_name: Option<String>,
}

async fn rename_device(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path((user_id, device_id)): Path<(String, String)>,
    Json(body): Json<RenameBody>,
) -> Result<JsonResponse<Value>> {
    users::rename_device(&state, &user_id, &device_id, body.display_name.as_deref()).await?;
    Ok(JsonResponse(json!({})))
}

async fn delete_device(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path((user_id, device_id)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    users::delete_devices(&state, &user_id, &[device_id]).await?;
    Ok(JsonResponse(json!({})))
}

#[derive(Deserialize)]
struct DeleteDevicesBody {
    devices: Vec<String>,
}

async fn delete_devices(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
    Json(body): Json<DeleteDevicesBody>,
) -> Result<JsonResponse<Value>> {
    users::delete_devices(&state, &user_id, &body.devices).await?;
    Ok(JsonResponse(json!({})))
}

async fn shadow_ban(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    users::set_shadow_banned(&state, &user_id, true).await?;
    Ok(JsonResponse(json!({})))
}

async fn lift_shadow_ban(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    users::set_shadow_banned(&state, &user_id, false).await?;
    Ok(JsonResponse(json!({})))
}

/// The body of POST /v1/users/{userId}/login (may be empty).
#[derive(Deserialize)]
struct LoginAsBody {
    valid_until_ms: Option<Value>,
}

async fn login_as(
    State(state): State<AppState>,
    AdminRequester(admin): AdminRequester,
    Path(user_id): Path<String>,
    Json(body): Json<LoginAsBody>,
) -> Result<JsonResponse<Value>> {
    let valid_until_ms = match body.valid_until_ms {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| Error::invalid_param("'valid_until_ms' parameter must be an int"))?,
        ),
    };
    let token = users::login_as(&state, &admin, &user_id, valid_until_ms).await?;
    Ok(JsonResponse(json!({"access_token": token})))
}

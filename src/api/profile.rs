//! Profiles: GET /profile/{userId}, GET/PUT /profile/{userId}/{displayname|avatar_url}.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use serde_json::{Value, json};

use crate::api::auth::{GuestAllowed, Requester};
use crate::api::extract::{Json, Path};
use crate::service::profile::{self, Field};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/profile/{user_id}", get(get_profile))
        .route(
            "/profile/{user_id}/{field}",
            get(get_field).put(put_field).delete(delete_field),
        )
}

/// Who may read profiles: anyone, unless `directory.require_auth_for_profile_requests` asks for an
/// access token (Synapse's rest/client/profile.py reads its key of the same name; a guest's will
/// do, as there).
struct ProfileReader;

impl FromRequestParts<AppState> for ProfileReader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        if state.config.directory.require_auth_for_profile_requests {
            GuestAllowed::from_request_parts(parts, state).await?;
        }
        Ok(ProfileReader)
    }
}

async fn get_profile(
    State(state): State<AppState>,
    _reader: ProfileReader,
    Path(user_id): Path<String>,
) -> Result<JsonResponse<Value>> {
    Ok(JsonResponse(profile::get_profile(&state, &user_id).await?))
}

fn parse_field(key: &str) -> Result<Field> {
    Field::parse(key)
        .ok_or_else(|| Error::not_found(format!("Profile field {key} is not supported")))
}

async fn get_field(
    State(state): State<AppState>,
    _reader: ProfileReader,
    Path((user_id, key)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    let field = parse_field(&key)?;
    let profile = profile::get_profile(&state, &user_id).await?;
    match profile.get(field.key()) {
        Some(value) => Ok(JsonResponse(json!({ field.key(): value }))),
        None => Err(Error::not_found(format!("{} is not set", field.key()))),
    }
}

async fn put_field(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((user_id, key)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<JsonResponse<Value>> {
    let field = parse_field(&key)?;
    guest_may_change(&requester, field)?;
    let value = match body.get(field.key()) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) => None,
        Some(_) => return Err(Error::bad_json(format!("{} must be a string", field.key()))),
        None => return Err(Error::missing_param(format!("Missing {}", field.key()))),
    };
    profile::set_field(&state, &requester, &user_id, field, value).await?;
    Ok(JsonResponse(json!({})))
}

async fn delete_field(
    State(state): State<AppState>,
    GuestAllowed(requester): GuestAllowed,
    Path((user_id, key)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    let field = parse_field(&key)?;
    guest_may_change(&requester, field)?;
    profile::set_field(&state, &requester, &user_id, field, None).await?;
    Ok(JsonResponse(json!({})))
}

/// Guests may change their display name and no other field (the guest access module).
fn guest_may_change(requester: &Requester, field: Field) -> Result<()> {
    if requester.is_guest && !matches!(field, Field::DisplayName) {
        return Err(Error::guest_access_forbidden(
            "Guests may only change their display name",
        ));
    }
    Ok(())
}

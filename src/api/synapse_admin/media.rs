//! Synapse's media admin API: a user's media, deletion by ID, by user and by age, quarantine.

use axum::extract::State;
use axum::routing::{delete, get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::AdminRequester;
use crate::api::extract::{Path, Query};
use crate::service::admin::media::{self, AdminMediaRow, MediaQuery};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_synapse/admin/v1/users/{user_id}/media",
            get(of_user).delete(delete_of_user),
        )
        .route(
            "/_synapse/admin/v1/media/{server_name}/{media_id}",
            delete(delete_one),
        )
        .route("/_synapse/admin/v1/media/delete", post(delete_old))
        .route(
            "/_synapse/admin/v1/media/{server_name}/delete",
            post(delete_old_of_server),
        )
        .route(
            "/_synapse/admin/v1/media/quarantine/{server_name}/{media_id}",
            post(quarantine),
        )
        .route(
            "/_synapse/admin/v1/media/unquarantine/{server_name}/{media_id}",
            post(unquarantine),
        )
}

fn media_json(m: &AdminMediaRow) -> Value {
    json!({
        "media_id": m.media_id,
        "created_ts": m.created_ts,
        "last_access_ts": null,
        "media_length": m.size,
        "media_type": m.content_type,
        "quarantined_by": m.quarantined_by,
        "safe_from_quarantine": false,
        "upload_name": m.filename,
        "user_id": m.uploader,
        "sha256": m.sha256,
        "authenticated": !m.legacy_access,
        "url_cache": null,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    from: Option<i64>,
    limit: Option<i64>,
    order_by: Option<String>,
    dir: Option<String>,
}

impl From<ListQuery> for MediaQuery {
    fn from(q: ListQuery) -> Self {
        MediaQuery {
            from: q.from,
            limit: q.limit,
            order_by: q.order_by,
            dir: q.dir,
        }
    }
}

async fn of_user(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<JsonResponse<Value>> {
    let (rows, total, next) = media::of_user(&state, &user_id, q.into()).await?;
    let mut body =
        json!({"media": rows.iter().map(media_json).collect::<Vec<_>>(), "total": total});
    if let Some(next) = next {
        body["next_token"] = json!(next);
    }
    Ok(JsonResponse(body))
}

fn deleted(ids: Vec<String>) -> JsonResponse<Value> {
    JsonResponse(json!({"total": ids.len(), "deleted_media": ids}))
}

async fn delete_of_user(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path(user_id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<JsonResponse<Value>> {
    Ok(deleted(
        media::delete_of_user(&state, &user_id, q.into()).await?,
    ))
}

async fn delete_one(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path((server_name, media_id)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    Ok(deleted(
        media::delete_one(&state, &server_name, &media_id).await?,
    ))
}

#[derive(Deserialize)]
struct DeleteOldQuery {
    before_ts: Option<i64>,
    size_gt: Option<i64>,
    keep_profiles: Option<bool>,
}

async fn delete_old(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Query(q): Query<DeleteOldQuery>,
) -> Result<JsonResponse<Value>> {
    let before_ts = q
        .before_ts
        .ok_or_else(|| Error::missing_param("Missing integer query parameter 'before_ts'"))?;
    // As Synapse: a time in seconds (or no time at all) is a mistake, not a wish to delete nothing.
    if before_ts < 30_000_000_000 {
        return Err(Error::invalid_param(
            "Query parameter before_ts you provided is from the year 1970. \
             Double check that you are providing a timestamp in milliseconds.",
        ));
    }
    let ids = media::delete_old(
        &state,
        before_ts,
        q.size_gt.unwrap_or(0),
        q.keep_profiles.unwrap_or(true),
    )
    .await?;
    Ok(deleted(ids))
}

/// The older path, naming the server (which must be this one).
async fn delete_old_of_server(
    State(state): State<AppState>,
    admin: AdminRequester,
    Path(server_name): Path<String>,
    q: Query<DeleteOldQuery>,
) -> Result<JsonResponse<Value>> {
    if server_name != state.server_name.as_str() {
        return Err(Error::invalid_param("Can only delete local media"));
    }
    delete_old(State(state), admin, q).await
}

async fn quarantine(
    State(state): State<AppState>,
    AdminRequester(admin): AdminRequester,
    Path((server_name, media_id)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    media::quarantine(
        &state,
        &server_name,
        &media_id,
        Some(admin.user_id.as_str()),
    )
    .await?;
    Ok(JsonResponse(json!({})))
}

async fn unquarantine(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Path((server_name, media_id)): Path<(String, String)>,
) -> Result<JsonResponse<Value>> {
    media::quarantine(&state, &server_name, &media_id, None).await?;
    Ok(JsonResponse(json!({})))
}

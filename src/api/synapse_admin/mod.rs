//! Synapse's admin API (`/_synapse/admin/…`), the subset admin tools such as synapse-admin use:
//! same paths, parameters and shapes. Every handler takes `AdminRequester`.

mod media;
mod moderation;
mod rooms;
mod users;

use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::auth::AdminRequester;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/server_version", get(server_version))
        .merge(users::routes())
        .merge(rooms::routes())
        .merge(moderation::routes())
        .merge(media::routes())
}

/// Synapse answers this one without authentication; Axon asks for an admin as for the rest.
async fn server_version(_admin: AdminRequester) -> JsonResponse<Value> {
    JsonResponse(json!({"server_version": concat!("Axon ", env!("CARGO_PKG_VERSION"))}))
}

//! Synapse's admin API (`/_synapse/admin/…`), the subset admin tools such as synapse-admin use:
//! same paths, parameters and shapes. Every handler takes `AdminRequester`.

mod media;
mod moderation;
mod rooms;
mod users;

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::auth::AdminRequester;
use crate::api::extract::{Json, Path};
use crate::service::admin::notices::{self, Notice, NoticeTxn};
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/server_version", get(server_version))
        .route("/_synapse/admin/v1/send_server_notice", post(send_notice))
        .route(
            "/_synapse/admin/v1/send_server_notice/{txn_id}",
            put(send_notice_with_txn),
        )
        .merge(users::routes())
        .merge(rooms::routes())
        .merge(moderation::routes())
        .merge(media::routes())
}

/// Synapse answers this one without authentication; Axon asks for an admin as for the rest.
async fn server_version(_admin: AdminRequester) -> JsonResponse<Value> {
    JsonResponse(json!({"server_version": concat!("Axon ", env!("CARGO_PKG_VERSION"))}))
}

/// The body of send_server_notice.
#[derive(Deserialize)]
struct NoticeBody {
    user_id: String,
    content: Map<String, Value>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    state_key: Option<String>,
}

async fn send_notice(
    State(state): State<AppState>,
    _admin: AdminRequester,
    Json(body): Json<NoticeBody>,
) -> Result<JsonResponse<Value>> {
    let event_id = notices::send(&state, body.into(), None).await?;
    Ok(JsonResponse(json!({"event_id": event_id})))
}

/// The PUT form with a transaction ID: a retry answers the first notice's event ID.
async fn send_notice_with_txn(
    State(state): State<AppState>,
    AdminRequester(admin): AdminRequester,
    Path(txn_id): Path<String>,
    Json(body): Json<NoticeBody>,
) -> Result<JsonResponse<Value>> {
    let txn = NoticeTxn {
        admin: admin.user_id.to_string(),
        device_id: admin.device_id.to_string(),
        txn_id,
    };
    let event_id = notices::send(&state, body.into(), Some(txn)).await?;
    Ok(JsonResponse(json!({"event_id": event_id})))
}

impl From<NoticeBody> for Notice {
    fn from(body: NoticeBody) -> Self {
        Notice {
            user_id: body.user_id,
            event_type: body.event_type.unwrap_or_else(|| "m.room.message".into()),
            state_key: body.state_key,
            content: body.content,
        }
    }
}

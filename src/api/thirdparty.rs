//! Third-party networks: Axon bridges none (no application services), so it knows no protocols.

use axum::Json as JsonResponse;
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use crate::api::auth::Requester;
use crate::api::extract::Path;
use crate::{AppState, Error};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/thirdparty/protocols", get(protocols))
        .route("/thirdparty/protocol/{protocol}", get(protocol))
}

async fn protocols(_requester: Requester) -> JsonResponse<Value> {
    JsonResponse(json!({}))
}

async fn protocol(_requester: Requester, Path(_protocol): Path<String>) -> Error {
    Error::not_found("The protocol is unknown")
}

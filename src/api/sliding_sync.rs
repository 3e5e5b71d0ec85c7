//! Sliding sync (MSC4186): `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use ruma::api::client::sync::sync_events::v5;

use crate::api::auth::Requester;
use crate::api::ruma::{Ruma, RumaResponse};
use crate::service::sync::sliding;
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
        post(sliding_sync),
    )
}

async fn sliding_sync(
    State(state): State<AppState>,
    requester: Requester,
    Ruma(request): Ruma<v5::Request>,
) -> Result<RumaResponse<v5::Response>> {
    Ok(RumaResponse(
        sliding::sync(&state, &requester, request).await?,
    ))
}

//! Sliding sync (MSC4186): `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use ruma::api::client::sync::sync_events::v5;

use crate::api::auth::Requester;
use crate::api::ruma::{RumaResponse, RumaWithBody};
use crate::service::sync::sliding;
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
        post(sliding_sync),
    )
}

async fn sliding_sync(
    State(state): State<AppState>,
    requester: Requester,
    RumaWithBody(request, body): RumaWithBody<v5::Request>,
) -> Result<RumaResponse<v5::Response>> {
    // The list filters ruma's type lacks (`spaces`, `tags`, `not_tags`), from the same body.
    let extra = sliding::ExtraFilters::from_body(&body)
        .map_err(|e| Error::bad_json(format!("Invalid list filters: {e}")))?;
    Ok(RumaResponse(
        sliding::sync(&state, &requester, request, extra).await?,
    ))
}

//! Mutual rooms: `GET /_matrix/client/v1/mutual_rooms` (spec v1.19) and MSC2666's unstable
//! `GET /_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms`, which clients still call.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use ruma::api::client::membership::get_mutual_rooms::{unstable, v1};
use ruma::{OwnedRoomId, UInt};

use crate::api::auth::Requester;
use crate::api::ruma::{Ruma, RumaResponse};
use crate::service::mutual_rooms::{self, MutualRooms};
use crate::{AppState, Error, Result};

/// Below `/_matrix/client/v1`.
pub fn v1_routes() -> Router<AppState> {
    Router::new().route("/mutual_rooms", get(get_v1))
}

/// Full paths.
pub fn unstable_routes() -> Router<AppState> {
    Router::new().route(
        "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms",
        get(get_unstable),
    )
}

async fn get_v1(
    State(state): State<AppState>,
    requester: Requester,
    Ruma(request): Ruma<v1::Request>,
) -> Result<RumaResponse<v1::Response>> {
    let page = mutual_rooms::mutual_rooms(
        &state.db,
        &requester.user_id,
        &request.user_id,
        request.from.as_deref(),
    )
    .await?;
    let count = UInt::try_from(page.count).map_err(Error::internal)?;
    let (joined, next_batch) = room_ids(page)?;
    let mut response = v1::Response::new(count, joined);
    response.next_batch = next_batch;
    Ok(RumaResponse(response))
}

async fn get_unstable(
    State(state): State<AppState>,
    requester: Requester,
    Ruma(request): Ruma<unstable::Request>,
) -> Result<RumaResponse<unstable::Response>> {
    let page = mutual_rooms::mutual_rooms(
        &state.db,
        &requester.user_id,
        &request.user_id,
        request.from.as_deref(),
    )
    .await?;
    let (joined, next_batch) = room_ids(page)?;
    let mut response = unstable::Response::new(joined);
    response.next_batch = next_batch;
    Ok(RumaResponse(response))
}

fn room_ids(page: MutualRooms) -> Result<(Vec<OwnedRoomId>, Option<String>)> {
    let joined = page
        .joined
        .into_iter()
        .map(OwnedRoomId::try_from)
        .collect::<Result<_, _>>()
        .map_err(Error::internal)?;
    Ok((joined, page.next_batch))
}

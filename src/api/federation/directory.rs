//! `GET` and `POST /_matrix/federation/v1/publicRooms`: this server's published room directory,
//! for other servers (the client API's list, on the default network).

use axum::extract::State;
use ruma::api::federation::directory::{
    get_public_rooms::v1 as get_list, get_public_rooms_filtered::v1 as filtered,
};

use super::{Ruma, RumaResponse};
use crate::service::federation::directory::{self, Page};
use crate::{AppState, Result};

/// `GET /_matrix/federation/v1/publicRooms`.
pub async fn public_rooms(
    State(state): State<AppState>,
    Ruma(request): Ruma<get_list::Request>,
) -> Result<RumaResponse<get_list::Response>> {
    let page = directory::local_page(
        &state,
        request.limit,
        request.since.as_deref(),
        None,
        &request.room_network,
    )
    .await?;
    let mut response = get_list::Response::new();
    Page {
        chunk: response.chunk,
        next_batch: response.next_batch,
        prev_batch: response.prev_batch,
        total_room_count_estimate: response.total_room_count_estimate,
    } = page;
    Ok(RumaResponse(response))
}

/// `POST /_matrix/federation/v1/publicRooms`, with `filter.generic_search_term`.
pub async fn public_rooms_filtered(
    State(state): State<AppState>,
    Ruma(request): Ruma<filtered::Request>,
) -> Result<RumaResponse<filtered::Response>> {
    let page = directory::local_page(
        &state,
        request.limit,
        request.since.as_deref(),
        request.filter.generic_search_term.as_deref(),
        &request.room_network,
    )
    .await?;
    let mut response = filtered::Response::new();
    Page {
        chunk: response.chunk,
        next_batch: response.next_batch,
        prev_batch: response.prev_batch,
        total_room_count_estimate: response.total_room_count_estimate,
    } = page;
    Ok(RumaResponse(response))
}

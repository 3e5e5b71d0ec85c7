//! `PUT /_matrix/federation/v1/send/{txnId}`: recorded idempotently per origin and transaction ID.

use axum::extract::State;
use ruma::api::IncomingResponseExt;
use ruma::api::federation::transactions::send_transaction_message::v1 as send;

use super::{Origin, Ruma, RumaResponse};
use crate::{AppState, Error, Result};

pub async fn send_transaction(
    State(state): State<AppState>,
    Origin(origin): Origin,
    Ruma(request): Ruma<send::Request>,
) -> Result<RumaResponse<send::Response>> {
    if request.origin != origin {
        return Err(Error::forbidden(
            "The transaction's origin is not the server that signed the request",
        ));
    }
    let answer = crate::service::federation::queue::receive(
        &state.db,
        origin.as_str(),
        request.transaction_id.as_str(),
        request.pdus.len(),
        request.edus.len(),
    )
    .await?;
    let response = send::Response::try_from_http_response(http::Response::new(answer.as_bytes()))
        .map_err(|e| Error::internal(format!("stored transaction answer: {e}")))?;
    Ok(RumaResponse(response))
}

//! `PUT /_matrix/federation/v1/send/{txnId}`: applied once per origin and transaction ID (a retry
//! is answered from the stored result).

use axum::extract::State;
use ruma::api::IncomingResponseExt;
use ruma::api::federation::transactions::send_transaction_message::v1 as send;

use super::{Origin, Ruma, RumaResponse};
use crate::service::federation::{inbound, queue};
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
    let (txn_id, pdus, edus) = (
        request.transaction_id.as_str(),
        request.pdus.len(),
        request.edus.len(),
    );
    let answer = match queue::earlier_answer(&state.db, origin.as_str(), txn_id, pdus, edus).await?
    {
        Some(answer) => answer,
        None => {
            let receiver = inbound::Receiver::of(&state);
            let results = receiver.apply_transaction(&request.pdus).await?;
            crate::service::federation::edus::apply(&state, &origin, &request.edus).await;
            queue::record_answer(&state.db, origin.as_str(), txn_id, &results, pdus, edus).await?
        }
    };
    let response = send::Response::try_from_http_response(http::Response::new(answer.as_bytes()))
        .map_err(|e| Error::internal(format!("stored transaction answer: {e}")))?;
    Ok(RumaResponse(response))
}

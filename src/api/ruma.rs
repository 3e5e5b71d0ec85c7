//! ruma's typed requests and responses for endpoints that have them: `Ruma<T>` parses the request
//! with the endpoint's own ruma type (so its rules, such as the client secret's, come with it), and
//! `RumaResponse<T>` serialises the endpoint's ruma response.
//!
//! The body goes through `extract::body_bytes` like every JSON body (size limit, U+0000 refused);
//! an empty body counts as `{}`, as for `extract::Json`. A body that is not JSON is `M_NOT_JSON`;
//! JSON that the ruma type refuses is `M_BAD_JSON` (as Synapse answers a body that fails its
//! schema). Authentication is not ruma's business here: handlers take a `Requester` beside.

use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponseExt};

use crate::api::extract::body_bytes;
use crate::{AppState, Error};

/// A request parsed by its ruma type.
pub struct Ruma<T>(pub T);

impl<T: IncomingRequest> FromRequest<AppState> for Ruma<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let (mut parts, body) = req.into_parts();
        // A route without parameters may have none recorded at all. axum has percent-decoded them.
        let raw = RawPathParams::from_request_parts(&mut parts, state)
            .await
            .ok();
        let args: Vec<&str> = raw.iter().flat_map(|r| r.iter().map(|(_, v)| v)).collect();
        let head = http::Request::from_parts(parts.clone(), ());
        let bytes = body_bytes(Request::from_parts(parts, body), state).await?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
            return Err(Error::not_json("Content not JSON"));
        }
        let (head, ()) = head.into_parts();
        T::try_from_http_request(http::Request::from_parts(head, bytes), &args)
            .map(Ruma)
            .map_err(|e| Error::bad_json(format!("Invalid request: {e}")))
    }
}

/// A response serialised by its ruma type.
pub struct RumaResponse<T>(pub T);

impl<T: ruma::api::OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(axum::body::Body::from).into_response(),
            Err(e) => Error::internal(format!("serialising a response: {e}")).into_response(),
        }
    }
}

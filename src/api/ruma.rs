//! ruma's typed endpoints on axum: `Ruma<T>` extracts a ruma request type (path and query as ruma
//! parses them), `RumaResponse<T>` answers with a ruma response type. For endpoints whose request
//! has no body (the body-carrying ones keep `extract::Json`, which refuses U+0000 first).

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt};

use crate::Error;

/// A ruma request without a body; a path or query ruma cannot parse is `400 M_INVALID_PARAM`.
pub struct Ruma<T>(pub T);

impl<S: Send + Sync, T: IncomingRequest> FromRequestParts<S> for Ruma<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::invalid_param(format!("Invalid path: {e}")))?;
        // Decoded by axum: ruma takes them as they are.
        let args: Vec<&str> = params.iter().map(|(_, value)| value).collect();
        let request = axum::http::Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone())
            .body(&[][..])
            .map_err(Error::internal)?;
        T::try_from_http_request(request, &args)
            .map(Ruma)
            .map_err(|e| Error::invalid_param(format!("Invalid request: {e}")))
    }
}

/// A ruma response, serialised as ruma defines it.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(axum::body::Body::from).into_response(),
            Err(e) => Error::internal(e).into_response(),
        }
    }
}

//! ruma's typed requests in, typed responses out.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt};

use crate::Error;

/// The largest body a federation request may carry (a transaction of 50 PDUs and 100 EDUs fits).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// A request parsed into ruma's type `T` (path arguments, query and body).
pub struct Ruma<T>(pub T);

impl<T: IncomingRequest, S: Send + Sync> FromRequest<S> for Ruma<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        let (mut parts, body) = request.into_parts();
        let params = RawPathParams::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| Error::invalid_param(format!("Bad path: {e}")))?;
        let args: Vec<&str> = params.iter().map(|(_, value)| value).collect();
        let bytes = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| Error::too_large("The request body is too large"))?;
        let request = http::Request::from_parts(parts, &bytes[..]);
        T::try_from_http_request(request, &args)
            .map(Ruma)
            .map_err(|e| Error::bad_json(format!("Bad request: {e}")))
    }
}

/// A ruma response type as the HTTP response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|b| Body::from(b.freeze())).into_response(),
            Err(e) => Error::internal(format!("serializing a response: {e}")).into_response(),
        }
    }
}

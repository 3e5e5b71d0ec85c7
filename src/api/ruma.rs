//! ruma's typed endpoints in axum: [`Ruma`] parses a request into ruma's request type (path
//! parameters, query and JSON body, checked by ruma), [`RumaResponse`] serialises ruma's response
//! type. Parse failures speak Matrix: a body that is not JSON is `M_NOT_JSON`, JSON of the wrong
//! shape `M_BAD_JSON`, a missing query parameter `M_MISSING_PARAM`, a malformed identifier or
//! parameter `M_INVALID_PARAM`. Bodies go through [`body_bytes`] (size limit, U+0000 refused).

use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt};

use crate::Error;
use crate::api::extract::body_bytes;

/// A request parsed into ruma's type `T` for its endpoint.
pub struct Ruma<T>(pub T);

impl<S: Send + Sync, T: IncomingRequest> FromRequest<S> for Ruma<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let RumaWithBody(request, _) = RumaWithBody::from_request(req, state).await?;
        Ok(Ruma(request))
    }
}

/// A request parsed into ruma's type `T`, with its JSON body (`{}` when empty) for the fields
/// ruma's type lacks.
pub struct RumaWithBody<T>(pub T, pub bytes::Bytes);

impl<S: Send + Sync, T: IncomingRequest> FromRequest<S> for RumaWithBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let (mut parts, body) = req.into_parts();
        // axum has percent-decoded them, as ruma expects.
        let path_args: Vec<String> = RawPathParams::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| Error::invalid_param(format!("Invalid path parameter: {e}")))?
            .iter()
            .map(|(_, value)| value.to_owned())
            .collect();
        let mut bytes = body_bytes(Request::from_parts(parts.clone(), body), state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            bytes = bytes::Bytes::from_static(b"{}");
        }
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let request = T::try_from_http_request(http::Request::from_parts(parts, &bytes[..]), &args)
            .map_err(rejection)?;
        Ok(RumaWithBody(request, bytes))
    }
}

/// The Matrix error for a request ruma could not parse.
fn rejection(error: FromHttpRequestError) -> Error {
    match error {
        FromHttpRequestError::Deserialization(error) => match error {
            DeserializationError::Json(e) if e.is_syntax() || e.is_eof() => {
                Error::not_json(format!("Content not JSON: {e}"))
            }
            DeserializationError::Json(e) => Error::bad_json(format!("Invalid JSON: {e}")),
            DeserializationError::Query(e) if e.to_string().contains("missing field") => {
                Error::missing_param(format!("Missing query parameter: {e}"))
            }
            other => Error::invalid_param(format!("Invalid parameter: {other}")),
        },
        FromHttpRequestError::MethodMismatch { .. } => {
            Error::unrecognized("Unrecognized request method")
        }
        other => Error::invalid_param(format!("Invalid request: {other}")),
    }
}

/// A response of ruma's type, serialised by ruma.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(axum::body::Body::from).into_response(),
            Err(e) => Error::internal(format!("serialising a response: {e}")).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_failures_get_matrix_errcodes() {
        let not_json = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
        let bad_shape = serde_json::from_str::<u8>("\"x\"").unwrap_err();
        for (error, errcode) in [
            (DeserializationError::Json(not_json), "M_NOT_JSON"),
            (DeserializationError::Json(bad_shape), "M_BAD_JSON"),
            (
                DeserializationError::Ident(ruma::IdParseError::MissingLeadingSigil),
                "M_INVALID_PARAM",
            ),
        ] {
            assert_eq!(rejection(error.into()).errcode(), errcode);
        }
    }
}

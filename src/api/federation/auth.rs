//! X-Matrix request authentication (server-server API, "Request Authentication"): the
//! `Authorization` header names the origin, the destination (which must be this server), the key
//! and the signature over method, URI, origin, destination and body; the signature is checked with
//! the origin's key, fetched and cached by the key ring. Anything else is 401 `M_UNAUTHORIZED`
//! (Synapse: `federation/transport/server/_base.py`); an origin outside `domain_allowlist` is 403.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ruma::OwnedServerName;
use ruma::api::federation::authentication::XMatrix;
use ruma::signatures::PublicKeyMap;

use crate::{AppState, Error, Result, store};

/// The authenticated server that sent the request.
#[derive(Debug, Clone)]
pub struct Origin(pub OwnedServerName);

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        parts
            .extensions
            .get::<Origin>()
            .cloned()
            .ok_or_else(|| Error::unauthorized("This request needs X-Matrix authentication"))
    }
}

/// The middleware before every authenticated federation endpoint.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match verify(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn verify(state: &AppState, request: Request) -> Result<Request> {
    let (mut parts, body) = request.into_parts();
    let header = XMatrix::extract_from_http_headers(&parts.headers).map_err(|e| {
        Error::unauthorized(format!("Missing or malformed X-Matrix authorization: {e}"))
    })?;
    if header
        .destination
        .as_deref()
        .is_some_and(|d| d != state.server_name)
    {
        return Err(Error::unauthorized("The request is for another server"));
    }
    if !state.federation.domain_permitted(&header.origin) {
        return Err(Error::forbidden(format!(
            "Federation with {} is not allowed",
            header.origin
        )));
    }
    let limit = state.config.limits.max_request_body.max(8 * 1024 * 1024);
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Error::too_large("The request body is too large"))?;
    let key_id = header.key.to_string();
    let keys = state
        .keyring
        .keys_valid_at(
            &header.origin,
            std::slice::from_ref(&key_id),
            store::now_ms(),
        )
        .await?;
    if keys.is_empty() {
        return Err(Error::unauthorized(format!(
            "Unknown key {key_id} of {}",
            header.origin
        )));
    }
    let signed = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .body(&bytes[..])
        .map_err(Error::internal)?;
    let map = PublicKeyMap::from([(header.origin.to_string(), keys)]);
    header
        .verify_http_request(&signed, &state.server_name, &map)
        .map_err(|e| Error::unauthorized(format!("Invalid X-Matrix signature: {e}")))?;
    // The origin is up: whatever waits for it goes now, not when its backoff would end.
    state.outbox.contacted_by(&header.origin).await?;
    parts.extensions.insert(Origin(header.origin));
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

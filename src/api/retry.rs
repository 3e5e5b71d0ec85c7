//! One more try for a request whose database connection was lost (PostgreSQL restarted, the
//! network dropped): the pools have by then discarded every connection of the old server, so the
//! second try runs on fresh ones. A request almost always fails on a lost connection before it
//! commits (a statement cannot reach the server); sends are idempotent through their transaction
//! IDs. Only a commit whose reply was lost could make a request that is not idempotent by design
//! (createRoom) run twice. If the database is still down, the answer is the 503 with
//! `retry_after_ms` of the second try.

use axum::body::Body;
use axum::extract::{OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ConnectionLost;

/// Bodies up to this size are kept for a replay; larger ones (media uploads) are not replayed.
const MAX_REPLAYED_BODY: u64 = 1024 * 1024;

pub async fn once_on_lost_connection(request: Request, next: Next) -> Response {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let replayable = match length {
        Some(n) => n <= MAX_REPLAYED_BODY,
        None => matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
        ),
    };
    if !replayable {
        return next.run(request).await;
    }
    let (original, body) = request.into_parts();
    let parts = detached(&original);
    // Dropped here, not at the end of the request (as a shadowed binding would be).
    drop(original);
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REPLAYED_BODY as usize).await else {
        // The body broke off (or lied about its length): nothing to serve.
        return crate::Error::bad_json("Could not read the request body").into_response();
    };
    let first = next
        .clone()
        .run(Request::from_parts(
            parts.clone(),
            Body::from(bytes.clone()),
        ))
        .await;
    if first.extensions().get::<ConnectionLost>().is_none() {
        return first;
    }
    tracing::info!("retrying a request after a lost database connection");
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A copy of a request head that shares no memory with its connection. hyper parses the URI and
/// header values as slices of the connection's read buffer; a head kept for a replay would pin
/// that buffer (8 KiB) for as long as the request runs — a long poll's 30 s — and hyper would
/// allocate another to read the connection meanwhile.
fn detached(parts: &Parts) -> Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.version = parts.version;
    head.uri = detached_uri(&parts.uri);
    head.headers.reserve(parts.headers.len());
    for (name, value) in &parts.headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        head.headers.append(name.clone(), copy);
    }
    head.extensions = parts.extensions.clone();
    if let Some(OriginalUri(uri)) = parts.extensions.get::<OriginalUri>() {
        head.extensions.insert(OriginalUri(detached_uri(uri)));
    }
    head
}

fn detached_uri(uri: &Uri) -> Uri {
    Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone())
}

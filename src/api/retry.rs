//! One more try for a request whose database connection was lost (PostgreSQL restarted, the
//! network dropped): the pools have by then discarded every connection of the old server, so the
//! second try runs on fresh ones. A request almost always fails on a lost connection before it
//! commits (a statement cannot reach the server); sends are idempotent through their transaction
//! IDs. Only a commit whose reply was lost could make a request that is not idempotent by design
//! (createRoom) run twice. If the database is still down, the answer is the 503 with
//! `retry_after_ms` of the second try.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderName, HeaderValue, Method, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tower_http::request_id::RequestId;

use crate::error::ConnectionLost;

/// Bodies up to this size are kept for a replay; larger ones (media uploads) are not replayed.
const MAX_REPLAYED_BODY: u64 = 1024 * 1024;

/// The innermost layer of the client API: a request whose URI carries U+0000 is refused at once;
/// any other is served, with one more try after a lost database connection. A hand-written
/// service rather than `from_fn` middleware: every waiting long poll holds this layer's future
/// for its whole timeout, and `from_fn`'s (the request inline in each async step it passes
/// through, the rest of the stack boxed once more behind `Next`) took 2.2 KB of it. Here the
/// future holds the boxed head of a replayable request, its body and the inner service.
#[derive(Clone, Copy, Default)]
pub struct AdmitLayer;

impl<S> tower::Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Admit<S> {
        Admit { inner }
    }
}

/// See `AdmitLayer`.
#[derive(Clone)]
pub struct Admit<S> {
    /// The rest of the stack: the router's route.
    inner: S,
}

impl<S> tower::Service<Request> for Admit<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let Err(e) = crate::api::extract::reject_nul_in_uri(request.uri()) {
            return Box::pin(std::future::ready(Ok(e.into_response())));
        }
        if !replayable(&request) {
            return Box::pin(self.inner.call(request));
        }
        // `inner` is the service made ready for this call; the clone left behind serves the next.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let (original, body) = request.into_parts();
        let head = Box::new(KeptHead::of(&original));
        // Only the copy lives on: the original pins the connection's read buffer.
        drop(original);
        Box::pin(with_one_retry(inner, head, body))
    }
}

/// Whether a request can be sent through again: its body is small enough to keep.
fn replayable(request: &Request) -> bool {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) => n <= MAX_REPLAYED_BODY,
        None => matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
        ),
    }
}

/// Serves the request through the ready `inner`, and once more if its connection was lost. Each
/// step is boxed, so what waits here is a few words, not the largest step.
async fn with_one_retry<S>(
    mut inner: S,
    head: Box<KeptHead>,
    body: Body,
) -> Result<Response, Infallible>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone,
{
    let Ok(bytes) = Box::pin(axum::body::to_bytes(body, MAX_REPLAYED_BODY as usize)).await else {
        // The body broke off (or lied about its length): nothing to serve.
        return Ok(crate::Error::bad_json("Could not read the request body").into_response());
    };
    let replay = inner.clone();
    let first = Request::from_parts(head.parts(), Body::from(bytes.clone()));
    let first = Box::pin(inner.call(first)).await?;
    if first.extensions().get::<ConnectionLost>().is_none() {
        return Ok(first);
    }
    tracing::info!("retrying a request after a lost database connection");
    let again = Request::from_parts(head.parts(), Body::from(bytes));
    Box::pin(tower::ServiceExt::oneshot(replay, again)).await
}

/// A request head kept for its tries, sharing no memory with its connection: hyper parses the URI
/// and header values as slices of the connection's read buffer, and a head kept for the request's
/// whole run (a long poll's 30 s) would pin that buffer (8 KiB) while hyper allocates another to
/// read the connection. Compact too, the URI and headers as one text: as `Parts` (a header map,
/// the URI twice) it took 1.4 KB more for each waiting long poll. Each try gets `parts()`.
struct KeptHead {
    method: Method,
    version: Version,
    /// The URI, then each header's name and value, back to back.
    text: Box<[u8]>,
    /// Where each piece of `text` ends: the URI, then the headers' names and values in turn.
    ends: Box<[u32]>,
    /// Which headers are marked sensitive (bit i: the i-th header; from the 64th on, all).
    sensitive: u64,
    /// The `OriginalUri` extension if there was one: `Some(None)` when it is the URI itself,
    /// its text when not (a nested router's).
    original_uri: Option<Option<Box<str>>>,
    /// The other extensions (none of them a slice of the head).
    extensions: Extensions,
}

impl KeptHead {
    fn of(parts: &Parts) -> Self {
        let uri = parts.uri.to_string();
        let mut text = Vec::with_capacity(uri.len() + 64 * parts.headers.len());
        let mut ends = Vec::with_capacity(1 + 2 * parts.headers.len());
        let mut sensitive = 0u64;
        let mut end = |text: &mut Vec<u8>, piece: &[u8]| {
            text.extend_from_slice(piece);
            ends.push(text.len() as u32);
        };
        end(&mut text, uri.as_bytes());
        for (i, (name, value)) in parts.headers.iter().enumerate() {
            end(&mut text, name.as_str().as_bytes());
            end(&mut text, value.as_bytes());
            if value.is_sensitive() {
                sensitive |= 1 << i.min(63);
            }
        }
        // Extensions that are slices of the head are kept as copies, or the copy would pin the
        // read buffer after all: `OriginalUri` (kept as text) and a client-chosen `RequestId`.
        let mut extensions = parts.extensions.clone();
        let original_uri = extensions
            .remove::<OriginalUri>()
            .map(|OriginalUri(original)| match original == parts.uri {
                true => None,
                false => Some(original.to_string().into_boxed_str()),
            });
        if let Some(id) = extensions.remove::<RequestId>()
            && let Ok(copy) = HeaderValue::from_bytes(id.header_value().as_bytes())
        {
            extensions.insert(RequestId::new(copy));
        }
        Self {
            method: parts.method.clone(),
            version: parts.version,
            text: text.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            sensitive,
            original_uri,
            extensions,
        }
    }

    /// The head for one try. Every piece was valid when kept, so none is dropped in practice.
    fn parts(&self) -> Parts {
        let mut pieces = self.ends.iter().scan(0usize, |start, &end| {
            let piece = &self.text[*start..end as usize];
            *start = end as usize;
            Some(piece)
        });
        let (mut head, ()) = Request::new(()).into_parts();
        head.method = self.method.clone();
        head.version = self.version;
        head.uri = pieces
            .next()
            .and_then(|uri| Uri::try_from(uri).ok())
            .unwrap_or_default();
        head.headers.reserve(self.ends.len() / 2);
        let mut i = 0;
        while let (Some(name), Some(value)) = (pieces.next(), pieces.next()) {
            if let (Ok(name), Ok(mut value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                value.set_sensitive(self.sensitive & (1 << i.min(63)) != 0);
                head.headers.append(name, value);
            }
            i += 1;
        }
        head.extensions = self.extensions.clone();
        if let Some(original) = &self.original_uri {
            let original = original.as_deref().and_then(|uri| Uri::try_from(uri).ok());
            let original = original.unwrap_or_else(|| head.uri.clone());
            head.extensions.insert(OriginalUri(original));
        }
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(original: Option<&str>) -> Parts {
        let mut request = Request::builder()
            .method(Method::PUT)
            .uri("/_matrix/client/v3/sync?filter=%7B%22room%22%3A%7B%7D%7D&timeout=30000")
            .header(header::AUTHORIZATION, "Bearer secret")
            .header("x-custom", "one")
            .header("x-custom", "two")
            .header(header::USER_AGENT, b"\xe9t\xe9".as_slice())
            .body(())
            .unwrap();
        request
            .headers_mut()
            .get_mut(header::AUTHORIZATION)
            .unwrap()
            .set_sensitive(true);
        if let Some(original) = original {
            let uri = Uri::try_from(original).unwrap();
            request.extensions_mut().insert(OriginalUri(uri));
        }
        request.into_parts().0
    }

    #[test]
    fn a_kept_head_gives_back_the_head() {
        for original in [None, Some("/nested/_matrix/client/v3/sync")] {
            let parts = head(original);
            let again = KeptHead::of(&parts).parts();
            assert_eq!(again.method, parts.method);
            assert_eq!(again.version, parts.version);
            assert_eq!(again.uri, parts.uri);
            assert_eq!(again.headers, parts.headers);
            for (name, value) in &again.headers {
                assert_eq!(
                    value.is_sensitive(),
                    name == header::AUTHORIZATION,
                    "{name}"
                );
            }
            let original_uri = |p: &Parts| p.extensions.get::<OriginalUri>().map(|o| o.0.clone());
            assert_eq!(original_uri(&again), original_uri(&parts));
        }
    }

    /// What is kept shares no bytes with the head it was made from (that would pin the
    /// connection's read buffer): the extensions that are slices of it are copies.
    #[test]
    fn a_kept_head_shares_no_bytes_with_the_original() {
        let mut parts = head(Some("/_matrix/client/v3/sync?timeout=30000"));
        let id = parts.headers[header::AUTHORIZATION].clone();
        parts.extensions.insert(RequestId::new(id));
        let kept = KeptHead::of(&parts);
        assert!(kept.extensions.get::<OriginalUri>().is_none());
        let id = |e: &Extensions| {
            e.get::<RequestId>()
                .unwrap()
                .header_value()
                .as_bytes()
                .as_ptr()
        };
        assert_ne!(id(&kept.extensions), id(&parts.extensions));
        assert_eq!(
            kept.parts()
                .extensions
                .get::<RequestId>()
                .unwrap()
                .header_value(),
            parts.extensions.get::<RequestId>().unwrap().header_value()
        );
    }
}

//! Prometheus: the per-request latency layer on the client router, and the metrics listener's own
//! router (`GET /metrics`), which is never merged into the client one.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::Histogram;

use crate::service::metrics::{Scrape, names};

/// Records each request's latency under its route template (never the raw path: that may hold
/// IDs without bound, or an access token), its method and its status.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let endpoint = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let endpoint = endpoint.as_ref().map_or("<unmatched>", MatchedPath::as_str);
    histogram(endpoint, method, status_label(response.status())).record(started.elapsed());
    response
}

/// Histogram handles by route template, then method and status: a request finds its handle under a
/// read lock without allocating or hashing labels; a new combination is registered once. Bounded:
/// the templates are the router's routes (plus `<unmatched>`), the methods and statuses static labels.
static HANDLES: LazyLock<RwLock<HashMap<Box<str>, Vec<Handle>>>> = LazyLock::new(Default::default);

/// One registered histogram and the method and status it is for.
struct Handle {
    method: &'static str,
    status: &'static str,
    histogram: Histogram,
}

fn histogram(endpoint: &str, method: &'static str, status: &'static str) -> Histogram {
    let find = |handles: &HashMap<Box<str>, Vec<Handle>>| {
        handles.get(endpoint).and_then(|list| {
            list.iter()
                .find(|h| h.method == method && h.status == status)
                .map(|h| h.histogram.clone())
        })
    };
    if let Some(found) = find(&HANDLES.read().unwrap_or_else(|e| e.into_inner())) {
        return found;
    }
    let mut handles = HANDLES.write().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = find(&handles) {
        return found;
    }
    let histogram = metrics::histogram!(
        names::HTTP_DURATION,
        "endpoint" => endpoint.to_owned(),
        "method" => method,
        "status" => status,
    );
    handles.entry(endpoint.into()).or_default().push(Handle {
        method,
        status,
        histogram: histogram.clone(),
    });
    histogram
}

/// The metrics listener: `GET /metrics` and nothing else.
pub fn router(scrape: Arc<Scrape>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(scrape)
}

async fn render(State(scrape): State<Arc<Scrape>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        scrape.render().await,
    )
        .into_response()
}

/// A static label for the method: unusual methods share one (no label string per request).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// A static label for the status: the codes Axon answers, else the class (`5xx`).
fn status_label(status: StatusCode) -> &'static str {
    const KNOWN: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (206, "206"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (307, "307"),
        (308, "308"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (408, "408"),
        (409, "409"),
        (411, "411"),
        (413, "413"),
        (415, "415"),
        (416, "416"),
        (429, "429"),
        (500, "500"),
        (501, "501"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    let code = status.as_u16();
    match KNOWN.binary_search_by_key(&code, |(c, _)| *c) {
        Ok(i) => KNOWN[i].1,
        Err(_) => match code / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_exact_or_a_class() {
        assert_eq!(status_label(StatusCode::OK), "200");
        assert_eq!(status_label(StatusCode::TOO_MANY_REQUESTS), "429");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "4xx");
        assert_eq!(status_label(StatusCode::from_u16(599).unwrap()), "5xx");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}

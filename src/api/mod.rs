//! HTTP only: routing, extraction, response shaping. No SQL and no rules here.

pub mod account;
pub mod account_data;
pub mod admin;
pub mod auth;
pub mod devices;
pub mod directory;
pub mod discovery;
pub mod email_pages;
pub mod extract;
pub mod federation;
pub mod forwarded;
pub mod keys;
pub mod legacy;
pub mod login;
pub mod login_token;
pub mod media;
pub mod membership;
pub mod messages;
pub mod metrics;
pub mod mutual_rooms;
pub mod openid;
pub mod presence;
pub mod profile;
pub mod push;
pub mod receipts;
pub mod register;
pub mod reports;
pub mod request_id;
pub mod retry;
pub mod room_keys;
pub mod rooms;
pub mod ruma;
pub mod search;
pub mod send;
pub mod sliding_sync;
pub mod spaces;
pub mod synapse_admin;
pub mod sync;
pub mod thirdparty;
pub mod threepids;
pub mod to_device;
pub mod typing;
pub mod voip;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, Method, Request, header};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::{AppState, Error};

/// Every endpoint and layer. Client-server endpoints answer under `/v3` and, for clients such as
/// Hydrogen that still call them there, `/r0`.
pub fn router(state: AppState) -> Router {
    let client = Router::new()
        .merge(account::routes())
        .merge(admin::routes())
        .merge(devices::routes())
        .merge(login::routes())
        .merge(register::routes())
        .merge(rooms::routes())
        .merge(membership::routes())
        .merge(send::routes())
        .merge(messages::routes())
        .merge(sync::routes())
        .merge(legacy::routes())
        .merge(profile::routes())
        .merge(directory::routes())
        .merge(keys::routes())
        .merge(to_device::routes())
        .merge(room_keys::routes())
        .merge(account_data::routes())
        .merge(receipts::routes())
        .merge(typing::routes())
        .merge(presence::routes())
        .merge(push::routes())
        .merge(voip::routes())
        .merge(reports::routes())
        .merge(thirdparty::routes())
        .merge(threepids::routes())
        .merge(search::routes())
        .merge(openid::routes());
    let mut client_v1 = Router::new()
        .merge(messages::v1_routes())
        .merge(spaces::v1_routes())
        .merge(mutual_rooms::v1_routes());
    let mut unstable = Router::new().merge(mutual_rooms::unstable_routes());
    if state.config.login_token.enabled {
        client_v1 = client_v1.merge(login_token::v1_routes());
        unstable = unstable.merge(login_token::unstable_routes());
    }

    Router::new()
        .nest("/_matrix/client/v3", client.clone())
        .nest("/_matrix/client/r0", client)
        .nest("/_matrix/client/v1", client_v1)
        .merge(discovery::routes())
        .merge(register::admin_routes())
        .merge(synapse_admin::routes())
        .merge(account_data::other_routes())
        .merge(keys::unstable_routes())
        .merge(media::other_routes())
        .merge(register::other_routes())
        .merge(spaces::unstable_routes())
        .merge(sliding_sync::routes())
        .merge(unstable)
        // Until the federation listener comes, server-server endpoints are served here too.
        .merge(federation::openid::routes())
        .merge(email_pages::routes())
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        // Every layer in one: each `Router::layer` call boxes every request's future once more
        // (with room for the whole request beside it), which a waiting long poll carries for its
        // 30 s — about 300 bytes a layer. The first listed is the outermost.
        .layer(
            tower::ServiceBuilder::new()
                // The spec's CORS headers for web clients on other origins; preflights are
                // answered here.
                .layer(
                    CorsLayer::new()
                        .allow_origin(Any)
                        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
                        .allow_headers([
                            HeaderName::from_static("x-requested-with"),
                            header::CONTENT_TYPE,
                            header::AUTHORIZATION,
                        ])
                        // Every answer is the same whatever the request's origin and preflight
                        // headers, so caches need no `Vary` (tower-http builds one per response).
                        .vary([] as [HeaderName; 0]),
                )
                .map_response(into_response)
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
                .layer(tower::util::MapRequestLayer::new(request_id::drop_unusable))
                // The request ID, made before the span below opens and returned on the response.
                .layer(SetRequestIdLayer::new(
                    HeaderName::from_static(request_id::HEADER),
                    request_id::NextRequestId,
                ))
                .layer(PropagateRequestIdLayer::new(HeaderName::from_static(
                    request_id::HEADER,
                )))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &Request<_>| {
                            // The path template, never the raw URI: it may carry an access_token.
                            let path = request
                                .extensions()
                                .get::<MatchedPath>()
                                .map_or("<unmatched>", MatchedPath::as_str);
                            // Set by the layer outside this one: each request has it.
                            let request_id = request
                                .headers()
                                .get(request_id::HEADER)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-");
                            tracing::info_span!("request", request_id, method = %request.method(), path, status = tracing::field::Empty)
                        })
                        .on_response(log_response),
                )
                // Behind a proxy: its X-Forwarded-For names the client.
                .option_layer(
                    state
                        .config
                        .listen
                        .x_forwarded
                        .then(|| axum::middleware::from_fn(forwarded::use_forwarded_for)),
                )
                // Only when metrics are on: otherwise requests pay nothing for them.
                .option_layer(
                    state
                        .metrics
                        .is_some()
                        .then(|| axum::middleware::from_fn(metrics::record)),
                )
                .map_response(into_response)
                .layer(CatchPanicLayer::custom(
                    |_panic: Box<dyn std::any::Any + Send>| {
                        Error::internal("a request handler panicked").into_response()
                    },
                ))
                .layer(
                    CompressionLayer::new()
                        .gzip(true)
                        .compress_when(SizeAbove::new(1024).and(NotForContentType::IMAGES)),
                )
                .layer(DefaultBodyLimit::max(state.config.limits.max_request_body))
                .layer(retry::AdmitLayer),
        )
        .with_state(state)
}

/// Every answer of both listeners: its status on the request's span, and a debug line with the
/// time it took.
fn log_response(response: &Response, latency: Duration, span: &tracing::Span) {
    span.record("status", response.status().as_u16());
    tracing::debug!(
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        "response"
    );
}

/// A response with its body as axum's: the layers that wrap the body in a type of their own
/// (tracing, panics, compression) hand it on to those that want axum's.
fn into_response<B>(response: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    response.map(axum::body::Body::new)
}

async fn unrecognized() -> Error {
    Error::unrecognized("Unrecognized request")
}

async fn method_not_allowed() -> Error {
    Error::matrix(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
        "Unrecognized request method",
    )
}

//! The federation listener's endpoints: the key endpoints and `version` (no authentication, as the
//! spec has them), and every other `/_matrix/federation/…` request behind X-Matrix authentication
//! (`auth`). Handlers take ruma's typed requests (`Ruma<T>`) and return its typed responses.

pub mod auth;
pub mod directory;
pub mod history;
pub mod keys;
pub mod membership;
pub mod openid;
pub mod query;
pub mod ruma_io;
pub mod transactions;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::Request;
use axum::response::IntoResponse;
use axum::routing::{any, get, post, put};
use ruma::api::federation::discovery::get_server_version::v1 as version;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use auth::Origin;
pub use ruma_io::{Ruma, RumaResponse};

use crate::{AppState, Error};

pub fn router(state: AppState) -> Router {
    let open = Router::new()
        .route("/_matrix/key/v2/server", get(keys::server))
        .route("/_matrix/key/v2/query/{serverName}", get(keys::query_one))
        .route("/_matrix/key/v2/query", post(keys::query))
        .route("/_matrix/federation/v1/version", get(server_version))
        .route(
            "/.well-known/matrix/server",
            get(crate::api::discovery::well_known_server),
        )
        // Called by widgets and integration managers with an OpenID token, not by servers.
        .merge(openid::routes());
    let authenticated = Router::new()
        .route("/_matrix/federation/v1/query/profile", get(query::profile))
        .route(
            "/_matrix/federation/v1/query/directory",
            get(query::directory),
        )
        .route(
            "/_matrix/federation/v1/publicRooms",
            get(directory::public_rooms).post(directory::public_rooms_filtered),
        )
        .route(
            "/_matrix/federation/v1/make_join/{roomId}/{userId}",
            get(membership::make_join),
        )
        .route(
            "/_matrix/federation/v2/send_join/{roomId}/{eventId}",
            put(membership::send_join),
        )
        .route(
            "/_matrix/federation/v1/make_leave/{roomId}/{userId}",
            get(membership::make_leave),
        )
        .route(
            "/_matrix/federation/v2/send_leave/{roomId}/{eventId}",
            put(membership::send_leave),
        )
        .route(
            "/_matrix/federation/v2/invite/{roomId}/{eventId}",
            put(membership::invite_v2),
        )
        .route(
            "/_matrix/federation/v1/event/{eventId}",
            get(membership::event),
        )
        .route(
            "/_matrix/federation/v1/state_ids/{roomId}",
            get(membership::state_ids),
        )
        .route(
            "/_matrix/federation/v1/state/{roomId}",
            get(membership::state),
        )
        .route(
            "/_matrix/federation/v1/backfill/{roomId}",
            get(history::backfill),
        )
        .route(
            "/_matrix/federation/v1/get_missing_events/{roomId}",
            post(history::get_missing_events),
        )
        .route(
            "/_matrix/federation/v1/event_auth/{roomId}/{eventId}",
            get(history::event_auth),
        )
        .route(
            "/_matrix/federation/v1/send/{txnId}",
            put(transactions::send_transaction),
        )
        .route("/_matrix/federation/{*rest}", any(unrecognized))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .merge(open)
        .merge(authenticated)
        .fallback(unrecognized)
        .layer(DefaultBodyLimit::max(state.config.limits.max_request_body))
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            Error::internal("a federation handler panicked").into_response()
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let path = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("<unmatched>", MatchedPath::as_str);
                    tracing::info_span!("federation", method = %request.method(), path, status = tracing::field::Empty)
                })
                .on_response(super::log_response),
        )
        .with_state(state)
}

/// `GET /_matrix/federation/v1/version`.
async fn server_version(
    State(_state): State<AppState>,
    Ruma(_request): Ruma<version::Request>,
) -> RumaResponse<version::Response> {
    let mut server = version::Server::new();
    server.name = Some("Axon".into());
    server.version = Some(env!("CARGO_PKG_VERSION").into());
    let mut response = version::Response::new();
    response.server = Some(server);
    RumaResponse(response)
}

async fn unrecognized() -> Error {
    Error::unrecognized("Unrecognized request")
}

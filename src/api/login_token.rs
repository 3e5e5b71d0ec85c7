//! `POST /_matrix/client/v1/login/get_token` (and MSC3882's unstable path, as Synapse still serves):
//! a single-use token that logs in another device as the requester through `m.login.token`.
//! Mounted only when `login_token.enabled` (otherwise 404 `M_UNRECOGNIZED`, as Synapse, which
//! registers no such endpoint then).

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use ruma::api::client::session::get_login_token::v1 as get_token;
use serde::Deserialize;

use crate::api::auth::{ClientIp, Requester, UiaJson};
use crate::api::ruma::RumaResponse;
use crate::service::login_tokens;
use crate::service::rate_limit::UserAction;
use crate::service::uia::{self, Purpose};
use crate::{AppState, Result};

/// Below `/_matrix/client/v1`.
pub fn v1_routes() -> Router<AppState> {
    Router::new().route("/login/get_token", post(get_login_token))
}

/// Full paths.
pub fn unstable_routes() -> Router<AppState> {
    Router::new().route(
        "/_matrix/client/unstable/org.matrix.msc3882/login/token",
        post(get_login_token),
    )
}

/// The body: only UIA's `auth`. Taken through Axon's UIA extractor rather than ruma's request type,
/// because a UIA session is bound to the request's method, path and body.
#[derive(Deserialize)]
struct Body {
    auth: Option<uia::AuthData>,
}

/// With `login_token.require_ui_auth` (the default) every token needs the password again: the spec
/// asks servers never to skip UIA here.
async fn get_login_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    requester: Requester,
    UiaJson { body, operation }: UiaJson<Body>,
) -> Result<RumaResponse<get_token::Response>> {
    let user_id = requester.user_id.as_str();
    let passed = if state.config.login_token.require_ui_auth {
        let request = uia::Request {
            purpose: Purpose::LoginToken,
            operation: &operation,
            user_id: Some(user_id),
            flows: &[&[uia::PASSWORD]],
            ip,
        };
        Some(uia::check(&state, request, body.auth.as_ref()).await?)
    } else {
        None
    };
    // After UIA, as Synapse: a wrong password costs no token.
    state
        .rate_limiter
        .user(UserAction::LoginToken, &requester)?;
    let issued =
        login_tokens::issue(&state.db, user_id, state.config.login_token.lifetime_ms).await?;
    if let Some(passed) = passed {
        uia::finish(&state, &passed).await?;
    }
    Ok(RumaResponse(get_token::Response::new(
        issued.lifetime,
        issued.token,
    )))
}

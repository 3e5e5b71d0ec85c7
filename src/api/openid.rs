//! `POST /user/{userId}/openid/request_token`: an OpenID token for a third party to verify who the
//! user is (see `service::openid`).

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use ruma::ServerName;
use ruma::api::client::account::request_openid_token::v3 as request_token;
use ruma::authentication::TokenType;

use crate::api::auth::Requester;
use crate::api::ruma::{Ruma, RumaResponse};
use crate::service::openid;
use crate::{AppState, Result};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/user/{user_id}/openid/request_token",
        post(request_openid_token),
    )
}

async fn request_openid_token(
    State(state): State<AppState>,
    requester: Requester,
    Ruma(request): Ruma<request_token::Request>,
) -> Result<RumaResponse<request_token::Response>> {
    let issued = openid::request_token(
        &state.db,
        &requester.user_id,
        &request.user_id,
        state.config.openid.token_lifetime_ms,
    )
    .await?;
    let server_name: &ServerName = &state.server_name;
    Ok(RumaResponse(request_token::Response::new(
        issued.token,
        TokenType::Bearer,
        server_name.to_owned(),
        issued.lifetime,
    )))
}

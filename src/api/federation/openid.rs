//! `GET /_matrix/federation/v1/openid/userinfo`: a third party exchanges an OpenID token for the
//! ID of the user who asked for it. No server authentication: the token is the credential.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use ruma::api::federation::openid::get_openid_userinfo::v1 as userinfo;

use crate::api::ruma::{Ruma, RumaResponse};
use crate::service::openid;
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/federation/v1/openid/userinfo", get(get_userinfo))
}

/// A request without `access_token` is 401 `M_MISSING_TOKEN`, as Synapse answers; an unknown or
/// expired one 401 `M_UNKNOWN_TOKEN`.
async fn get_userinfo(
    State(state): State<AppState>,
    request: Result<Ruma<userinfo::Request>>,
) -> Result<RumaResponse<userinfo::Response>> {
    let Ruma(request) = request.map_err(|_| Error::missing_token("Access token required"))?;
    let user_id = openid::userinfo(&state.db, &request.access_token).await?;
    Ok(RumaResponse(userinfo::Response::new(user_id)))
}

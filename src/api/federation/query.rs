//! Queries from other servers about this one's users.

use axum::extract::State;
use ruma::api::federation::query::get_profile_information::v1 as profile_api;
use serde_json::Value;

use super::{Ruma, RumaResponse};
use crate::{AppState, Error, Result, service};

/// `GET /_matrix/federation/v1/query/profile`: a local user's display name and avatar (or the one
/// field asked for).
pub async fn profile(
    State(state): State<AppState>,
    Ruma(request): Ruma<profile_api::Request>,
) -> Result<RumaResponse<profile_api::Response>> {
    if request.user_id.server_name() != state.server_name {
        return Err(Error::invalid_param(
            "User is not hosted on this homeserver",
        ));
    }
    let profile = service::profile::get_profile(&state, request.user_id.as_str()).await?;
    let mut response = profile_api::Response::new();
    if let Value::Object(fields) = profile {
        for (name, value) in fields {
            if request.field.as_ref().is_none_or(|f| f.as_str() == name) {
                response.set(name, value);
            }
        }
    }
    Ok(RumaResponse(response))
}

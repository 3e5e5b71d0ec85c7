//! Queries from other servers about this one's users.

use axum::extract::State;
use ruma::api::federation::query::get_profile_information::v1 as profile_api;
use ruma::api::federation::query::get_room_information::v1 as directory_api;
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

/// `GET /_matrix/federation/v1/query/directory`: a local alias's room and the servers in it.
pub async fn directory(
    State(state): State<AppState>,
    Ruma(request): Ruma<directory_api::Request>,
) -> Result<RumaResponse<directory_api::Response>> {
    if request.room_alias.server_name() != state.server_name {
        return Err(Error::invalid_param(
            "Room alias is not hosted on this homeserver",
        ));
    }
    let (room_id, servers) =
        service::directory::alias_servers(&state, request.room_alias.as_str()).await?;
    let room_id = ruma::OwnedRoomId::try_from(room_id).map_err(Error::internal)?;
    let servers = servers
        .into_iter()
        .filter_map(|s| ruma::OwnedServerName::try_from(s).ok())
        .collect();
    Ok(RumaResponse(directory_api::Response::new(room_id, servers)))
}

//! The key endpoints: this server's keys, and the notary (`/_matrix/key/v2/query`).

use axum::extract::State;
use ruma::api::federation::discovery::{
    get_remote_server_keys::v2 as query_one_api, get_remote_server_keys_batch::v2 as query_api,
    get_server_keys::v2 as server_api,
};

use super::{Ruma, RumaResponse};
use crate::{AppState, Result, service, store};

/// Servers one notary query may name (the rest are left out).
const MAX_SERVERS_PER_QUERY: usize = 100;

/// `GET /_matrix/key/v2/server`: this server's keys, signed.
pub async fn server(
    State(state): State<AppState>,
    Ruma(_request): Ruma<server_api::Request>,
) -> Result<RumaResponse<server_api::Response>> {
    let keys =
        service::keys::server_keys(&state.db, &state.server_name, &state.signing_key).await?;
    Ok(RumaResponse(server_api::Response::new(keys)))
}

/// `GET /_matrix/key/v2/query/{serverName}`.
pub async fn query_one(
    State(state): State<AppState>,
    Ruma(request): Ruma<query_one_api::Request>,
) -> Result<RumaResponse<query_one_api::Response>> {
    let min = i64::from(request.minimum_valid_until_ts.get());
    let keys = answer_for(&state, &request.server_name, min).await?;
    Ok(RumaResponse(query_one_api::Response::new(keys)))
}

/// `POST /_matrix/key/v2/query`.
pub async fn query(
    State(state): State<AppState>,
    Ruma(request): Ruma<query_api::Request>,
) -> Result<RumaResponse<query_api::Response>> {
    // The servers are asked at once: one that cannot be reached delays only its own answer.
    let answers =
        request
            .server_keys
            .iter()
            .take(MAX_SERVERS_PER_QUERY)
            .map(|(server, criteria)| {
                // The strictest criterion of the keys asked for; none: valid now.
                let min = criteria
                    .values()
                    .filter_map(|c| c.minimum_valid_until_ts)
                    .map(|t| i64::from(t.get()))
                    .max()
                    .unwrap_or_else(store::now_ms);
                answer_for(&state, server, min)
            });
    let mut all = vec![];
    for answer in futures_util::future::join_all(answers).await {
        all.extend(answer?);
    }
    Ok(RumaResponse(query_api::Response::new(all)))
}

async fn answer_for(
    state: &AppState,
    server: &ruma::ServerName,
    minimum_valid_until_ts: i64,
) -> Result<Vec<ruma::serde::Raw<ruma::api::federation::discovery::ServerSigningKeys>>> {
    if server == state.server_name {
        let own =
            service::keys::server_keys(&state.db, &state.server_name, &state.signing_key).await?;
        return Ok(vec![own]);
    }
    state
        .keyring
        .notary_answer(server, minimum_valid_until_ts, &state.signing_key)
        .await
}

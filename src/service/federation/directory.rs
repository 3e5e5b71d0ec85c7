//! The published room directory across servers: this server's list served to others
//! (`/_matrix/federation/v1/publicRooms`), and another server's asked for a client
//! (`/publicRooms?server=`). Every room here is on the default (Matrix) network; a third-party
//! network's list is empty, as in Synapse without application services.

use ruma::api::federation::directory::{
    get_public_rooms::v1 as get_list, get_public_rooms_filtered::v1 as filtered,
};
use ruma::directory::{Filter, PublicRoomsChunk, RoomNetwork};
use ruma::{OwnedServerName, UInt};
use serde_json::{Value, json};

use crate::service::directory;
use crate::{AppState, Error, Result};

/// Which networks a `/publicRooms` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Networks {
    /// The default (Matrix) network.
    Matrix,
    /// Every network the server knows (`include_all_networks`).
    All,
    /// One third-party network (`third_party_instance_id`).
    ThirdParty(String),
}

impl Networks {
    /// From a client's `include_all_networks` and `third_party_instance_id`, which exclude each
    /// other.
    pub fn of(all: bool, instance: Option<String>) -> Result<Self> {
        match (all, instance) {
            (true, Some(_)) => Err(Error::invalid_param(
                "include_all_networks cannot be used with third_party_instance_id",
            )),
            (true, None) => Ok(Self::All),
            (false, Some(id)) => Ok(Self::ThirdParty(id)),
            (false, None) => Ok(Self::Matrix),
        }
    }

    fn of_ruma(network: &RoomNetwork) -> Self {
        match network {
            RoomNetwork::All => Self::All,
            RoomNetwork::ThirdParty(id) => Self::ThirdParty(id.clone()),
            _ => Self::Matrix,
        }
    }

    fn to_ruma(&self) -> RoomNetwork {
        match self {
            Self::Matrix => RoomNetwork::Matrix,
            Self::All => RoomNetwork::All,
            Self::ThirdParty(id) => RoomNetwork::ThirdParty(id.clone()),
        }
    }
}

/// One page of a published room directory.
pub struct Page {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total_room_count_estimate: Option<UInt>,
}

/// This server's directory as another server asks for it.
pub async fn local_page(
    state: &AppState,
    limit: Option<UInt>,
    since: Option<&str>,
    search: Option<&str>,
    network: &RoomNetwork,
) -> Result<Page> {
    if let Networks::ThirdParty(_) = Networks::of_ruma(network) {
        return Ok(Page {
            chunk: Vec::new(),
            next_batch: None,
            prev_batch: None,
            total_room_count_estimate: Some(UInt::MIN),
        });
    }
    let limit = limit.map(|l| i64::try_from(u64::from(l)).unwrap_or(i64::MAX));
    let list = directory::public_rooms(state, limit, since, search).await?;
    let text = |key: &str| list[key].as_str().map(str::to_owned);
    Ok(Page {
        chunk: serde_json::from_value(list["chunk"].clone()).map_err(Error::internal)?,
        next_batch: text("next_batch"),
        prev_batch: text("prev_batch"),
        total_room_count_estimate: list["total_room_count_estimate"]
            .as_u64()
            .and_then(|n| UInt::try_from(n).ok()),
    })
}

/// The directory of `server` for a client (or this server's own when `server` is this one):
/// `/publicRooms` as the client API shapes it.
pub async fn for_client(
    state: &AppState,
    server: Option<&str>,
    limit: Option<i64>,
    since: Option<&str>,
    search: Option<&str>,
    networks: Networks,
) -> Result<Value> {
    let remote = server.filter(|s| *s != state.server_name.as_str());
    let Some(server) = remote else {
        if let Networks::ThirdParty(_) = networks {
            return Ok(json!({"chunk": [], "total_room_count_estimate": 0}));
        }
        return directory::public_rooms(state, limit, since, search).await;
    };
    if !state.config.federation_enabled() {
        return Err(Error::forbidden(
            "Federation is disabled: only this server's directory is available",
        ));
    }
    let server = OwnedServerName::try_from(server)
        .map_err(|_| Error::invalid_param(format!("Invalid server name: {server}")))?;
    // A limit of 0 or less asks for no limit (Synapse's reading).
    let limit = limit
        .filter(|l| *l > 0)
        .map(|l| UInt::try_from(l.min(i64::from(u32::MAX))).unwrap_or(UInt::MAX));
    let since = since.filter(|s| !s.is_empty()).map(str::to_owned);
    let page = if search.is_some() || networks != Networks::Matrix {
        let mut request = filtered::Request::new();
        request.limit = limit;
        request.since = since;
        let mut filter = Filter::new();
        filter.generic_search_term = search.map(str::to_owned);
        request.filter = filter;
        request.room_network = networks.to_ruma();
        let answer = state.federation.send(&server, request).await?;
        Page {
            chunk: answer.chunk,
            next_batch: answer.next_batch,
            prev_batch: answer.prev_batch,
            total_room_count_estimate: answer.total_room_count_estimate,
        }
    } else {
        let mut request = get_list::Request::new();
        request.limit = limit;
        request.since = since;
        let answer = state.federation.send(&server, request).await?;
        Page {
            chunk: answer.chunk,
            next_batch: answer.next_batch,
            prev_batch: answer.prev_batch,
            total_room_count_estimate: answer.total_room_count_estimate,
        }
    };
    let mut out = json!({ "chunk": page.chunk });
    if let Some(total) = page.total_room_count_estimate {
        out["total_room_count_estimate"] = json!(total);
    }
    for (key, value) in [
        ("next_batch", page.next_batch),
        ("prev_batch", page.prev_batch),
    ] {
        if let Some(value) = value {
            out[key] = json!(value);
        }
    }
    Ok(out)
}

//! Discovery: versions, well-known, capabilities, health.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::auth::GuestAllowed;
use crate::service::room_versions;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/versions", get(versions))
        .route("/.well-known/matrix/client", get(well_known))
        .route("/.well-known/matrix/server", get(well_known_server))
        .route("/_matrix/client/v3/capabilities", get(capabilities))
        .route("/_matrix/client/r0/capabilities", get(capabilities))
        .route("/health", get(health))
}

/// `GET /.well-known/matrix/server`: the delegation of `federation.well_known_server`; 404 when
/// none is configured (as Synapse, which serves it only when `serve_server_wellknown` is set).
pub async fn well_known_server(
    State(state): State<AppState>,
) -> crate::Result<
    crate::api::federation::RumaResponse<
        ruma::api::federation::discovery::discover_homeserver::Response,
    >,
> {
    let delegated = state
        .config
        .federation
        .well_known_server
        .as_deref()
        .and_then(|name| ruma::OwnedServerName::try_from(name).ok())
        .ok_or_else(|| crate::Error::not_found("No server delegation is configured"))?;
    Ok(crate::api::federation::RumaResponse(
        ruma::api::federation::discovery::discover_homeserver::Response::new(delegated),
    ))
}

/// The spec versions whose required endpoints Axon serves. v1.13 and v1.14 add only endpoints of the
/// optional Reporting Content module (served); v1.15 adds `GET /v1/room_summary/{roomIdOrAlias}` (served) and
/// `GET /v1/auth_metadata`, which a server without the OAuth 2.0 API answers 404 `M_UNRECOGNIZED`,
/// as Axon does. v1.16 adds custom profile fields and `use_state_after`, which Axon lacks (README,
/// "Spec versions").
const VERSIONS: [&str; 16] = [
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12", "v1.13", "v1.14", "v1.15",
];

/// The unstable feature flags clients check, among those Synapse advertises, for the features
/// Axon implements (Synapse: rust/src/handlers/versions.rs).
const UNSTABLE_FEATURES: [&str; 9] = [
    // Cross-signing (MSC1756): Element Web sets it up only when it sees this.
    "org.matrix.e2e_cross_signing",
    // GET /rooms/{roomId}/aliases (MSC2432).
    "org.matrix.msc2432",
    // m.read.private receipts (MSC2285).
    "org.matrix.msc2285.stable",
    // Threads (MSC3440): /threads, m.thread relations and bundles.
    "org.matrix.msc3440.stable",
    // Threaded read receipts (MSC3771): `thread_id` on receipts.
    "org.matrix.msc3771",
    // Deleting account data under its unstable prefix (MSC3391).
    "org.matrix.msc3391",
    // Mutual rooms (MSC2666) at the unstable path, and (as Synapse) at the spec's /v1 path.
    "uk.half-shot.msc2666.query_mutual_rooms",
    "uk.half-shot.msc2666.query_mutual_rooms.stable",
    // Simplified sliding sync (MSC4186), served natively: matrix-rust-sdk (Element X) looks for it
    // before it lets a user log in.
    "org.matrix.simplified_msc3575",
];

async fn versions(State(state): State<AppState>) -> Json<Value> {
    let mut unstable: serde_json::Map<String, Value> = UNSTABLE_FEATURES
        .iter()
        .map(|flag| (flag.to_string(), Value::Bool(true)))
        .collect();
    // Login tokens from an existing session (MSC3882), when configured (Synapse says `false`
    // otherwise; Axon lists only what it serves).
    if state.config.login_token.enabled {
        unstable.insert("org.matrix.msc3882".into(), Value::Bool(true));
    }
    Json(json!({ "versions": VERSIONS, "unstable_features": unstable }))
}

async fn well_known(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "m.homeserver": { "base_url": state.config.public_baseurl() } }))
}

async fn capabilities(State(state): State<AppState>, _requester: GuestAllowed) -> Json<Value> {
    let available: serde_json::Map<String, Value> = room_versions::SUPPORTED
        .iter()
        .map(|v| (v.to_string(), json!("stable")))
        .collect();
    Json(json!({
        "capabilities": {
            "m.room_versions": { "default": state.config.default_room_version, "available": available },
            "m.change_password": { "enabled": true },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": state.config.email_enabled() },
            "m.get_login_token": { "enabled": state.config.login_token.enabled },
        }
    }))
}

/// For load balancers: answers once the database does.
async fn health(State(state): State<AppState>) -> Result<&'static str, crate::Error> {
    crate::service::maintenance::database_ready(&state).await?;
    Ok("OK")
}

//! TURN credentials for VoIP calls.

use axum::extract::State;
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use crate::api::auth::Requester;
use crate::{AppState, store};

pub fn routes() -> Router<AppState> {
    Router::new().route("/voip/turnServer", get(turn_server))
}

/// As Synapse (`synapse/rest/client/voip.py`): 200 `{}` unless TURN is configured (URIs, and a
/// shared secret or a username and password, none of them empty; `ttl` is never 0); with a shared
/// secret, the TURN REST API's time-limited credentials (username "{expiry}:{user_id}", password
/// base64(HMAC-SHA1(secret, username))).
async fn turn_server(State(state): State<AppState>, requester: Requester) -> JsonResponse<Value> {
    let turn = &state.config.turn;
    if turn.uris.is_empty() {
        return JsonResponse(json!({}));
    }
    let set = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let (secret, username, password) = (
        set(&turn.shared_secret),
        set(&turn.username),
        set(&turn.password),
    );
    let (username, password) = match (&secret, &username, &password) {
        (Some(secret), _, _) => {
            let expiry = store::now_ms() / 1000 + turn.ttl as i64;
            let username = format!("{expiry}:{}", requester.user_id);
            let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
                return JsonResponse(json!({}));
            };
            mac.update(username.as_bytes());
            let password =
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            (username, password)
        }
        (None, Some(username), Some(password)) => (username.clone(), password.clone()),
        _ => return JsonResponse(json!({})),
    };
    JsonResponse(
        json!({ "username": username, "password": password, "uris": turn.uris, "ttl": turn.ttl }),
    )
}

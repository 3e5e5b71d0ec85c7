//! The account: whoami, logout, logout/all, password change (and reset by email), deactivation.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{AccessToken, ClientIp, GuestAllowed, MaybeRequester, Requester, UiaJson};
use crate::service::accounts;
use crate::service::uia::{self, Purpose};
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account/whoami", get(whoami))
        .route("/logout", post(logout))
        .route("/logout/all", post(logout_all))
        .route("/account/password", post(change_password))
        .route("/account/deactivate", post(deactivate))
}

async fn whoami(GuestAllowed(requester): GuestAllowed) -> JsonResponse<Value> {
    let mut body = json!({
        "user_id": requester.user_id,
        "is_guest": requester.is_guest,
    });
    // An admin's "login as" token has no device (as in Synapse): no device_id then.
    if requester.device_id.as_str() != crate::store::tokens::PUPPET_DEVICE {
        body["device_id"] = json!(requester.device_id);
    }
    JsonResponse(body)
}

/// An expired access token may still log out: the client is ending the session anyway.
async fn logout(
    State(state): State<AppState>,
    AccessToken(token): AccessToken,
) -> Result<JsonResponse<Value>> {
    accounts::logout(&state, &token).await?;
    Ok(JsonResponse(json!({})))
}

async fn logout_all(
    State(state): State<AppState>,
    requester: Requester,
) -> Result<JsonResponse<Value>> {
    accounts::remove_other_devices(&state, requester.user_id.as_str(), None).await?;
    Ok(JsonResponse(json!({})))
}

#[derive(Deserialize)]
struct PasswordBody {
    new_password: Option<String>,
    logout_devices: Option<bool>,
    auth: Option<uia::AuthData>,
}

async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MaybeRequester(requester): MaybeRequester,
    request: UiaJson<PasswordBody>,
) -> Result<JsonResponse<Value>> {
    // The new password is not part of what the session is bound to (only a digest is kept, and a
    // password's digest can be guessed).
    let UiaJson { body, operation } = request.without("new_password");
    let new_password = body
        .new_password
        .ok_or_else(|| Error::missing_param("Missing new_password"))?;
    // Without an access token, a validated password-reset email session also names the user.
    let flows: &[uia::Flow] = if requester.is_none() && state.email.is_some() {
        &[&[uia::PASSWORD], &[uia::EMAIL_IDENTITY]]
    } else {
        &[&[uia::PASSWORD]]
    };
    let (passed, user_id) = authenticated(
        &state,
        Purpose::ChangePassword,
        &operation,
        requester.as_ref(),
        ip,
        body.auth.as_ref(),
        flows,
    )
    .await?;
    let keep = requester.as_ref().map(|r| r.device_id.as_str());
    accounts::change_password(
        &state,
        &user_id,
        new_password,
        keep,
        body.logout_devices.unwrap_or(true),
    )
    .await?;
    uia::finish(&state, &passed).await?;
    Ok(JsonResponse(json!({})))
}

/// User-interactive authentication, with or without an access token (the password or the email
/// session names the user then): the passed session and the user it authenticated.
async fn authenticated(
    state: &AppState,
    purpose: Purpose,
    operation: &uia::Operation,
    requester: Option<&Requester>,
    ip: Option<std::net::IpAddr>,
    auth: Option<&uia::AuthData>,
    flows: &[uia::Flow],
) -> Result<(uia::Passed, String)> {
    let request = uia::Request {
        purpose,
        operation,
        user_id: requester.map(|r| r.user_id.as_str()),
        flows,
        ip,
    };
    let passed = uia::check(state, request, auth).await?;
    let user_id = passed
        .user_id
        .clone()
        .ok_or_else(|| Error::internal("UIA passed without a user"))?;
    Ok((passed, user_id))
}

#[derive(Deserialize)]
struct DeactivateBody {
    auth: Option<uia::AuthData>,
    /// Serve the account's events redacted to users who join after (default false).
    #[serde(default)]
    erase: bool,
}

async fn deactivate(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MaybeRequester(requester): MaybeRequester,
    UiaJson { body, operation }: UiaJson<DeactivateBody>,
) -> Result<JsonResponse<Value>> {
    let (passed, user_id) = authenticated(
        &state,
        Purpose::Deactivate,
        &operation,
        requester.as_ref(),
        ip,
        body.auth.as_ref(),
        &[&[uia::PASSWORD]],
    )
    .await?;
    uia::finish(&state, &passed).await?;
    accounts::deactivate(&state, &user_id, body.erase).await?;
    // Axon binds no third-party identifiers, so there is nothing to unbind anywhere.
    Ok(JsonResponse(
        json!({ "id_server_unbind_result": "no-support" }),
    ))
}

//! Third-party identifiers: email addresses on accounts (requestToken, add, list, delete), password
//! reset tokens by email, and clear refusals for what Axon does not do (phone numbers, identity
//! servers, email at registration).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, delete_3pid, request_3pid_management_token_via_email,
    request_password_change_token_via_email, unbind_3pid,
};
use ruma::thirdparty::{Medium, ThirdPartyIdentifier, ThirdPartyIdentifierInit};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedSessionId, UInt};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{ClientIp, Requester, UiaJson};
use crate::api::ruma::{Ruma, RumaResponse};
use crate::service::threepids::{self, Purpose, TokenRequest};
use crate::service::uia;
use crate::{AppState, Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account/3pid", get(list).post(add_deprecated))
        .route("/account/3pid/email/requestToken", post(add_request_token))
        .route("/account/3pid/add", post(add))
        .route("/account/3pid/delete", post(delete))
        .route("/account/3pid/bind", post(bind))
        .route("/account/3pid/unbind", post(unbind))
        .route(
            "/account/password/email/requestToken",
            post(reset_request_token),
        )
        .route("/account/3pid/msisdn/requestToken", post(no_msisdn))
        .route("/account/password/msisdn/requestToken", post(no_msisdn))
        .route("/register/msisdn/requestToken", post(no_msisdn))
        .route("/register/email/requestToken", post(no_email_registration))
}

fn sid_response(sid: String) -> Result<OwnedSessionId> {
    OwnedSessionId::try_from(sid).map_err(Error::internal)
}

async fn add_request_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Ruma(body): Ruma<request_3pid_management_token_via_email::v3::Request>,
) -> Result<RumaResponse<request_3pid_management_token_via_email::v3::Response>> {
    let email = threepids::enabled(state.email.as_ref())?;
    let request = TokenRequest {
        purpose: Purpose::Add,
        client_secret: body.client_secret.as_str(),
        email: &body.email,
        send_attempt: body.send_attempt.into(),
        next_link: body.next_link.as_deref(),
        ip,
    };
    let sid = threepids::request_token(&state.db, email, &state.rate_limiter, request).await?;
    Ok(RumaResponse(
        request_3pid_management_token_via_email::v3::Response::new(sid_response(sid)?),
    ))
}

async fn reset_request_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Ruma(body): Ruma<request_password_change_token_via_email::v3::Request>,
) -> Result<RumaResponse<request_password_change_token_via_email::v3::Response>> {
    let email = threepids::enabled(state.email.as_ref())?;
    let request = TokenRequest {
        purpose: Purpose::Reset,
        client_secret: body.client_secret.as_str(),
        email: &body.email,
        send_attempt: body.send_attempt.into(),
        next_link: body.next_link.as_deref(),
        ip,
    };
    let sid = threepids::request_token(&state.db, email, &state.rate_limiter, request).await?;
    Ok(RumaResponse(
        request_password_change_token_via_email::v3::Response::new(sid_response(sid)?),
    ))
}

#[derive(Deserialize)]
struct AddBody {
    client_secret: String,
    sid: String,
    auth: Option<uia::AuthData>,
}

/// POST /account/3pid/add: the user's password (UIA), then the validated session's address.
async fn add(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    requester: Requester,
    UiaJson { body, operation }: UiaJson<AddBody>,
) -> Result<JsonResponse<Value>> {
    threepids::enabled(state.email.as_ref())?;
    threepids::check_client_secret(&body.client_secret)?;
    let request = uia::Request {
        purpose: uia::Purpose::AddThreepid,
        operation: &operation,
        user_id: Some(requester.user_id.as_str()),
        flows: &[&[uia::PASSWORD]],
        ip,
    };
    let passed = uia::check(&state, request, body.auth.as_ref()).await?;
    threepids::add(
        &state.db,
        requester.user_id.as_str(),
        &body.sid,
        &body.client_secret,
    )
    .await?;
    uia::finish(&state, &passed).await?;
    Ok(JsonResponse(json!({})))
}

/// ruma's identifiers, but the list always present (ruma's response leaves an empty one out; Synapse
/// and the clients that read it expect `[]`).
async fn list(State(state): State<AppState>, requester: Requester) -> Result<JsonResponse<Value>> {
    let rows = threepids::list(&state.db, requester.user_id.as_str()).await?;
    let time = |ms: i64| MilliSecondsSinceUnixEpoch(UInt::new_saturating(ms.max(0) as u64));
    let threepids: Vec<ThirdPartyIdentifier> = rows
        .into_iter()
        .map(|row| {
            ThirdPartyIdentifierInit {
                address: row.address,
                medium: Medium::from(row.medium.as_str()),
                validated_at: time(row.validated_at),
                added_at: time(row.added_at),
            }
            .into()
        })
        .collect();
    Ok(JsonResponse(json!({ "threepids": threepids })))
}

/// The deprecated POST /account/3pid added identifiers validated by an identity server, without
/// user-interactive authentication: refused with a pointer to its replacement.
async fn add_deprecated(_requester: Requester) -> Error {
    Error::unrecognized_request(
        "This server does not use identity servers; add email addresses with /account/3pid/add",
    )
}

/// Identity servers are not used: nothing was bound there, so nothing is unbound (the spec's
/// `no-support`).
async fn delete(
    State(state): State<AppState>,
    requester: Requester,
    Ruma(body): Ruma<delete_3pid::v3::Request>,
) -> Result<RumaResponse<delete_3pid::v3::Response>> {
    threepids::delete(
        &state.db,
        requester.user_id.as_str(),
        body.medium.as_str(),
        &body.address,
    )
    .await?;
    Ok(RumaResponse(delete_3pid::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    )))
}

async fn bind(_requester: Requester) -> Error {
    Error::unrecognized_request(
        "This server does not bind third-party identifiers on identity servers",
    )
}

/// Axon never binds on an identity server, so it cannot unbind: `no-support`, as the spec says
/// when the homeserver does not know the identity server.
async fn unbind(
    _requester: Requester,
    Ruma(_body): Ruma<unbind_3pid::v3::Request>,
) -> RumaResponse<unbind_3pid::v3::Response> {
    RumaResponse(unbind_3pid::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}

async fn no_msisdn() -> Error {
    Error::threepid_medium_not_supported("Phone numbers are not supported by this server")
}

/// Accounts are registered without an email address (registration flows never offer
/// `m.login.email.identity`); addresses are added afterwards with /account/3pid/add.
async fn no_email_registration(State(state): State<AppState>) -> Error {
    if state.config.email_enabled() {
        Error::threepid_medium_not_supported(
            "Registering with an email address is not supported by this server; add one after registering",
        )
    } else {
        threepids::email_not_supported()
    }
}

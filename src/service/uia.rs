//! User-Interactive Authentication: sessions, flows, and the stages Axon offers (`m.login.dummy`,
//! `m.login.registration_token`, `m.login.password`, and `m.login.email.identity` for password
//! resets when email is configured).
//!
//! A session is bound to one request and, once known, to one user: the request that started it
//! (method, path — which names the target, such as the device to delete — and the body minus
//! `auth`) is the only one it can complete, and Alice's session cannot authorise Bob. As in
//! Synapse's `AuthHandler.check_ui_auth` (synapse/handlers/auth.py), a request that differs gets
//! 403 "Requested operation has changed during the UI authentication session"; unlike Synapse,
//! which only logs a warning when the body changes, a changed body is refused too.
//! A request may also complete a flow in one go without a session (clients such as matrix-nio send
//! `auth: {type: "m.login.dummy"}` on their first request).

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::service::{accounts, auth::random_string, registration};
use crate::{AppState, Error, Result, store};

/// The UIA service has no state of its own: sessions live in the database so every process sees them.
pub struct Uia;

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";
/// A validated email session (`threepid_creds`); offered only for password resets.
pub const EMAIL_IDENTITY: &str = "m.login.email.identity";

/// Abandoned sessions are forgotten after a day.
const SESSION_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;

/// The `auth` object of a request body.
#[derive(Debug, Default, Deserialize)]
pub struct AuthData {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub session: Option<String>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// One acceptable sequence of stages.
pub type Flow = &'static [&'static str];

/// The operation a session authorises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Register,
    ChangePassword,
    DeleteDevices,
    Deactivate,
    CrossSigning,
    /// `POST /v1/login/get_token`: a token that logs in another device.
    LoginToken,
    AddThreepid,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::ChangePassword => "change_password",
            Purpose::DeleteDevices => "delete_devices",
            Purpose::Deactivate => "deactivate",
            Purpose::CrossSigning => "cross_signing",
            Purpose::LoginToken => "login_token",
            Purpose::AddThreepid => "add_threepid",
        }
    }
}

/// The request a session is bound to.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The HTTP method.
    pub method: String,
    /// The path below the API version prefix (`/devices/ABC`): it names the target.
    pub path: String,
    /// The request body without `auth`. Secrets the caller leaves out (a new password) are not
    /// part of it: only a digest is stored, but a digest of a password is guessable.
    pub params: Value,
}

impl Operation {
    /// A digest of the operation: what the session stores and later requests are compared with.
    /// JSON objects serialise with sorted keys, so key order does not matter.
    fn fingerprint(&self) -> String {
        let text = json!([self.method, self.path, self.params]).to_string();
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// What an operation asks of UIA.
pub struct Request<'a> {
    pub purpose: Purpose,
    /// The request being authorised.
    pub operation: &'a Operation,
    /// The user the request's access token belongs to, if it has one.
    pub user_id: Option<&'a str>,
    pub flows: &'a [Flow],
    /// For rate limiting password attempts.
    pub ip: Option<IpAddr>,
}

/// A completed flow.
#[derive(Debug)]
pub struct Passed {
    /// The stored session, to delete with `finish` once the operation has succeeded.
    session: Option<String>,
    /// The user the password stage authenticated (or the requester).
    pub user_id: Option<String>,
    /// The registration token a registration presented.
    pub registration_token: Option<String>,
}

struct Progress {
    user_id: Option<String>,
    completed: Vec<String>,
    registration_token: Option<String>,
}

/// Completes the stage `auth` attempts, if valid; succeeds when one of the flows is complete.
/// Otherwise answers 401 with the flows, params, session, what is completed and, after a failed
/// attempt, the errcode of the failure, as the spec describes.
pub async fn check(
    state: &AppState,
    request: Request<'_>,
    auth: Option<&AuthData>,
) -> Result<Passed> {
    let now = store::now_ms();
    let fingerprint = request.operation.fingerprint();
    let (session_id, mut progress, stored) = match auth.and_then(|a| a.session.as_deref()) {
        Some(id) => {
            let row = store::uia::get(&state.db, id)
                .await?
                .filter(|row| row.created_ts > now - SESSION_LIFETIME_MS)
                .ok_or_else(|| Error::unknown("Unknown session ID"))?;
            if row.purpose != request.purpose.as_str() {
                return Err(Error::forbidden(
                    "This authentication session was started for another operation",
                ));
            }
            if row.operation.as_deref() != Some(fingerprint.as_str()) {
                return Err(Error::forbidden(
                    "Requested operation has changed during the UI authentication session",
                ));
            }
            if let (Some(owner), Some(requester)) = (&row.user_id, request.user_id)
                && owner != requester
            {
                return Err(Error::forbidden(
                    "This authentication session belongs to another user",
                ));
            }
            let user_id = row.user_id.or_else(|| request.user_id.map(str::to_owned));
            (
                id.to_owned(),
                Progress {
                    user_id,
                    completed: row.completed,
                    registration_token: row.registration_token,
                },
                true,
            )
        }
        None => {
            let progress = Progress {
                user_id: request.user_id.map(str::to_owned),
                completed: vec![],
                registration_token: None,
            };
            (random_string(24), progress, false)
        }
    };

    let mut failure: Option<Error> = None;
    if let (Some(auth), Some(kind)) = (auth, auth.and_then(|a| a.kind.as_deref())) {
        refuse_other_user(state, kind, auth, &progress)?;
        let offered = request.flows.iter().any(|flow| flow.contains(&kind));
        let attempt = if offered {
            verify_stage(state, &request, kind, auth, &mut progress).await
        } else {
            Err(Error::unknown(format!(
                "Authentication type {kind} is not offered here"
            )))
        };
        match attempt {
            Ok(()) => {
                if !progress.completed.iter().any(|c| c == kind) {
                    progress.completed.push(kind.to_owned());
                }
            }
            // Shown inside the 401 so the client can retry the stage; other failures end the request.
            Err(e @ Error::Matrix { status, .. })
                if status.is_client_error() && status.as_u16() != 429 =>
            {
                failure = Some(e)
            }
            Err(e) => return Err(e),
        }
    }

    let done = request.flows.iter().any(|flow| {
        flow.iter()
            .all(|stage| progress.completed.iter().any(|c| c == stage))
    });
    if done {
        return Ok(Passed {
            session: stored.then_some(session_id),
            user_id: progress.user_id,
            registration_token: progress.registration_token,
        });
    }

    if !stored {
        store::uia::prune(&state.db, now - SESSION_LIFETIME_MS).await?;
    }
    store::uia::save(
        &state.db,
        &session_id,
        request.purpose.as_str(),
        &fingerprint,
        progress.user_id.as_deref(),
        &progress.completed,
        progress.registration_token.as_deref(),
    )
    .await?;
    let mut body = json!({
        "flows": request.flows.iter().map(|flow| json!({"stages": flow})).collect::<Vec<_>>(),
        "params": {},
        "session": session_id,
    });
    if !progress.completed.is_empty() {
        body["completed"] = json!(progress.completed);
    }
    if let Some(Error::Matrix {
        errcode, message, ..
    }) = failure
    {
        body["errcode"] = json!(errcode);
        body["error"] = json!(message);
    }
    Err(Error::Uia(body))
}

impl Passed {
    /// The stored session the flow was completed in (none when one request completed it), where an
    /// operation may keep data of its own (`store::uia::merge_data`).
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }
}

/// Forgets the session once the operation it authorised has succeeded.
pub async fn finish(state: &AppState, passed: &Passed) -> Result<()> {
    if let Some(session) = &passed.session {
        store::uia::delete(&state.db, session).await?;
    }
    Ok(())
}

/// The user a password stage names, if it names one.
fn named_user(auth: &AuthData) -> Result<Option<&str>> {
    match auth.rest.get("identifier") {
        Some(identifier) => {
            if identifier.get("type").and_then(Value::as_str) != Some("m.id.user") {
                return Err(Error::unknown("Only m.id.user identifiers are supported"));
            }
            Ok(identifier.get("user").and_then(Value::as_str))
        }
        None => Ok(auth.rest.get("user").and_then(Value::as_str)),
    }
}

/// A session that knows its user (the access token's owner) authenticates only that user: a
/// password stage naming anyone else ends the request with 403, as Synapse's
/// `validate_user_via_ui_auth` does ("Invalid auth"), rather than inviting another attempt.
fn refuse_other_user(
    state: &AppState,
    kind: &str,
    auth: &AuthData,
    progress: &Progress,
) -> Result<()> {
    if kind != PASSWORD {
        return Ok(());
    }
    if let (Ok(Some(named)), Some(known)) = (named_user(auth), &progress.user_id)
        && &accounts::user_id_from_login(state, named) != known
    {
        return Err(Error::forbidden("You can only authenticate as yourself"));
    }
    Ok(())
}

async fn verify_stage(
    state: &AppState,
    request: &Request<'_>,
    kind: &str,
    auth: &AuthData,
    progress: &mut Progress,
) -> Result<()> {
    match kind {
        DUMMY => Ok(()),
        REGISTRATION_TOKEN => {
            let token = auth
                .rest
                .get("token")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::missing_param("The registration_token stage needs a token")
                })?;
            if !registration::token_is_valid(state, token).await? {
                return Err(Error::unauthorized("Invalid registration token"));
            }
            progress.registration_token = Some(token.to_owned());
            Ok(())
        }
        PASSWORD => {
            state.rate_limiter.check("login", request.ip)?;
            let named = named_user(auth)?;
            let user_id = match (named, &progress.user_id) {
                (Some(named), Some(known)) => {
                    let named = accounts::user_id_from_login(state, named);
                    if &named != known {
                        return Err(Error::forbidden("You can only authenticate as yourself"));
                    }
                    named
                }
                (Some(named), None) => accounts::user_id_from_login(state, named),
                (None, Some(known)) => known.clone(),
                (None, None) => return Err(Error::missing_param("Missing identifier")),
            };
            let password = auth
                .rest
                .get("password")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::missing_param("Missing password"))?;
            if !accounts::check_password(state, &user_id, password).await? {
                return Err(Error::forbidden("Invalid username or password"));
            }
            progress.user_id = Some(user_id);
            Ok(())
        }
        EMAIL_IDENTITY => email_stage(state, auth, progress).await,
        _ => Err(Error::unknown(format!(
            "Unsupported authentication type {kind}"
        ))),
    }
}

/// `m.login.email.identity`: a validated password-reset session names the user (it is used up).
async fn email_stage(state: &AppState, auth: &AuthData, progress: &mut Progress) -> Result<()> {
    let creds = auth.rest.get("threepid_creds").ok_or_else(|| {
        Error::missing_param("The m.login.email.identity stage needs threepid_creds")
    })?;
    let field = |name: &str| {
        creds
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::missing_param(format!("threepid_creds needs {name}")))
    };
    let user_id =
        crate::service::threepids::reset_user(&state.db, field("sid")?, field("client_secret")?)
            .await?;
    if let Some(known) = &progress.user_id
        && known != &user_id
    {
        return Err(Error::forbidden("You can only authenticate as yourself"));
    }
    progress.user_id = Some(user_id);
    Ok(())
}

/// Deletes UIA sessions past their lifetime (the maintenance task; new sessions prune too).
pub async fn prune(state: &AppState) -> Result<()> {
    store::uia::prune(&state.db, store::now_ms() - SESSION_LIFETIME_MS).await?;
    Ok(())
}

//! User-Interactive Authentication: sessions, flows, and the stages Axon offers.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::service::auth::random_string;
use crate::{AppState, Error, Result, store};

pub struct Uia;

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

/// Completes a stage of `auth` if it is valid, then succeeds when one of `flows` is complete.
/// Otherwise answers 401 with the flows, the session and what is completed, as the spec describes.
pub async fn check(
    state: &AppState,
    auth: Option<&AuthData>,
    flows: &[Flow],
    params: Value,
    verify: impl AsyncFnOnce(&str, &AuthData) -> Result<bool>,
) -> Result<()> {
    let session = match auth.and_then(|a| a.session.clone()) {
        Some(s) => s,
        None => random_string(24),
    };
    let mut completed = store::uia::completed(&state.db, &session)
        .await?
        .unwrap_or_default();
    let mut failure: Option<Error> = None;
    if let Some(auth) = auth
        && let Some(kind) = auth.kind.as_deref()
    {
        if flows.iter().any(|f| f.contains(&kind)) {
            match verify(kind, auth).await {
                Ok(true) => {
                    if !completed.iter().any(|c| c == kind) {
                        completed.push(kind.to_owned());
                    }
                }
                Ok(false) => {}
                Err(e) => failure = Some(e),
            }
        } else {
            failure = Some(Error::unknown(format!(
                "Unsupported authentication type {kind}"
            )));
        }
    }
    if flows.iter().any(|flow| {
        flow.iter()
            .all(|stage| completed.iter().any(|c| c == stage))
    }) {
        store::uia::delete(&state.db, &session).await?;
        return Ok(());
    }
    store::uia::save(&state.db, &session, &completed).await?;
    let mut body = json!({
        "flows": flows.iter().map(|f| json!({"stages": f})).collect::<Vec<_>>(),
        "params": params,
        "session": session,
    });
    if !completed.is_empty() {
        body["completed"] = json!(completed);
    }
    if let Some(Error::Matrix {
        errcode, message, ..
    }) = failure
    {
        body["errcode"] = json!(errcode);
        body["error"] = json!(message);
    } else if let Some(e) = failure {
        return Err(e);
    }
    Err(Error::Uia(body))
}

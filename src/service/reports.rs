//! Content reports (the spec's Reporting Content module): users report events, rooms and users to
//! the server's admins, who list them with `axon report list`. Each report counts against the
//! reporter's `rate_limits.report` bucket (Synapse's `rc_reports`).

use serde_json::{Map, Value};

use crate::service::auth::Requester;
use crate::service::messages;
use crate::service::rate_limit::UserAction;
use crate::store::reports::NewReport;
use crate::{AppState, Error, Result, store};

/// Longest reason of a user report (as Synapse's `ReportsHandler.report_user`).
const MAX_USER_REPORT_REASON: usize = 1000;

/// POST /rooms/{roomId}/report/{eventId}: only for a member of the room who can see the event,
/// which must not be redacted (404 otherwise, as Synapse: `show_redacted=False`). The body is kept
/// whole; `reason` must be a string and `score`, if given, an integer (Synapse's checks).
pub async fn report_event(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    event_id: &str,
    body: Map<String, Value>,
) -> Result<()> {
    state.rate_limiter.user(UserAction::Report, requester)?;
    let reason = match body.get("reason") {
        None => None,
        Some(Value::String(reason)) => Some(reason.as_str()),
        Some(_) => return Err(Error::bad_json("reason must be a string")),
    };
    if body.get("score").is_some_and(|s| !s.is_i64()) {
        return Err(Error::bad_json("score must be an integer"));
    }
    let me = requester.user_id.as_str();
    let unseen = || Error::not_found("The event was not found or you are not joined to the room");
    if store::rooms::membership(&state.db, room_id, me)
        .await?
        .as_deref()
        != Some("join")
    {
        return Err(unseen());
    }
    let event = messages::visible_event(state, requester, room_id, event_id)
        .await
        .map_err(|_| unseen())?;
    if event.redacted_because.is_some() {
        return Err(unseen());
    }
    let content = Value::Object(body.clone()).to_string();
    store::reports::insert(
        &state.db,
        &NewReport {
            kind: "event",
            reporter: me,
            room_id: Some(room_id),
            event_id: Some(event_id),
            target_user_id: None,
            reason,
            content: Some(&content),
            received_ts: store::now_ms(),
        },
    )
    .await?;
    Ok(())
}

/// POST /rooms/{roomId}/report: any user may report a room this server knows (404 otherwise).
pub async fn report_room(
    state: &AppState,
    requester: &Requester,
    room_id: &str,
    body: Map<String, Value>,
) -> Result<()> {
    state.rate_limiter.user(UserAction::Report, requester)?;
    let reason = required_reason(&body)?;
    if store::rooms::room_version(&state.db, room_id)
        .await?
        .is_none()
    {
        return Err(Error::not_found("The room was not found"));
    }
    store::reports::insert(
        &state.db,
        &NewReport {
            kind: "room",
            reporter: requester.user_id.as_str(),
            room_id: Some(room_id),
            event_id: None,
            target_user_id: None,
            reason: Some(reason),
            content: None,
            received_ts: store::now_ms(),
        },
    )
    .await?;
    Ok(())
}

/// POST /users/{userId}/report. As Synapse, a report of a remote or unknown user is answered 200
/// and not kept: the answer does not tell whether the user exists.
pub async fn report_user(
    state: &AppState,
    requester: &Requester,
    user_id: &str,
    body: Map<String, Value>,
) -> Result<()> {
    state.rate_limiter.user(UserAction::Report, requester)?;
    let reason = required_reason(&body)?;
    if reason.chars().count() > MAX_USER_REPORT_REASON {
        return Err(Error::bad_json(format!(
            "reason must be at most {MAX_USER_REPORT_REASON} characters"
        )));
    }
    let target = ruma::UserId::parse(user_id)
        .map_err(|_| Error::invalid_param(format!("{user_id} is not a user ID")))?;
    if target.server_name() != state.server_name
        || store::users::get_user(&state.db, user_id).await?.is_none()
    {
        return Ok(());
    }
    store::reports::insert(
        &state.db,
        &NewReport {
            kind: "user",
            reporter: requester.user_id.as_str(),
            room_id: None,
            event_id: None,
            target_user_id: Some(user_id),
            reason: Some(reason),
            content: None,
            received_ts: store::now_ms(),
        },
    )
    .await?;
    Ok(())
}

/// `reason`, required and a string (may be empty) for room and user reports.
fn required_reason(body: &Map<String, Value>) -> Result<&str> {
    match body.get("reason") {
        Some(Value::String(reason)) => Ok(reason),
        Some(_) => Err(Error::bad_json("reason must be a string")),
        None => Err(Error::bad_json("reason is required")),
    }
}

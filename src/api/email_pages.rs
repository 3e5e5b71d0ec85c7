//! The pages the links in validation mails open, served by Axon itself (escaped HTML):
//! `GET /_axon/client/email/submit_token?sid=…&client_secret=…&token=…`.
//!
//! For an address being added, opening the link validates the session. For a password reset, as
//! Synapse's password_reset.py does, the link first shows a page with a button (a POST to the same
//! URL) so that a mail scanner fetching links cannot validate a reset on its own. Validating again
//! answers the same page (idempotent). After validation the browser goes on to the client's
//! `next_link`, if it gave one.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::api::extract::Query;
use crate::service::threepids::{self, Purpose, SUBMIT_TOKEN_PATH};
use crate::{AppState, Error};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        &format!("/{SUBMIT_TOKEN_PATH}"),
        get(open_link).post(confirm),
    )
}

#[derive(Deserialize)]
struct LinkQuery {
    sid: Option<String>,
    client_secret: Option<String>,
    token: Option<String>,
}

/// The link's three parameters, if it has them all.
fn params(query: &LinkQuery) -> Option<(&str, &str, &str)> {
    Some((
        query.sid.as_deref()?,
        query.client_secret.as_deref()?,
        query.token.as_deref()?,
    ))
}

fn incomplete() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Invalid link",
        "This link is incomplete: it needs sid, client_secret and token.",
    )
}

async fn open_link(State(state): State<AppState>, Query(query): Query<LinkQuery>) -> Response {
    let Some((sid, secret, token)) = params(&query) else {
        return incomplete();
    };
    match threepids::session_purpose(&state.db, sid).await {
        Ok(Some((Purpose::Reset, false))) => confirmation_page(sid, secret, token),
        Ok(_) => validate(&state, sid, secret, token).await,
        Err(e) => failure(e),
    }
}

async fn confirm(State(state): State<AppState>, Query(query): Query<LinkQuery>) -> Response {
    match params(&query) {
        Some((sid, secret, token)) => validate(&state, sid, secret, token).await,
        None => incomplete(),
    }
}

async fn validate(state: &AppState, sid: &str, secret: &str, token: &str) -> Response {
    if state.email.is_none() {
        return failure(threepids::email_not_supported());
    }
    match threepids::submit_token(&state.db, sid, secret, token).await {
        Ok(Some(next_link)) => (StatusCode::FOUND, [(LOCATION, next_link)]).into_response(),
        Ok(None) => page(
            StatusCode::OK,
            "Email address validated",
            "Your email address has been validated. You can go back to your Matrix client now.",
        ),
        Err(e) => failure(e),
    }
}

/// A refusal as a page; errors that are ours stay the usual JSON 500/503.
fn failure(error: Error) -> Response {
    match error {
        Error::Matrix {
            status, message, ..
        } => page(status, "Validation failed", &message),
        other => other.into_response(),
    }
}

/// The password-reset confirmation: a button that POSTs the same parameters back.
fn confirmation_page(sid: &str, secret: &str, token: &str) -> Response {
    let action = format!(
        "submit_token?sid={}&client_secret={}&token={}",
        form_encode(sid),
        form_encode(secret),
        form_encode(token)
    );
    let body = format!(
        "<p>You asked to reset the password of your Matrix account. Press the button to confirm; \
         then go back to your Matrix client to choose the new password.</p>\n\
         <form method=\"post\" action=\"{}\"><button type=\"submit\">Confirm the password reset</button></form>",
        escape(&action)
    );
    html(StatusCode::OK, "Reset your password", &body)
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    html(status, title, &format!("<p>{}</p>", escape(message)))
}

/// The whole document; `body` must already be escaped HTML.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let title = escape(title);
    let document = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head>\n<body><h1>{title}</h1>\n{body}\n</body></html>\n"
    );
    (status, [(CACHE_CONTROL, "no-store")], Html(document)).into_response()
}

/// Text for HTML (element content and quoted attributes alike).
fn escape(text: &str) -> String {
    ammonia::clean_text(text)
}

/// A query value, percent-encoded (everything but unreserved characters).
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        let out = escape("<script>\"x\" & 'y'</script>");
        assert!(
            !out.contains('<') && !out.contains('"') && !out.contains('\''),
            "{out}"
        );
        assert_eq!(form_encode("a b<\"&"), "a%20b%3C%22%26");
    }
}

//! The one error type. Every failure a client sees becomes `{"errcode", "error"}` with the spec's
//! status here, and nowhere else.

use std::borrow::Cow;

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::{HeaderValue, RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub enum Error {
    /// A refusal the client caused: status, Matrix errcode, a readable reason, extra fields.
    Matrix {
        status: StatusCode,
        errcode: &'static str,
        message: Cow<'static, str>,
        extra: Map<String, Value>,
    },
    /// A User-Interactive Authentication challenge: 401 with the body as built by the UIA helper.
    Uia(Value),
    /// Our fault. The cause is logged; the client sees only M_UNKNOWN.
    Internal(String),
    /// The database is unreachable or saturated (a restart, every connection busy): 503 with
    /// `retry_after_ms`. `lost` says a connection failed, so the request may be tried again on a
    /// fresh one (see `api::retry`).
    Unavailable { retry_after_ms: u64, lost: bool },
}

/// Marks a response whose request failed because a database connection was lost.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLost;

macro_rules! constructors {
    ($($name:ident => $status:ident, $code:literal;)*) => {
        impl Error {
            $(pub fn $name(message: impl Into<Cow<'static, str>>) -> Self {
                Self::matrix(StatusCode::$status, $code, message)
            })*
        }
    };
}

constructors! {
    forbidden => FORBIDDEN, "M_FORBIDDEN";
    not_found => NOT_FOUND, "M_NOT_FOUND";
    bad_json => BAD_REQUEST, "M_BAD_JSON";
    not_json => BAD_REQUEST, "M_NOT_JSON";
    invalid_param => BAD_REQUEST, "M_INVALID_PARAM";
    missing_param => BAD_REQUEST, "M_MISSING_PARAM";
    too_large => PAYLOAD_TOO_LARGE, "M_TOO_LARGE";
    unrecognized => NOT_FOUND, "M_UNRECOGNIZED";
    unrecognized_request => BAD_REQUEST, "M_UNRECOGNIZED";
    missing_token => UNAUTHORIZED, "M_MISSING_TOKEN";
    user_in_use => BAD_REQUEST, "M_USER_IN_USE";
    invalid_username => BAD_REQUEST, "M_INVALID_USERNAME";
    room_in_use => BAD_REQUEST, "M_ROOM_IN_USE";
    invalid_room_state => BAD_REQUEST, "M_INVALID_ROOM_STATE";
    unsupported_room_version => BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION";
    guest_access_forbidden => FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN";
    unauthorized => UNAUTHORIZED, "M_UNAUTHORIZED";
    unknown => BAD_REQUEST, "M_UNKNOWN";
    threepid_denied => FORBIDDEN, "M_THREEPID_DENIED";
    threepid_not_found => BAD_REQUEST, "M_THREEPID_NOT_FOUND";
    threepid_in_use => BAD_REQUEST, "M_THREEPID_IN_USE";
    threepid_auth_failed => BAD_REQUEST, "M_THREEPID_AUTH_FAILED";
    threepid_medium_not_supported => BAD_REQUEST, "M_THREEPID_MEDIUM_NOT_SUPPORTED";
    email_not_sent => INTERNAL_SERVER_ERROR, "M_UNKNOWN";
    incompatible_room_version => BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION";
    unable_to_grant_join => BAD_REQUEST, "M_UNABLE_TO_GRANT_JOIN";
    // Federation: an outbound request Axon will not send (private address, domain allowlist).
    federation_refused => FORBIDDEN, "M_FORBIDDEN";
    // Federation: another server could not be reached or gave an unusable answer.
    remote => BAD_GATEWAY, "M_UNKNOWN";
    // Sliding sync (MSC4186): a `pos` the server no longer (or never) knew; the client starts over.
    unknown_pos => BAD_REQUEST, "M_UNKNOWN_POS";
}

impl Error {
    pub fn matrix(
        status: StatusCode,
        errcode: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::Matrix {
            status,
            errcode,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        if let Self::Matrix { extra, .. } = &mut self {
            extra.insert(key.to_owned(), value);
        }
        self
    }

    /// An access token we do not know, or no longer honour.
    pub fn unknown_token(message: impl Into<Cow<'static, str>>) -> Self {
        Self::matrix(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", message)
            .with_extra("soft_logout", json!(false))
    }

    /// A locked account (spec: account locking): every authenticated request is refused as a
    /// soft logout until an admin unlocks it.
    pub fn user_locked() -> Self {
        Self::matrix(
            StatusCode::UNAUTHORIZED,
            "M_USER_LOCKED",
            "This account has been locked",
        )
        .with_extra("soft_logout", json!(true))
    }

    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Self::matrix(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too many requests; slow down",
        )
        .with_extra("retry_after_ms", json!(retry_after_ms))
    }

    /// Too busy to serve this now: 503, try again after `retry_after_ms`.
    pub fn unavailable(retry_after_ms: u64) -> Self {
        Self::Unavailable {
            retry_after_ms,
            lost: false,
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    /// Another server's refusal of a request Axon made for a client (`status` and body of the
    /// answer): its errcode, status and reason when a client can act on them (the spec's "the
    /// error should be passed through to clients"), else 502 `M_UNKNOWN` naming the server. A
    /// refusal of Axon's own request (its format, its signature) is not the client's to fix.
    pub fn from_remote(destination: &str, status: u16, body: &[u8]) -> Self {
        const PASSED_ON: [&str; 9] = [
            "M_FORBIDDEN",
            "M_NOT_FOUND",
            "M_INCOMPATIBLE_ROOM_VERSION",
            "M_UNSUPPORTED_ROOM_VERSION",
            "M_LIMIT_EXCEEDED",
            "M_UNABLE_TO_AUTHORISE_JOIN",
            "M_UNABLE_TO_GRANT_JOIN",
            "M_GUEST_ACCESS_FORBIDDEN",
            "M_ROOM_IN_USE",
        ];
        let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let reason = answer["error"].as_str().unwrap_or("no reason given");
        let passed = PASSED_ON
            .into_iter()
            .find(|code| answer["errcode"] == *code)
            .filter(|_| matches!(status, 400 | 403 | 404 | 429));
        match (passed, StatusCode::from_u16(status)) {
            (Some(errcode), Ok(status)) => {
                let mut error = Self::matrix(status, errcode, format!("{destination}: {reason}"));
                for key in ["room_version", "retry_after_ms"] {
                    if let Some(value) = answer.get(key) {
                        error = error.with_extra(key, value.clone());
                    }
                }
                error
            }
            _ => Self::remote(format!(
                "{destination} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
        }
    }

    pub fn errcode(&self) -> &'static str {
        match self {
            Self::Matrix { errcode, .. } => errcode,
            Self::Uia(_) => "M_FORBIDDEN",
            Self::Internal(_) | Self::Unavailable { .. } => "M_UNKNOWN",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Matrix {
                errcode, message, ..
            } => write!(f, "{errcode}: {message}"),
            Self::Uia(_) => f.write_str("user-interactive authentication required"),
            Self::Internal(cause) => write!(f, "internal error: {cause}"),
            Self::Unavailable { .. } => {
                f.write_str("the server is busy or its database unavailable")
            }
        }
    }
}

impl std::error::Error for Error {}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Self::Matrix {
                status,
                errcode,
                message,
                mut extra,
            } => {
                // A 429 that says how long to wait says it in the header too, in whole seconds.
                let retry_after = extra
                    .get("retry_after_ms")
                    .and_then(Value::as_u64)
                    .map(|ms| ms.div_ceil(1000).to_string());
                extra.insert("errcode".into(), errcode.into());
                extra.insert("error".into(), Value::String(message.into_owned()));
                let mut response = (status, Json(Value::Object(extra))).into_response();
                if let Some(seconds) = retry_after
                    && let Ok(value) = HeaderValue::from_str(&seconds)
                {
                    response.headers_mut().insert(RETRY_AFTER, value);
                }
                response
            }
            Self::Uia(body) => (StatusCode::UNAUTHORIZED, Json(body)).into_response(),
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"errcode": "M_UNKNOWN", "error": "Internal server error"})),
                )
                    .into_response()
            }
            Self::Unavailable {
                retry_after_ms,
                lost,
            } => {
                let secs = retry_after_ms.div_ceil(1000).max(1);
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(RETRY_AFTER, secs.to_string())],
                    Json(json!({
                        "errcode": "M_UNKNOWN",
                        "error": "The server is busy or its database is unavailable; try again shortly",
                        "retry_after_ms": retry_after_ms,
                    })),
                )
                    .into_response();
                if lost {
                    response.extensions_mut().insert(ConnectionLost);
                }
                response
            }
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        use crate::store::pool;
        if pool::is_unavailable(&e) {
            let lost = pool::is_connection_loss(&e);
            if lost {
                pool::connection_lost();
            }
            match e {
                // Only once the server is shutting down: expected, not worth a warning.
                sqlx::Error::PoolClosed => tracing::debug!(error = %e, "database unavailable"),
                _ => tracing::warn!(error = %e, "database unavailable"),
            }
            return Self::Unavailable {
                retry_after_ms: 1000,
                lost,
            };
        }
        if pool::is_unstorable_input(&e) {
            return Self::bad_json(format!("The content cannot be stored: {e}"));
        }
        Self::Internal(format!("database: {e}"))
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Internal(format!("migration: {e}"))
    }
}

/// Maps a unique-constraint violation on `constraint` to a client error; anything else stays internal.
/// The realworld-axum-sqlx idiom: let PostgreSQL decide races, then name the outcome.
pub trait OnConstraint<T> {
    fn on_constraint(self, constraint: &str, to_error: impl FnOnce() -> Error) -> Result<T>;
}

impl<T> OnConstraint<T> for std::result::Result<T, sqlx::Error> {
    fn on_constraint(self, constraint: &str, to_error: impl FnOnce() -> Error) -> Result<T> {
        self.map_err(|e| match &e {
            sqlx::Error::Database(db) if db.constraint() == Some(constraint) => to_error(),
            _ => e.into(),
        })
    }
}

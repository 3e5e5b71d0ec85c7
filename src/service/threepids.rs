//! Email addresses on accounts: validation sessions (requestToken, the link in the mail), adding,
//! listing and removing addresses, finding the account of an address (login, password reset).
//!
//! As Synapse (handlers/identity.py `send_threepid_validation`, storage `validate_threepid_session`):
//! a requestToken with a client secret and address seen before continues that session (same `sid`);
//! a `send_attempt` no higher than the last one sends nothing. A validated session proves its
//! address once, for the operation it was started for, and is deleted when used.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::service::auth::random_string;
use crate::service::email::{EmailService, Mail};
use crate::service::rate_limit::RateLimiter;
use crate::{Error, Result, store};

/// The only medium Axon validates.
pub const EMAIL: &str = "email";

/// Validation sessions are forgotten a day after they started (or after the token lifetime, if
/// that is longer).
const SESSION_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;

/// What a validation session proves an address for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Adding the address to an account (`/account/3pid/email/requestToken`).
    Add,
    /// Resetting the password of the account holding it (`/account/password/email/requestToken`).
    Reset,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Add => "add",
            Purpose::Reset => "reset",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "add" => Some(Purpose::Add),
            "reset" => Some(Purpose::Reset),
            _ => None,
        }
    }
}

/// The answer when email is not configured.
pub fn email_not_supported() -> Error {
    Error::threepid_medium_not_supported("Email is not supported by this server")
}

/// The configured email service, or the refusal that says there is none.
pub fn enabled(email: Option<&EmailService>) -> Result<&EmailService> {
    email.ok_or_else(email_not_supported)
}

/// The spec's client secret: `[0-9a-zA-Z.=_-]`, 1 to 255 characters.
pub fn check_client_secret(secret: &str) -> Result<()> {
    let valid = !secret.is_empty()
        && secret.len() <= 255
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".=_-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_param(
            "client_secret must be 1 to 255 of the characters [0-9a-zA-Z.=_-]",
        ))
    }
}

/// An email address in the form it is stored and looked up in: trimmed, lower-cased (as Synapse's
/// `canonicalise_email`), and well-formed.
pub fn canonical_email(address: &str) -> Result<String> {
    let address = address.trim().to_lowercase();
    match address.parse::<lettre::Address>() {
        Ok(_) if address.len() <= 255 => Ok(address),
        _ => Err(Error::invalid_param("Invalid email address")),
    }
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A requestToken.
pub struct TokenRequest<'a> {
    pub purpose: Purpose,
    pub client_secret: &'a str,
    pub email: &'a str,
    pub send_attempt: u64,
    pub next_link: Option<&'a str>,
    /// The client's address, for the rate limit.
    pub ip: Option<IpAddr>,
}

/// Starts or continues a validation session and mails its link; answers the session ID.
pub async fn request_token(
    db: &PgPool,
    email: &EmailService,
    limiter: &RateLimiter,
    request: TokenRequest<'_>,
) -> Result<String> {
    check_client_secret(request.client_secret)?;
    let address = canonical_email(request.email)?;
    let next_link = request.next_link.map(check_next_link).transpose()?;
    let holder = store::threepids::user_of(db, EMAIL, &address).await?;
    match (request.purpose, holder) {
        (Purpose::Reset, None) => {
            return Err(Error::threepid_not_found(
                "No account has this email address",
            ));
        }
        (Purpose::Add, Some(_)) => {
            return Err(Error::threepid_in_use(
                "This email address is already in use",
            ));
        }
        _ => {}
    }
    let purpose = request.purpose.as_str();
    let open =
        store::threepids::find_open_session(db, purpose, request.client_secret, EMAIL, &address)
            .await?;
    let send_attempt = i64::try_from(request.send_attempt)
        .map_err(|_| Error::invalid_param("send_attempt is too large"))?;
    let sid = match open {
        // A retry of a request already served: no second mail.
        Some(session) if send_attempt <= session.last_send_attempt => return Ok(session.sid),
        Some(session) => session.sid,
        None => random_string(16),
    };
    limiter.validation_mail(request.ip, &address)?;
    let token = random_string(32);
    email
        .send(validation_mail(
            email,
            request.purpose,
            &address,
            &sid,
            request.client_secret,
            &token,
        ))
        .await?;
    let now = store::now_ms();
    store::threepids::prune_sessions(db, now - SESSION_LIFETIME_MS.max(email.token_lifetime_ms))
        .await?;
    let next_link = next_link.map(|link| with_sid(link, &sid));
    store::threepids::save_token(
        db,
        &store::threepids::NewToken {
            sid: &sid,
            purpose,
            medium: EMAIL,
            address: &address,
            client_secret: request.client_secret,
            token_hash: &token_hash(&token),
            send_attempt,
            next_link: next_link.as_deref(),
            token_expires_ts: now + email.token_lifetime_ms,
        },
    )
    .await?;
    Ok(sid)
}

/// A client's `next_link`: an absolute http(s) URL without control characters, in its
/// serialised (ASCII) form, so that the page can always send the browser there (`Location`).
fn check_next_link(link: &str) -> Result<url::Url> {
    let invalid = || Error::invalid_param("next_link must be an http(s) URL");
    if link.chars().any(char::is_control) {
        return Err(invalid());
    }
    let url = url::Url::parse(link).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid());
    }
    Ok(url)
}

/// The next link with the session ID added to its query, as Synapse does.
fn with_sid(mut link: url::Url, sid: &str) -> String {
    link.query_pairs_mut().append_pair("sid", sid);
    link.into()
}

/// The page that validates a session, on this server (see `api::email_pages`).
pub const SUBMIT_TOKEN_PATH: &str = "_axon/client/email/submit_token";

fn validation_mail<'a>(
    email: &EmailService,
    purpose: Purpose,
    address: &'a str,
    sid: &str,
    client_secret: &str,
    token: &str,
) -> Mail<'a> {
    // The session ID and token are alphanumeric and the client secret is [0-9a-zA-Z.=_-]: nothing
    // in the query needs escaping.
    let link = format!(
        "{}{SUBMIT_TOKEN_PATH}?sid={sid}&client_secret={client_secret}&token={token}",
        email.public_baseurl
    );
    let (subject, what) = match purpose {
        Purpose::Add => (
            "Validate your email address",
            "You asked to add this email address to your Matrix account",
        ),
        Purpose::Reset => (
            "Reset your password",
            "You asked to reset the password of the Matrix account with this email address",
        ),
    };
    Mail {
        to: address,
        subject,
        text: format!(
            "{what} on {}.\r\n\r\nTo go on, open this link:\r\n\r\n{link}\r\n\r\n\
             If it was not you, ignore this mail.\r\n",
            email.public_baseurl
        ),
    }
}

/// The purpose of a session, to decide whether its page asks for a confirmation first (password
/// resets do, so that a link pre-fetcher cannot validate them). None for an unknown session.
pub async fn session_purpose(db: &PgPool, sid: &str) -> Result<Option<(Purpose, bool)>> {
    Ok(store::threepids::get_session(db, sid)
        .await?
        .and_then(|s| Some((Purpose::parse(&s.purpose)?, s.validated_at.is_some()))))
}

/// Validates the session with the token from the mail. Validating again answers the same (the
/// page is idempotent). Answers the link to go on to, if the client gave one.
pub async fn submit_token(
    db: &PgPool,
    sid: &str,
    client_secret: &str,
    token: &str,
) -> Result<Option<String>> {
    check_client_secret(client_secret)?;
    let unknown = || Error::threepid_auth_failed("Validation token not found or has expired");
    let session = store::threepids::get_session(db, sid)
        .await?
        .ok_or_else(unknown)?;
    if session.client_secret != client_secret {
        return Err(Error::threepid_auth_failed(
            "This client_secret does not match the session",
        ));
    }
    if session.token_hash != token_hash(token) {
        return Err(unknown());
    }
    if session.validated_at.is_none() {
        let now = store::now_ms();
        if session.token_expires_ts <= now {
            return Err(Error::threepid_auth_failed(
                "This token has expired; ask for a new one",
            ));
        }
        store::threepids::mark_validated(db, sid, now).await?;
    }
    Ok(session.next_link)
}

/// A validated session of `purpose` for (sid, client_secret), used up: its address and when it was
/// validated. `M_THREEPID_AUTH_FAILED` when there is none.
async fn take_validated(
    db: &PgPool,
    purpose: Purpose,
    sid: &str,
    client_secret: &str,
) -> Result<(String, i64)> {
    check_client_secret(client_secret)?;
    let session = store::threepids::get_session(db, sid)
        .await?
        .filter(|s| s.client_secret == client_secret && s.purpose == purpose.as_str());
    let Some((session, Some(validated_at))) = session.map(|s| {
        let validated_at = s.validated_at;
        (s, validated_at)
    }) else {
        return Err(Error::threepid_auth_failed(
            "No validated email session found",
        ));
    };
    if !store::threepids::delete_session(db, sid).await? {
        // Another request used it meanwhile.
        return Err(Error::threepid_auth_failed(
            "No validated email session found",
        ));
    }
    Ok((session.address, validated_at))
}

/// Adds the address a validated session proves to the user (POST /account/3pid/add).
pub async fn add(db: &PgPool, user_id: &str, sid: &str, client_secret: &str) -> Result<()> {
    let (address, validated_at) = take_validated(db, Purpose::Add, sid, client_secret).await?;
    if !store::threepids::add(db, user_id, EMAIL, &address, validated_at).await? {
        return Err(Error::threepid_in_use(
            "This email address is already in use",
        ));
    }
    Ok(())
}

/// The user a password reset's validated session proves (the `m.login.email.identity` stage); the
/// session is used up.
pub async fn reset_user(db: &PgPool, sid: &str, client_secret: &str) -> Result<String> {
    let (address, _) = take_validated(db, Purpose::Reset, sid, client_secret).await?;
    // The address was removed from its account since the mail was sent.
    store::threepids::user_of(db, EMAIL, &address)
        .await?
        .ok_or_else(|| Error::threepid_not_found("No account has this email address"))
}

/// The user's third-party identifiers.
pub async fn list(db: &PgPool, user_id: &str) -> Result<Vec<store::threepids::ThreepidRow>> {
    Ok(store::threepids::list(db, user_id).await?)
}

/// Removes one of the user's addresses; an address the user does not hold is refused.
pub async fn delete(db: &PgPool, user_id: &str, medium: &str, address: &str) -> Result<()> {
    let address = if medium == EMAIL {
        canonical_email(address)?
    } else {
        address.to_owned()
    };
    if !store::threepids::delete(db, user_id, medium, &address).await? {
        return Err(Error::threepid_not_found(
            "You have no such third-party identifier",
        ));
    }
    Ok(())
}

/// The account a login by third-party identifier names, if any.
pub async fn user_for_login(db: &PgPool, medium: &str, address: &str) -> Result<Option<String>> {
    if medium != EMAIL {
        return Ok(None);
    }
    let Ok(address) = canonical_email(address) else {
        return Ok(None);
    };
    Ok(store::threepids::user_of(db, EMAIL, &address).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_secrets_follow_the_spec_grammar() {
        for good in ["a", "AZaz09.=_-", &"x".repeat(255)] {
            assert!(check_client_secret(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "é", "a/b", "a+b", &"x".repeat(256)] {
            assert!(check_client_secret(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            canonical_email(" Alice@Example.ORG ").unwrap(),
            "alice@example.org"
        );
        for bad in ["", "alice", "alice@", "@example.org", "a b@example.org"] {
            assert!(canonical_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_link_gets_the_sid() {
        let sid = |link: &str| with_sid(check_next_link(link).unwrap(), "S");
        assert_eq!(sid("https://a.b/x"), "https://a.b/x?sid=S");
        assert_eq!(sid("https://a.b/x?y=1"), "https://a.b/x?y=1&sid=S");
        assert_eq!(sid("https://a.b/é x"), "https://a.b/%C3%A9%20x?sid=S");
    }

    #[test]
    fn next_link_must_be_a_clean_http_url() {
        for bad in [
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://a.b/\ndone",
            "https://a.b/\u{0}",
            "https://a.b/\u{7f}",
            "https://",
            "//a.b/x",
            "",
        ] {
            assert!(check_next_link(bad).is_err(), "{bad:?}");
        }
    }
}

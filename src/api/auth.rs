//! The access-token extractor: `Authorization: Bearer …`, or the deprecated `access_token` query
//! parameter, which clients still send.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::extract::body_bytes;
pub use crate::service::auth::Requester;
use crate::service::uia::Operation;
use crate::{AppState, Error, service};

/// The bearer token of the request, if any.
pub fn token_of(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    let query = parts.uri.query()?;
    form_urlencoded_pairs(query)
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
}

fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            crate::api::extract::percent_decode(&s)
        };
        Some((decode(k), decode(v)))
    })
}

/// The client's address (the peer; a reverse proxy's X-Forwarded-For is not trusted by default).
pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The peer address as an extractor, for rate limiting unauthenticated endpoints.
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

/// The raw access token of the request (for logout).
pub struct AccessToken(pub String);

impl FromRequestParts<AppState> for AccessToken {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Error> {
        token_of(parts)
            .map(AccessToken)
            .ok_or_else(|| Error::missing_token("Missing access token"))
    }
}

/// The default extractor of authenticated routes: the token's owner, provided it is not a guest.
/// Guests get 403 `M_GUEST_ACCESS_FORBIDDEN` from every route that takes `Requester`; the few that
/// the guest access module lists take `GuestAllowed` instead, so allowing a guest is a per-route
/// declaration and forgetting it refuses them.
impl FromRequestParts<AppState> for Requester {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let requester = GuestAllowed::from_request_parts(parts, state).await?.0;
        if requester.is_guest {
            return Err(Error::guest_access_forbidden(
                "Guest access is not allowed for this endpoint",
            ));
        }
        Ok(requester)
    }
}

/// The token's owner on a route guests may call (the spec's guest access module lists them; a few
/// more as Synapse, e.g. capabilities and joined rooms). `requester.is_guest` says which it is.
pub struct GuestAllowed(pub Requester);

impl FromRequestParts<AppState> for GuestAllowed {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = token_of(parts).ok_or_else(|| Error::missing_token("Missing access token"))?;
        let client = service::auth::ClientInfo {
            ip: client_ip(parts).map(|ip| ip.to_string()),
            user_agent: parts
                .headers
                .get(USER_AGENT)
                .map(|ua| String::from_utf8_lossy(ua.as_bytes()).into_owned()),
        };
        // Boxed: a cache miss reads the database, and that read's state would otherwise be part
        // of every request's future (kilobytes held by each waiting long poll).
        Box::pin(service::auth::authenticate(state, &token, client))
            .await
            .map(GuestAllowed)
    }
}

/// The body of a request protected by user-interactive authentication, with the operation a UIA
/// session it starts is bound to: method, path (below the version prefix, so `/r0` and `/v3` are
/// the same request) and the body without `auth`.
pub struct UiaJson<T> {
    pub body: T,
    pub operation: Operation,
}

impl<T: DeserializeOwned> FromRequest<AppState> for UiaJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let bytes = body_bytes(req, state).await?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let mut params: Value = serde_json::from_slice(text)
            .map_err(|e| Error::not_json(format!("Content not JSON: {e}")))?;
        let body = serde_json::from_slice(text)
            .map_err(|e| Error::bad_json(format!("Invalid JSON: {e}")))?;
        if let Some(object) = params.as_object_mut() {
            object.remove("auth");
        }
        Ok(UiaJson {
            body,
            operation: Operation {
                method,
                path,
                params,
            },
        })
    }
}

impl<T> UiaJson<T> {
    /// Leaves a secret field out of the operation's parameters (see `Operation::params`).
    pub fn without(mut self, field: &str) -> Self {
        if let Some(object) = self.operation.params.as_object_mut() {
            object.remove(field);
        }
        self
    }
}

/// The requester when the request carries an access token, None when it carries none (password
/// change and deactivation, where UIA's password stage then says who the user is; room
/// summaries). A token that is present but invalid, or a guest's, is still refused.
pub struct MaybeRequester(pub Option<Requester>);

impl FromRequestParts<AppState> for MaybeRequester {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if token_of(parts).is_none() {
            return Ok(MaybeRequester(None));
        }
        Requester::from_request_parts(parts, state)
            .await
            .map(|r| MaybeRequester(Some(r)))
    }
}

/// A server admin's request: every `/_synapse/admin/…` handler takes this, so none can forget the
/// check. No token is 401 `M_MISSING_TOKEN`; a valid token of a non-admin is 403 `M_FORBIDDEN`.
pub struct AdminRequester(pub Requester);

impl FromRequestParts<AppState> for AdminRequester {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let requester = Requester::from_request_parts(parts, state).await?;
        if !requester.is_admin {
            return Err(Error::forbidden("You are not a server admin"));
        }
        Ok(AdminRequester(requester))
    }
}

//! The outbound federation client: resolves the destination (see `resolve`), signs the request
//! with X-Matrix (origin, destination, method, URI, body, key), sends it over TLS with certificates
//! checked against the webpki roots and `federation.extra_ca_file`, refuses addresses the filter
//! forbids, and reads a bounded answer into ruma's typed response. Later stages send every
//! federation request through `send` (signed) or `send_unsigned` (the key endpoints).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use ruma::api::auth_scheme::NoAuthentication;
use ruma::api::federation::authentication::{ServerSignatures, XMatrixSigningInput};
use ruma::api::path_builder::PathBuilder;
use ruma::api::{IncomingResponseExt, OutgoingRequest, OutgoingRequestExt};
use ruma::signatures::Ed25519KeyPair;
use ruma::{OwnedServerName, ServerName};

use super::net::{AddressFilter, FilteringResolver};
use super::resolve::{Destination, ServerResolver};
use crate::config::Federation as Config;
use crate::{Error, Result};

/// A whole request, connection and answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A bigger answer is refused (Synapse's federation client allows 100 MiB; nothing Axon asks for
/// comes close to this).
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Sends requests to other servers, signed as this server.
pub struct FederationClient {
    http: reqwest::Client,
    pub resolver: ServerResolver,
    filter: AddressFilter,
    origin: OwnedServerName,
    key: Ed25519KeyPair,
    /// `federation.domain_allowlist`, lower-cased.
    domain_allowlist: Option<HashSet<String>>,
}

impl FederationClient {
    pub fn new(
        config: &Config,
        extra_roots: &[reqwest::Certificate],
        origin: OwnedServerName,
        key: Ed25519KeyPair,
    ) -> Result<Self> {
        let filter = AddressFilter::new(&config.ip_range_allowlist);
        let dns = Arc::new(FilteringResolver::new(filter.clone(), true));
        let http = super::net::client_builder(extra_roots)
            .dns_resolver(dns.clone())
            .danger_accept_invalid_certs(!config.verify_certificates)
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("Axon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::internal)?;
        let resolver =
            ServerResolver::new(filter.clone(), dns, extra_roots, config.verify_certificates)?;
        Ok(Self {
            http,
            resolver,
            filter,
            origin,
            key,
            domain_allowlist: config
                .domain_allowlist
                .as_ref()
                .map(|l| l.iter().map(|d| d.to_ascii_lowercase()).collect()),
        })
    }

    /// This server's name.
    pub fn origin(&self) -> &ServerName {
        &self.origin
    }

    /// Whether `federation.domain_allowlist` lets Axon federate with `server`.
    pub fn domain_permitted(&self, server: &ServerName) -> bool {
        self.domain_allowlist.as_ref().is_none_or(|list| {
            let (host, _) = super::resolve::split(server.as_str());
            list.contains(&host.to_ascii_lowercase())
        })
    }

    /// Sends a request that needs X-Matrix authentication.
    pub async fn send<R>(&self, destination: &ServerName, request: R) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<Authentication = ServerSignatures>,
        R::PathBuilder: for<'a> PathBuilder<Input<'a> = ()>,
    {
        let target = self.target(destination).await?;
        let input =
            XMatrixSigningInput::new(self.origin.clone(), destination.to_owned(), &self.key);
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&target.base_url(), input, ())
            .map_err(|e| Error::internal(format!("building a federation request: {e}")))?;
        self.execute::<R>(destination, &target, http_request).await
    }

    /// Sends a request that takes no authentication (the key endpoints).
    pub async fn send_unsigned<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<Authentication = NoAuthentication>,
        R::PathBuilder: for<'a> PathBuilder<Input<'a> = ()>,
    {
        let target = self.target(destination).await?;
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&target.base_url(), (), ())
            .map_err(|e| Error::internal(format!("building a federation request: {e}")))?;
        self.execute::<R>(destination, &target, http_request).await
    }

    /// Resolves `destination` and checks that Axon may send to it.
    async fn target(&self, destination: &ServerName) -> Result<Destination> {
        if destination == self.origin {
            return Err(Error::federation_refused(
                "Axon does not send requests to itself",
            ));
        }
        if !self.domain_permitted(destination) {
            return Err(Error::federation_refused(format!(
                "{destination} is not in federation.domain_allowlist"
            )));
        }
        let target = self.resolver.resolve(destination).await;
        // Host names are checked by the client's DNS resolver; IP literals are dialled directly.
        if let Some(ip) = target.ip_literal()
            && !self.filter.permits(ip)
        {
            return Err(Error::federation_refused(format!(
                "{destination} is at an address federation may not reach ({ip}); see federation.ip_range_allowlist"
            )));
        }
        Ok(target)
    }

    async fn execute<R: OutgoingRequest>(
        &self,
        destination: &ServerName,
        target: &Destination,
        http_request: http::Request<Vec<u8>>,
    ) -> Result<R::IncomingResponse> {
        let mut request = reqwest::Request::try_from(http_request).map_err(Error::internal)?;
        if let Ok(host) = reqwest::header::HeaderValue::from_str(&target.host_header) {
            request.headers_mut().insert(reqwest::header::HOST, host);
        }
        let unreachable = |e: &dyn std::fmt::Display| Error::remote(format!("{destination}: {e}"));
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| unreachable(&error_chain(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| unreachable(&error_chain(&e)))?;
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Error::remote(format!(
                    "{destination}: the answer is too large"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(Error::from_remote(
                destination.as_str(),
                status.as_u16(),
                &body,
            ));
        }
        let mut builder = http::Response::builder().status(status.as_u16());
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
        let http_response = builder.body(&body[..]).map_err(Error::internal)?;
        R::IncomingResponse::try_from_http_response(http_response).map_err(|e| {
            Error::remote(format!(
                "{destination} answered {status}: {e} ({})",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })
    }
}

/// An error and its causes on one line (reqwest hides the TLS or DNS reason in its sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

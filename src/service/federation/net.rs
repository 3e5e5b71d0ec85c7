//! Where outbound requests may go, and what they trust. Federation requests never reach private,
//! loopback, link-local, unique-local or carrier-grade NAT addresses unless
//! `federation.ip_range_allowlist` names them: host names are checked after DNS resolution, in the
//! federation client's own resolver, so the address checked is the address dialled.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::service::media::preview::{IpNetwork, is_non_public};
use crate::{Error, Result};

/// The CA certificates of `federation.extra_ca_file`, trusted besides the webpki roots by every
/// outbound client (federation, push, URL previews).
pub fn load_extra_roots(path: Option<&Path>) -> Result<Vec<reqwest::Certificate>> {
    let Some(path) = path else { return Ok(vec![]) };
    let pem = std::fs::read(path).map_err(|e| {
        Error::internal(format!("federation.extra_ca_file {}: {e}", path.display()))
    })?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        Error::internal(format!("federation.extra_ca_file {}: {e}", path.display()))
    })?;
    if roots.is_empty() {
        return Err(Error::internal(format!(
            "federation.extra_ca_file {}: no certificate in it",
            path.display()
        )));
    }
    Ok(roots)
}

/// A reqwest client builder that trusts `extra_roots` besides the webpki roots.
pub fn client_builder(extra_roots: &[reqwest::Certificate]) -> reqwest::ClientBuilder {
    extra_roots
        .iter()
        .fold(reqwest::Client::builder(), |builder, root| {
            builder.add_root_certificate(root.clone())
        })
}

/// Which addresses outbound federation requests may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressFilter {
    allow: Vec<IpNetwork>,
}

impl AddressFilter {
    /// From `federation.ip_range_allowlist` (validated with the config).
    pub fn new(allowlist: &[String]) -> Self {
        Self {
            allow: allowlist
                .iter()
                .filter_map(|n| IpNetwork::parse(n))
                .collect(),
        }
    }

    /// Public addresses, and the non-public ones the allowlist names.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_non_public(ip) || self.allow.iter().any(|n| n.contains(ip))
    }
}

/// How long an SRV target substitution is remembered.
const TARGET_TTL: Duration = Duration::from_secs(3600);
/// At most this many substitutions are remembered (the oldest go first).
const MAX_TARGETS: usize = 10_000;

/// The federation client's DNS: the system resolver, then the address filter. A host name whose
/// SRV record named another target host is looked up as that target (the request keeps the
/// delegated name for TLS and `Host`).
#[derive(Clone)]
pub struct FilteringResolver(Arc<Inner>);

/// The filter and the SRV substitutions, shared by clones.
pub struct Inner {
    filter: AddressFilter,
    /// host name in the URL → SRV target host, with when it was learnt.
    targets: Option<Mutex<HashMap<String, (String, Instant)>>>,
}

impl std::ops::Deref for FilteringResolver {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl FilteringResolver {
    /// `substitutes`: whether SRV targets are looked up instead of the URL's host.
    pub fn new(filter: AddressFilter, substitutes: bool) -> Self {
        Self(Arc::new(Inner {
            filter,
            targets: substitutes.then(Default::default),
        }))
    }

    /// Requests to `host` go to `target`'s addresses from now on.
    pub fn substitute(&self, host: &str, target: &str) {
        let Some(targets) = &self.targets else { return };
        let mut targets = targets.lock().unwrap_or_else(|e| e.into_inner());
        if targets.len() >= MAX_TARGETS && !targets.contains_key(host) {
            targets.retain(|_, (_, at)| at.elapsed() < TARGET_TTL);
            if targets.len() >= MAX_TARGETS
                && let Some(oldest) = targets
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                targets.remove(&oldest);
            }
        }
        targets.insert(host.to_owned(), (target.to_owned(), Instant::now()));
    }

    /// Stops substituting for `host` (no SRV record any more).
    pub fn forget(&self, host: &str) {
        if let Some(targets) = &self.targets {
            targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(host);
        }
    }

    fn target_for(&self, host: &str) -> String {
        self.targets
            .as_ref()
            .and_then(|t| {
                let targets = t.lock().unwrap_or_else(|e| e.into_inner());
                targets
                    .get(host)
                    .filter(|(_, at)| at.elapsed() < TARGET_TTL)
                    .map(|(target, _)| target.clone())
            })
            .unwrap_or_else(|| host.to_owned())
    }
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let target = self.target_for(name.as_str());
        let this = self.clone();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((target.as_str(), 0))
                .await?
                .collect();
            let permitted: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| this.filter.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                let why = if found.is_empty() {
                    format!("{target} has no address")
                } else {
                    format!("{target} resolves only to addresses federation may not reach")
                };
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, why).into());
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_need_the_allowlist() {
        let none = AddressFilter::new(&[]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(!none.permits(ip.parse().unwrap()), "{ip}");
        }
        assert!(none.permits("8.8.8.8".parse().unwrap()));
        let loopback = AddressFilter::new(&["127.0.0.0/8".into()]);
        assert!(loopback.permits("127.0.0.2".parse().unwrap()));
        assert!(!loopback.permits("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn substitutions_are_bounded() {
        let resolver = FilteringResolver::new(AddressFilter::default(), true);
        for i in 0..MAX_TARGETS + 5 {
            resolver.substitute(&format!("h{i}"), "t");
        }
        let len = resolver.targets.as_ref().unwrap().lock().unwrap().len();
        assert!(len <= MAX_TARGETS);
        assert_eq!(resolver.target_for(&format!("h{}", MAX_TARGETS + 4)), "t");
        assert_eq!(resolver.target_for("other"), "other");
    }
}

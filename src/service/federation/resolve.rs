//! Server name resolution, in the spec's order (server-server API, "Resolving server names"): an
//! IP literal, with its port or 8448; a host name with an explicit port; the host's
//! `/.well-known/matrix/server`, whose delegated name is resolved by the same IP-literal and port
//! rules, then SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`, then port 8448; without
//! a well-known answer, SRV records of the name itself, then the name on port 8448.
//! TLS (SNI and certificate) and `Host` always name the (delegated) host name, never an SRV target.
//! Well-known answers are cached as Synapse caches them (its `well_known_resolver.py` figures).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use futures_util::StreamExt;
use hickory_resolver::TokioResolver;
use rand::Rng;
use ruma::{OwnedServerName, ServerName};

use super::net::{AddressFilter, FilteringResolver};

/// The default port of the federation API.
pub const DEFAULT_PORT: u16 = 8448;
/// A well-known answer without caching headers is kept this long (± 10 %).
const WELL_KNOWN_DEFAULT_CACHE: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_JITTER: f64 = 0.1;
/// Caching headers are honoured within these bounds.
const WELL_KNOWN_MIN_CACHE: Duration = Duration::from_secs(5 * 60);
const WELL_KNOWN_MAX_CACHE: Duration = Duration::from_secs(48 * 3600);
/// A failed or invalid lookup is remembered this long (the spec: "up to an hour")…
const WELL_KNOWN_INVALID_CACHE: Duration = Duration::from_secs(3600);
/// …or only this long when the host had a valid answer within the last two hours (it is
/// probably down for a moment).
const WELL_KNOWN_DOWN_CACHE: Duration = Duration::from_secs(2 * 60);
const WELL_KNOWN_REMEMBER_VALID: Duration = Duration::from_secs(2 * 3600);
/// A bigger well-known answer is an error.
const WELL_KNOWN_MAX_BYTES: usize = 50 * 1024;
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many host names' well-known answers are cached.
const WELL_KNOWN_MAX_ENTRIES: usize = 10_000;

/// Where requests for a server name go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The URL's host: what TLS sends as SNI and the certificate must name (an IPv6 literal in
    /// brackets).
    pub tls_name: String,
    pub port: u16,
    /// The `Host` header.
    pub host_header: String,
    /// The SRV target dialled instead of `tls_name`, when an SRV record named one.
    pub connect_to: Option<String>,
}

impl Destination {
    pub fn base_url(&self) -> String {
        format!("https://{}:{}", self.tls_name, self.port)
    }

    /// The address to dial when the destination is an IP literal.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.tls_name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

/// Steps 1 and 2 (and 3.1, 3.2 for a delegated name): an IP literal, or a name with a port.
pub fn direct(name: &ServerName) -> Option<Destination> {
    let (host, port) = split(name.as_str());
    let is_ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok();
    if !is_ip && port.is_none() {
        return None;
    }
    Some(Destination {
        tls_name: host.to_owned(),
        port: port.unwrap_or(DEFAULT_PORT),
        host_header: name.as_str().to_owned(),
        connect_to: None,
    })
}

/// A server name's host (an IPv6 literal keeps its brackets) and port.
pub fn split(name: &str) -> (&str, Option<u16>) {
    let port_start = match name.rfind(']') {
        Some(bracket) => name[bracket..].find(':').map(|i| bracket + i),
        None => name.rfind(':'),
    };
    match port_start {
        Some(i) => (&name[..i], name[i + 1..].parse().ok()),
        None => (name, None),
    }
}

/// An SRV record's fields that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The record to use: the lowest priority, then the highest weight ("." means no service).
pub fn pick_srv(records: &[SrvRecord]) -> Option<&SrvRecord> {
    records
        .iter()
        .filter(|r| !r.target.is_empty() && r.target != ".")
        .min_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)))
}

/// The destination an SRV record gives for `host`.
fn from_srv(host: &str, record: &SrvRecord) -> Destination {
    let target = record.target.trim_end_matches('.').to_owned();
    Destination {
        tls_name: host.to_owned(),
        port: record.port,
        host_header: host.to_owned(),
        connect_to: (!target.eq_ignore_ascii_case(host)).then_some(target),
    }
}

/// How long a well-known answer may be cached: `no-store` → 0, `max-age`, then `Expires`; `None`
/// when neither says.
pub fn cache_period(
    cache_control: Option<&str>,
    expires: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(cc) = cache_control {
        let directives: Vec<String> = cc
            .split(',')
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        if directives.iter().any(|d| d == "no-store") {
            return Some(Duration::ZERO);
        }
        if let Some(age) = directives.iter().find_map(|d| {
            d.strip_prefix("max-age=")?
                .trim_matches('"')
                .parse::<u64>()
                .ok()
        }) {
            return Some(Duration::from_secs(age));
        }
    }
    let expires = httpdate::parse_http_date(expires?).ok()?;
    Some(expires.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The cache period actually used: the default with jitter, or the headers' within bounds.
fn bounded_period(from_headers: Option<Duration>) -> Duration {
    match from_headers {
        None => WELL_KNOWN_DEFAULT_CACHE.mul_f64(
            rand::thread_rng().gen_range(1.0 - WELL_KNOWN_JITTER..1.0 + WELL_KNOWN_JITTER),
        ),
        Some(p) => p.clamp(WELL_KNOWN_MIN_CACHE, WELL_KNOWN_MAX_CACHE),
    }
}

/// A cached well-known lookup.
#[derive(Debug, Clone)]
struct WellKnownEntry {
    /// The delegated server name, or none (failure or no delegation).
    delegated: Option<OwnedServerName>,
    expires: Instant,
    /// When a valid answer was last seen.
    last_valid: Option<Instant>,
}

/// Resolves server names; shares its SRV substitutions with the federation client's DNS resolver.
pub struct ServerResolver {
    /// Fetches `/.well-known/matrix/server` (its DNS is filtered, without SRV substitution).
    http: reqwest::Client,
    /// For SRV lookups; none when the system's resolver configuration cannot be read.
    dns: Option<TokioResolver>,
    /// The federation client's DNS, told about SRV targets.
    targets: Arc<FilteringResolver>,
    filter: AddressFilter,
    well_known: Mutex<HashMap<String, WellKnownEntry>>,
    /// The port well-known answers are fetched from: 443, or another in tests.
    well_known_port: AtomicU16,
}

impl ServerResolver {
    pub fn new(
        filter: AddressFilter,
        targets: Arc<FilteringResolver>,
        extra_roots: &[reqwest::Certificate],
        verify_certificates: bool,
    ) -> crate::Result<Self> {
        let redirect_filter = filter.clone();
        let http = super::net::client_builder(extra_roots)
            .dns_resolver(Arc::new(FilteringResolver::new(filter.clone(), false)))
            .danger_accept_invalid_certs(!verify_certificates)
            .https_only(true)
            .no_proxy()
            .timeout(WELL_KNOWN_TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let blocked = attempt.url().host_str().is_some_and(|h| {
                    h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| !redirect_filter.permits(ip))
                });
                if blocked || attempt.previous().len() >= 5 {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(concat!("Axon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(crate::Error::internal)?;
        let dns = TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| tracing::warn!(error = %e, "no DNS resolver for SRV lookups"))
            .ok();
        Ok(Self {
            http,
            dns,
            targets,
            filter,
            well_known: Mutex::new(HashMap::new()),
            well_known_port: AtomicU16::new(443),
        })
    }

    /// Tests serve well-known answers on another port than 443.
    #[doc(hidden)]
    pub fn set_well_known_port(&self, port: u16) {
        self.well_known_port.store(port, Ordering::Relaxed);
    }

    /// Where requests for `name` go.
    pub async fn resolve(&self, name: &ServerName) -> Destination {
        if let Some(destination) = direct(name) {
            return destination;
        }
        let host = name.as_str();
        if let Some(delegated) = self.well_known(host).await {
            if let Some(destination) = direct(&delegated) {
                return destination;
            }
            return self.srv_or_default(delegated.as_str()).await;
        }
        self.srv_or_default(host).await
    }

    /// Steps 3.3–3.5 and 4–6 for `host` (no port, not an IP literal).
    async fn srv_or_default(&self, host: &str) -> Destination {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let records = self.srv(&format!("{service}.{host}.")).await;
            if let Some(record) = pick_srv(&records) {
                let destination = from_srv(host, record);
                match &destination.connect_to {
                    Some(target) => self.targets.substitute(host, target),
                    None => self.targets.forget(host),
                }
                return destination;
            }
        }
        self.targets.forget(host);
        Destination {
            tls_name: host.to_owned(),
            port: DEFAULT_PORT,
            host_header: host.to_owned(),
            connect_to: None,
        }
    }

    async fn srv(&self, query: &str) -> Vec<SrvRecord> {
        let Some(dns) = &self.dns else { return vec![] };
        let Ok(lookup) = dns.srv_lookup(query).await else {
            return vec![];
        };
        lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                hickory_resolver::proto::rr::RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_ascii(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The delegated server name from `host`'s well-known answer, cached.
    pub async fn well_known(&self, host: &str) -> Option<OwnedServerName> {
        let previous = {
            let cache = self.well_known.lock().unwrap_or_else(|e| e.into_inner());
            cache.get(host).cloned()
        };
        if let Some(entry) = &previous
            && entry.expires > Instant::now()
        {
            return entry.delegated.clone();
        }
        let last_valid = previous.and_then(|e| e.last_valid);
        let entry = match self.fetch_well_known(host).await {
            Ok((delegated, period)) => WellKnownEntry {
                delegated: Some(delegated),
                expires: Instant::now() + period,
                last_valid: Some(Instant::now()),
            },
            Err(why) => {
                tracing::debug!(host, why, "no well-known delegation");
                let recently_valid =
                    last_valid.is_some_and(|at| at.elapsed() < WELL_KNOWN_REMEMBER_VALID);
                let period = if recently_valid {
                    WELL_KNOWN_DOWN_CACHE
                } else {
                    WELL_KNOWN_INVALID_CACHE
                };
                WellKnownEntry {
                    delegated: None,
                    expires: Instant::now()
                        + period.mul_f64(rand::thread_rng().gen_range(0.9..1.1)),
                    last_valid,
                }
            }
        };
        let delegated = entry.delegated.clone();
        let mut cache = self.well_known.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= WELL_KNOWN_MAX_ENTRIES && !cache.contains_key(host) {
            let now = Instant::now();
            cache.retain(|_, e| e.expires > now);
            if cache.len() >= WELL_KNOWN_MAX_ENTRIES
                && let Some(first) = cache.keys().next().cloned()
            {
                cache.remove(&first);
            }
        }
        cache.insert(host.to_owned(), entry);
        delegated
    }

    /// Whether a well-known lookup for `host` is cached (tests).
    #[doc(hidden)]
    pub fn well_known_cached(&self, host: &str) -> Option<Option<OwnedServerName>> {
        let cache = self.well_known.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(host)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.delegated.clone())
    }

    async fn fetch_well_known(&self, host: &str) -> Result<(OwnedServerName, Duration), String> {
        let port = self.well_known_port.load(Ordering::Relaxed);
        let url = format!("https://{host}:{port}/.well-known/matrix/server");
        if let Ok(ip) = host.parse::<IpAddr>()
            && !self.filter.permits(ip)
        {
            return Err("address not permitted".into());
        }
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("status {}", response.status()));
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let period = cache_period(
            header(reqwest::header::CACHE_CONTROL).as_deref(),
            header(reqwest::header::EXPIRES).as_deref(),
            SystemTime::now(),
        );
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            if body.len() + chunk.len() > WELL_KNOWN_MAX_BYTES {
                return Err("answer too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        use ruma::api::IncomingResponseExt;
        let answer = ruma::api::federation::discovery::discover_homeserver::Response::try_from_http_response(
            http::Response::new(&body[..]),
        )
        .map_err(|e| e.to_string())?;
        Ok((answer.server, bounded_period(period)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> OwnedServerName {
        s.try_into().unwrap()
    }

    #[test]
    fn ip_literals_and_ports_are_used_directly() {
        let d = direct(&name("1.2.3.4")).unwrap();
        assert_eq!(
            (d.tls_name.as_str(), d.port, d.host_header.as_str()),
            ("1.2.3.4", 8448, "1.2.3.4")
        );
        let d = direct(&name("1.2.3.4:8000")).unwrap();
        assert_eq!((d.port, d.host_header.as_str()), (8000, "1.2.3.4:8000"));
        let d = direct(&name("[::1]")).unwrap();
        assert_eq!((d.tls_name.as_str(), d.port), ("[::1]", 8448));
        assert_eq!(d.ip_literal(), Some("::1".parse().unwrap()));
        let d = direct(&name("[2001:db8::1]:9000")).unwrap();
        assert_eq!(
            (d.tls_name.as_str(), d.port, d.host_header.as_str()),
            ("[2001:db8::1]", 9000, "[2001:db8::1]:9000")
        );
        let d = direct(&name("example.org:1234")).unwrap();
        assert_eq!(
            (d.tls_name.as_str(), d.port, d.host_header.as_str()),
            ("example.org", 1234, "example.org:1234")
        );
        assert_eq!(d.ip_literal(), None);
        assert!(
            direct(&name("example.org")).is_none(),
            "a bare host name goes to well-known"
        );
    }

    #[test]
    fn srv_picks_lowest_priority_then_highest_weight_and_keeps_the_name_for_tls() {
        let r = |priority, weight, target: &str| SrvRecord {
            priority,
            weight,
            port: 1000 + weight,
            target: target.into(),
        };
        let records = vec![
            r(20, 100, "c."),
            r(10, 5, "a."),
            r(10, 50, "b."),
            r(0, 0, "."),
        ];
        let best = pick_srv(&records).unwrap();
        assert_eq!(best.target, "b.");
        let d = from_srv("example.org", best);
        assert_eq!(d.tls_name, "example.org");
        assert_eq!(d.host_header, "example.org");
        assert_eq!(d.port, 1050);
        assert_eq!(d.connect_to.as_deref(), Some("b"));
        assert!(pick_srv(&[r(0, 0, ".")]).is_none(), "\".\": no service");
    }

    #[test]
    fn well_known_cache_periods_follow_headers_within_bounds() {
        let now = SystemTime::now();
        assert_eq!(
            cache_period(Some("public, max-age=600"), None, now),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            cache_period(Some("no-store"), None, now),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(3600));
        let p = cache_period(None, Some(&later), now).unwrap();
        assert!(p > Duration::from_secs(3590) && p <= Duration::from_secs(3600));
        assert_eq!(cache_period(None, None, now), None);
        assert_eq!(bounded_period(Some(Duration::ZERO)), WELL_KNOWN_MIN_CACHE);
        assert_eq!(
            bounded_period(Some(Duration::from_secs(7 * 86400))),
            WELL_KNOWN_MAX_CACHE
        );
        let default = bounded_period(None);
        assert!(
            default >= Duration::from_secs(21 * 3600) && default <= Duration::from_secs(27 * 3600)
        );
    }

    #[test]
    fn split_handles_ipv6_brackets() {
        assert_eq!(split("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split("[::1]"), ("[::1]", None));
        assert_eq!(split("a.b:1"), ("a.b", Some(1)));
        assert_eq!(split("a.b"), ("a.b", None));
    }
}

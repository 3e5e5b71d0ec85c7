//! URL previews. Fetching a URL a user names is a server-side request forgery risk, so: off unless
//! configured; the host is resolved here and every address checked (private, loopback, link-local and
//! other non-public ranges are refused unless `media.url_preview.ip_range_allowlist` names them); the
//! connection goes to a checked address only (no proxy, no second DNS lookup); redirects are followed
//! by hand and checked again; size and time are capped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::Url;
use serde_json::{Map, Value, json};

use super::UploadInfo;
use crate::service::auth::Requester;
use crate::store;
use crate::{AppState, Error, Result};

/// Bytes of a page read for its tags; a longer page is cut here (the head comes first anyway).
const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// A preview image larger than this is left out.
const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
/// The whole fetch, DNS and redirects included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 5;
/// A stored preview is reused for this long.
const CACHE_MS: i64 = 60 * 60 * 1000;
/// Synapse's cut for descriptions.
const MAX_DESCRIPTION_CHARS: usize = 500;

/// An IP network such as `10.0.0.0/8`; a bare address is a single-host network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    address: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { address, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether an address is anything but ordinary public unicast.
pub fn is_non_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(ip) => is_non_public_v4(ip),
        IpAddr::V6(ip) => is_non_public_v6(ip),
    }
}

fn is_non_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
}

fn is_non_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || first == 0x2002 // 6to4 embeds an IPv4 address that could be private
        || (first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64, likewise
        || ip.to_ipv4().is_some() // IPv4-compatible (deprecated)
}

fn bad_gateway(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::matrix(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
}

fn blocked() -> Error {
    Error::forbidden("IP address blocked: URL previews may not reach this address")
}

struct Fetched {
    content_type: Option<String>,
    body: Bytes,
    /// The final URL after redirects, against which relative links resolve.
    url: Url,
}

/// GET preview_url: the Open Graph data of `url`, from the cache if fresh.
pub async fn preview(state: &AppState, requester: &Requester, url: &str) -> Result<Value> {
    let parsed = Url::parse(url).map_err(|e| Error::invalid_param(format!("Invalid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid_param(
            "Only http and https URLs can be previewed",
        ));
    }
    if let Some(cached) =
        store::media::find_url_preview(&state.db, url, store::now_ms() - CACHE_MS).await?
    {
        return Ok(cached);
    }
    let allow: Vec<IpNetwork> = state
        .config
        .media
        .url_preview
        .ip_range_allowlist
        .iter()
        .filter_map(|n| IpNetwork::parse(n))
        .collect();
    let page = fetch(&allow, &state.extra_roots, parsed, MAX_PAGE_BYTES, true).await?;
    let mut og = Map::new();
    if page
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("image/"))
    {
        add_image(state, requester, &mut og, page).await?;
    } else if page
        .content_type
        .as_deref()
        .is_none_or(|t| t.starts_with("text/html") || t.contains("xhtml"))
    {
        let html = String::from_utf8_lossy(&page.body);
        og = parse_html(&html);
        let image_url = og
            .remove("og:image")
            .and_then(|v| v.as_str().and_then(|image| page.url.join(image).ok()));
        if let Some(image_url) = image_url {
            match fetch(
                &allow,
                &state.extra_roots,
                image_url,
                MAX_IMAGE_BYTES,
                false,
            )
            .await
            {
                Ok(image)
                    if image
                        .content_type
                        .as_deref()
                        .is_some_and(|t| t.starts_with("image/")) =>
                {
                    add_image(state, requester, &mut og, image).await?;
                }
                Ok(_) => {}
                // A preview without its picture is still a preview.
                Err(e) => tracing::debug!(error = %e, "preview image not fetched"),
            }
        }
    }
    let og = Value::Object(og);
    store::media::save_url_preview(&state.db, url, &og).await?;
    Ok(og)
}

/// Stores a fetched image as media and describes it the way the spec's preview does.
async fn add_image(
    state: &AppState,
    requester: &Requester,
    og: &mut Map<String, Value>,
    image: Fetched,
) -> Result<()> {
    let dimensions = image::ImageReader::new(std::io::Cursor::new(&image.body[..]))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok());
    let content_type = image.content_type.clone();
    let filename = image
        .url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let info = UploadInfo {
        content_type: content_type.clone(),
        filename,
    };
    let (mxc, size) =
        super::store_bytes(state, requester.user_id.as_str(), image.body, info).await?;
    og.insert("og:image".into(), json!(mxc));
    og.insert("matrix:image:size".into(), json!(size));
    if let Some(content_type) = content_type {
        og.insert("og:image:type".into(), json!(content_type));
    }
    if let Some((w, h)) = dimensions {
        og.insert("og:image:width".into(), json!(w));
        og.insert("og:image:height".into(), json!(h));
    }
    Ok(())
}

/// The addresses `url` may be fetched from; refuses when the host has none allowed.
async fn checked_addresses(allow: &[IpNetwork], url: &Url) -> Result<(String, Vec<SocketAddr>)> {
    let host = url
        .host_str()
        .ok_or_else(|| Error::invalid_param("The URL has no host"))?
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let resolved: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| bad_gateway("DNS resolution failure during URL preview generation"))?
            .collect(),
    };
    let permitted = |addr: &SocketAddr| {
        !is_non_public(addr.ip()) || allow.iter().any(|n| n.contains(addr.ip()))
    };
    let addresses: Vec<SocketAddr> = resolved.iter().copied().filter(permitted).collect();
    if addresses.is_empty() {
        return Err(if resolved.is_empty() {
            bad_gateway("DNS resolution failure during URL preview generation")
        } else {
            blocked()
        });
    }
    Ok((bare.to_owned(), addresses))
}

/// Fetches `url` (trusting `roots` besides the webpki roots), at most `cap` bytes.
async fn fetch(
    allow: &[IpNetwork],
    roots: &[reqwest::Certificate],
    url: Url,
    cap: usize,
    truncate: bool,
) -> Result<Fetched> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(allow, roots, url, cap, truncate))
        .await
        .map_err(|_| {
            Error::matrix(
                StatusCode::GATEWAY_TIMEOUT,
                "M_UNKNOWN",
                "Timed out fetching the URL",
            )
        })?
}

async fn fetch_inner(
    allow: &[IpNetwork],
    roots: &[reqwest::Certificate],
    mut url: Url,
    cap: usize,
    truncate: bool,
) -> Result<Fetched> {
    for _ in 0..=MAX_REDIRECTS {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_gateway("The URL redirected to an unsupported scheme"));
        }
        let (host, addresses) = checked_addresses(allow, &url).await?;
        let client = crate::service::federation::net::client_builder(roots)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .resolve_to_addrs(&host, &addresses)
            .user_agent(concat!(
                "Axon/",
                env!("CARGO_PKG_VERSION"),
                " (URL preview)"
            ))
            .build()
            .map_err(Error::internal)?;
        let response = client
            .get(url.clone())
            .header(
                reqwest::header::ACCEPT,
                "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5",
            )
            .send()
            .await
            .map_err(|e| bad_gateway(format!("Error fetching the URL: {}", error_chain(&e))))?;
        // Every request goes to an address checked above: if the target is forbidden, so is this.
        if let Some(peer) = response.remote_addr()
            && !addresses.contains(&peer)
        {
            return Err(blocked());
        }
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| bad_gateway("A redirect without a Location"))?;
            url = url
                .join(location)
                .map_err(|_| bad_gateway("A redirect to an invalid URL"))?;
            continue;
        }
        if !response.status().is_success() {
            return Err(bad_gateway(format!(
                "The URL answered {}",
                response.status()
            )));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|t| t.to_str().ok())
            .map(|t| t.trim().to_ascii_lowercase());
        let final_url = response.url().clone();
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| bad_gateway(format!("Error reading the URL: {e}")))?;
            if body.len() + chunk.len() > cap {
                if !truncate {
                    return Err(bad_gateway("The content is too large to preview"));
                }
                body.extend_from_slice(&chunk[..cap - body.len()]);
                break;
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(Fetched {
            content_type,
            body: body.freeze(),
            url: final_url,
        });
    }
    Err(bad_gateway("Too many redirects"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The Open Graph `<meta property="og:…" content="…">` tags of a page, with `<title>` and the
/// description meta tag as fallbacks for og:title and og:description.
pub fn parse_html(html: &str) -> Map<String, Value> {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` index `html` too.
    let lower = html.to_ascii_lowercase();
    let mut og = Map::new();
    let mut description = None;
    let mut at = 0;
    while let Some(found) = lower[at..].find("<meta") {
        let start = at + found + 5;
        let end = lower[start..].find('>').map_or(html.len(), |e| start + e);
        let attributes = parse_attributes(&html[start..end]);
        let get = |name: &str| {
            attributes
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if let Some(content) = get("content") {
            let key = get("property")
                .or_else(|| get("name"))
                .unwrap_or_default()
                .to_ascii_lowercase();
            if key.starts_with("og:") && !og.contains_key(&key) {
                og.insert(key, json!(content));
            } else if key == "description" && description.is_none() {
                description = Some(content.to_owned());
            }
        }
        at = end;
    }
    if !og.contains_key("og:title")
        && let Some(title) = title_of(html, &lower)
    {
        og.insert("og:title".into(), json!(title));
    }
    if !og.contains_key("og:description")
        && let Some(description) = description
    {
        og.insert("og:description".into(), json!(description));
    }
    if let Some(Value::String(d)) = og.get_mut("og:description")
        && d.chars().count() > MAX_DESCRIPTION_CHARS
    {
        *d = d.chars().take(MAX_DESCRIPTION_CHARS).collect::<String>() + "…";
    }
    // The page is anyone's text and the preview is stored as jsonb, which cannot hold U+0000
    // (a raw NUL in the page or `&#0;`).
    og.into_iter()
        .map(|(key, value)| match value {
            Value::String(s) => (key.replace('\0', ""), Value::String(s.replace('\0', ""))),
            other => (key.replace('\0', ""), other),
        })
        .collect()
}

fn title_of(html: &str, lower: &str) -> Option<String> {
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = decode_entities(html[start..end].trim());
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}

/// `name="value"`, `name='value'`, `name=value` and bare `name` attributes, names lowercased,
/// values entity-decoded.
fn parse_attributes(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && bytes[i] != b'='
            && bytes[i] != b'/'
        {
            i += 1;
        }
        if name_start == i {
            break;
        }
        let name = text[name_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                let value_start = i + 1;
                let value_end = text[value_start..]
                    .bytes()
                    .position(|b| b == quote)
                    .map_or(text.len(), |p| value_start + p);
                value = decode_entities(&text[value_start..value_end]);
                i = value_end + 1;
            } else {
                let value_start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = decode_entities(&text[value_start..i]);
            }
        }
        out.push((name, value));
    }
    out
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // Bytes, not a string slice: the 12th byte may fall inside a character.
        let Some(semi) = rest.bytes().take(12).position(|b| b == b';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_match() {
        let net = IpNetwork::parse("127.0.0.0/8").unwrap();
        assert!(net.contains("127.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!net.contains("128.0.0.1".parse().unwrap()));
        assert!(
            IpNetwork::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(IpNetwork::parse("10.0.0.0/33").is_none());
        assert!(
            IpNetwork::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn private_ranges_are_non_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn open_graph_tags_and_fallbacks() {
        let html = r#"<html><head><title> Fallback &amp; title </title>
            <meta property="og:title" content="Real &quot;Title&quot;">
            <META name='description' content='Plain description'>
            <meta property=og:image content=/img.png />
            <meta property="og:image:type" content="image/png"></head></html>"#;
        let og = parse_html(html);
        assert_eq!(og["og:title"], "Real \"Title\"");
        assert_eq!(og["og:description"], "Plain description");
        assert_eq!(og["og:image"], "/img.png");
        assert_eq!(og["og:image:type"], "image/png");
        let og = parse_html("<title>Only &#x41;&#66; title</title>");
        assert_eq!(og["og:title"], "Only AB title");
    }
}

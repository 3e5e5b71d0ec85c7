//! Behind a reverse proxy (`listen.x_forwarded`): the client's address is the one the proxy put
//! in `X-Forwarded-For`, not the proxy's own, for rate limits and the sessions' last-seen IP.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Replaces the peer address with the last `X-Forwarded-For` entry: the one the proxy added
/// itself (earlier entries come from the client and prove nothing). A request without a usable
/// header keeps the peer address.
pub async fn use_forwarded_for(mut request: Request, next: Next) -> Response {
    let forwarded = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(last_address);
    if let Some(ip) = forwarded {
        let port = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(0, |c| c.0.port());
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, port)));
    }
    next.run(request).await
}

/// The last address of an `X-Forwarded-For` value (`client, proxy1, proxy2`).
fn last_address(value: &str) -> Option<IpAddr> {
    let last = value.rsplit(',').next()?.trim();
    // Some proxies write IPv6 in brackets, some add a port.
    last.parse()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            last.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxys_own_entry_is_taken() {
        assert_eq!(last_address("203.0.113.9"), "203.0.113.9".parse().ok());
        assert_eq!(
            last_address("1.2.3.4, 203.0.113.9"),
            "203.0.113.9".parse().ok()
        );
        assert_eq!(last_address("2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(last_address("[2001:db8::1]"), "2001:db8::1".parse().ok());
        assert_eq!(last_address("203.0.113.9:4711"), "203.0.113.9".parse().ok());
        assert_eq!(last_address("unknown"), None);
        assert_eq!(last_address(""), None);
    }
}

//! Request IDs: each request gets one (or keeps a usable one a proxy set), it is in the request's
//! log span, so every line logged while serving it carries it, and it goes back as `X-Request-Id`.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

/// The header, as nginx (`$request_id`) and most proxies name it.
pub const HEADER: &str = "x-request-id";

/// IDs of this process: a random prefix (several processes share logs) and a counter. Cheaper
/// than a UUID per request, and unique within a process's life.
#[derive(Clone, Copy, Default)]
pub struct NextRequestId;

static PREFIX: LazyLock<String> = LazyLock::new(|| {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().r#gen::<u32>())
});
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", *PREFIX);
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Drops an incoming `X-Request-Id` that cannot go into a log line as it is (too long, or
/// characters beyond letters, digits and `-_.:`): a new one is then made.
pub fn drop_unusable<B>(mut request: Request<B>) -> Request<B> {
    if request
        .headers()
        .get(HEADER)
        .is_some_and(|value| !is_usable(value))
    {
        request.headers_mut().remove(HEADER);
    }
    request
}

/// Whether a client's or proxy's request ID is short and plain enough to log.
pub fn is_usable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        assert!(is_usable(&HeaderValue::from_static("3f2a-17")));
        assert!(is_usable(&HeaderValue::from_static(
            "0f8fad5b-d9cb-469f-a165-70867728950e"
        )));
        assert!(!is_usable(&HeaderValue::from_static("")));
        assert!(!is_usable(&HeaderValue::from_static("a b")));
        assert!(!is_usable(&HeaderValue::from_static(
            "x\" access_token=abc"
        )));
        assert!(!is_usable(&HeaderValue::from_str(&"a".repeat(65)).unwrap()));
    }

    #[test]
    fn made_ids_differ() {
        let request = Request::new(());
        let a = NextRequestId.make_request_id(&request).unwrap();
        let b = NextRequestId.make_request_id(&request).unwrap();
        assert_ne!(a.header_value(), b.header_value());
    }
}

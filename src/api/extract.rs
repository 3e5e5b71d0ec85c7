//! Extractors whose rejections speak Matrix: a body that is not JSON is `M_NOT_JSON`, JSON of the
//! wrong shape is `M_BAD_JSON`, an over-long body is `M_TOO_LARGE`.
//!
//! U+0000 is refused at the door: PostgreSQL cannot store it in `text` or `jsonb`, so a JSON body
//! holding it anywhere (a key or a string, however deep) is `M_BAD_JSON` here ([`body_bytes`], which
//! every JSON body goes through), and a path or query parameter holding it is `M_INVALID_PARAM`
//! ([`reject_nul_in_uri`], checked for every route).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::Error;

/// A JSON body. An empty body counts as `{}`: several clients send no body to POST endpoints whose
/// parameters are all optional (join, leave, logout).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// The raw body of a JSON request, size-limited, for handlers that need the exact bytes (event
/// content). A body whose JSON holds U+0000 is refused (media uploads, being binary, never come
/// here).
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::too_large("Request body too large")
            } else {
                Error::not_json(format!("Could not read the request body: {rejection}"))
            }
        })?;
    if json_has_nul(&bytes) {
        return Err(Error::bad_json(
            "Strings and keys must not contain U+0000 (\\u0000)",
        ));
    }
    Ok(bytes)
}

/// Whether JSON text holds U+0000 in a string or key. JSON can carry it only as the escape
/// `\u0000` (a raw NUL byte is not JSON at all, and the parser refuses it); an escape starts at a
/// backslash that is not itself escaped, so each escape's two characters are stepped over whole:
/// `\\u0000` is an escaped backslash followed by the text `u0000`.
pub fn json_has_nul(text: &[u8]) -> bool {
    let mut i = 0;
    while let Some(offset) = text[i..].iter().position(|&b| b == b'\\') {
        let at = i + offset;
        if text.get(at + 1..at + 6) == Some(&b"u0000"[..]) {
            return true;
        }
        i = at + 2;
        if i >= text.len() {
            return false;
        }
    }
    false
}

/// Percent-decodes a path or query component (`+` is left alone); invalid escapes stay as they are
/// and invalid UTF-8 becomes U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checked for every route (see `api::admit`): a path or query parameter that decodes to U+0000 is
/// `M_INVALID_PARAM` before any handler runs. Percent-encoding is the only way to put U+0000 in a URI, and `%00`
/// always decodes to it (no earlier escape can swallow its `%`), so looking for `%00` is exact.
/// Query parameters that carry JSON (`filter`) are also refused when the JSON escapes U+0000.
pub fn reject_nul_in_uri(uri: &axum::http::Uri) -> Result<(), Error> {
    if uri.path().contains("%00") {
        return Err(Error::invalid_param(
            "Path parameters must not contain U+0000",
        ));
    }
    if let Some(query) = uri.query() {
        let nul = query.contains("%00")
            || query.split('&').any(|pair| {
                pair.split_once('=').is_some_and(|(k, v)| {
                    percent_decode(&k.replace('+', " ")) == "filter"
                        && json_has_nul(percent_decode(&v.replace('+', " ")).as_bytes())
                })
            });
        if nul {
            return Err(Error::invalid_param(
                "Query parameters must not contain U+0000",
            ));
        }
    }
    Ok(())
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::not_json(format!("Content not JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| Error::bad_json(format!("Invalid JSON: {e}")))
}

/// Query parameters; unknown ones (such as `_cacheBuster`) are ignored.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| {
                Error::invalid_param(format!("Invalid query parameters: {e}"))
            })
    }
}

/// Path parameters, percent-decoded.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| {
                Error::invalid_param(format!("Invalid path parameter: {e}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(holds_nul),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
            _ => false,
        }
    }

    #[test]
    fn json_nul_escapes() {
        for (text, nul) in [
            (r#"{"a":"\u0000"}"#, true),
            (r#"{"\u0000":1}"#, true),
            (r#"{"a":{"b":["x\u0000y"]}}"#, true),
            (r#"{"a":"\\\u0000"}"#, true),
            (r#"{"a":"\\u0000"}"#, false),
            (r#"{"a":"\\\\u0000"}"#, false),
            (r#"{"a":"\u00001"}"#, true),
            (r#"{"a":"\u0001"}"#, false),
            (r#"{"a":"u0000"}"#, false),
            (r#"{"a":"\""}"#, false),
            ("\\", false),
            ("\\u000", false),
            ("", false),
        ] {
            assert_eq!(json_has_nul(text.as_bytes()), nul, "{text}");
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
                assert_eq!(holds_nul(&v), nul, "{text}");
            }
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%C3%A9"), "%zz\u{e9}");
        assert_eq!(percent_decode("%a\u{e9}"), "%a\u{e9}");
        assert_eq!(percent_decode("%%00"), "%\0");
    }
}

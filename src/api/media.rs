//! The content repository over HTTP: uploads under `/_matrix/media/{v3,r0,v1}`, authenticated
//! downloads under `/_matrix/client/v1/media`, and the deprecated unauthenticated downloads (frozen for
//! new media unless configured otherwise). Bodies stream both ways; every response carries headers
//! that stop an uploaded file from running script on the homeserver's origin.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;

use crate::api::auth::{GuestAllowed, Requester};
use crate::api::extract::{Path, Query};
use crate::service::media::thumbnail::{self, Method};
use crate::service::media::{self, Access, Download, UploadInfo};
use crate::{AppState, Error, Result};

/// Synapse's policy for served media: nothing in a served file may run or load anything.
pub const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// Read-ahead of a download: memory per download is this, whatever the file's size.
const READ_BUFFER: usize = 64 * 1024;

/// Types a browser only ever renders as what they say they are, so `inline` is safe: the spec's list.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

pub fn other_routes() -> Router<AppState> {
    // The global body limit is for JSON; uploads have their own (limits.max_upload), enforced while
    // streaming.
    let legacy = Router::new()
        .route("/upload", post(upload).layer(DefaultBodyLimit::disable()))
        .route(
            "/upload/{server_name}/{media_id}",
            put(upload_pending).layer(DefaultBodyLimit::disable()),
        )
        .route("/create", post(create))
        .route("/download/{server_name}/{media_id}", get(legacy_download))
        .route(
            "/download/{server_name}/{media_id}/{file_name}",
            get(legacy_download_named),
        )
        .route("/thumbnail/{server_name}/{media_id}", get(legacy_thumbnail))
        .route("/config", get(config))
        .route("/preview_url", get(preview_url));
    let authenticated = Router::new()
        .route("/download/{server_name}/{media_id}", get(download))
        .route(
            "/download/{server_name}/{media_id}/{file_name}",
            get(download_named),
        )
        .route(
            "/thumbnail/{server_name}/{media_id}",
            get(authenticated_thumbnail),
        )
        .route("/config", get(config))
        .route("/preview_url", get(preview_url));
    Router::new()
        .nest("/_matrix/media/v3", legacy.clone())
        .nest("/_matrix/media/r0", legacy.clone())
        .nest("/_matrix/media/v1", legacy)
        .nest("/_matrix/client/v1/media", authenticated)
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    response
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

fn upload_info(headers: &HeaderMap, filename: Option<String>) -> UploadInfo {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    UploadInfo {
        content_type,
        filename: filename.filter(|f| !f.is_empty()),
    }
}

/// A declared length over the limit is refused before reading anything.
fn check_declared_length(state: &AppState, headers: &HeaderMap) -> Result<()> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = state.config.limits.max_upload as u64;
    match declared {
        Some(length) if length > limit => Err(media::too_large(limit)),
        _ => Ok(()),
    }
}

async fn upload(
    State(state): State<AppState>,
    requester: Requester,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    check_declared_length(&state, &headers)?;
    let info = upload_info(&headers, query.filename);
    let content_uri = media::upload(&state, &requester, info, body.into_data_stream()).await?;
    Ok(axum::Json(json!({ "content_uri": content_uri })).into_response())
}

async fn upload_pending(
    State(state): State<AppState>,
    requester: Requester,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    check_declared_length(&state, &headers)?;
    let info = upload_info(&headers, query.filename);
    media::upload_pending(
        &state,
        &requester,
        &server_name,
        &media_id,
        info,
        body.into_data_stream(),
    )
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

async fn create(State(state): State<AppState>, requester: Requester) -> Result<Response> {
    let (content_uri, expires) = media::create(&state, &requester).await?;
    Ok(
        axum::Json(json!({ "content_uri": content_uri, "unused_expires_at": expires }))
            .into_response(),
    )
}

async fn config(State(state): State<AppState>, _requester: Requester) -> Response {
    axum::Json(json!({ "m.upload.size": state.config.limits.max_upload })).into_response()
}

#[derive(Deserialize)]
struct DownloadQuery {
    timeout_ms: Option<u64>,
}

async fn download(
    State(state): State<AppState>,
    _requester: GuestAllowed,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    let file = media::download(
        &state,
        &server_name,
        &media_id,
        query.timeout_ms,
        Access::Authenticated,
    )
    .await?;
    Ok(file_response(file, None))
}

async fn download_named(
    State(state): State<AppState>,
    _requester: GuestAllowed,
    Path((server_name, media_id, file_name)): Path<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    let file = media::download(
        &state,
        &server_name,
        &media_id,
        query.timeout_ms,
        Access::Authenticated,
    )
    .await?;
    Ok(file_response(file, Some(file_name)))
}

async fn legacy_download(
    State(state): State<AppState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    let file = media::download(
        &state,
        &server_name,
        &media_id,
        query.timeout_ms,
        Access::Legacy,
    )
    .await?;
    Ok(file_response(file, None))
}

async fn legacy_download_named(
    State(state): State<AppState>,
    Path((server_name, media_id, file_name)): Path<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    let file = media::download(
        &state,
        &server_name,
        &media_id,
        query.timeout_ms,
        Access::Legacy,
    )
    .await?;
    Ok(file_response(file, Some(file_name)))
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    width: u32,
    height: u32,
    method: Option<String>,
    animated: Option<bool>,
    timeout_ms: Option<u64>,
}

async fn authenticated_thumbnail(
    State(state): State<AppState>,
    _requester: GuestAllowed,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> Result<Response> {
    serve_thumbnail(
        &state,
        &server_name,
        &media_id,
        query,
        Access::Authenticated,
    )
    .await
}

async fn legacy_thumbnail(
    State(state): State<AppState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> Result<Response> {
    serve_thumbnail(&state, &server_name, &media_id, query, Access::Legacy).await
}

async fn serve_thumbnail(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    query: ThumbnailQuery,
    access: Access,
) -> Result<Response> {
    let method = match query.method.as_deref() {
        None => Method::Scale,
        Some(m) => Method::parse(m)
            .ok_or_else(|| Error::invalid_param("method must be \"crop\" or \"scale\""))?,
    };
    let size = (query.width, query.height, method);
    let animated = query.animated.unwrap_or(false);
    let file = thumbnail::thumbnail(
        state,
        server_name,
        media_id,
        size,
        animated,
        query.timeout_ms,
        access,
    )
    .await?;
    Ok(file_response(file, None))
}

#[derive(Deserialize)]
struct PreviewQuery {
    url: Option<String>,
}

async fn preview_url(
    State(state): State<AppState>,
    requester: std::result::Result<Requester, Error>,
    Query(query): Query<PreviewQuery>,
) -> Result<Response> {
    // Disabled, the endpoint does not exist, as with Synapse.
    if !state.config.media.url_preview.enabled {
        return Err(Error::unrecognized(
            "URL previews are disabled on this server",
        ));
    }
    let requester = requester?;
    let url = query
        .url
        .ok_or_else(|| Error::missing_param("Missing url parameter"))?;
    let og = media::preview::preview(&state, &requester, &url).await?;
    Ok(axum::Json::<Value>(og).into_response())
}

/// Streams a file from disk with its type, length and disposition.
fn file_response(file: Download, override_name: Option<String>) -> Response {
    let content_type = served_content_type(file.content_type.as_deref());
    let disposition = content_disposition(
        &content_type,
        override_name.as_deref().or(file.filename.as_deref()),
    );
    let body = Body::from_stream(ReaderStream::with_capacity(file.file, READ_BUFFER));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    // The body is a stream without a size hint; the explicit length lets clients show progress.
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    response
}

/// The stored type if it is a usable header value (UTF-8 text types get a charset, as Synapse does),
/// else `application/octet-stream`.
fn served_content_type(stored: Option<&str>) -> HeaderValue {
    let Some(stored) = stored else {
        return HeaderValue::from_static("application/octet-stream");
    };
    let essence = essence(stored);
    let value = if essence.starts_with("text/") && !stored.to_ascii_lowercase().contains("charset=")
    {
        format!("{stored}; charset=utf-8")
    } else {
        stored.to_owned()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `inline` only for the spec's safe types, `attachment` for everything else (HTML, SVG, XML, scripts…),
/// with the file name as an RFC 6266 token or, when it is anything more, an RFC 8187 `filename*`.
pub fn content_disposition(content_type: &HeaderValue, filename: Option<&str>) -> HeaderValue {
    let kind = match content_type.to_str() {
        Ok(t) if INLINE_TYPES.contains(&essence(t).as_str()) => "inline",
        _ => "attachment",
    };
    let value = match filename {
        None => kind.to_owned(),
        Some(name)
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) =>
        {
            format!("{kind}; filename={name}")
        }
        Some(name) => format!("{kind}; filename*=utf-8''{}", encode_attribute_value(name)),
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

/// RFC 8187 `value-chars`: `attr-char`s as they are, every other byte of the UTF-8 as `%XX`.
fn encode_attribute_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_types_are_attachments() {
        for t in [
            "text/html",
            "image/svg+xml",
            "application/javascript",
            "text/xml",
            "application/xhtml+xml",
        ] {
            let v = content_disposition(&HeaderValue::from_static(t), None);
            assert_eq!(v, "attachment", "{t}");
        }
        let v = content_disposition(&HeaderValue::from_static("IMAGE/PNG; x=y"), Some("cat.png"));
        assert_eq!(v, "inline; filename=cat.png");
    }

    #[test]
    fn filenames_are_escaped() {
        let v = content_disposition(
            &HeaderValue::from_static("application/pdf"),
            Some("résumé 1\".pdf"),
        );
        assert_eq!(
            v,
            "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%201%22.pdf"
        );
    }

    #[test]
    fn text_gets_a_charset() {
        assert_eq!(
            served_content_type(Some("text/plain")),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            served_content_type(Some("text/plain; charset=latin1")),
            "text/plain; charset=latin1"
        );
        assert_eq!(served_content_type(None), "application/octet-stream");
    }
}

//! The content repository (issue #8): uploads, downloads, asynchronous uploads, limits, thumbnails,
//! security headers and URL previews, through HTTP.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use image::{DynamicImage, ImageFormat, RgbaImage};
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// An app whose media store is a fresh temporary directory (kept alive by the returned guard).
async fn media_app(configure: impl FnOnce(&mut axon::Config)) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.media.path = Some(dir.path().to_path_buf());
    configure(&mut config);
    (spawn_app_with(config).await, dir)
}

struct Fetched {
    status: u16,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

async fn send(req: reqwest::RequestBuilder) -> Fetched {
    let resp = req.send().await.expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap().to_vec();
    Fetched {
        status,
        headers,
        bytes,
    }
}

async fn upload(user: &User, bytes: Vec<u8>, content_type: &str, filename: Option<&str>) -> String {
    let mut url = format!("{}/_matrix/media/v3/upload", user.app.base_url);
    if let Some(name) = filename {
        url = format!("{url}?filename={}", enc(name));
    }
    let req = user
        .app
        .http
        .post(url)
        .bearer_auth(&user.token)
        .header("content-type", content_type)
        .body(bytes);
    let r = send(req).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.bytes));
    let uri = r.json()["content_uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("mxc://test.local/"), "{uri}");
    uri
}

fn media_path(uri: &str) -> String {
    uri.strip_prefix("mxc://").unwrap().to_owned()
}

async fn download(user: &User, uri: &str) -> Fetched {
    let url = format!(
        "{}/_matrix/client/v1/media/download/{}",
        user.app.base_url,
        media_path(uri)
    );
    send(user.app.http.get(url).bearer_auth(&user.token)).await
}

async fn thumbnail(user: &User, uri: &str, query: &str) -> Fetched {
    let url = format!(
        "{}/_matrix/client/v1/media/thumbnail/{}?{query}",
        user.app.base_url,
        media_path(uri)
    );
    send(user.app.http.get(url).bearer_auth(&user.token)).await
}

/// Files in the content-addressed store.
fn stored_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                walk(&entry.path(), out);
            } else {
                out.push(entry.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join("sha256"), &mut out);
    out
}

fn assert_security_headers(r: &Fetched) {
    assert_eq!(
        r.header("content-security-policy"),
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"
    );
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(r.header("cross-origin-resource-policy"), "cross-origin");
}

#[tokio::test]
async fn upload_then_download_is_byte_identical() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let uri = upload(&alice, bytes.clone(), "application/pdf", Some("report.pdf")).await;
    let r = download(&alice, &uri).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes, bytes);
    assert_eq!(r.header("content-type"), "application/pdf");
    assert_eq!(r.header("content-length"), "5000");
    assert_eq!(
        r.header("content-disposition"),
        "attachment; filename=report.pdf"
    );
    assert_security_headers(&r);

    // Another user may download it too; the override name replaces the stored one.
    let bob = app.register("bob").await;
    let url = format!(
        "{}/_matrix/client/v1/media/download/{}/other.pdf",
        app.base_url,
        media_path(&uri)
    );
    let r = send(app.http.get(url).bearer_auth(&bob.token)).await;
    assert_eq!(r.bytes, bytes);
    assert_eq!(
        r.header("content-disposition"),
        "attachment; filename=other.pdf"
    );
}

/// Deterministic pseudo-random bytes, generated in chunks so the test never holds the whole file.
fn chunk(seed: u64, index: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn large_upload_streams_in_and_out() {
    let (app, dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: u64 = 80; // 20 MiB, far beyond any buffer on either side
    let mut expected = Sha256::new();
    for i in 0..CHUNKS {
        expected.update(chunk(42, i, CHUNK));
    }
    let expected = hex::encode(expected.finalize());
    let body =
        futures_util::stream::iter(0..CHUNKS).map(|i| Ok::<_, std::io::Error>(chunk(42, i, CHUNK)));
    let req = app
        .http
        .post(format!(
            "{}/_matrix/media/v3/upload?filename=big.bin",
            app.base_url
        ))
        .bearer_auth(&alice.token)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body));
    let r = send(req).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let uri = r.json()["content_uri"].as_str().unwrap().to_owned();

    // On disk under its own hash, complete.
    let files = stored_files(dir.path());
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file_name().unwrap().to_str().unwrap(), expected);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().len(),
        CHUNK as u64 * CHUNKS
    );

    let url = format!(
        "{}/_matrix/client/v1/media/download/{}",
        app.base_url,
        media_path(&uri)
    );
    let resp = app
        .http
        .get(url)
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        (CHUNK as u64 * CHUNKS).to_string().as_str()
    );
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        total += piece.len() as u64;
        hasher.update(&piece);
    }
    assert_eq!(total, CHUNK as u64 * CHUNKS);
    assert_eq!(hex::encode(hasher.finalize()), expected);
}

#[tokio::test]
async fn identical_uploads_are_stored_once() {
    let (app, dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let a = upload(&alice, b"same bytes".to_vec(), "text/plain", Some("a.txt")).await;
    let b = upload(&bob, b"same bytes".to_vec(), "text/plain", Some("b.txt")).await;
    assert_ne!(a, b);
    assert_eq!(stored_files(dir.path()).len(), 1);
    // Each keeps its own metadata.
    assert_eq!(
        download(&alice, &b).await.header("content-disposition"),
        "inline; filename=b.txt"
    );
    assert_eq!(
        download(&alice, &a).await.header("content-disposition"),
        "inline; filename=a.txt"
    );
    upload(&alice, b"other bytes".to_vec(), "text/plain", None).await;
    assert_eq!(stored_files(dir.path()).len(), 2);
}

#[tokio::test]
async fn asynchronous_create_then_upload() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let created = alice
        .post("/_matrix/media/v1/create", serde_json::json!({}))
        .await
        .ok();
    let uri = created["content_uri"].as_str().unwrap().to_owned();
    let expires = created["unused_expires_at"].as_i64().unwrap();
    assert!(expires > axon::store::now_ms() + 23 * 3600 * 1000);

    // Not uploaded yet: waiting briefly ends in 504.
    let url = format!(
        "{}/_matrix/client/v1/media/download/{}?timeout_ms=100",
        app.base_url,
        media_path(&uri)
    );
    let r = send(app.http.get(&url).bearer_auth(&alice.token)).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["errcode"], "M_NOT_YET_UPLOADED");

    // A download waiting for it is answered when the upload lands.
    let waiting_url = format!(
        "{}/_matrix/client/v1/media/download/{}?timeout_ms=10000",
        app.base_url,
        media_path(&uri)
    );
    let waiter = tokio::spawn(send(
        app.http.get(waiting_url).bearer_auth(bob.token.clone()),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let put_url = format!(
        "{}/_matrix/media/v3/upload/{}?filename=later.txt",
        app.base_url,
        media_path(&uri)
    );
    // Someone else's ID: forbidden.
    let r = send(app.http.put(&put_url).bearer_auth(&bob.token).body("nope")).await;
    assert_eq!(
        (r.status, r.json()["errcode"].as_str().unwrap()),
        (403, "M_FORBIDDEN")
    );
    let r = send(
        app.http
            .put(&put_url)
            .bearer_auth(&alice.token)
            .header("content-type", "text/plain")
            .body("at last"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json(), serde_json::json!({}));

    let r = waiter.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes, b"at last");
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename=later.txt"
    );

    // Uploading twice is refused.
    let r = send(
        app.http
            .put(&put_url)
            .bearer_auth(&alice.token)
            .body("again"),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["errcode"].as_str().unwrap()),
        (409, "M_CANNOT_OVERWRITE_MEDIA")
    );
    // An ID never created is unknown.
    let r = send(
        app.http
            .put(format!(
                "{}/_matrix/media/v3/upload/test.local/nosuchid",
                app.base_url
            ))
            .bearer_auth(&alice.token)
            .body("x"),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["errcode"].as_str().unwrap()),
        (404, "M_NOT_FOUND")
    );
}

#[tokio::test]
async fn pending_uploads_per_user_are_capped() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    for _ in 0..axon::service::media::MAX_PENDING_UPLOADS {
        alice
            .post("/_matrix/media/v1/create", serde_json::json!({}))
            .await
            .ok();
    }
    alice
        .post("/_matrix/media/v1/create", serde_json::json!({}))
        .await
        .expect_err(429, "M_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn authenticated_endpoints_need_a_token() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let uri = upload(&alice, b"secret".to_vec(), "text/plain", None).await;
    let path = media_path(&uri);
    for endpoint in [
        format!("/_matrix/client/v1/media/download/{path}"),
        format!("/_matrix/client/v1/media/download/{path}/name.txt"),
        format!("/_matrix/client/v1/media/thumbnail/{path}?width=32&height=32"),
        "/_matrix/client/v1/media/config".to_owned(),
        "/_matrix/media/v3/config".to_owned(),
    ] {
        app.get(&endpoint).await.expect_err(401, "M_MISSING_TOKEN");
    }
    let r = app
        .raw(
            Method::POST,
            "/_matrix/media/v3/upload",
            None,
            b"x".to_vec(),
        )
        .await;
    r.expect_err(401, "M_MISSING_TOKEN");
    app.request(Method::POST, "/_matrix/media/v1/create", None, None)
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn config_reports_the_upload_limit() {
    let (app, _dir) = media_app(|c| c.limits.max_upload = 12_345_678).await;
    let alice = app.register("alice").await;
    assert_eq!(
        alice.get("/_matrix/client/v1/media/config").await.ok()["m.upload.size"],
        12_345_678
    );
    assert_eq!(
        alice.get("/_matrix/media/v3/config").await.ok()["m.upload.size"],
        12_345_678
    );
}

#[tokio::test]
async fn unknown_media_is_not_found() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    for path in [
        "test.local/doesnotexist",
        "other.server/abcdef",
        "test.local/bad..id",
    ] {
        alice
            .get(&format!("/_matrix/client/v1/media/download/{path}"))
            .await
            .expect_err(404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn unauthenticated_endpoints_are_frozen_for_new_media_by_default() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let uri = upload(&alice, b"hello".to_vec(), "text/plain", None).await;
    let path = media_path(&uri);
    app.get(&format!("/_matrix/media/v3/download/{path}"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    app.get(&format!(
        "/_matrix/media/v3/thumbnail/{path}?width=32&height=32"
    ))
    .await
    .expect_err(404, "M_NOT_FOUND");
    // Through the authenticated endpoint it is there.
    assert_eq!(download(&alice, &uri).await.bytes, b"hello");

    let (app, _dir) = media_app(|c| c.media.legacy_unauthenticated_downloads = true).await;
    let alice = app.register("alice").await;
    let uri = upload(&alice, b"hello".to_vec(), "text/plain", None).await;
    let r = send(app.http.get(format!(
        "{}/_matrix/media/v3/download/{}",
        app.base_url,
        media_path(&uri)
    )))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes, b"hello");
    assert_security_headers(&r);
}

/// Sends a raw HTTP/1.1 request head and some body bytes, never finishing the body, and returns the
/// status line and JSON body of the answer.
async fn raw_unfinished_upload(
    app: &TestApp,
    token: &str,
    extra_headers: &str,
    body: &[u8],
) -> (u16, Value) {
    let address = app.base_url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n{extra_headers}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may stop reading (and answer) before all of this is written.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    let read = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buffer[..n]),
            }
            if let Some(end) = find(&response, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if response.len() >= end + 4 + length {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no answer while the body was unfinished");
    let end = find(&response, b"\r\n\r\n").expect("a response head");
    let status = String::from_utf8_lossy(&response[9..12]).parse().unwrap();
    (
        status,
        serde_json::from_slice(&response[end + 4..]).unwrap_or(Value::Null),
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn upload_over_the_limit_is_refused_while_streaming() {
    let (app, dir) = media_app(|c| c.limits.max_upload = 1024 * 1024).await;
    let alice = app.register("alice").await;

    // A chunked body that passes the limit and never ends: the answer comes without the rest.
    let mut body = Vec::new();
    for _ in 0..20 {
        let piece = vec![b'x'; 64 * 1024];
        body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(&piece);
        body.extend_from_slice(b"\r\n");
    }
    let (status, json) =
        raw_unfinished_upload(&app, &alice.token, "Transfer-Encoding: chunked\r\n", &body).await;
    assert_eq!(
        (status, json["errcode"].as_str().unwrap_or("")),
        (413, "M_TOO_LARGE"),
        "{json}"
    );

    // A declared length over the limit is refused before any body byte.
    let (status, json) =
        raw_unfinished_upload(&app, &alice.token, "Content-Length: 2000000\r\n", b"").await;
    assert_eq!(
        (status, json["errcode"].as_str().unwrap_or("")),
        (413, "M_TOO_LARGE"),
        "{json}"
    );

    // Nothing of the refused uploads remains, not even a temporary file.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(stored_files(dir.path()).is_empty());
    let leftovers = std::fs::read_dir(dir.path().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0);

    // Exactly at the limit is fine; and the limit is the media one, not the 1 MiB JSON body limit.
    upload(
        &alice,
        vec![7u8; 1024 * 1024],
        "application/octet-stream",
        None,
    )
    .await;
}

#[tokio::test]
async fn uploads_are_not_bound_by_the_json_body_limit() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let bytes = vec![1u8; 3 * 1024 * 1024];
    let uri = upload(&alice, bytes.clone(), "application/octet-stream", None).await;
    assert_eq!(download(&alice, &uri).await.bytes, bytes);
}

fn test_image(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
    }))
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(image.to_rgb8())
            .write_to(&mut out, format)
            .unwrap(),
        _ => image.write_to(&mut out, format).unwrap(),
    }
    out.into_inner()
}

fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory(bytes).expect("the thumbnail decodes");
    (image.width(), image.height())
}

#[tokio::test]
async fn thumbnails_of_each_format_and_method() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let source = test_image(1000, 800);
    for (format, mime, thumb_mime) in [
        (ImageFormat::Png, "image/png", "image/png"),
        (ImageFormat::Jpeg, "image/jpeg", "image/jpeg"),
        (ImageFormat::Gif, "image/gif", "image/png"),
        (ImageFormat::WebP, "image/webp", "image/png"),
    ] {
        let uri = upload(&alice, encode(&source, format), mime, Some("picture")).await;
        let cases = [
            ("width=20&height=20&method=crop", (32, 32)),
            ("width=50&height=50&method=crop", (96, 96)),
            ("width=300&height=200&method=scale", (300, 240)),
            ("width=600&height=400&method=scale", (600, 480)),
            ("width=700&height=600&method=scale", (750, 600)),
        ];
        for (query, expected) in cases {
            let r = thumbnail(&alice, &uri, query).await;
            assert_eq!(r.status, 200, "{mime} {query}: {}", r.json());
            assert_eq!(r.header("content-type"), thumb_mime, "{mime} {query}");
            assert_eq!(dimensions(&r.bytes), expected, "{mime} {query}");
            assert!(
                r.header("content-disposition")
                    .starts_with("inline; filename=thumbnail."),
                "{mime}"
            );
            assert_security_headers(&r);
            // The second time it comes from the cache, identical.
            let again = thumbnail(&alice, &uri, query).await;
            assert_eq!(again.bytes, r.bytes);
        }
    }
    // Five sizes for each of the four sources, each generated once.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM media_thumbnails")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 20);
}

#[tokio::test]
async fn thumbnails_never_upscale() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let small = encode(&test_image(64, 48), ImageFormat::Png);
    let uri = upload(&alice, small.clone(), "image/png", None).await;
    // Smaller than asked: the original itself.
    let r = thumbnail(&alice, &uri, "width=320&height=240&method=scale").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes, small);
    // Crop of a small image: the right aspect, no larger than the source.
    let r = thumbnail(&alice, &uri, "width=96&height=96&method=crop").await;
    assert_eq!(dimensions(&r.bytes), (48, 48));
}

#[tokio::test]
async fn animated_thumbnails_only_when_asked() {
    use image::codecs::gif::{GifEncoder, Repeat};
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let mut gif = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut gif);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for shade in [0u8, 120, 240] {
            let frame = RgbaImage::from_pixel(400, 300, image::Rgba([shade, 0, 0, 255]));
            encoder.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    let uri = upload(&alice, gif, "image/gif", None).await;
    let r = thumbnail(&alice, &uri, "width=96&height=96&method=crop&animated=true").await;
    assert_eq!(r.header("content-type"), "image/gif");
    let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(&r.bytes)).unwrap();
    let frames = image::AnimationDecoder::into_frames(decoder)
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].buffer().dimensions(), (96, 96));

    let r = thumbnail(
        &alice,
        &uri,
        "width=96&height=96&method=crop&animated=false",
    )
    .await;
    assert_eq!(r.header("content-type"), "image/png");
    assert_eq!(dimensions(&r.bytes), (96, 96));
    // Without the parameter: not animated either.
    let r = thumbnail(&alice, &uri, "width=96&height=96&method=crop").await;
    assert_eq!(r.header("content-type"), "image/png");
}

#[tokio::test]
async fn thumbnail_of_a_non_image_is_refused() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let uri = upload(
        &alice,
        b"%PDF-1.4 not an image".to_vec(),
        "application/pdf",
        None,
    )
    .await;
    let r = thumbnail(&alice, &uri, "width=32&height=32&method=crop").await;
    assert_eq!(
        (r.status, r.json()["errcode"].as_str().unwrap()),
        (400, "M_UNKNOWN")
    );
    // An image type claimed for other bytes is no better.
    let uri = upload(
        &alice,
        b"<html>not a png</html>".to_vec(),
        "image/png",
        None,
    )
    .await;
    let r = thumbnail(&alice, &uri, "width=32&height=32&method=crop").await;
    assert_eq!(
        (r.status, r.json()["errcode"].as_str().unwrap()),
        (400, "M_UNKNOWN")
    );
    // Nonsense sizes and methods.
    let uri = upload(
        &alice,
        encode(&test_image(100, 100), ImageFormat::Png),
        "image/png",
        None,
    )
    .await;
    for query in [
        "width=-1&height=32",
        "width=0&height=32",
        "width=abc&height=32",
        "width=32&height=32&method=stretch",
    ] {
        let r = thumbnail(&alice, &uri, query).await;
        assert_eq!(r.status, 400, "{query}");
    }
}

#[tokio::test]
async fn html_and_svg_are_never_served_inline() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let html = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    let uri = upload(&alice, html.clone(), "text/html", Some("page.html")).await;
    let r = download(&alice, &uri).await;
    assert_eq!(r.bytes, html);
    assert_eq!(
        r.header("content-disposition"),
        "attachment; filename=page.html"
    );
    assert!(r.header("content-type").starts_with("text/html"));
    assert_security_headers(&r);

    let svg =
        br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#.to_vec();
    let uri = upload(&alice, svg.clone(), "image/svg+xml", None).await;
    let r = download(&alice, &uri).await;
    assert_eq!(r.bytes, svg);
    assert_eq!(r.header("content-disposition"), "attachment");
    assert_eq!(r.header("content-type"), "image/svg+xml");
    assert_security_headers(&r);
    // Nor through a thumbnail.
    assert_eq!(
        thumbnail(&alice, &uri, "width=32&height=32").await.status,
        400
    );
}

#[tokio::test]
async fn unicode_file_names_are_encoded() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let uri = upload(
        &alice,
        encode(&test_image(4, 4), ImageFormat::Png),
        "image/png",
        Some("Grüße 📷.png"),
    )
    .await;
    let r = download(&alice, &uri).await;
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename*=utf-8''Gr%C3%BC%C3%9Fe%20%F0%9F%93%B7.png"
    );
    // Quotes and semicolons cannot break out of the header either.
    let url = format!(
        "{}/_matrix/client/v1/media/download/{}/{}",
        app.base_url,
        media_path(&uri),
        enc("a\"; b=c.png")
    );
    let r = send(app.http.get(url).bearer_auth(&alice.token)).await;
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename*=utf-8''a%22%3B%20b%3Dc.png"
    );
}

#[tokio::test]
async fn compression_leaves_images_and_lengths_alone() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let png = encode(&test_image(300, 300), ImageFormat::Png);
    let uri = upload(&alice, png.clone(), "image/png", None).await;
    let url = format!(
        "{}/_matrix/client/v1/media/download/{}",
        app.base_url,
        media_path(&uri)
    );
    let r = send(
        app.http
            .get(url)
            .bearer_auth(&alice.token)
            .header("accept-encoding", "gzip"),
    )
    .await;
    assert_eq!(r.header("content-encoding"), "");
    assert_eq!(r.header("content-length"), png.len().to_string());
    assert_eq!(r.bytes, png);
}

/// A tiny web site on loopback: a page with Open Graph tags and the image it names.
async fn spawn_site() -> String {
    use axum::routing::get;
    let png = encode(&test_image(120, 60), ImageFormat::Png);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // Another loopback address, which an allowlist of 127.0.0.1 alone does not cover.
    let elsewhere = format!("http://127.0.0.2:{}/plain", address.port());
    let router = axum::Router::new()
        .route(
            "/page",
            get(|| async {
                (
                    [("content-type", "text/html; charset=utf-8")],
                    r#"<!doctype html><html><head><title>Fallback</title>
                    <meta property="og:title" content="Axon &amp; friends">
                    <meta property="og:description" content="A homeserver on PostgreSQL">
                    <meta property="og:image" content="/logo.png">
                    </head><body>hello</body></html>"#,
                )
            }),
        )
        .route(
            "/plain",
            get(|| async {
                (
                    [("content-type", "text/html")],
                    "<html><title>Just a title</title></html>",
                )
            }),
        )
        .route(
            "/hostile",
            get(|| async {
                (
                    [("content-type", "text/html; charset=utf-8")],
                    // An entity-looking run whose 12th byte is inside "é", and NULs both raw and
                    // as a character reference (jsonb cannot store U+0000).
                    "<html><title>T&#0;itle</title>\
                     <meta property=\"og:description\" content=\"&aaaaaaaaaa\u{e9};x\">\
                     <meta property=\"og:site_name\" content=\"a\u{0}b\">\
                     <meta property=\"og:x\u{0}y\" content=\"z\"></html>",
                )
            }),
        )
        .route(
            "/logo.png",
            get(move || async move { ([("content-type", "image/png")], png) }),
        )
        .route(
            "/redirect",
            get(|| async { (axum::http::StatusCode::FOUND, [("location", "/plain")]) }),
        )
        .route(
            "/redirect-elsewhere",
            get(move || async move { (axum::http::StatusCode::FOUND, [("location", elsewhere)]) }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn url_previews_are_off_by_default() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let site = spawn_site().await;
    let r = alice
        .get(&format!(
            "/_matrix/client/v1/media/preview_url?url={}",
            enc(&format!("{site}/page"))
        ))
        .await;
    r.expect_err(404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn url_preview_refuses_loopback_unless_allowlisted() {
    let (app, _dir) = media_app(|c| c.media.url_preview.enabled = true).await;
    let alice = app.register("alice").await;
    let site = spawn_site().await;
    let port = site.rsplit(':').next().unwrap();
    for url in [
        format!("{site}/page"),
        format!("http://localhost:{port}/page"),
        format!("http://[::1]:{port}/page"),
    ] {
        let r = alice
            .get(&format!(
                "/_matrix/client/v1/media/preview_url?url={}",
                enc(&url)
            ))
            .await;
        r.expect_err(403, "M_FORBIDDEN");
    }
    app.get("/_matrix/client/v1/media/preview_url?url=http://example.org/")
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn url_preview_reads_open_graph_from_an_allowlisted_site() {
    let (app, _dir) = media_app(|c| {
        c.media.url_preview.enabled = true;
        c.media.url_preview.ip_range_allowlist = vec!["127.0.0.0/8".into()];
    })
    .await;
    let alice = app.register("alice").await;
    let site = spawn_site().await;
    let og = alice
        .get(&format!(
            "/_matrix/client/v1/media/preview_url?url={}",
            enc(&format!("{site}/page"))
        ))
        .await
        .ok();
    assert_eq!(og["og:title"], "Axon & friends");
    assert_eq!(og["og:description"], "A homeserver on PostgreSQL");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["og:image:width"], 120);
    assert_eq!(og["og:image:height"], 60);
    let image_uri = og["og:image"].as_str().unwrap();
    let r = download(&alice, image_uri).await;
    assert_eq!(r.status, 200);
    assert_eq!(og["matrix:image:size"], r.bytes.len());
    assert_eq!(dimensions(&r.bytes), (120, 60));

    // <title> stands in for og:title; redirects are followed (and checked again).
    let og = alice
        .get(&format!(
            "/_matrix/media/v3/preview_url?url={}",
            enc(&format!("{site}/redirect"))
        ))
        .await
        .ok();
    assert_eq!(og["og:title"], "Just a title");
}

#[tokio::test]
async fn url_preview_of_a_hostile_page_is_answered_and_stored() {
    let (app, _dir) = media_app(|c| {
        c.media.url_preview.enabled = true;
        c.media.url_preview.ip_range_allowlist = vec!["127.0.0.0/8".into()];
    })
    .await;
    let alice = app.register("alice").await;
    let site = spawn_site().await;
    let path = format!(
        "/_matrix/client/v1/media/preview_url?url={}",
        enc(&format!("{site}/hostile"))
    );
    let og = alice.get(&path).await.ok();
    assert_eq!(og["og:title"], "Title");
    assert_eq!(og["og:description"], "&aaaaaaaaaa\u{e9};x");
    assert_eq!(og["og:site_name"], "ab");
    assert_eq!(og["og:xy"], "z");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM media_url_previews")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    // Served again from the stored preview.
    assert_eq!(alice.get(&path).await.ok(), og);
}

#[tokio::test]
async fn interrupted_upload_leaves_no_file_and_no_row() {
    let (app, dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    let address = app.base_url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Length: 4000000\r\n\r\n",
        alice.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![9u8; 1_000_000]).await.unwrap();
    // The server has started writing the temporary file; now the client goes away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stored_files(dir.path()).is_empty());
    let leftovers = std::fs::read_dir(dir.path().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        leftovers, 0,
        "a temporary file survived the interrupted upload"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM media")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn r0_upload_and_head_download() {
    let (app, _dir) = media_app(|_| {}).await;
    let alice = app.register("alice").await;
    // Clients such as Hydrogen still upload under r0.
    let req = app
        .http
        .post(format!("{}/_matrix/media/r0/upload", app.base_url))
        .bearer_auth(&alice.token)
        .header("content-type", "text/plain")
        .body("via r0");
    let r = send(req).await;
    assert_eq!(r.status, 200);
    let uri = r.json()["content_uri"].as_str().unwrap().to_owned();
    let url = format!(
        "{}/_matrix/client/v1/media/download/{}",
        app.base_url,
        media_path(&uri)
    );
    let r = send(app.http.head(url).bearer_auth(&alice.token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), "6");
    assert!(r.bytes.is_empty());
}

#[tokio::test]
async fn url_preview_checks_every_redirect() {
    let (app, _dir) = media_app(|c| {
        c.media.url_preview.enabled = true;
        c.media.url_preview.ip_range_allowlist = vec!["127.0.0.1".into()];
    })
    .await;
    let alice = app.register("alice").await;
    let site = spawn_site().await;
    let preview = |path: &str| {
        format!(
            "/_matrix/client/v1/media/preview_url?url={}",
            enc(&format!("{site}{path}"))
        )
    };
    assert_eq!(
        alice.get(&preview("/plain")).await.ok()["og:title"],
        "Just a title"
    );
    alice
        .get(&preview("/redirect-elsewhere"))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

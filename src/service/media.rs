//! The content repository. Uploads stream to a temporary file while being hashed and counted, are
//! fsynced and renamed to their SHA-256 (identical bytes are stored once), and only then get their
//! metadata row; downloads stream back from disk. Nothing here holds a whole file in memory.

pub mod preview;
pub mod thumbnail;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::service::auth::Requester;
use crate::service::rate_limit::UserAction;
use crate::store;
use crate::{AppState, Error, Result};

/// Created-but-not-uploaded IDs a user may hold at once (Synapse's default), so that POST /create
/// cannot be used to fill the table.
pub const MAX_PENDING_UPLOADS: i64 = 5;
/// How long a created ID waits for its upload: the spec's recommended 24 hours.
pub const UNUSED_EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;
/// `timeout_ms` when the client gives none (the spec's default), and our ceiling for it.
const DEFAULT_WAIT_MS: u64 = 20_000;
const MAX_WAIT_MS: u64 = 60_000;
/// Write buffer between the request body and the disk: big enough to keep syscalls few, small enough
/// that memory does not depend on the file.
const WRITE_BUFFER: usize = 256 * 1024;

/// What the client said about an upload.
#[derive(Debug, Default, Clone)]
pub struct UploadInfo {
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// How a download was asked for: the deprecated unauthenticated endpoints serve only media marked
/// for them at upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Authenticated,
    Legacy,
}

/// A file ready to stream out.
pub struct Download {
    pub file: tokio::fs::File,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// The content-addressed file store: `sha256/ab/cd/<hex>` under the media path, temporary files in `tmp/`.
pub struct Files {
    root: PathBuf,
}

/// A file that reached its place on disk.
pub struct StoredFile {
    pub sha256: String,
    pub size: u64,
}

/// Removes a temporary file unless it was renamed into place; runs also when the upload's future is
/// dropped because the client went away.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Files {
    pub fn new(state: &AppState) -> Self {
        Self {
            root: state.config.media_path(),
        }
    }

    pub fn path_of(&self, sha256: &str) -> Result<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::internal(format!(
                "not a SHA-256 file name: {sha256:?}"
            )));
        }
        Ok(self
            .root
            .join("sha256")
            .join(&sha256[0..2])
            .join(&sha256[2..4])
            .join(sha256))
    }

    /// Streams `body` to disk, refusing it with 413 M_TOO_LARGE as soon as it passes `limit` bytes.
    pub async fn store<S, E>(&self, body: S, limit: u64) -> Result<StoredFile>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let tmp_dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir)
            .await
            .map_err(|e| Error::internal(format!("creating {tmp_dir:?}: {e}")))?;
        let tmp_path = tmp_dir.join(crate::service::auth::random_string(24));
        let mut guard = TempFile(Some(tmp_path.clone()));
        let file = tokio::fs::File::create(&tmp_path)
            .await
            .map_err(|e| Error::internal(format!("creating {tmp_path:?}: {e}")))?;
        let mut writer = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| Error::unknown(format!("The upload was interrupted: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            hasher.update(&chunk);
            writer
                .write_all(&chunk)
                .await
                .map_err(|e| Error::internal(format!("writing {tmp_path:?}: {e}")))?;
        }
        writer.flush().await.map_err(Error::internal)?;
        let file = writer.into_inner();
        // Durable before it becomes visible: a crash leaves at worst a stray temporary file.
        file.sync_all().await.map_err(Error::internal)?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        let path = self.path_of(&sha256)?;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            // The same bytes are already stored: keep one copy.
            return Ok(StoredFile { sha256, size });
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::internal(format!("creating {dir:?}: {e}")))?;
        tokio::fs::rename(&tmp_path, &path)
            .await
            .map_err(|e| Error::internal(format!("renaming into {path:?}: {e}")))?;
        guard.0 = None;
        sync_dir(dir).await;
        Ok(StoredFile { sha256, size })
    }

    pub async fn open(&self, sha256: &str) -> Result<(tokio::fs::File, u64)> {
        let path = self.path_of(sha256)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::internal(format!("opening {path:?}: {e}")))?;
        let size = file.metadata().await.map_err(Error::internal)?.len();
        Ok((file, size))
    }
}

/// Makes a rename durable; failure only weakens crash safety, so it is logged, not fatal.
async fn sync_dir(dir: PathBuf) {
    let result = tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all()).await;
    if let Ok(Err(e)) = result {
        tracing::warn!(error = %e, "could not fsync a media directory");
    }
}

pub fn too_large(limit: u64) -> Error {
    Error::too_large(format!("Cannot upload files larger than {limit} bytes"))
}

pub fn mxc(state: &AppState, media_id: &str) -> String {
    format!("mxc://{}/{}", state.server_name, media_id)
}

fn new_media_id() -> String {
    crate::service::auth::random_string(24)
}

/// The spec's sanitising rule for the media-id segment: URL-safe base64 characters only.
pub fn valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn notifier_key(media_id: &str) -> String {
    format!("media:{media_id}")
}

fn upload_limit(state: &AppState) -> u64 {
    state.config.limits.max_upload as u64
}

/// POST /upload: stores the body and returns the new `mxc://` URI.
pub async fn upload<S, E>(
    state: &AppState,
    requester: &Requester,
    info: UploadInfo,
    body: S,
) -> Result<String>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: std::fmt::Display,
{
    state
        .rate_limiter
        .user(UserAction::MediaCreate, requester)?;
    let stored = Files::new(state).store(body, upload_limit(state)).await?;
    let media_id = new_media_id();
    let file = new_file(&stored, &info);
    store::media::insert_uploaded(
        &state.db,
        &media_id,
        requester.user_id.as_str(),
        &file,
        state.config.media.legacy_unauthenticated_downloads,
    )
    .await?;
    Ok(mxc(state, &media_id))
}

fn new_file<'a>(stored: &'a StoredFile, info: &'a UploadInfo) -> store::media::NewFile<'a> {
    store::media::NewFile {
        sha256: &stored.sha256,
        size: stored.size as i64,
        content_type: info.content_type.as_deref(),
        filename: info.filename.as_deref(),
    }
}

/// POST /create: reserves an ID for a later upload. Returns the URI and its expiry.
pub async fn create(state: &AppState, requester: &Requester) -> Result<(String, i64)> {
    state
        .rate_limiter
        .user(UserAction::MediaCreate, requester)?;
    let now = store::now_ms();
    let pending = store::media::count_pending(&state.db, requester.user_id.as_str(), now).await?;
    if pending >= MAX_PENDING_UPLOADS {
        return Err(Error::matrix(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too many pending media uploads; finish or wait for some to expire",
        ));
    }
    let media_id = new_media_id();
    let expires = now + UNUSED_EXPIRY_MS;
    store::media::insert_pending(
        &state.db,
        &media_id,
        requester.user_id.as_str(),
        expires,
        state.config.media.legacy_unauthenticated_downloads,
    )
    .await?;
    Ok((mxc(state, &media_id), expires))
}

/// PUT /upload/{serverName}/{mediaId}: the content of an ID made by `create`. Ownership and state are
/// checked before a byte of the body is read.
pub async fn upload_pending<S, E>(
    state: &AppState,
    requester: &Requester,
    server_name: &str,
    media_id: &str,
    info: UploadInfo,
    body: S,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let unknown = || Error::not_found("Unknown media ID");
    if server_name != state.server_name.as_str() || !valid_media_id(media_id) {
        return Err(unknown());
    }
    let row = store::media::find(&state.db, media_id)
        .await?
        .ok_or_else(unknown)?;
    if row.uploader != requester.user_id.as_str() {
        return Err(Error::forbidden(
            "This media ID was created by another user",
        ));
    }
    if row.sha256.is_some() {
        return Err(cannot_overwrite());
    }
    if row
        .unused_expires_ts
        .is_some_and(|ts| ts <= store::now_ms())
    {
        return Err(unknown());
    }
    let stored = Files::new(state).store(body, upload_limit(state)).await?;
    let keys = [notifier_key(media_id)];
    let mut tx = state.db.begin().await?;
    if !store::media::complete_pending(&mut *tx, media_id, &new_file(&stored, &info)).await? {
        // Another upload to the same ID finished first (or the ID expired meanwhile).
        return Err(cannot_overwrite());
    }
    store::stream::notify(
        &mut *tx,
        crate::service::notifier::CHANNEL,
        &state.notifier.payload(&keys),
    )
    .await?;
    tx.commit().await?;
    state.notifier.wake(keys.iter().map(String::as_str));
    Ok(())
}

fn cannot_overwrite() -> Error {
    Error::matrix(
        axum::http::StatusCode::CONFLICT,
        "M_CANNOT_OVERWRITE_MEDIA",
        "Media already uploaded",
    )
}

/// The metadata of an uploaded file, waiting up to `timeout_ms` for a pending asynchronous upload.
pub async fn find_uploaded(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    timeout_ms: Option<u64>,
    access: Access,
) -> Result<store::media::MediaRow> {
    let not_found = || Error::not_found("Media not found");
    // No federation yet: remote media cannot be fetched, so it is unknown here.
    if server_name != state.server_name.as_str() || !valid_media_id(media_id) {
        return Err(not_found());
    }
    // Quarantined media is gone as far as anyone downloading it can tell (Synapse: 404).
    let visible = |row: &store::media::MediaRow| {
        (access == Access::Authenticated || row.legacy_access) && !row.quarantined
    };
    let row = store::media::find(&state.db, media_id)
        .await?
        .filter(visible)
        .ok_or_else(not_found)?;
    if row.sha256.is_some() {
        return Ok(row);
    }
    if row
        .unused_expires_ts
        .is_some_and(|ts| ts <= store::now_ms())
    {
        return Err(not_found());
    }
    let wait = Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    let key = notifier_key(media_id);
    loop {
        // Subscribe before looking, so an upload finishing in between still wakes us.
        let subscription = state.notifier.subscribe([key.as_str()]);
        if let Some(row) = store::media::find(&state.db, media_id).await?
            && row.sha256.is_some()
        {
            return Ok(row);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Error::matrix(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "M_NOT_YET_UPLOADED",
                "Content has not yet been uploaded",
            ));
        }
        subscription.wait(deadline - now).await;
    }
}

/// GET /download: the file and what to say about it.
pub async fn download(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    timeout_ms: Option<u64>,
    access: Access,
) -> Result<Download> {
    let row = find_uploaded(state, server_name, media_id, timeout_ms, access).await?;
    let sha256 = row.sha256.as_deref().unwrap_or_default();
    let (file, size) = Files::new(state).open(sha256).await?;
    Ok(Download {
        file,
        size,
        content_type: row.content_type,
        filename: row.filename,
    })
}

/// Stores bytes already in memory (a fetched preview image) as new media of `uploader`.
pub async fn store_bytes(
    state: &AppState,
    uploader: &str,
    bytes: Bytes,
    info: UploadInfo,
) -> Result<(String, u64)> {
    let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
    let stored = Files::new(state).store(body, u64::MAX).await?;
    let media_id = new_media_id();
    store::media::insert_uploaded(
        &state.db,
        &media_id,
        uploader,
        &new_file(&stored, &info),
        false,
    )
    .await?;
    Ok((mxc(state, &media_id), stored.size))
}

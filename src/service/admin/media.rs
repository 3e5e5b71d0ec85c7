//! Media administration: a user's media, deleting media (by ID, by user, by age and size), and
//! quarantine, which makes downloads answer 404 as Synapse.

use super::{Page, descending, local_user};
use crate::service::media::Files;
use crate::store::media_admin;
pub use crate::store::media_admin::AdminMediaRow;
use crate::{AppState, Error, Result, store};

/// A user's media listing query.
#[derive(Debug, Default)]
pub struct MediaQuery {
    pub from: Option<i64>,
    pub limit: Option<i64>,
    pub order_by: Option<String>,
    pub dir: Option<String>,
}

/// A page of the user's media, the total and the next offset.
pub async fn of_user(
    state: &AppState,
    user_id: &str,
    q: MediaQuery,
) -> Result<(Vec<AdminMediaRow>, i64, Option<i64>)> {
    let user_id = local_user(state, user_id)?;
    if store::users::get_user(&state.db, &user_id).await?.is_none() {
        return Err(Error::not_found("Unknown user"));
    }
    let page = Page::new(q.from, q.limit, 100)?;
    // Newest first unless the client says otherwise, as Synapse.
    let (order, desc) = match (q.order_by.as_deref(), q.dir.as_deref()) {
        (None, None) => ("created_ts", true),
        (order_by, dir) => (
            media_admin::order_column(order_by.unwrap_or("created_ts"))
                .ok_or_else(|| Error::invalid_param("Unknown value for order_by"))?,
            descending(dir)?,
        ),
    };
    let rows =
        media_admin::of_uploader(&state.db, &user_id, order, desc, page.from, page.limit).await?;
    let total = media_admin::count_of_uploader(&state.db, &user_id).await?;
    let next = page.next(rows.len(), total);
    Ok((rows, total, next))
}

/// Deletes the user's media on this page of the listing (Synapse's DELETE …/users/{id}/media).
pub async fn delete_of_user(state: &AppState, user_id: &str, q: MediaQuery) -> Result<Vec<String>> {
    let (rows, _, _) = of_user(state, user_id, q).await?;
    let ids: Vec<String> = rows.into_iter().map(|r| r.media_id).collect();
    delete(state, &ids).await
}

/// The media ID of `mxc://server_name/media_id` if it is ours; 400 for remote media (none is
/// cached without federation).
fn local_media(state: &AppState, server_name: &str, media_id: &str) -> Result<String> {
    if server_name != state.server_name.as_str() {
        return Err(Error::invalid_param("Can only delete local media"));
    }
    Ok(media_id.to_owned())
}

/// Deletes one local media item; 404 when there is none.
pub async fn delete_one(
    state: &AppState,
    server_name: &str,
    media_id: &str,
) -> Result<Vec<String>> {
    let media_id = local_media(state, server_name, media_id)?;
    let deleted = delete(state, &[media_id]).await?;
    if deleted.is_empty() {
        return Err(Error::not_found("Unknown media"));
    }
    Ok(deleted)
}

/// How many media rows one cleanup pass deletes at a time.
const BATCH: i64 = 500;

/// Deletes local media uploaded before `before_ts` and larger than `size_gt` bytes; with
/// `keep_profiles`, media used as an avatar is kept. Returns the deleted media IDs.
pub async fn delete_old(
    state: &AppState,
    before_ts: i64,
    size_gt: i64,
    keep_profiles: bool,
) -> Result<Vec<String>> {
    if before_ts < 0 || size_gt < 0 {
        return Err(Error::invalid_param(
            "before_ts and size_gt must be non-negative integers",
        ));
    }
    let prefix = format!("mxc://{}/", state.server_name);
    let mut deleted = Vec::new();
    loop {
        let ids =
            media_admin::old_media(&state.db, before_ts, size_gt, keep_profiles, &prefix, BATCH)
                .await?;
        let done = ids.len() < BATCH as usize;
        deleted.extend(delete(state, &ids).await?);
        if done {
            return Ok(deleted);
        }
    }
}

/// Deletes media rows, then the files and thumbnails no other row names.
async fn delete(state: &AppState, media_ids: &[String]) -> Result<Vec<String>> {
    if media_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = media_admin::delete(&state.db, media_ids).await?;
    let files = Files::new(state);
    for sha256 in rows.iter().filter_map(|(_, sha)| sha.as_deref()) {
        let thumbnails = media_admin::delete_orphan_thumbnails(&state.db, sha256).await?;
        for file in std::iter::once(sha256).chain(thumbnails.iter().map(String::as_str)) {
            if !media_admin::file_in_use(&state.db, file).await? {
                remove_file(&files, file).await;
            }
        }
    }
    Ok(rows.into_iter().map(|(id, _)| id).collect())
}

/// Removes a stored file; one that is already gone is no error.
async fn remove_file(files: &Files, sha256: &str) {
    let Ok(path) = files.path_of(sha256) else {
        return;
    };
    if let Err(e) = tokio::fs::remove_file(&path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not delete a media file");
    }
}

/// Quarantines (with `by`, the admin) or releases (`None`) local media; 404 when unknown.
pub async fn quarantine(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    by: Option<&str>,
) -> Result<()> {
    if server_name != state.server_name.as_str() {
        return Err(Error::invalid_param("Can only quarantine local media"));
    }
    if !media_admin::set_quarantined(&state.db, media_id, by).await? {
        return Err(Error::not_found("Unknown media"));
    }
    Ok(())
}

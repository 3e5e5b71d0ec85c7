//! Server-side key backup: versions, and the encrypted session keys stored in them.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::store::key_backup::{self as backups, SessionRow, VersionRow};
use crate::{AppState, Error, Result};

/// The body of POST /room_keys/version and PUT /room_keys/version/{version}.
#[derive(Debug, Deserialize)]
pub struct VersionBody {
    pub algorithm: String,
    /// Any JSON for algorithms the spec does not define (stored as given, as Synapse does);
    /// checked by `check_auth_data` for the one it defines.
    pub auth_data: Value,
    /// PUT only: if present, must be the version of the path.
    pub version: Option<String>,
}

/// One backed-up session (KeyBackupData).
#[derive(Debug, Deserialize)]
pub struct SessionBody {
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: Map<String, Value>,
}

/// Room ID → session ID → session.
pub type RoomSessions = BTreeMap<String, BTreeMap<String, SessionBody>>;

/// The one backup algorithm the spec defines.
const CURVE25519_AES_SHA2: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

/// For `m.megolm_backup.v1.curve25519-aes-sha2`, `auth_data` is an object with a string
/// `public_key` and, if given, an object of `signatures`. Other algorithms' `auth_data` is theirs.
fn check_auth_data(body: &VersionBody) -> Result<()> {
    if body.algorithm != CURVE25519_AES_SHA2 {
        return Ok(());
    }
    let Some(auth_data) = body.auth_data.as_object() else {
        return Err(Error::bad_json("auth_data must be an object"));
    };
    if !auth_data.get("public_key").is_some_and(Value::is_string) {
        return Err(Error::bad_json("auth_data.public_key must be a string"));
    }
    if auth_data.get("signatures").is_some_and(|s| !s.is_object()) {
        return Err(Error::bad_json("auth_data.signatures must be an object"));
    }
    Ok(())
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

/// Version strings are the decimal numbers Axon hands out; anything else names no version.
fn parse_version(version: &str) -> Option<i64> {
    version
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0 && version == v.to_string())
}

fn version_json(row: VersionRow) -> Result<Value> {
    let auth_data: Value = serde_json::from_str(&row.auth_data).map_err(Error::internal)?;
    Ok(json!({
        "algorithm": row.algorithm,
        "auth_data": auth_data,
        "count": row.count,
        "etag": row.etag.to_string(),
        "version": row.version.to_string(),
    }))
}

pub async fn create_version(state: &AppState, user_id: &str, body: &VersionBody) -> Result<String> {
    check_auth_data(body)?;
    let auth_data = serde_json::to_string(&body.auth_data).map_err(Error::internal)?;
    let mut tx = state.db.begin().await?;
    backups::lock_user(&mut tx, user_id).await?;
    let version = backups::create_version(&mut tx, user_id, &body.algorithm, &auth_data).await?;
    tx.commit().await?;
    Ok(version.to_string())
}

/// The given version, or the current (newest) one: algorithm, auth_data, count, etag, version.
pub async fn get_version(state: &AppState, user_id: &str, version: Option<&str>) -> Result<Value> {
    let number = match version {
        Some(v) => Some(parse_version(v).ok_or_else(unknown_version)?),
        None => None,
    };
    match backups::get_version(&state.db, user_id, number).await? {
        Some(row) => version_json(row),
        None if version.is_none() => Err(Error::not_found("No current backup version")),
        None => Err(unknown_version()),
    }
}

/// Replaces the auth_data of a version; the algorithm cannot change.
pub async fn update_version(
    state: &AppState,
    user_id: &str,
    version: &str,
    body: &VersionBody,
) -> Result<()> {
    if body.version.as_deref().is_some_and(|v| v != version) {
        return Err(Error::invalid_param(
            "The version in the body does not match the path",
        ));
    }
    check_auth_data(body)?;
    let number = parse_version(version).ok_or_else(unknown_version)?;
    let mut tx = state.db.begin().await?;
    backups::lock_user(&mut tx, user_id).await?;
    let row = backups::get_version(&mut *tx, user_id, Some(number))
        .await?
        .ok_or_else(unknown_version)?;
    if row.algorithm != body.algorithm {
        return Err(Error::invalid_param(
            "The algorithm of a backup version cannot change",
        ));
    }
    let auth_data = serde_json::to_string(&body.auth_data).map_err(Error::internal)?;
    backups::update_auth_data(&mut *tx, user_id, number, &auth_data).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes a version and its keys. Deleting an already deleted version succeeds.
pub async fn delete_version(state: &AppState, user_id: &str, version: &str) -> Result<()> {
    let number = parse_version(version).ok_or_else(unknown_version)?;
    let mut tx = state.db.begin().await?;
    backups::lock_user(&mut tx, user_id).await?;
    if !backups::version_ever_existed(&mut *tx, user_id, number).await? {
        return Err(unknown_version());
    }
    backups::delete_version(&mut tx, user_id, number).await?;
    tx.commit().await?;
    Ok(())
}

/// The spec's rule for a session already in the backup: a verified key beats an unverified one, then
/// the lower first_message_index wins, then the lower forwarded_count. On a tie the stored key stays.
pub fn replaces(new: &SessionBody, old: &SessionRow) -> bool {
    if new.is_verified != old.is_verified {
        return new.is_verified;
    }
    if new.first_message_index != old.first_message_index {
        return new.first_message_index < old.first_message_index;
    }
    new.forwarded_count < old.forwarded_count
}

/// Stores sessions in the current version, keeping the better key where one is already stored.
/// Returns the version's (etag, count).
pub async fn put_keys(
    state: &AppState,
    user_id: &str,
    version: &str,
    rooms: &RoomSessions,
) -> Result<(String, i64)> {
    let mut tx = state.db.begin().await?;
    backups::lock_user(&mut tx, user_id).await?;
    let current = backups::get_version(&mut *tx, user_id, None)
        .await?
        .ok_or_else(unknown_version)?;
    if parse_version(version) != Some(current.version) {
        return Err(Error::matrix(
            StatusCode::FORBIDDEN,
            "M_WRONG_ROOM_KEYS_VERSION",
            "Wrong backup version",
        )
        .with_extra("current_version", json!(current.version.to_string())));
    }
    let (room_ids, session_ids): (Vec<String>, Vec<String>) = rooms
        .iter()
        .flat_map(|(room, sessions)| sessions.keys().map(move |s| (room.clone(), s.clone())))
        .unzip();
    let stored =
        backups::sessions_among(&mut tx, user_id, current.version, &room_ids, &session_ids).await?;

    let mut winners = Vec::new();
    for (room_id, sessions) in rooms {
        for (session_id, new) in sessions {
            let old = stored
                .iter()
                .find(|s| &s.room_id == room_id && &s.session_id == session_id);
            if old.is_none_or(|old| replaces(new, old)) {
                winners.push(SessionRow {
                    room_id: room_id.clone(),
                    session_id: session_id.clone(),
                    first_message_index: new.first_message_index,
                    forwarded_count: new.forwarded_count,
                    is_verified: new.is_verified,
                    session_data: serde_json::to_string(&new.session_data)
                        .map_err(Error::internal)?,
                });
            }
        }
    }
    if winners.is_empty() {
        return Ok((current.etag.to_string(), current.count));
    }
    backups::upsert_sessions(&mut tx, user_id, current.version, &winners).await?;
    let (etag, count) = backups::bump_etag(&mut tx, user_id, current.version).await?;
    tx.commit().await?;
    Ok((etag.to_string(), count))
}

/// The stored sessions of an existing version (current or older), optionally one room's or one.
pub async fn get_keys(
    state: &AppState,
    user_id: &str,
    version: &str,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<Vec<SessionRow>> {
    let number = parse_version(version).ok_or_else(unknown_version)?;
    backups::get_version(&state.db, user_id, Some(number))
        .await?
        .ok_or_else(unknown_version)?;
    Ok(backups::sessions(&state.db, user_id, number, room_id, session_id).await?)
}

/// Deletes sessions of an existing version; returns its (etag, count).
pub async fn delete_keys(
    state: &AppState,
    user_id: &str,
    version: &str,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<(String, i64)> {
    let number = parse_version(version).ok_or_else(unknown_version)?;
    let mut tx = state.db.begin().await?;
    backups::lock_user(&mut tx, user_id).await?;
    let row = backups::get_version(&mut *tx, user_id, Some(number))
        .await?
        .ok_or_else(unknown_version)?;
    if backups::delete_sessions(&mut tx, user_id, number, room_id, session_id).await? == 0 {
        return Ok((row.etag.to_string(), row.count));
    }
    let (etag, count) = backups::bump_etag(&mut tx, user_id, number).await?;
    tx.commit().await?;
    Ok((etag.to_string(), count))
}

/// Sessions as the API shows them: room ID → {"sessions": session ID → KeyBackupData}.
pub fn rooms_json(rows: Vec<SessionRow>) -> Result<Map<String, Value>> {
    let mut rooms = Map::new();
    for row in rows {
        let room = rooms
            .entry(row.room_id.clone())
            .or_insert_with(|| json!({"sessions": {}}));
        room["sessions"][&row.session_id] = session_json(&row)?;
    }
    Ok(rooms)
}

pub fn session_json(row: &SessionRow) -> Result<Value> {
    let session_data: Value = serde_json::from_str(&row.session_data).map_err(Error::internal)?;
    Ok(json!({
        "first_message_index": row.first_message_index,
        "forwarded_count": row.forwarded_count,
        "is_verified": row.is_verified,
        "session_data": session_data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(is_verified: bool, first_message_index: i64, forwarded_count: i64) -> SessionBody {
        SessionBody {
            first_message_index,
            forwarded_count,
            is_verified,
            session_data: Map::new(),
        }
    }

    fn old(is_verified: bool, first_message_index: i64, forwarded_count: i64) -> SessionRow {
        SessionRow {
            room_id: String::new(),
            session_id: String::new(),
            first_message_index,
            forwarded_count,
            is_verified,
            session_data: "{}".into(),
        }
    }

    #[test]
    fn better_session_wins() {
        assert!(
            replaces(&new(true, 9, 9), &old(false, 0, 0)),
            "verified beats unverified"
        );
        assert!(
            !replaces(&new(false, 0, 0), &old(true, 9, 9)),
            "unverified never beats verified"
        );
        assert!(
            replaces(&new(false, 1, 9), &old(false, 2, 0)),
            "lower first_message_index wins"
        );
        assert!(!replaces(&new(false, 3, 0), &old(false, 2, 9)));
        assert!(
            replaces(&new(false, 2, 0), &old(false, 2, 1)),
            "then lower forwarded_count"
        );
        assert!(
            !replaces(&new(false, 2, 1), &old(false, 2, 1)),
            "a tie keeps the stored key"
        );
    }

    #[test]
    fn versions_are_canonical_numbers() {
        assert_eq!(parse_version("3"), Some(3));
        assert_eq!(parse_version("03"), None);
        assert_eq!(parse_version("0"), None);
        assert_eq!(parse_version("x"), None);
    }
}

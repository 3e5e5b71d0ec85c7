//! Cross-signing: the user's master, self-signing and user-signing keys, and signatures made with them.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::{Announced, record_device_list_change, signed_part, wake};
use crate::service::uia::{self, AuthData};
use crate::store::keys::SignatureRow;
use crate::{AppState, Error, Result, store};

/// The body of POST /keys/device_signing/upload.
#[derive(Debug, Default, Deserialize)]
pub struct CrossSigningUpload {
    pub master_key: Option<Box<RawValue>>,
    pub self_signing_key: Option<Box<RawValue>>,
    pub user_signing_key: Option<Box<RawValue>>,
    pub auth: Option<AuthData>,
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// Whether `object` carries a valid ed25519 signature by `signer`'s key `key_id` ("ed25519:…").
pub fn signature_is_valid(object: &Value, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
    else {
        return false;
    };
    let (Some(signature), Some(public_key)) = (
        signature.as_str().and_then(decode_base64),
        decode_base64(public_key),
    ) else {
        return false;
    };
    let Some(map) = object.as_object() else {
        return false;
    };
    let Ok(canonical) = ruma::canonical_json::try_from_json_map(map.clone()) else {
        return false;
    };
    let Ok(text) = ruma::signatures::to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    ruma::signatures::verify_canonical_json_bytes(
        &ruma::SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        text.as_bytes(),
    )
    .is_ok()
}

/// A parsed cross-signing key from an upload.
struct NewKey {
    key_type: &'static str,
    raw: String,
    value: Value,
    public_key: String,
}

/// Checks the shape of a cross-signing key: the user's, with the right usage, and exactly one ed25519
/// key whose ID is its public key. Returns the public key.
fn parse_key(raw: &RawValue, user_id: &str, key_type: &'static str) -> Result<NewKey> {
    let value: Value = serde_json::from_str(raw.get())
        .map_err(|e| Error::bad_json(format!("Invalid {key_type} key: {e}")))?;
    if value.get("user_id").and_then(Value::as_str) != Some(user_id) {
        return Err(Error::invalid_param(format!(
            "The {key_type} key's user_id is not the requester"
        )));
    }
    let usage_ok = value
        .get("usage")
        .and_then(Value::as_array)
        .is_some_and(|u| u.iter().any(|x| x == key_type));
    if !usage_ok {
        return Err(Error::invalid_param(format!(
            "The {key_type} key's usage must include {key_type:?}"
        )));
    }
    let keys = value
        .get("keys")
        .and_then(Value::as_object)
        .filter(|k| k.len() == 1);
    let public_key = keys
        .and_then(|k| k.iter().next())
        .and_then(|(id, key)| Some((id.strip_prefix("ed25519:")?, key.as_str()?)))
        .filter(|(id, key)| id == key && decode_base64(key).is_some_and(|b| b.len() == 32))
        .map(|(_, key)| key.to_owned())
        .ok_or_else(|| {
            Error::invalid_param(format!(
                "The {key_type} key must hold one ed25519 key, as ed25519:<key>: <key>"
            ))
        })?;
    Ok(NewKey {
        key_type,
        raw: raw.get().to_owned(),
        value,
        public_key,
    })
}

/// Publishes the user's cross-signing keys. User-interactive authentication (password) is required
/// unless the user has no master key yet, or the upload only repeats the stored keys (a retry).
pub async fn upload_keys(
    state: &AppState,
    user_id: &str,
    operation: &uia::Operation,
    body: CrossSigningUpload,
) -> Result<()> {
    let mut new = Vec::new();
    for (raw, key_type) in [
        (&body.master_key, "master"),
        (&body.self_signing_key, "self_signing"),
        (&body.user_signing_key, "user_signing"),
    ] {
        if let Some(raw) = raw {
            new.push(parse_key(raw, user_id, key_type)?);
        }
    }
    let stored = store::keys::cross_signing_keys_of(&state.db, &[user_id.to_owned()]).await?;
    let stored_of = |key_type: &str| stored.iter().find(|r| r.key_type == key_type);
    let stored_value = |key_type: &str| {
        stored_of(key_type).and_then(|r| serde_json::from_str::<Value>(&r.key_json).ok())
    };

    let repeats_stored = new.iter().any(|k| k.key_type == "master")
        && new.iter().all(|k| {
            stored_value(k.key_type).is_some_and(|v| signed_part(&v) == signed_part(&k.value))
        });
    if stored_of("master").is_some() && !repeats_stored {
        let request = uia::Request {
            purpose: uia::Purpose::CrossSigning,
            operation,
            user_id: Some(user_id),
            flows: &[&["m.login.password"]],
            ip: None,
        };
        let passed = uia::check(state, request, body.auth.as_ref()).await?;
        uia::finish(state, &passed).await?;
    }
    let changed: Vec<&NewKey> = new
        .iter()
        .filter(|k| {
            stored_value(k.key_type).is_none_or(|v| signed_part(&v) != signed_part(&k.value))
        })
        .collect();
    if changed.is_empty() {
        return Ok(());
    }

    let master_key = new
        .iter()
        .find(|k| k.key_type == "master")
        .map(|k| k.public_key.clone())
        .or_else(|| stored_of("master").map(|r| r.public_key.clone()))
        .ok_or_else(|| Error::missing_param("No master key available"))?;
    for key in new.iter().filter(|k| k.key_type != "master") {
        if !signature_is_valid(
            &key.value,
            user_id,
            &format!("ed25519:{master_key}"),
            &master_key,
        ) {
            return Err(Error::matrix(
                axum::http::StatusCode::BAD_REQUEST,
                "M_INVALID_SIGNATURE",
                format!("The {} key is not signed by the master key", key.key_type),
            ));
        }
    }
    for key in &changed {
        if store::keys::device_exists(&state.db, user_id, &key.public_key).await? {
            return Err(Error::forbidden("Key ID in use by a device"));
        }
    }

    let mut tx = state.db.begin().await?;
    let position = store::stream::advance(&mut tx, 1).await?;
    for key in &changed {
        if let Some(old) = stored_of(key.key_type).filter(|old| old.public_key != key.public_key) {
            store::keys::delete_signatures_on(&mut tx, user_id, &old.public_key).await?;
        }
        store::keys::upsert_cross_signing_key(
            &mut *tx,
            user_id,
            key.key_type,
            &key.public_key,
            &key.raw,
            position,
        )
        .await?;
    }
    let announced = record_device_list_change(state, &mut tx, user_id).await?;
    tx.commit().await?;
    wake(state, &announced);
    Ok(())
}

fn failure(errcode: &str, error: &str) -> Value {
    json!({"errcode": errcode, "error": error})
}

/// Publishes signatures on keys: the requester's devices (by their self-signing key), the requester's
/// master key (by one of their devices), other users' master keys (by the requester's user-signing
/// key). Each signature is verified; a key that fails is reported under `failures` and the rest are
/// kept.
pub async fn upload_signatures(
    state: &AppState,
    requester: &str,
    body: &BTreeMap<String, BTreeMap<String, Value>>,
) -> Result<Value> {
    let mut users: Vec<String> = body.keys().cloned().collect();
    users.push(requester.to_owned());
    let cross_signing = store::keys::cross_signing_keys_of(&state.db, &users).await?;

    let mut rows: Vec<SignatureRow> = Vec::new();
    let mut failures = Map::new();
    for (target_user, keys) in body {
        for (key_id, object) in keys {
            let outcome = check_signed_key(
                state,
                requester,
                target_user,
                key_id,
                object,
                &cross_signing,
            )
            .await?;
            match outcome {
                Ok(mut new) => rows.append(&mut new),
                Err(error) => {
                    let by_key = failures
                        .entry(target_user.clone())
                        .or_insert_with(|| json!({}));
                    by_key[key_id] = error;
                }
            }
        }
    }
    if rows.is_empty() {
        return Ok(json!({"failures": failures}));
    }

    let targets: BTreeSet<String> = rows.iter().map(|r| r.target_user_id.clone()).collect();
    let mut tx = state.db.begin().await?;
    store::keys::insert_signatures(&mut tx, &rows).await?;
    let mut announced = Announced::default();
    for target in &targets {
        announced.merge(record_device_list_change(state, &mut tx, target).await?);
    }
    tx.commit().await?;
    wake(state, &announced);
    Ok(json!({"failures": failures}))
}

/// The new signatures `requester` makes on one key, or the failure to report for it.
async fn check_signed_key(
    state: &AppState,
    requester: &str,
    target_user: &str,
    key_id: &str,
    object: &Value,
    cross_signing: &[store::keys::CrossSigningKeyRow],
) -> Result<std::result::Result<Vec<SignatureRow>, Value>> {
    let key_of = |user: &str, key_type: &str| {
        cross_signing
            .iter()
            .find(|r| r.user_id == user && r.key_type == key_type)
    };
    // What the key must be, and which of the requester's keys may sign it: (stored JSON, signing keys).
    let (stored_json, signers): (String, Vec<(String, String)>) = if target_user == requester {
        if let Some(master) = key_of(requester, "master").filter(|m| m.public_key == key_id) {
            // The own master key, signed by one of the user's devices.
            let mut signers = Vec::new();
            let signature_ids = object
                .get("signatures")
                .and_then(|s| s.get(requester))
                .and_then(Value::as_object);
            for id in signature_ids.into_iter().flat_map(|m| m.keys()) {
                let Some(device_id) = id.strip_prefix("ed25519:") else {
                    continue;
                };
                if let Some((_, Some(ed25519))) =
                    store::keys::device_keys(&state.db, requester, device_id).await?
                {
                    signers.push((id.clone(), ed25519));
                }
            }
            (master.key_json.clone(), signers)
        } else {
            let Some((json, _)) = store::keys::device_keys(&state.db, requester, key_id).await?
            else {
                return Ok(Err(failure("M_NOT_FOUND", "Unknown device or key")));
            };
            let Some(self_signing) = key_of(requester, "self_signing") else {
                return Ok(Err(failure(
                    "M_MISSING_PARAM",
                    "No self-signing key uploaded",
                )));
            };
            (
                json,
                vec![(
                    format!("ed25519:{}", self_signing.public_key),
                    self_signing.public_key.clone(),
                )],
            )
        }
    } else {
        let Some(master) = key_of(target_user, "master").filter(|m| m.public_key == key_id) else {
            return Ok(Err(failure(
                "M_NOT_FOUND",
                "Only the master key of another user can be signed",
            )));
        };
        let Some(user_signing) = key_of(requester, "user_signing") else {
            return Ok(Err(failure(
                "M_MISSING_PARAM",
                "No user-signing key uploaded",
            )));
        };
        (
            master.key_json.clone(),
            vec![(
                format!("ed25519:{}", user_signing.public_key),
                user_signing.public_key.clone(),
            )],
        )
    };

    let stored: Value = serde_json::from_str(&stored_json).map_err(Error::internal)?;
    if signed_part(&stored) != signed_part(object) {
        return Ok(Err(failure(
            "M_INVALID_SIGNATURE",
            "The signed object does not match the stored key",
        )));
    }
    let mut rows = Vec::new();
    for (signer_key_id, public_key) in &signers {
        let Some(signature) = object
            .get("signatures")
            .and_then(|s| s.get(requester))
            .and_then(|s| s.get(signer_key_id))
            .and_then(Value::as_str)
        else {
            continue;
        };
        if !signature_is_valid(object, requester, signer_key_id, public_key) {
            return Ok(Err(failure("M_INVALID_SIGNATURE", "Invalid signature")));
        }
        rows.push(SignatureRow {
            target_user_id: target_user.to_owned(),
            target_key_id: key_id.to_owned(),
            signer_user_id: requester.to_owned(),
            signer_key_id: signer_key_id.clone(),
            signature: signature.to_owned(),
        });
    }
    if rows.is_empty() {
        return Ok(Err(failure(
            "M_INVALID_SIGNATURE",
            "No signature by an acceptable key",
        )));
    }
    Ok(Ok(rows))
}

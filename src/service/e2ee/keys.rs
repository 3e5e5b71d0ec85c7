//! Device keys, one-time keys and fallback keys: /keys/upload, /keys/query, /keys/claim.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use sqlx::PgConnection;

use super::{Announced, is_local, record_device_list_change, signed_part, wake};
use crate::service::notifier::CHANNEL;
use crate::{AppState, Error, Result, store};

/// The most users one /keys/query answers, and the most devices one /keys/claim claims for. Synapse
/// has no such cap (it batches its queries and lets each device have 10 queries in flight); here
/// they bound the work one request can cause. The rest are reported under this server's name in
/// `failures`, for the client to ask again.
pub const MAX_QUERY_USERS: usize = 1000;
pub const MAX_CLAIM_DEVICES: usize = 1000;

fn too_many(message: String) -> Value {
    json!({"status": 413, "errcode": "M_TOO_LARGE", "message": message})
}

/// The body of POST /keys/upload. Keys stay raw so they are stored exactly as the client signed them.
#[derive(Debug, Default, Deserialize)]
pub struct KeysUpload {
    pub device_keys: Option<Box<RawValue>>,
    #[serde(default)]
    pub one_time_keys: BTreeMap<String, Box<RawValue>>,
    #[serde(default)]
    pub fallback_keys: BTreeMap<String, Box<RawValue>>,
    /// The name fallback keys had before they were stable; matrix-js-sdk still sends it.
    #[serde(default, rename = "org.matrix.msc2732.fallback_keys")]
    pub unstable_fallback_keys: BTreeMap<String, Box<RawValue>>,
}

fn parse(raw: &RawValue) -> Result<Value> {
    serde_json::from_str(raw.get()).map_err(|e| Error::bad_json(format!("Invalid key: {e}")))
}

/// "signed_curve25519:AAAAHg" → ("signed_curve25519", "AAAAHg").
fn split_key_id(id: &str) -> Result<(&str, &str)> {
    match id.split_once(':') {
        Some((algorithm, key_id)) if !algorithm.is_empty() && !key_id.is_empty() => {
            Ok((algorithm, key_id))
        }
        _ => Err(Error::invalid_param(format!(
            "Key ID {id:?} is not of the form <algorithm>:<key_id>"
        ))),
    }
}

/// Stores the device's keys and answers the one-time key counts. Device keys must name this user and
/// device; a one-time key ID already in use with different content is refused.
pub async fn upload(
    state: &AppState,
    user_id: &str,
    device_id: &str,
    body: KeysUpload,
) -> Result<BTreeMap<String, i64>> {
    let mut tx = state.db.begin().await?;
    let mut device_list_changed = false;

    if let Some(raw) = &body.device_keys {
        let keys = parse(raw)?;
        let object = keys
            .as_object()
            .ok_or_else(|| Error::bad_json("device_keys must be an object"))?;
        if object.get("user_id").and_then(Value::as_str) != Some(user_id) {
            return Err(Error::invalid_param(
                "device_keys.user_id does not match the requester",
            ));
        }
        if object.get("device_id").and_then(Value::as_str) != Some(device_id) {
            return Err(Error::invalid_param(
                "device_keys.device_id does not match the requester's device",
            ));
        }
        if !object.get("keys").is_some_and(Value::is_object)
            || !object.get("algorithms").is_some_and(Value::is_array)
        {
            return Err(Error::bad_json("device_keys needs keys and algorithms"));
        }
        let ed25519 = object["keys"]
            .get(format!("ed25519:{device_id}"))
            .and_then(Value::as_str);
        let stored = store::keys::device_keys(&mut *tx, user_id, device_id).await?;
        let stored: Option<Value> = stored.and_then(|(json, _)| serde_json::from_str(&json).ok());
        if stored.as_ref() != Some(&keys) {
            if stored.is_some_and(|stored| signed_part(&stored) != signed_part(&keys)) {
                // Signatures made on the old keys do not sign the new ones.
                store::keys::delete_signatures_on(&mut tx, user_id, device_id).await?;
            }
            store::keys::upsert_device_keys(&mut *tx, user_id, device_id, raw.get(), ed25519)
                .await?;
            device_list_changed = true;
        }
    }

    if !body.one_time_keys.is_empty() {
        let (mut algorithms, mut key_ids, mut jsons) = (vec![], vec![], vec![]);
        for (id, raw) in &body.one_time_keys {
            let (algorithm, key_id) = split_key_id(id)?;
            algorithms.push(algorithm.to_owned());
            key_ids.push(key_id.to_owned());
            jsons.push(raw.get().to_owned());
        }
        let existing = store::keys::existing_one_time_keys(
            &mut *tx,
            user_id,
            device_id,
            &algorithms,
            &key_ids,
        )
        .await?;
        for (algorithm, key_id, json) in existing {
            let new = &body.one_time_keys[&format!("{algorithm}:{key_id}")];
            if serde_json::from_str::<Value>(&json).ok() != Some(parse(new)?) {
                return Err(Error::invalid_param(format!(
                    "One-time key {algorithm}:{key_id} already exists with other content"
                )));
            }
        }
        store::keys::insert_one_time_keys(
            &mut *tx,
            user_id,
            device_id,
            &algorithms,
            &key_ids,
            &jsons,
        )
        .await?;
    }

    let fallback = if body.fallback_keys.is_empty() {
        &body.unstable_fallback_keys
    } else {
        &body.fallback_keys
    };
    for (id, raw) in fallback {
        let (algorithm, key_id) = split_key_id(id)?;
        if !parse(raw)?.is_object() {
            return Err(Error::bad_json("A fallback key must be an object"));
        }
        store::keys::upsert_fallback_key(
            &mut *tx,
            user_id,
            device_id,
            algorithm,
            key_id,
            raw.get(),
        )
        .await?;
    }

    let mut announced = Announced::default();
    if !body.one_time_keys.is_empty() || !fallback.is_empty() {
        // Key counts change: a position of their own tells /sync its cached counts are stale.
        announced = key_counts_changed(state, &mut tx).await?;
    }
    if device_list_changed {
        announced.merge(record_device_list_change(state, &mut tx, user_id).await?);
    }
    tx.commit().await?;
    wake(state, &announced);
    let mut conn = state.db.acquire().await?;
    Ok(super::key_counts(&mut conn, user_id, device_id).await?.0)
}

/// Takes a stream position for a change of a device's key counts (which wakes nobody: the counts
/// come with the device's next sync) and tells the other processes the position is taken.
async fn key_counts_changed(state: &AppState, tx: &mut PgConnection) -> Result<Announced> {
    let position = store::stream::advance(&mut *tx, 1).await?;
    store::stream::notify(&mut *tx, CHANNEL, &state.notifier.payload(&[])).await?;
    Ok(Announced {
        position,
        keys: Default::default(),
    })
}

fn server_of(user_id: &str) -> &str {
    user_id
        .split_once(':')
        .map_or(user_id, |(_, server)| server)
}

/// Adds stored signatures to a key object, under signatures.<signer>.<key ID>.
fn merge_signatures<'a>(
    key: &mut Value,
    signatures: impl Iterator<Item = &'a store::keys::SignatureRow>,
) {
    for signature in signatures {
        let Some(object) = key.as_object_mut() else {
            return;
        };
        let all = object.entry("signatures").or_insert_with(|| json!({}));
        if !all.is_object() {
            *all = json!({});
        }
        let by_signer = all
            .as_object_mut()
            .unwrap()
            .entry(signature.signer_user_id.clone())
            .or_insert_with(|| json!({}));
        if let Some(by_signer) = by_signer.as_object_mut() {
            by_signer.insert(
                signature.signer_key_id.clone(),
                Value::String(signature.signature.clone()),
            );
        }
    }
}

/// A device's `unsigned` as Synapse serves it (`get_e2e_device_keys_for_cs_api`): always present,
/// replacing whatever the client uploaded, with `device_display_name` whenever the device has a
/// name, an empty one included.
fn unsigned_of(row: &store::keys::DeviceKeysRow) -> Value {
    match &row.display_name {
        Some(name) => json!({ "device_display_name": name }),
        None => json!({}),
    }
}

/// The keys of the requested local users' devices (all when the list is empty) and their cross-signing
/// keys, with the signatures `requester` may see. Every requested user is listed, with {} when they
/// have no devices (or do not exist): clients decide from this whether a room can be encrypted.
/// Other servers' users are listed with {} and their server under `failures` (no federation yet).
pub async fn query(
    state: &AppState,
    requester: &str,
    requested: &BTreeMap<String, Vec<String>>,
) -> Result<Value> {
    let mut failures = Map::new();
    // Bounded work: the first MAX_QUERY_USERS users are answered, the rest are a failure of this
    // server to be asked again.
    if requested.len() > MAX_QUERY_USERS {
        failures.insert(
            state.server_name.to_string(),
            too_many(format!(
                "At most {MAX_QUERY_USERS} users are answered per request; query the rest in another"
            )),
        );
    }
    let requested: BTreeMap<&String, HashSet<&str>> = requested
        .iter()
        .take(MAX_QUERY_USERS)
        .map(|(user, devices)| (user, devices.iter().map(String::as_str).collect()))
        .collect();
    let local: Vec<String> = requested
        .keys()
        .filter(|u| is_local(state, u))
        .map(|u| (*u).clone())
        .collect();
    let devices = store::keys::device_keys_of(&state.db, &local).await?;
    let cross_signing = store::keys::cross_signing_keys_of(&state.db, &local).await?;
    let signatures = store::keys::signatures_on(&state.db, &local, requester).await?;
    // Indexed once, so the work grows with the size of the answer, not its square.
    let mut signatures_by_key: HashMap<&str, HashMap<&str, Vec<&store::keys::SignatureRow>>> =
        HashMap::new();
    for s in &signatures {
        signatures_by_key
            .entry(s.target_user_id.as_str())
            .or_default()
            .entry(s.target_key_id.as_str())
            .or_default()
            .push(s);
    }
    let signatures_on = |user: &str, key_id: &str| -> Vec<&store::keys::SignatureRow> {
        signatures_by_key
            .get(user)
            .and_then(|by_key| by_key.get(key_id))
            .cloned()
            .unwrap_or_default()
    };
    let mut devices_by_user: HashMap<&str, Vec<&store::keys::DeviceKeysRow>> = HashMap::new();
    for row in &devices {
        devices_by_user
            .entry(row.user_id.as_str())
            .or_default()
            .push(row);
    }

    let mut device_keys = Map::new();
    for (user_id, wanted) in &requested {
        let mut by_device = Map::new();
        for row in devices_by_user.get(user_id.as_str()).into_iter().flatten() {
            if !wanted.is_empty() && !wanted.contains(row.device_id.as_str()) {
                continue;
            }
            let mut key: Value = serde_json::from_str(&row.key_json).map_err(Error::internal)?;
            merge_signatures(&mut key, signatures_on(user_id, &row.device_id).into_iter());
            if let Some(object) = key.as_object_mut() {
                object.insert("unsigned".into(), unsigned_of(row));
            }
            by_device.insert(row.device_id.clone(), key);
        }
        device_keys.insert((*user_id).clone(), Value::Object(by_device));
        if !is_local(state, user_id) {
            failures.insert(
                server_of(user_id).to_owned(),
                json!({"status": 503, "message": "This server does not federate"}),
            );
        }
    }

    let (mut master, mut self_signing, mut user_signing) = (Map::new(), Map::new(), Map::new());
    for row in &cross_signing {
        let mut key: Value = serde_json::from_str(&row.key_json).map_err(Error::internal)?;
        merge_signatures(
            &mut key,
            signatures_on(&row.user_id, &row.public_key).into_iter(),
        );
        match row.key_type.as_str() {
            "master" => master.insert(row.user_id.clone(), key),
            "self_signing" => self_signing.insert(row.user_id.clone(), key),
            // The user-signing key is private to its owner: it reveals whom they verified.
            _ if row.user_id == requester => user_signing.insert(row.user_id.clone(), key),
            _ => None,
        };
    }
    Ok(json!({
        "failures": failures,
        "device_keys": device_keys,
        "master_keys": master,
        "self_signing_keys": self_signing,
        "user_signing_keys": user_signing,
    }))
}

/// Hands out one one-time key per requested device, each key at most once even under concurrent
/// claims, and the device's fallback key (marked used) when its one-time keys of that algorithm have
/// run out. Devices with neither are left out.
pub async fn claim(
    state: &AppState,
    requested: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Value> {
    let mut claimed = Map::new();
    let mut failures = Map::new();
    let mut wanted = Vec::new();
    for (user_id, devices) in requested {
        if !is_local(state, user_id) {
            failures.insert(
                server_of(user_id).to_owned(),
                json!({"status": 503, "message": "This server does not federate"}),
            );
            continue;
        }
        wanted.extend(
            devices
                .iter()
                .map(|(device, algorithm)| (user_id, device, algorithm)),
        );
    }
    // Bounded work: the first MAX_CLAIM_DEVICES devices are answered, the rest are a failure of
    // this server to be asked again.
    if wanted.len() > MAX_CLAIM_DEVICES {
        wanted.truncate(MAX_CLAIM_DEVICES);
        failures.insert(
            state.server_name.to_string(),
            too_many(format!(
                "At most {MAX_CLAIM_DEVICES} devices are answered per request; claim the rest in another"
            )),
        );
    }
    // One transaction and one announcement for the whole request, not one per device.
    let mut tx = state.db.begin().await?;
    let mut any = false;
    for (user_id, device_id, algorithm) in wanted {
        let key =
            match store::keys::claim_one_time_key(&mut *tx, user_id, device_id, algorithm).await? {
                Some(key) => Some(key),
                None => {
                    store::keys::claim_fallback_key(&mut *tx, user_id, device_id, algorithm).await?
                }
            };
        if let Some((key_id, json)) = key {
            any = true;
            let value: Value = serde_json::from_str(&json).map_err(Error::internal)?;
            let by_device = claimed
                .entry(user_id.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("inserted as an object");
            by_device.insert(
                device_id.clone(),
                json!({ format!("{algorithm}:{key_id}"): value }),
            );
        }
    }
    let mut announced = Announced::default();
    if any {
        // The owners' key counts changed: see `upload`.
        announced = key_counts_changed(state, &mut tx).await?;
    }
    tx.commit().await?;
    wake(state, &announced);
    Ok(json!({"one_time_keys": claimed, "failures": failures}))
}

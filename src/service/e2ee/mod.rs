//! End-to-end encryption, server side: the server stores and relays keys and encrypted messages and
//! never sees plaintext. This module holds what /sync needs (to-device delivery, device-list changes,
//! key counts) and the device-list bookkeeping; `keys`, `cross_signing` and `backup` hold the endpoints'
//! rules.

pub mod backup;
pub mod cross_signing;
pub mod keys;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::service::notifier::CHANNEL;
use crate::{AppState, Error, Result, store};

/// The stream position of a sync token: "s{position}", possibly followed by "_...".
pub fn stream_position_of(token: &str) -> Option<i64> {
    crate::service::messages::parse_position(token)
}

/// The device's to-device messages in (since, upto] (at most `limit`), after deleting those at or
/// below `since`, which the client acknowledged by syncing with it.
pub async fn to_device_for_sync(
    state: &AppState,
    user_id: &str,
    device_id: &str,
    since: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<Value>> {
    let mut conn = state.db.acquire().await?;
    store::to_device::acknowledge(&mut *conn, user_id, device_id, since).await?;
    Ok(
        to_device_batch(&mut conn, user_id, device_id, since, upto, limit)
            .await?
            .0,
    )
}

/// To-device messages for this device with stream position in (since, upto], in order, at most
/// `limit` (those at or below `since` were acknowledged: see `store::to_device::acknowledge`), and
/// the stream position of the last one when the batch was cut by `limit` (`None` when everything up
/// to `upto` was delivered). The next token must then not be past the last one delivered, or the rest
/// would be acknowledged unseen; each message has its own stream position, so a token at that
/// position acknowledges exactly the messages delivered.
pub async fn to_device_batch(
    db: &mut PgConnection,
    user_id: &str,
    device_id: &str,
    since: i64,
    upto: i64,
    limit: i64,
) -> Result<(Vec<Value>, Option<i64>)> {
    let limit = limit.max(1);
    let rows = store::to_device::pending(db, user_id, device_id, since, upto, limit).await?;
    let cut = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.stream_position))
        .flatten();
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let content: Value = serde_json::from_str(&row.content).map_err(Error::internal)?;
        messages.push(json!({"sender": row.sender, "type": row.event_type, "content": content}));
    }
    Ok((messages, cut))
}

/// Users whose device lists changed in (since, upto] and that share a room with user_id (or are
/// user_id), and users that no longer share any room ("left").
///
/// "Changed" also lists users who joined a room of `user_id`'s, and the members of rooms `user_id`
/// joined, in the range: their devices are new to the client. "Left" lists users whose membership in a
/// room shared with `user_id` ended in the range (or `user_id` left a room they are in), and who share
/// no other room now. Limits: memberships are read as they are now, not as of `upto` (a membership that
/// changed after `upto` is reported by the next sync), and a user who left and rejoined in the range is
/// only "changed".
pub async fn device_list_changes(
    db: &mut PgConnection,
    user_id: &str,
    since: i64,
    upto: i64,
) -> Result<(Vec<String>, Vec<String>)> {
    let rows = store::keys::device_list_changes(db, user_id, since, upto).await?;
    let (mut changed, mut left) = (BTreeSet::new(), BTreeSet::new());
    for (user, is_left) in rows {
        if is_left {
            left.insert(user);
        } else {
            changed.insert(user);
        }
    }
    Ok((changed.into_iter().collect(), left.into_iter().collect()))
}

/// device_one_time_keys_count per algorithm and device_unused_fallback_key_types for this device.
/// `signed_curve25519` is always counted, 0 included: clients read its absence as "unknown".
pub async fn key_counts(
    db: &mut PgConnection,
    user_id: &str,
    device_id: &str,
) -> Result<(BTreeMap<String, i64>, Vec<String>)> {
    let rows = store::keys::key_counts(db, user_id, device_id).await?;
    let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
    let mut fallback = Vec::new();
    for (is_fallback, algorithm, count) in rows {
        if is_fallback {
            fallback.push(algorithm);
        } else {
            counts.insert(algorithm, count);
        }
    }
    fallback.sort();
    Ok((counts, fallback))
}

/// A new device (login, registration), or a device renamed (its display name is part of what
/// /keys/query serves): its user's device list changed.
pub async fn device_changed(state: &AppState, user_id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let announced = record_device_list_change(state, &mut tx, user_id).await?;
    tx.commit().await?;
    wake(state, &announced);
    Ok(())
}

/// A device was deleted or logged out: its keys, the signatures on them and its queued to-device
/// messages go, and its user's device list changed.
pub async fn device_removed(state: &AppState, user_id: &str, device_id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    store::keys::delete_device_crypto(&mut tx, user_id, device_id).await?;
    let announced = record_device_list_change(state, &mut tx, user_id).await?;
    tx.commit().await?;
    wake(state, &announced);
    Ok(())
}

/// What a committed change announces here: the stream position it reached and the keys to wake.
#[derive(Default)]
pub(crate) struct Announced {
    position: i64,
    keys: BTreeSet<String>,
}

impl Announced {
    pub(crate) fn merge(&mut self, other: Announced) {
        self.position = self.position.max(other.position);
        self.keys.extend(other.keys);
    }
}

/// Records a change of `user_id`'s device list at a new stream position and announces it to the other
/// processes at commit. Returns what to announce here (the users who see that list) after the commit.
pub(crate) async fn record_device_list_change(
    state: &AppState,
    tx: &mut PgConnection,
    user_id: &str,
) -> Result<Announced> {
    let keys = store::keys::device_list_watchers(&mut *tx, user_id).await?;
    let position = store::stream::advance(&mut *tx, 1).await?;
    store::keys::insert_device_list_change(&mut *tx, user_id, position).await?;
    store::stream::notify(&mut *tx, CHANNEL, &state.notifier.payload(&keys)).await?;
    Ok(Announced {
        position,
        keys: keys.into_iter().collect(),
    })
}

/// The object without what signing leaves out: two uploads of one key compare equal this way.
pub(crate) fn signed_part(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    object
}

/// Whether the user ID belongs to this server.
pub(crate) fn is_local(state: &AppState, user_id: &str) -> bool {
    user_id
        .strip_prefix('@')
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(_, server)| server == state.server_name.as_str())
}

/// After the commit: what it announced, announced here.
pub(crate) fn wake(state: &AppState, announced: &Announced) {
    state.notifier.committed(
        announced.position,
        announced.keys.iter().map(String::as_str),
    );
}

/// GET /keys/changes: the device-list changes between two sync tokens.
pub async fn changes_between(
    state: &AppState,
    user_id: &str,
    from: &str,
    to: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let since =
        stream_position_of(from).ok_or_else(|| Error::invalid_param("Invalid 'from' token"))?;
    let upto = stream_position_of(to).ok_or_else(|| Error::invalid_param("Invalid 'to' token"))?;
    if upto <= since {
        return Ok((vec![], vec![]));
    }
    let mut conn = state.db.acquire().await?;
    device_list_changes(&mut conn, user_id, since, upto).await
}

/// The body of PUT /sendToDevice: user ID → device ID (or "*") → content.
pub type ToDeviceMessages = BTreeMap<String, BTreeMap<String, Box<RawValue>>>;

/// Queues each message for its device(s), once per transaction ID. Messages to other servers' users
/// are dropped (there is no federation); unknown local users and devices are skipped, as the spec's
/// fire-and-forget semantics allow.
pub async fn send_to_device(
    state: &AppState,
    sender: &str,
    sender_device: &str,
    event_type: &str,
    txn_id: &str,
    messages: &ToDeviceMessages,
) -> Result<()> {
    let local_users: Vec<String> = messages
        .keys()
        .filter(|u| is_local(state, u))
        .cloned()
        .collect();
    let devices = store::to_device::devices_of(&state.db, &local_users).await?;
    let mut recipients: Vec<(String, String, String)> = Vec::new();
    for (user_id, by_device) in messages.iter().filter(|(u, _)| is_local(state, u)) {
        for (target, content) in by_device {
            let content = content.get().to_owned();
            for (_, device_id) in devices
                .iter()
                .filter(|(u, d)| u == user_id && (target == "*" || d == target))
            {
                recipients.push((user_id.clone(), device_id.clone(), content.clone()));
            }
        }
    }

    let mut tx = state.db.begin().await?;
    let scope = format!("sendToDevice/{event_type}");
    if !store::to_device::claim_txn(
        &mut tx,
        sender,
        sender_device,
        &scope,
        txn_id,
        store::now_ms(),
    )
    .await?
    {
        // A retry of a send that already happened: the spec asks for the same (empty) answer.
        return Ok(());
    }
    if recipients.is_empty() {
        tx.commit().await?;
        return Ok(());
    }
    let count = recipients.len() as i64;
    let last = store::stream::advance(&mut tx, count).await?;
    let mut keys = BTreeSet::new();
    let rows: Vec<store::to_device::NewMessage> = recipients
        .into_iter()
        .enumerate()
        .map(|(i, (user_id, device_id, content))| {
            keys.insert(user_id.clone());
            keys.insert(format!("device:{user_id}:{device_id}"));
            store::to_device::NewMessage {
                stream_position: last - count + 1 + i as i64,
                user_id,
                device_id,
                content,
            }
        })
        .collect();
    store::to_device::insert_messages(&mut tx, sender, event_type, &rows).await?;
    let keys: Vec<String> = keys.into_iter().collect();
    store::stream::notify(&mut *tx, CHANNEL, &state.notifier.payload(&keys)).await?;
    tx.commit().await?;
    wake(
        state,
        &Announced {
            position: last,
            keys: keys.into_iter().collect(),
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::stream_position_of;

    #[test]
    fn sync_tokens_carry_their_position() {
        assert_eq!(stream_position_of("s42"), Some(42));
        assert_eq!(stream_position_of("s42_7_x"), Some(42));
        assert_eq!(stream_position_of("s0"), Some(0));
        assert_eq!(stream_position_of("42"), None);
        assert_eq!(stream_position_of("s"), None);
        assert_eq!(stream_position_of("s-1"), None);
        assert_eq!(stream_position_of("sx_1"), None);
    }
}

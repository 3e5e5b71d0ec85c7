//! Presence writes, committed in batches. A change others see takes a stream position, and with it
//! the stream lock until its commit is durable: written one by one, a crowd coming online (every
//! client's initial sync marks its user online) queued on that lock, one commit each. Here the
//! writes waiting together share one transaction, one position claim and one commit; each caller
//! still waits until its own write is committed (its sync's snapshot must see it).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

use crate::service::recent::PresenceNews;
use crate::store::presence::{PresenceRow, PresenceUpdate, PresenceWrites};
use crate::{AppState, Error, Result, store};

/// Writes waiting at most; callers wait for room beyond it (presence is never refused).
const MAX_QUEUED: usize = 4096;
/// Writes in one transaction at most.
const MAX_BATCH: usize = 512;

/// The queue of presence writes and its task.
#[derive(Default)]
pub struct PresenceWriter {
    queue: OnceLock<mpsc::Sender<Pending>>,
}

/// One caller's write and where its outcome goes.
struct Pending {
    update: Update,
    reply: oneshot::Sender<Result<()>>,
}

/// A queued write: the row as it is to be stored.
type Update = PresenceRow;

impl PresenceWriter {
    pub fn start(&self, state: AppState) {
        let (tx, rx) = mpsc::channel(MAX_QUEUED);
        if self.queue.set(tx).is_ok() {
            tokio::spawn(run(state, rx));
        }
    }

    /// Stores a presence change and returns once it is committed; /sync reports it (and wakes)
    /// only when what others see changed.
    pub async fn write(&self, update: &PresenceUpdate<'_>) -> Result<()> {
        let queue = self
            .queue
            .get()
            .ok_or_else(|| Error::internal("presence writer not started"))?;
        let (reply, answer) = oneshot::channel();
        let update = PresenceRow {
            user_id: update.user_id.to_owned(),
            state: update.state.to_owned(),
            status_msg: update.status_msg.map(str::to_owned),
            last_active_ts: update.last_active_ts,
            last_sync_ts: update.last_sync_ts,
        };
        queue
            .send(Pending { update, reply })
            .await
            .map_err(|_| Error::internal("presence writer stopped"))?;
        answer
            .await
            .map_err(|_| Error::internal("presence writer dropped a write"))?
    }
}

async fn run(state: AppState, mut queue: mpsc::Receiver<Pending>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let pending = std::mem::take(&mut batch);
        let updates = latest_per_user(pending.iter().map(|p| &p.update));
        match commit(&state, &updates).await {
            Ok(()) => answer_all(pending, |_| Ok(())),
            Err(e) if updates.len() > 1 && !matches!(e, Error::Unavailable { .. }) => {
                // One write may have failed the batch: each user's again on its own.
                tracing::warn!(error = %e, writes = updates.len(), "presence batch failed; retrying one by one");
                let mut outcomes = HashMap::new();
                for update in updates {
                    let outcome = commit(&state, std::slice::from_ref(&update)).await;
                    outcomes.insert(update.user_id, outcome);
                }
                answer_all(pending, |user| {
                    outcomes.get(user).cloned().unwrap_or(Ok(()))
                });
            }
            Err(e) => answer_all(pending, |_| Err(e.clone())),
        }
    }
}

fn answer_all(pending: Vec<Pending>, outcome: impl Fn(&str) -> Result<()>) {
    for p in pending {
        let _ = p.reply.send(outcome(&p.update.user_id));
    }
}

/// One write per user, the last queued (a user's earlier writes in the batch are superseded, as
/// they would have been a moment later), in user order.
fn latest_per_user<'a>(updates: impl IntoIterator<Item = &'a Update>) -> Vec<Update> {
    let mut latest: BTreeMap<&str, &Update> = BTreeMap::new();
    for update in updates {
        latest.insert(&update.user_id, update);
    }
    latest.into_values().cloned().collect()
}

/// Whether others see a difference between the stored presence and the update.
fn is_visible(current: Option<&PresenceRow>, update: &Update) -> bool {
    current.is_none_or(|row| {
        row.state != update.state || row.status_msg.as_deref() != update.status_msg.as_deref()
    })
}

/// Writes `updates` (one per user, in user order) in one transaction: the visible changes take
/// consecutive stream positions, are announced to the other processes, and wake this one's
/// syncs after the commit.
async fn commit(state: &AppState, updates: &[Update]) -> Result<()> {
    for update in updates {
        state.presence_touches.forget(&update.user_id);
    }
    let users: Vec<String> = updates.iter().map(|u| u.user_id.clone()).collect();
    let mut tx = state.db.begin().await?;
    let current: HashMap<String, PresenceRow> =
        store::presence::get_many_for_update(&mut tx, &users)
            .await?
            .into_iter()
            .map(|row| (row.user_id.clone(), row))
            .collect();
    let visible: Vec<&Update> = updates
        .iter()
        .filter(|u| is_visible(current.get(&u.user_id), u))
        .collect();
    let mut rooms_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut first = 0;
    if !visible.is_empty() {
        let changed: Vec<String> = visible.iter().map(|u| u.user_id.clone()).collect();
        for (user, room) in store::rooms::joined_rooms_of_users(&mut *tx, &changed).await? {
            rooms_of.entry(user).or_default().push(room);
        }
        let last = store::stream::advance(&mut tx, visible.len() as i64).await?;
        first = last - visible.len() as i64 + 1;
    }
    let positions: HashMap<&str, i64> = visible
        .iter()
        .zip(first..)
        .map(|(u, position)| (u.user_id.as_str(), position))
        .collect();
    let mut writes = PresenceWrites::default();
    for u in updates {
        writes.users.push(u.user_id.clone());
        writes.states.push(u.state.clone());
        writes.status_msgs.push(u.status_msg.clone());
        writes.last_active.push(u.last_active_ts);
        writes.last_sync.push(u.last_sync_ts);
        writes
            .positions
            .push(positions.get(u.user_id.as_str()).copied());
    }
    store::presence::upsert_many(&mut tx, &writes).await?;
    if visible.is_empty() {
        tx.commit().await?;
        return Ok(());
    }
    let changes: Vec<PresenceNews> = visible
        .into_iter()
        .map(|u| PresenceNews {
            rooms: rooms_of.remove(&u.user_id).unwrap_or_default(),
            row: u.clone(),
        })
        .collect();
    crate::service::presence::commit_and_wake(state, tx, first, changes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(user: &str, state: &str, msg: Option<&str>) -> Update {
        Update {
            user_id: user.into(),
            state: state.into(),
            status_msg: msg.map(str::to_owned),
            last_active_ts: 0,
            last_sync_ts: 0,
        }
    }

    #[test]
    fn a_batch_keeps_each_users_last_write_in_user_order() {
        let queued = [
            update("@b:x", "online", None),
            update("@a:x", "online", None),
            update("@b:x", "unavailable", Some("away")),
        ];
        let kept = latest_per_user(&queued);
        let kept: Vec<(&str, &str)> = kept
            .iter()
            .map(|u| (u.user_id.as_str(), u.state.as_str()))
            .collect();
        assert_eq!(kept, [("@a:x", "online"), ("@b:x", "unavailable")]);
    }

    #[test]
    fn only_a_new_state_or_status_is_visible() {
        let row = PresenceRow {
            user_id: "@a:x".into(),
            state: "online".into(),
            status_msg: Some("hi".into()),
            last_active_ts: 1,
            last_sync_ts: 1,
        };
        assert!(is_visible(None, &update("@a:x", "online", None)));
        assert!(!is_visible(
            Some(&row),
            &update("@a:x", "online", Some("hi"))
        ));
        assert!(is_visible(Some(&row), &update("@a:x", "online", None)));
        assert!(is_visible(
            Some(&row),
            &update("@a:x", "unavailable", Some("hi"))
        ));
    }
}

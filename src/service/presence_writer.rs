//! Presence writes, committed in batches. A change others see takes a stream position, and with it
//! the stream lock until its commit is durable: written one by one, a crowd coming online (every
//! client's initial sync marks its user online) queued on that lock, one commit each. Here the
//! writes waiting together share one transaction, one position claim and one commit; each caller
//! waits until its own write is committed (its sync's snapshot must see it), unless its answer
//! does not show presence (`PresenceWriter::queue`). A sync's write is decided here, against the
//! row as locked, so a sync reads nothing of its own for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

use crate::service::presence::{after_sync, touched_at};
use crate::service::recent::PresenceNews;
use crate::store::presence::{PresenceRow, PresenceWrites};
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
    write: Write,
    reply: oneshot::Sender<Result<()>>,
}

/// What a caller asks of the writer.
pub enum Write {
    /// A status set by the user (PUT /presence): the row as it is to be stored.
    Set(PresenceRow),
    /// A sync as `state` at `now` (see `presence::after_sync`), its bookkeeping written at most
    /// every `interval` ms.
    Sync {
        user_id: String,
        state: String,
        now: i64,
        interval: i64,
    },
}

impl Write {
    fn user_id(&self) -> &str {
        match self {
            Write::Set(row) => &row.user_id,
            Write::Sync { user_id, .. } => user_id,
        }
    }

    /// The row after this write, from the row before it (`None` when nothing is to be written).
    fn apply(&self, row: Option<&PresenceRow>) -> Option<PresenceRow> {
        match self {
            Write::Set(new) => Some(PresenceRow {
                last_sync_ts: new.last_sync_ts.max(row.map_or(0, |r| r.last_sync_ts)),
                ..new.clone()
            }),
            Write::Sync {
                user_id,
                state,
                now,
                interval,
            } => after_sync(row, user_id, state, *now, *interval),
        }
    }
}

impl PresenceWriter {
    pub fn start(&self, state: AppState) {
        let (tx, rx) = mpsc::channel(MAX_QUEUED);
        if self.queue.set(tx).is_ok() {
            tokio::spawn(run(state, rx));
        }
    }

    /// Makes the write and returns once it is committed; /sync reports it (and wakes) only when
    /// what others see changed.
    pub async fn submit(&self, write: Write) -> Result<()> {
        let answer = self.enqueue(write).await?;
        answer
            .await
            .map_err(|_| Error::internal("presence writer dropped a write"))?
    }

    /// Queues the write (waiting only for room in the queue) and returns before its commit, for
    /// a caller whose answer does not show it; a failure is logged by the writer.
    pub async fn queue(&self, write: Write) -> Result<()> {
        self.enqueue(write).await.map(drop)
    }

    async fn enqueue(&self, write: Write) -> Result<oneshot::Receiver<Result<()>>> {
        let queue = self
            .queue
            .get()
            .ok_or_else(|| Error::internal("presence writer not started"))?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(Pending { write, reply })
            .await
            .map_err(|_| Error::internal("presence writer stopped"))?;
        Ok(answer)
    }
}

async fn run(state: AppState, mut queue: mpsc::Receiver<Pending>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let pending = std::mem::take(&mut batch);
        let outcomes = write_batch(&state, &pending).await;
        for p in pending {
            let outcome = match &outcomes {
                Ok(()) => Ok(()),
                Err(each) => each.get(p.write.user_id()).cloned().unwrap_or(Ok(())),
            };
            if let Err(Err(e)) = p.reply.send(outcome) {
                // Queued without waiting (see `queue`): nobody else hears of it.
                tracing::warn!(user = p.write.user_id(), "presence write failed: {e}");
            }
        }
    }
}

/// Commits a batch: `Ok` when every write is made, else each user's outcome.
async fn write_batch(
    state: &AppState,
    pending: &[Pending],
) -> std::result::Result<(), HashMap<String, Result<()>>> {
    let by_user = per_user(pending.iter().map(|p| &p.write));
    let e = match commit(state, &by_user).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if by_user.len() == 1 || matches!(e, Error::Unavailable { .. }) {
        return Err(by_user
            .keys()
            .map(|u| (u.to_string(), Err(e.clone())))
            .collect());
    }
    // One write may have failed the batch: each user's again on its own.
    tracing::warn!(error = %e, users = by_user.len(), "presence batch failed; retrying one by one");
    let mut outcomes = HashMap::new();
    for (user, writes) in by_user {
        let alone = BTreeMap::from([(user, writes)]);
        outcomes.insert(user.to_owned(), commit(state, &alone).await);
    }
    Err(outcomes)
}

/// Each user's writes in the order they were queued, the users in order (the order their rows
/// are locked in).
fn per_user<'a>(writes: impl IntoIterator<Item = &'a Write>) -> BTreeMap<&'a str, Vec<&'a Write>> {
    let mut by_user: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
    for write in writes {
        by_user.entry(write.user_id()).or_default().push(write);
    }
    by_user
}

/// The row a user's writes leave, applied in order to the stored one; `None` when none of them
/// writes anything.
fn outcome(current: Option<&PresenceRow>, writes: &[&Write]) -> Option<PresenceRow> {
    let mut row: Option<PresenceRow> = None;
    for write in writes {
        if let Some(next) = write.apply(row.as_ref().or(current)) {
            row = Some(next);
        }
    }
    row
}

/// Whether others see a difference between the stored presence and the update.
fn is_visible(current: Option<&PresenceRow>, update: &PresenceRow) -> bool {
    current.is_none_or(|row| {
        row.state != update.state || row.status_msg.as_deref() != update.status_msg.as_deref()
    })
}

/// Makes each user's writes in one transaction: the rows are locked in user order, the visible
/// changes take consecutive stream positions, are announced to the other processes, and wake this
/// one's syncs after the commit.
async fn commit(state: &AppState, by_user: &BTreeMap<&str, Vec<&Write>>) -> Result<()> {
    for user in by_user.keys() {
        state.presence_touches.forget(user);
    }
    let users: Vec<String> = by_user.keys().map(|u| u.to_string()).collect();
    let mut tx = state.db.begin().await?;
    let current: HashMap<String, PresenceRow> =
        store::presence::get_many_for_update(&mut tx, &users)
            .await?
            .into_iter()
            .map(|row| (row.user_id.clone(), row))
            .collect();
    let updates: Vec<PresenceRow> = by_user
        .iter()
        .filter_map(|(user, writes)| outcome(current.get(*user), writes))
        .collect();
    let visible: Vec<&PresenceRow> = updates
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
    for u in &updates {
        writes.users.push(u.user_id.clone());
        writes.states.push(u.state.clone());
        writes.status_msgs.push(u.status_msg.clone());
        writes.last_active.push(u.last_active_ts);
        writes.last_sync.push(u.last_sync_ts);
        writes
            .positions
            .push(positions.get(u.user_id.as_str()).copied());
    }
    if !updates.is_empty() {
        store::presence::upsert_many(&mut tx, &writes).await?;
    }
    if visible.is_empty() {
        tx.commit().await?;
    } else {
        let changes: Vec<PresenceNews> = visible
            .into_iter()
            .map(|u| PresenceNews {
                rooms: rooms_of.remove(&u.user_id).unwrap_or_default(),
                row: u.clone(),
            })
            .collect();
        crate::service::presence::commit_and_wake(state, tx, first, changes).await?;
    }
    remember_syncs(state, by_user, &current, &updates);
    Ok(())
}

/// A user whose last write was a sync needs no write from their syncs until the interval has
/// passed again (see `presence::SyncTouches`).
fn remember_syncs(
    state: &AppState,
    by_user: &BTreeMap<&str, Vec<&Write>>,
    current: &HashMap<String, PresenceRow>,
    updates: &[PresenceRow],
) {
    let written: HashMap<&str, &PresenceRow> =
        updates.iter().map(|u| (u.user_id.as_str(), u)).collect();
    for (user, writes) in by_user {
        let Some(Write::Sync { state: wanted, .. }) = writes.last() else {
            continue;
        };
        let row = written.get(user).copied().or_else(|| current.get(*user));
        if let Some(row) = row.filter(|row| &row.state == wanted) {
            state.presence_touches.record(user, wanted, touched_at(row));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(user: &str, state: &str, msg: Option<&str>) -> PresenceRow {
        PresenceRow {
            user_id: user.into(),
            state: state.into(),
            status_msg: msg.map(str::to_owned),
            last_active_ts: 0,
            last_sync_ts: 0,
        }
    }

    fn sync(user: &str, state: &str, now: i64) -> Write {
        Write::Sync {
            user_id: user.into(),
            state: state.into(),
            now,
            interval: 30_000,
        }
    }

    #[test]
    fn a_batch_applies_each_users_writes_in_order_users_in_order() {
        let queued = [
            Write::Set(update("@b:x", "online", None)),
            sync("@a:x", "online", 1_000),
            Write::Set(update("@b:x", "unavailable", Some("away"))),
        ];
        let by_user = per_user(&queued);
        assert_eq!(
            by_user.keys().copied().collect::<Vec<_>>(),
            ["@a:x", "@b:x"]
        );
        let b = outcome(None, &by_user["@b:x"]).unwrap();
        assert_eq!(
            (b.state.as_str(), b.status_msg.as_deref()),
            ("unavailable", Some("away"))
        );
        // A sync after a status keeps the status message and takes the sync's state.
        let writes = [
            Write::Set(update("@c:x", "unavailable", Some("lunch"))),
            sync("@c:x", "online", 5_000),
        ];
        let c = outcome(None, &writes.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(
            (c.state.as_str(), c.status_msg.as_deref()),
            ("online", Some("lunch"))
        );
        assert_eq!((c.last_active_ts, c.last_sync_ts), (5_000, 5_000));
    }

    #[test]
    fn a_sync_with_nothing_due_writes_nothing() {
        let stored = PresenceRow {
            last_active_ts: 10_000,
            last_sync_ts: 10_000,
            ..update("@a:x", "online", None)
        };
        assert!(outcome(Some(&stored), &[&sync("@a:x", "online", 20_000)]).is_none());
        let due = outcome(Some(&stored), &[&sync("@a:x", "online", 40_000)]).unwrap();
        assert_eq!((due.last_active_ts, due.last_sync_ts), (40_000, 40_000));
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

//! Presence of local users: set by PUT /presence and by /sync's set_presence, shown to users who
//! share a joined room. A sweeper turns idle users unavailable and users whose clients stopped
//! syncing offline.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::service::notifier;
use crate::service::presence_writer::Write;
use crate::service::recent::PresenceNews;
use crate::store::presence::PresenceRow;
use crate::{AppState, Error, Result, store};

pub const STATES: [&str; 3] = ["online", "offline", "unavailable"];
/// Last-sync bookkeeping is written at most this often per user (see `touch_interval`).
const SYNC_TOUCH_INTERVAL_MS: i64 = 30_000;
/// Within this of the last activity a user is "currently active".
const CURRENTLY_ACTIVE_MS: i64 = 60_000;

/// When this process last confirmed each user's presence for a sync (state, ms): within the touch
/// interval a sync has nothing to write, so it need not read either.
#[derive(Default)]
pub struct SyncTouches(Mutex<HashMap<String, (String, i64)>>);

impl SyncTouches {
    fn is_fresh(&self, user_id: &str, wanted: &str, now: i64, interval: i64) -> bool {
        let touches = self.0.lock().unwrap();
        touches
            .get(user_id)
            .is_some_and(|(state, at)| state == wanted && now - at < interval)
    }

    pub(crate) fn record(&self, user_id: &str, state: &str, at: i64) {
        let mut touches = self.0.lock().unwrap();
        if touches.len() > 100_000 {
            touches.clear();
        }
        touches.insert(user_id.to_owned(), (state.to_owned(), at));
    }

    pub(crate) fn forget(&self, user_id: &str) {
        self.0.lock().unwrap().remove(user_id);
    }
}

fn event_content(row: &PresenceRow, now: i64) -> Value {
    let mut content = json!({
        "presence": row.state,
        "last_active_ago": (now - row.last_active_ts).max(0),
        "currently_active": row.state == "online" && now - row.last_active_ts < CURRENTLY_ACTIVE_MS,
    });
    if let Some(msg) = &row.status_msg {
        content["status_msg"] = json!(msg);
    }
    content
}

/// PUT /presence/{userId}/status.
pub async fn set_status(
    state: &AppState,
    requester: &str,
    user_id: &str,
    presence: &str,
    status_msg: Option<&str>,
) -> Result<()> {
    if requester != user_id {
        return Err(Error::forbidden(
            "You cannot set the presence of another user",
        ));
    }
    if !STATES.contains(&presence) {
        return Err(Error::invalid_param(format!(
            "Unknown presence state {presence}"
        )));
    }
    if !state.config.presence.enabled {
        return Ok(());
    }
    let now = store::now_ms();
    state
        .presence_writer
        .submit(Write::Set(PresenceRow {
            user_id: user_id.to_owned(),
            state: presence.to_owned(),
            status_msg: status_msg.map(str::to_owned),
            last_active_ts: now,
            last_sync_ts: 0,
        }))
        .await
}

/// GET /presence/{userId}/status: for the user and those sharing a room with them.
pub async fn get_status(state: &AppState, requester: &str, user_id: &str) -> Result<Value> {
    if requester != user_id && !store::presence::share_a_room(&state.db, requester, user_id).await?
    {
        return Err(Error::forbidden(
            "You are not allowed to see their presence",
        ));
    }
    if !state.config.presence.enabled {
        return Ok(json!({ "presence": "offline" }));
    }
    match store::presence::get(&state.db, user_id).await? {
        Some(row) => Ok(event_content(&row, store::now_ms())),
        None => Ok(json!({ "presence": "offline" })),
    }
}

/// The user's own syncs wake at once; users sharing a room with the user wait under the room's
/// key and are woken with the next batch of deferred wake-ups: presence comes in crowds (everyone
/// coming online after a restart), and a poll then wakes once for all of it rather than once per
/// member of its rooms.
pub(crate) async fn commit_and_wake(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    first: i64,
    changes: Vec<PresenceNews>,
) -> Result<()> {
    let own: Vec<String> = changes.iter().map(|c| c.row.user_id.clone()).collect();
    let mut rooms: Vec<String> = changes.iter().flat_map(|c| c.rooms.clone()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    let payload = state.notifier.deferred_payload(&own, &rooms);
    store::stream::notify(&mut *tx, notifier::CHANNEL, &payload).await?;
    tx.commit().await?;
    let now = store::now_ms();
    let mut last = first;
    for (news, position) in changes.into_iter().zip(first..) {
        // Other servers sharing a room with a local user hear of it too.
        crate::service::federation::outbound_edus::presence(
            state,
            &news.row.user_id,
            event_content(&news.row, now),
        );
        state.recent.record_presence(position, news);
        last = position;
    }
    state.notifier.wake_soon(rooms.iter().map(String::as_str));
    state
        .notifier
        .committed(last, own.iter().map(String::as_str));
    Ok(())
}

pub async fn for_sync(
    state: &AppState,
    db: &mut PgConnection,
    user_id: &str,
    since: i64,
    upto: i64,
) -> Result<Vec<Value>> {
    if !state.config.presence.enabled {
        return Ok(vec![]);
    }
    let now = store::now_ms();
    let rows = store::presence::changed_for(db, user_id, since, upto).await?;
    Ok(rows.iter().map(|row| presence_event(row, now)).collect())
}

/// The `m.presence` event /sync reports for a user's presence.
pub fn presence_event(row: &PresenceRow, now: i64) -> Value {
    json!({"type": "m.presence", "sender": row.user_id, "content": event_content(row, now)})
}

/// The presence changes among `news` (oldest first) that `user_id`, joined to `rooms`, sees: their
/// own and those of users sharing a room with them, the latest per user, as /sync reports them.
pub fn visible_news<'a>(
    news: impl IntoIterator<Item = &'a PresenceNews>,
    user_id: &str,
    rooms: &[String],
) -> Vec<Value> {
    let rooms: std::collections::HashSet<&str> = rooms.iter().map(String::as_str).collect();
    let mut latest: std::collections::BTreeMap<&str, &PresenceRow> = Default::default();
    for news in news {
        if news.row.user_id == user_id || news.rooms.iter().any(|r| rooms.contains(r.as_str())) {
            latest.insert(&news.row.user_id, &news.row);
        }
    }
    let now = store::now_ms();
    latest
        .values()
        .map(|row| presence_event(row, now))
        .collect()
}

/// The current presence of new room mates for an incremental sync: `users` who came into the
/// user's rooms and the members of `rooms` the user joined (Synapse's
/// `_generate_sync_entry_for_presence` adds them whenever their presence last changed).
pub async fn of_new_room_mates(
    state: &AppState,
    db: &mut PgConnection,
    users: &[String],
    rooms: &[String],
) -> Result<Vec<Value>> {
    if !state.config.presence.enabled || (users.is_empty() && rooms.is_empty()) {
        return Ok(vec![]);
    }
    let now = store::now_ms();
    let rows = store::presence::of_users_and_members(db, users, rooms).await?;
    Ok(rows
        .iter()
        .map(|row| json!({"type": "m.presence", "sender": row.user_id, "content": event_content(row, now)}))
        .collect())
}

/// How often a syncing user's bookkeeping is written: well inside the windows it informs (a user is
/// "currently active" for a minute after activity; idle and offline after the configured times),
/// and rarely enough that a crowd's long polls, re-polling after every wake-up, do not become a
/// commit per user every few seconds.
fn touch_interval(config: &crate::config::Presence) -> i64 {
    let quarter = |ms: u64| i64::try_from(ms / 4).unwrap_or(i64::MAX);
    SYNC_TOUCH_INTERVAL_MS
        .min(CURRENTLY_ACTIVE_MS / 2)
        .min(quarter(config.idle_after_ms))
        .min(quarter(config.offline_after_ms))
        .max(1)
}

/// set_presence on /sync (online/offline/unavailable), and activity bookkeeping.
/// `None` means online, as the spec says; "offline" leaves the user's presence alone. The stored
/// row is read (under its lock) by the presence writer, so a sync takes no connection of its own
/// here: it may run beside the sync's snapshot.
pub async fn on_sync(
    state: &AppState,
    user_id: &str,
    set_presence: Option<&str>,
    until: Until,
) -> Result<()> {
    if !state.config.presence.enabled {
        return Ok(());
    }
    let wanted = set_presence.unwrap_or("online");
    if wanted == "offline" || !STATES.contains(&wanted) {
        return Ok(());
    }
    let now = store::now_ms();
    let interval = touch_interval(&state.config.presence);
    if state
        .presence_touches
        .is_fresh(user_id, wanted, now, interval)
    {
        return Ok(());
    }
    let write = Write::Sync {
        user_id: user_id.to_owned(),
        state: wanted.to_owned(),
        now,
        interval,
    };
    match until {
        Until::Committed => state.presence_writer.submit(write).await,
        Until::Queued => state.presence_writer.queue(write).await,
    }
}

/// How long a sync waits for its presence write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until it is committed: the sync's snapshot shows it, so it is not news to the next poll.
    Committed,
    /// Until it is queued: for a sync whose answer shows no presence (its long polls are not
    /// woken by presence either), which need not wait on presence commits.
    Queued,
}

/// What a sync as `wanted` at `now` makes of the user's stored presence (`current`), or `None`
/// when there is nothing to write: a new state is written at once; the same state's bookkeeping
/// (a client syncing as online counts as activity; others see no change) at most every
/// `interval` ms.
pub(crate) fn after_sync(
    current: Option<&PresenceRow>,
    user_id: &str,
    wanted: &str,
    now: i64,
    interval: i64,
) -> Option<PresenceRow> {
    let active = wanted == "online";
    match current {
        Some(row) if row.state == wanted => {
            let due = now - row.last_sync_ts >= interval
                || (active && now - row.last_active_ts >= interval);
            due.then(|| PresenceRow {
                last_active_ts: if active { now } else { row.last_active_ts },
                last_sync_ts: now,
                ..row.clone()
            })
        }
        current => Some(PresenceRow {
            user_id: user_id.to_owned(),
            state: wanted.to_owned(),
            status_msg: current.and_then(|row| row.status_msg.clone()),
            last_active_ts: now,
            last_sync_ts: now,
        }),
    }
}

/// Since when a user syncing as `row.state` has had nothing due (see `after_sync`): the
/// bookkeeping is fresh until the interval has passed from there.
pub(crate) fn touched_at(row: &PresenceRow) -> i64 {
    match row.state.as_str() {
        "online" => row.last_sync_ts.min(row.last_active_ts),
        _ => row.last_sync_ts,
    }
}

/// One sweep: online users idle for `idle_after_ms` become unavailable; users neither active nor
/// syncing for `offline_after_ms` become offline.
pub async fn sweep(state: &AppState) -> Result<()> {
    let now = store::now_ms();
    let idle_before = now - state.config.presence.idle_after_ms as i64;
    let offline_before = now - state.config.presence.offline_after_ms as i64;
    for (user_id, new_state) in
        store::presence::stale(&state.db, idle_before, offline_before).await?
    {
        let mut tx = state.db.begin().await?;
        // The row before the stream head: the order presence writes lock them in.
        store::presence::get_for_update(&mut tx, &user_id).await?;
        let rooms = store::rooms::joined_rooms(&mut *tx, &user_id).await?;
        let position = store::stream::advance(&mut tx, 1).await?;
        // Another process may have swept (or the user come back) meanwhile.
        if !store::presence::mark_stale(
            &mut tx,
            &user_id,
            &new_state,
            idle_before,
            offline_before,
            position,
        )
        .await?
        {
            tx.rollback().await?;
            continue;
        }
        let Some(row) = store::presence::get(&mut *tx, &user_id).await? else {
            tx.rollback().await?;
            continue;
        };
        commit_and_wake(state, tx, position, vec![PresenceNews { row, rooms }]).await?;
        state.presence_touches.forget(&user_id);
    }
    Ok(())
}

/// Starts the sweeper (when presence is enabled).
pub fn start_sweeper(state: AppState) {
    if !state.config.presence.enabled {
        return;
    }
    let shortest = state
        .config
        .presence
        .idle_after_ms
        .min(state.config.presence.offline_after_ms);
    let period = Duration::from_millis((shortest / 4).clamp(50, 15_000));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            if state.notifier.is_stopping() {
                break;
            }
            if let Err(e) = sweep(&state).await
                && !state.notifier.is_stopping()
            {
                tracing::warn!(error = %e, "presence sweep failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn news(user: &str, state: &str, rooms: &[&str]) -> PresenceNews {
        PresenceNews {
            row: PresenceRow {
                user_id: user.into(),
                state: state.into(),
                status_msg: None,
                last_active_ts: 0,
                last_sync_ts: 0,
            },
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn news_is_visible_to_the_user_and_room_mates_latest_per_user() {
        let run = [
            news("@b:x", "online", &["!shared:x"]),
            news("@c:x", "online", &["!other:x"]),
            news("@a:x", "unavailable", &[]),
            news("@b:x", "unavailable", &["!shared:x"]),
        ];
        let seen = visible_news(&run, "@a:x", &["!shared:x".to_owned()]);
        let states: Vec<(&str, &str)> = seen
            .iter()
            .map(|e| {
                (
                    e["sender"].as_str().unwrap(),
                    e["content"]["presence"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            states,
            vec![("@a:x", "unavailable"), ("@b:x", "unavailable")]
        );
    }

    #[test]
    fn a_sync_comes_online_keeping_the_status_and_idles_without_activity() {
        let stored = PresenceRow {
            user_id: "@a:x".into(),
            state: "offline".into(),
            status_msg: Some("away".into()),
            last_active_ts: 5,
            last_sync_ts: 5,
        };
        let online = after_sync(Some(&stored), "@a:x", "online", 100, 30).unwrap();
        assert_eq!(
            (online.state.as_str(), online.status_msg.as_deref()),
            ("online", Some("away"))
        );
        assert_eq!((online.last_active_ts, online.last_sync_ts), (100, 100));
        // Syncing as unavailable is no activity: only the sync time moves.
        let idle = PresenceRow {
            state: "unavailable".into(),
            ..stored
        };
        let later = after_sync(Some(&idle), "@a:x", "unavailable", 100, 30).unwrap();
        assert_eq!((later.last_active_ts, later.last_sync_ts), (5, 100));
        assert_eq!(touched_at(&later), 100);
        // A first sync ever: online now.
        let first = after_sync(None, "@b:x", "online", 7, 30).unwrap();
        assert_eq!(
            (first.user_id.as_str(), first.state.as_str()),
            ("@b:x", "online")
        );
    }

    #[test]
    fn bookkeeping_is_written_well_inside_the_windows_it_informs() {
        let presence = |idle, offline| crate::config::Presence {
            enabled: true,
            idle_after_ms: idle,
            offline_after_ms: offline,
        };
        // The defaults (five minutes idle, two offline): every 30 s, half of "currently active".
        assert_eq!(touch_interval(&presence(300_000, 120_000)), 30_000);
        // A short offline window is not missed.
        assert_eq!(touch_interval(&presence(300_000, 20_000)), 5_000);
        assert_eq!(touch_interval(&presence(1, 1)), 1);
    }
}

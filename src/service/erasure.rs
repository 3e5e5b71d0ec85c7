//! Erasure (spec: `POST /account/deactivate` with `erase: true`): users who join after the erasure
//! are served the erased user's events redacted, while those who saw them keep seeing them.
//!
//! As Synapse (synapse/visibility.py `_check_client_allowed_to_see_event`): an event the viewer may
//! see at all (history visibility is checked first, by the caller) whose sender is erased is served
//! pruned (the room version's redaction algorithm, `prune_event`) when the viewer was not joined to
//! the room at that event. Pruned events lose their `unsigned` previous content and their bundled
//! edit, as Synapse's redacted events do (handlers/relations.py `_fetch_edits`).
//!
//! The erased users are few and change rarely: each process keeps them all in memory, so a view
//! with no erased sender in it costs no query. Marking a user erased forgets the set here and, by
//! the notifier's cache message `erased`, in every other process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sqlx::{PgConnection, PgExecutor};

use crate::service::auth_rules::RoomVersion;
use crate::service::visibility::Visibility;
use crate::service::{notifier, room_versions};
use crate::store::events::EventRow;
use crate::{AppState, Error, Result, store};

/// The erased users, cached per process.
#[derive(Default)]
pub struct ErasedUsers {
    inner: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    /// Every erased user, once read.
    users: Option<Arc<HashSet<String>>>,
    /// Moves on every change: a read that raced one is not cached.
    generation: u64,
}

impl ErasedUsers {
    /// Drops the set: the next view reads it again.
    pub fn forget(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.users = None;
        inner.generation += 1;
    }

    /// Every erased user: from memory, or read through `db` once.
    pub(crate) async fn get(&self, db: impl PgExecutor<'_>) -> Result<Arc<HashSet<String>>> {
        let generation = {
            let inner = self.inner.lock().unwrap();
            if let Some(users) = &inner.users {
                return Ok(users.clone());
            }
            inner.generation
        };
        let users = Arc::new(
            store::users::erased_users(db)
                .await?
                .into_iter()
                .collect::<HashSet<_>>(),
        );
        let mut inner = self.inner.lock().unwrap();
        if inner.generation == generation {
            inner.users = Some(users.clone());
        }
        Ok(users)
    }
}

/// Marks `user_id` erased, here and in every other process.
pub async fn mark(state: &AppState, user_id: &str) -> Result<()> {
    store::users::mark_erased(&state.db, user_id).await?;
    state.erased.forget();
    notifier::broadcast_invalidation(state, "erased").await
}

/// What one viewer may see of one room's erased senders.
struct RoomView {
    visibility: Visibility,
    version: RoomVersion,
}

/// Prunes the events of erased senders for one viewer, reading what it needs (the viewer's
/// membership history and the room's version) only for rooms where it meets such an event.
pub struct Erasure {
    erased: Arc<HashSet<String>>,
    user_id: String,
    rooms: HashMap<String, RoomView>,
    /// The events served pruned.
    pruned: HashSet<String>,
}

impl Erasure {
    /// The erasure view of `user_id`; `conn` is read only when the erased set is not cached.
    pub async fn for_viewer(
        state: &AppState,
        conn: &mut PgConnection,
        user_id: &str,
    ) -> Result<Self> {
        Ok(Self {
            erased: state.erased.get(conn).await?,
            user_id: user_id.to_owned(),
            rooms: HashMap::new(),
            pruned: HashSet::new(),
        })
    }

    /// Replaces, in place, the rows the viewer must see pruned by their pruned form.
    pub async fn prune(&mut self, conn: &mut PgConnection, rows: &mut [EventRow]) -> Result<()> {
        if self.erased.is_empty() {
            return Ok(());
        }
        for row in rows.iter_mut() {
            if !self.erased.contains(&row.sender) || self.pruned.contains(&row.event_id) {
                continue;
            }
            if !self.rooms.contains_key(&row.room_id) {
                let view = self.load_room(&mut *conn, &row.room_id).await?;
                self.rooms.insert(row.room_id.clone(), view);
            }
            let view = &self.rooms[&row.room_id];
            if must_prune(&view.visibility, row, &self.user_id) {
                row.client_json =
                    room_versions::redact_client_json(view.version, &row.client_json)?;
                row.state_unsigned = None;
                self.pruned.insert(row.event_id.clone());
            }
        }
        Ok(())
    }

    async fn load_room(&self, conn: &mut PgConnection, room_id: &str) -> Result<RoomView> {
        let version = store::rooms::room_version(&mut *conn, room_id)
            .await?
            .and_then(|v| room_versions::parse(&v))
            .ok_or_else(|| Error::internal("an event of a room of unknown version"))?;
        let visibility = Visibility::load(conn, room_id, &self.user_id).await?;
        Ok(RoomView {
            visibility,
            version,
        })
    }

    /// Whether the event was served pruned (it then gets no bundled edit).
    pub fn is_pruned(&self, event_id: &str) -> bool {
        self.pruned.contains(event_id)
    }
}

/// Whether the viewer, not joined when the erased sender's event was sent, must see it pruned.
fn must_prune(visibility: &Visibility, row: &EventRow, user_id: &str) -> bool {
    let own = row.event_type == "m.room.member" && row.state_key.as_deref() == Some(user_id);
    !visibility.joined_at(row.stream_ordering, own)
}

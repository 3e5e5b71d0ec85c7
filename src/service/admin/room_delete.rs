//! Deleting a room (Synapse's DELETE /_synapse/admin/v2/rooms/{roomId}): a background job that
//! moves the local members out (optionally into a new room with a message from the admins),
//! removes the room's aliases and directory entry, optionally blocks the room, and optionally
//! purges it from the database. Its progress is kept in `admin_jobs` for the status endpoints.

use serde_json::{Map, Value, json};

use super::{acting_as, local_user};
use crate::service::auth::random_string;
use crate::service::events::EventDraft;
use crate::service::rooms::{self, CreateRoomRequest};
use crate::service::writer::Target;
use crate::store::admin_jobs::{self, JobRow};
use crate::{AppState, Error, Result, store};

/// The job kind in `admin_jobs`.
pub const KIND: &str = "delete_room";

/// What the admin asked for (the request body).
#[derive(Debug, Clone)]
pub struct DeleteRoom {
    /// The admin who asked (recorded as the blocker).
    pub admin: String,
    /// Move the members into a new room created by this local user.
    pub new_room_user_id: Option<String>,
    pub room_name: String,
    pub message: String,
    pub block: bool,
    pub purge: bool,
}

/// Synapse's defaults for the new room.
pub const DEFAULT_ROOM_NAME: &str = "Content Violation Notification";
pub const DEFAULT_MESSAGE: &str = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.";

/// What the shutdown did, as Synapse's `shutdown_room` object.
#[derive(Debug, Default)]
struct Shutdown {
    kicked_users: Vec<String>,
    failed_to_kick_users: Vec<String>,
    local_aliases: Vec<String>,
    new_room_id: Option<String>,
}

impl Shutdown {
    fn to_json(&self) -> Value {
        json!({
            "kicked_users": self.kicked_users,
            "failed_to_kick_users": self.failed_to_kick_users,
            "local_aliases": self.local_aliases,
            "new_room_id": self.new_room_id,
        })
    }
}

/// Starts the deletion and returns its `delete_id`. 404 for a room we do not know (unless it is
/// only to be blocked), 400 while another deletion of it runs.
pub async fn start(state: &AppState, room_id: &str, req: DeleteRoom) -> Result<String> {
    if !room_id.starts_with('!') || ruma::RoomId::parse(room_id).is_err() {
        return Err(Error::invalid_param(format!(
            "{room_id} is not a legal room ID"
        )));
    }
    if let Some(user) = &req.new_room_user_id {
        let user = local_user(state, user)?;
        if store::users::get_user(&state.db, &user)
            .await?
            .is_none_or(|u| u.deactivated)
        {
            return Err(Error::invalid_param(
                "User must be our own and exist: new_room_user_id",
            ));
        }
    }
    let exists = store::rooms::room_version(&state.db, room_id)
        .await?
        .is_some();
    if !exists && !req.block {
        return Err(Error::not_found("Unknown room"));
    }
    if admin_jobs::running(&state.db, room_id, KIND).await? {
        return Err(Error::unknown(format!(
            "History purge already in progress for {room_id}"
        )));
    }
    let delete_id = random_string(16);
    admin_jobs::insert(&state.db, &delete_id, KIND, room_id, "scheduled").await?;
    let state = state.clone();
    let job = delete_id.clone();
    let room_id = room_id.to_owned();
    tokio::spawn(async move {
        if let Err(e) = run(&state, &job, &room_id, &req).await {
            tracing::warn!(%room_id, error = %e, "room deletion failed");
            let error = e.to_string();
            if let Err(e) = admin_jobs::update(&state.db, &job, "failed", Some(&error), None).await
            {
                tracing::warn!(error = %e, "could not record the failed room deletion");
            }
        }
    });
    Ok(delete_id)
}

async fn run(state: &AppState, job: &str, room_id: &str, req: &DeleteRoom) -> Result<()> {
    admin_jobs::update(&state.db, job, "shutting_down", None, None).await?;
    if req.block {
        admin_jobs::block_room(&state.db, room_id, &req.admin).await?;
    }
    let mut shutdown = Shutdown::default();
    if store::rooms::room_version(&state.db, room_id)
        .await?
        .is_some()
    {
        shut_down(state, room_id, req, &mut shutdown).await?;
    }
    let result = shutdown.to_json();
    if req.purge {
        admin_jobs::update(&state.db, job, "purging", None, Some(&result)).await?;
        purge(state, room_id).await?;
    }
    admin_jobs::update(&state.db, job, "complete", None, Some(&result)).await?;
    Ok(())
}

/// Moves the local members out (into the new room, if asked), frees the aliases, unpublishes.
async fn shut_down(
    state: &AppState,
    room_id: &str,
    req: &DeleteRoom,
    shutdown: &mut Shutdown,
) -> Result<()> {
    if let Some(creator) = &req.new_room_user_id {
        shutdown.new_room_id = Some(new_room(state, creator, req).await?);
    }
    for row in store::rooms::members(&state.db, room_id).await? {
        if !matches!(row.membership.as_str(), "join" | "invite" | "knock") {
            continue;
        }
        match move_out(
            state,
            room_id,
            &row.user_id,
            shutdown.new_room_id.as_deref(),
        )
        .await
        {
            Ok(()) => shutdown.kicked_users.push(row.user_id),
            Err(e) => {
                tracing::warn!(%room_id, user = %row.user_id, error = %e, "could not remove member");
                shutdown.failed_to_kick_users.push(row.user_id);
            }
        }
    }
    for alias in store::rooms::aliases_of(&state.db, room_id).await? {
        store::rooms::delete_alias(&state.db, &alias).await?;
        shutdown.local_aliases.push(alias);
    }
    store::rooms::set_public(&state.db, room_id, false).await?;
    Ok(())
}

/// The room the members are moved to: public, read-only for them, with the admins' message.
async fn new_room(state: &AppState, creator: &str, req: &DeleteRoom) -> Result<String> {
    let requester = acting_as(creator)?;
    let mut power = Map::new();
    power.insert("users_default".into(), json!(-10));
    let create = CreateRoomRequest {
        name: Some(json!(req.room_name)),
        preset: Some("public_chat".into()),
        power_level_content_override: Some(power),
        ..Default::default()
    };
    let new_room_id = rooms::create_room(state, &requester, create).await?;
    let content = json!({"msgtype": "m.text", "body": req.message});
    let draft = EventDraft::new("m.room.message", None, creator, content);
    state
        .writer
        .submit(Target::Existing(new_room_id.clone()), vec![draft], None)
        .await?;
    Ok(new_room_id)
}

/// The member joins the new room (if any), then leaves (or declines) the deleted one.
async fn move_out(state: &AppState, room_id: &str, user_id: &str, to: Option<&str>) -> Result<()> {
    if let Some(new_room_id) = to {
        let requester = acting_as(user_id)?;
        rooms::join(state, &requester, new_room_id, Map::new()).await?;
    }
    let leave = EventDraft::new(
        "m.room.member",
        Some(user_id),
        user_id,
        json!({"membership": "leave"}),
    );
    state
        .writer
        .submit(Target::Existing(room_id.to_owned()), vec![leave], None)
        .await?;
    Ok(())
}

/// Deletes the room from the database and makes every process forget it.
async fn purge(state: &AppState, room_id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    store::room_admin::purge_room(&mut tx, room_id).await?;
    tx.commit().await?;
    state.rooms.clear();
    state.joined_rooms.clear();
    state.recent.clear();
    crate::service::notifier::broadcast_invalidation(state, "rooms").await
}

/// One deletion's status; 404 for an unknown ID.
pub async fn status(state: &AppState, delete_id: &str) -> Result<JobRow> {
    admin_jobs::get(&state.db, delete_id, KIND)
        .await?
        .ok_or_else(|| Error::not_found(format!("delete id '{delete_id}' not found")))
}

/// The room's deletions; 404 when there are none.
pub async fn statuses_of_room(state: &AppState, room_id: &str) -> Result<Vec<JobRow>> {
    let jobs = admin_jobs::of_room(&state.db, room_id, KIND).await?;
    if jobs.is_empty() {
        return Err(Error::not_found(format!(
            "No delete task for room_id '{room_id}' found"
        )));
    }
    Ok(jobs)
}

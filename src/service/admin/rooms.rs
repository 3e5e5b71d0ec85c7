//! Rooms: listing, details, members and state for the admin API.

use serde_json::value::RawValue;

use super::{Page, contains_pattern, descending};
pub use crate::store::room_admin::AdminRoomRow;
use crate::store::{self, room_admin};
use crate::{AppState, Error, Result};

/// The listing's query (GET /_synapse/admin/v1/rooms).
#[derive(Debug, Default)]
pub struct RoomQuery {
    pub from: Option<i64>,
    pub limit: Option<i64>,
    pub order_by: Option<String>,
    pub dir: Option<String>,
    pub search_term: Option<String>,
}

/// A page of rooms: the rooms, the offset asked for and how many match.
pub struct RoomPage {
    pub rooms: Vec<AdminRoomRow>,
    pub offset: i64,
    pub total: i64,
    pub next_batch: Option<i64>,
    pub prev_batch: Option<i64>,
}

pub async fn list(state: &AppState, q: RoomQuery) -> Result<RoomPage> {
    let page = Page::new(q.from, q.limit, 100)?;
    let (order, largest_first) = room_admin::order_column(q.order_by.as_deref().unwrap_or("name"))
        .ok_or_else(|| Error::invalid_param("Unknown value for order_by"))?;
    let desc = descending(q.dir.as_deref())? != largest_first;
    let search = match q.search_term.as_deref() {
        Some("") => return Err(Error::invalid_param("search_term cannot be empty")),
        other => other.map(contains_pattern),
    };
    let rooms = room_admin::list(
        &state.db,
        search.as_ref(),
        order,
        desc,
        page.from,
        page.limit,
    )
    .await?;
    let total = room_admin::count(&state.db, search.as_ref()).await?;
    // As Synapse: next_batch while rooms remain, prev_batch when not on the first page.
    let end = page.from + page.limit;
    Ok(RoomPage {
        rooms,
        offset: page.from,
        total,
        next_batch: (end < total).then_some(end),
        prev_batch: (page.from > 0).then(|| (page.from - page.limit).max(0)),
    })
}

/// A room's summary, how many devices its joined members have and the room that replaced it (its
/// `m.room.tombstone`'s `replacement_room`); 404 for an unknown room.
pub async fn details(
    state: &AppState,
    room_id: &str,
) -> Result<(AdminRoomRow, i64, Option<String>)> {
    let room = room_admin::get(&state.db, room_id)
        .await?
        .ok_or_else(room_not_found)?;
    let devices = room_admin::joined_devices(&state.db, room_id).await?;
    let replacement = crate::service::writer::room_snapshot(state, room_id)
        .await?
        .and_then(|snapshot| {
            let tombstone = snapshot.entry("m.room.tombstone", "")?;
            tombstone.content["replacement_room"]
                .as_str()
                .map(str::to_owned)
        });
    Ok((room, devices, replacement))
}

/// The room's joined members.
pub async fn members(state: &AppState, room_id: &str) -> Result<Vec<String>> {
    require_room(state, room_id).await?;
    Ok(room_admin::joined_members(&state.db, room_id).await?)
}

/// The room's current state events, in the client format.
pub async fn current_state(state: &AppState, room_id: &str) -> Result<Vec<Box<RawValue>>> {
    require_room(state, room_id).await?;
    let rooms = [room_id.to_owned()];
    let rows =
        store::events::current_state_of_rooms(&state.db, &rooms, store::events::Members::Included)
            .await?;
    let viewer = crate::service::timeline::Viewer {
        user_id: "",
        device_id: None,
    };
    Ok(crate::service::timeline::render_plain(&rows, viewer))
}

async fn require_room(state: &AppState, room_id: &str) -> Result<()> {
    match store::rooms::room_version(&state.db, room_id).await? {
        Some(_) => Ok(()),
        None => Err(room_not_found()),
    }
}

fn room_not_found() -> Error {
    Error::not_found("Room not found")
}

/// Makes `user_id` an admin of the room (Synapse's make_room_admin): the most powerful local
/// member gives the user its own power level (a creator of a v12 room, who is above levels, gives
/// the highest level anyone holds, at least 100), and invites the user if the room is not public.
pub async fn make_room_admin(
    state: &AppState,
    room_id_or_alias: &str,
    user_id: &str,
) -> Result<()> {
    use crate::service::auth_rules::{self, CREATOR_POWER_LEVEL};
    let room_id = crate::service::rooms::resolve_room(state, room_id_or_alias).await?;
    let snapshot = crate::service::writer::room_snapshot(state, &room_id)
        .await?
        .ok_or_else(room_not_found)?;
    let user_id = super::local_user(state, user_id)?;
    if store::users::get_user(&state.db, &user_id)
        .await?
        .is_none_or(|u| u.deactivated)
    {
        return Err(Error::invalid_param(format!(
            "{user_id} is not a local user"
        )));
    }
    let version = snapshot.version;
    let level_of = |user: &str| auth_rules::user_power_level(version, &*snapshot, user);
    let local = format!(":{}", state.server_name);
    let admin = snapshot
        .members_with("join")
        .filter(|member| member.ends_with(&local))
        .max_by_key(|member| level_of(member))
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid_param("No local admin user in room"))?;
    let mut content = snapshot
        .entry("m.room.power_levels", "")
        .map(|e| e.content.clone())
        .unwrap_or_else(|| serde_json::json!({}));
    let users_max = content["users"]
        .as_object()
        .and_then(|users| users.values().filter_map(serde_json::Value::as_i64).max())
        .unwrap_or(0);
    let level = match level_of(&admin) {
        CREATOR_POWER_LEVEL => users_max.max(100),
        level => level,
    };
    if level_of(&user_id) < level {
        content["users"][&user_id] = serde_json::json!(level);
        let draft = crate::service::events::EventDraft::new(
            "m.room.power_levels",
            Some(""),
            &admin,
            content,
        );
        state
            .writer
            .submit(
                crate::service::writer::Target::Existing(room_id.clone()),
                vec![draft],
                None,
            )
            .await?;
    }
    let membership = snapshot.membership(&user_id);
    if membership != Some("join") && auth_rules::join_rule(&*snapshot) != Some("public") {
        let acting = super::acting_as(&admin)?;
        crate::service::rooms::change_membership(
            state, &acting, &room_id, &user_id, "invite", None,
        )
        .await?;
    }
    Ok(())
}

//! Room operations: creating rooms, membership changes, state changes.

use serde_json::json;

use crate::service::events::EventDraft;
use crate::service::writer::Target;
use crate::{AppState, Result, store};

/// Makes `user_id` leave (or decline the invites of) every room, e.g. on deactivation.
pub async fn leave_all_rooms(state: &AppState, user_id: &str) -> Result<()> {
    for row in store::rooms::memberships_of(&state.db, user_id).await? {
        if !matches!(row.membership.as_str(), "join" | "invite" | "knock") {
            continue;
        }
        let draft = EventDraft::new("m.room.member", Some(user_id), user_id, json!({"membership": "leave"}));
        // A room the user cannot leave (already gone by the time the writer runs) is not an error here.
        if let Err(e) = state.writer.submit(Target::Existing(row.room_id.clone()), vec![draft], None).await {
            tracing::warn!(room_id = %row.room_id, error = %e, "could not leave room");
        }
    }
    Ok(())
}

//! The rooms of a response: which are sent whole (`initial`) and which as changes since the
//! client's position, their timelines and `required_state` from the response's snapshot, then the
//! fields that come from the room cache (name, avatar, heroes, member counts, invite state).

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::api::client::sync::sync_events::v5;
use ruma::serde::Raw;
use ruma::{OwnedMxcUri, OwnedRoomId, OwnedUserId, UInt};
use serde_json::Value;
use sqlx::PgConnection;

use super::conn::{Position, SentRoom};
use super::lists::{Candidate, RoomConfig, Selection};
use crate::service::auth::Requester;
use crate::service::erasure::Erasure;
use crate::service::room_cache::RoomSnapshot;
use crate::service::timeline::{self, Viewer};
use crate::service::visibility::Visibility;
use crate::service::{ignore, push, retention};
use crate::store::events::{EventFilter, EventRow, Members};
use crate::{AppState, Error, Result, store};

/// How one room is to be sent.
pub struct Plan {
    pub candidate: Candidate,
    pub config: RoomConfig,
    /// The client has nothing of the room (or had it with another membership or config).
    pub initial: bool,
    /// Events after this position are new to the client (0 when initial).
    pub after: i64,
    /// Events up to this position are sent: the response's, or the leave's for a room left.
    pub until: i64,
}

/// A room ready to go, with its plan.
pub struct Rendered {
    pub plan: Plan,
    pub room: v5::response::Room,
}

/// Decides which selected rooms go and how. A room the client already has, unchanged in membership
/// and config, goes as changes since it was last sent (and not at all when nothing changed).
pub fn plan(selection: &Selection, previous: Option<&Position>, upto: i64) -> Vec<Plan> {
    let mut plans = Vec::new();
    for (room_id, (candidate, config)) in &selection.rooms {
        let sent: Option<&SentRoom> = previous.and_then(|p| p.rooms.get(room_id));
        let leaving = matches!(candidate.membership.as_str(), "leave" | "ban");
        let same = sent.is_some_and(|s| {
            s.m == candidate.membership
                && s.tl == config.timeline_limit
                && s.rs == config.required_state.to_pairs()
        });
        let until = if leaving {
            candidate.membership_pos
        } else {
            upto
        };
        let (initial, after) = match sent {
            Some(s) if same || leaving => (false, s.at),
            _ => (true, 0),
        };
        if !initial && (after >= until || candidate.stripped()) {
            continue;
        }
        plans.push(Plan {
            candidate: candidate.clone(),
            config: config.clone(),
            initial,
            after,
            until,
        });
    }
    plans
}

/// What the timelines and state reads need besides the plans.
pub struct Read<'a> {
    pub requester: &'a Requester,
    pub ignored: &'a HashSet<String>,
    /// The connection's previous stream position (`num_live` counts events after it), if any.
    pub from: Option<i64>,
}

/// Timelines, `required_state`, `prev_batch`, `limited`, `num_live`, unread counts: everything read
/// in the response's snapshot `tx`. Rooms with nothing new are left out.
pub async fn rooms(
    state: &AppState,
    tx: &mut PgConnection,
    plans: Vec<Plan>,
    read: Read<'_>,
) -> Result<Vec<Rendered>> {
    let user = read.requester.user_id.as_str();
    let viewer = Viewer {
        user_id: user,
        device_id: Some(read.requester.device_id.as_str()),
    };
    let with_timeline: Vec<&Plan> = plans.iter().filter(|p| !p.candidate.stripped()).collect();
    let mut timelines = timelines(tx, &with_timeline).await?;
    let mut erasure = Erasure::for_viewer(state, tx, user).await?;
    for rows in timelines.values_mut() {
        erasure.prune(tx, rows).await?;
    }
    let all_rows: Vec<&EventRow> = timelines.values().flatten().collect();
    let aggregations = timeline::aggregations_for(tx, &mut erasure, &all_rows, viewer).await?;
    let mut current = current_state(tx, &with_timeline).await?;
    let joined: Vec<String> = plans
        .iter()
        .filter(|p| p.candidate.membership == "join")
        .map(|p| p.candidate.room_id.clone())
        .collect();
    let upto = plans.iter().map(|p| p.until).max().unwrap_or(0);
    let counts = push::unread_counts(tx, user, &joined, upto).await?;
    let now = store::now_ms();
    let mut out = Vec::new();
    for plan in plans {
        let room_id = plan.candidate.room_id.clone();
        let mut room = v5::response::Room::new();
        room.bump_stamp = Some(uint(plan.candidate.stamp));
        if plan.initial {
            room.initial = Some(true);
        }
        if plan.candidate.stripped() {
            out.push(Rendered { plan, room });
            continue;
        }
        let mut rows = timelines.remove(&room_id).unwrap_or_default();
        let fetched = !rows.is_empty();
        let limit = plan.config.timeline_limit as usize;
        let limited = rows.len() > limit;
        rows.truncate(limit);
        rows.reverse();
        rows.retain(|r| {
            !ignore::hides(read.ignored, &r.sender, r.state_key.is_some())
                && !retention::expired(state, r)
        });
        let state_rows = if plan.initial {
            let current = current.remove(&room_id).unwrap_or_default();
            // A room left (or kicked or banned from, perhaps never joined) is seen as of then.
            if !history_shared(&current) || plan.candidate.membership != "join" {
                let vis = Visibility::load(tx, &room_id, user).await?;
                rows.retain(|r| vis.can_see_row(r, user));
            }
            initial_state(tx, &plan, current, &rows, user).await?
        } else {
            let changes = delta_state(tx, &plan, &rows).await?;
            if !fetched && changes.is_empty() {
                continue;
            }
            changes
        };
        let first = rows.first().map_or(plan.until + 1, |r| r.stream_ordering);
        room.prev_batch = Some(crate::service::messages::position_token(first - 1));
        room.limited = limited;
        let live = read.from.map_or(0, |from| {
            rows.iter().filter(|r| r.stream_ordering > from).count()
        });
        room.num_live = Some(uint(live as i64));
        room.timeline = rows
            .iter()
            .map(|r| Raw::from_json(timeline::render(r, viewer, now, &aggregations)))
            .collect();
        room.required_state = timeline::render_plain(&state_rows, viewer)
            .into_iter()
            .map(Raw::from_json)
            .collect();
        if plan.candidate.membership == "join" {
            let c = counts.get(&room_id);
            room.unread_notifications.notification_count =
                Some(uint(c.map_or(0, |c| c.notification_count)));
            room.unread_notifications.highlight_count =
                Some(uint(c.map_or(0, |c| c.highlight_count)));
        }
        out.push(Rendered { plan, room });
    }
    Ok(out)
}

pub fn uint(n: i64) -> UInt {
    UInt::try_from(n.max(0) as u64).unwrap_or(UInt::MAX)
}

/// Each room's newest events in (after, until], at most its limit + 1 (newest first), in one
/// query per distinct (after, until).
async fn timelines(
    tx: &mut PgConnection,
    plans: &[&Plan],
) -> Result<HashMap<String, Vec<EventRow>>> {
    let mut groups: BTreeMap<(i64, i64), (Vec<String>, u64)> = BTreeMap::new();
    for p in plans {
        let group = groups.entry((p.after, p.until)).or_default();
        group.0.push(p.candidate.room_id.clone());
        group.1 = group.1.max(p.config.timeline_limit);
    }
    let mut out: HashMap<String, Vec<EventRow>> = HashMap::new();
    for ((after, until), (rooms, limit)) in groups {
        let limit = (limit as i64).clamp(0, 1000) + 1;
        let rows = store::events::latest_events_per_room(
            &mut *tx,
            &rooms,
            after,
            until,
            limit,
            &EventFilter::default(),
        )
        .await?;
        for row in rows {
            out.entry(row.room_id.clone()).or_default().push(row);
        }
    }
    Ok(out)
}

/// The current state of the rooms sent whole (members only where every member is asked for).
async fn current_state(
    tx: &mut PgConnection,
    plans: &[&Plan],
) -> Result<HashMap<String, Vec<EventRow>>> {
    let mut out: HashMap<String, Vec<EventRow>> = HashMap::new();
    for members in [Members::Included, Members::Excluded] {
        let rooms: Vec<String> = plans
            .iter()
            .filter(|p| p.initial)
            .filter(|p| {
                p.config.required_state.wants_all_members() == (members == Members::Included)
            })
            .map(|p| p.candidate.room_id.clone())
            .collect();
        if rooms.is_empty() {
            continue;
        }
        for row in store::events::current_state_of_rooms(&mut *tx, &rooms, members).await? {
            out.entry(row.room_id.clone()).or_default().push(row);
        }
    }
    Ok(out)
}

/// Whether a joined member sees the whole history (shared or world_readable, the default).
fn history_shared(current: &[EventRow]) -> bool {
    current
        .iter()
        .find(|r| r.event_type == "m.room.history_visibility")
        .and_then(|r| serde_json::from_str::<Value>(&r.client_json).ok())
        .is_none_or(|v| {
            matches!(
                v["content"]["history_visibility"].as_str(),
                Some("shared" | "world_readable") | None
            )
        })
}

/// `required_state` of a room sent whole: the current state asked for, with the member events
/// asked for by name and (`$LAZY`) those of the timeline's senders.
async fn initial_state(
    tx: &mut PgConnection,
    plan: &Plan,
    current: Vec<EventRow>,
    timeline: &[EventRow],
    user: &str,
) -> Result<Vec<EventRow>> {
    let rs = &plan.config.required_state;
    let mut rows: Vec<EventRow> = current
        .into_iter()
        .filter(|r| r.stream_ordering <= plan.until)
        .filter(|r| rs.wants(&r.event_type, r.state_key.as_deref().unwrap_or("")))
        .collect();
    if !rs.wants_all_members() {
        let mut users: Vec<String> = rs.named_members().into_iter().map(str::to_owned).collect();
        if rs.lazy_members() {
            users.extend(timeline.iter().map(|r| r.sender.clone()));
            // As Synapse: the requester's own member event comes with lazy loading.
            users.push(user.to_owned());
        }
        users.sort();
        users.dedup();
        if !users.is_empty() {
            rows.extend(
                store::events::members_at(&mut *tx, &plan.candidate.room_id, &users, plan.until)
                    .await?,
            );
        }
    }
    Ok(rows)
}

/// `required_state` of a room sent as changes: the state asked for that changed since the client
/// last had the room, and (`$LAZY`) the member events of the new timeline's senders.
async fn delta_state(
    tx: &mut PgConnection,
    plan: &Plan,
    timeline: &[EventRow],
) -> Result<Vec<EventRow>> {
    let rs = &plan.config.required_state;
    if rs.is_empty() {
        return Ok(Vec::new());
    }
    let room = std::slice::from_ref(&plan.candidate.room_id);
    let changes = store::events::state_changes(&mut *tx, room, plan.after, plan.until).await?;
    let mut latest: BTreeMap<(String, String), EventRow> = BTreeMap::new();
    for row in changes {
        let key = row.state_key.clone().unwrap_or_default();
        if rs.wants(&row.event_type, &key) {
            latest.insert((row.event_type.clone(), key), row);
        }
    }
    if rs.lazy_members() {
        let mut senders: Vec<String> = timeline
            .iter()
            .map(|r| r.sender.clone())
            .filter(|s| !latest.contains_key(&("m.room.member".to_owned(), s.clone())))
            .collect();
        senders.sort();
        senders.dedup();
        if !senders.is_empty() {
            for row in
                store::events::members_at(&mut *tx, &plan.candidate.room_id, &senders, plan.until)
                    .await?
            {
                let key = row.state_key.clone().unwrap_or_default();
                latest.insert((row.event_type.clone(), key), row);
            }
        }
    }
    let mut rows: Vec<EventRow> = latest.into_values().collect();
    rows.sort_by_key(|r| r.stream_ordering);
    Ok(rows)
}

/// The fields that come from the room cache, read through `conn` outside the snapshot: `name`,
/// `avatar`, `heroes`, `joined_count`, `invited_count`, `is_dm`, and an invite's `invite_state`.
pub async fn finish(
    state: &AppState,
    conn: &mut PgConnection,
    user: &str,
    rendered: &mut [Rendered],
    direct: &HashSet<String>,
) -> Result<()> {
    for r in rendered.iter_mut() {
        let room_id = r.plan.candidate.room_id.as_str();
        if r.plan.initial {
            r.room.is_dm = Some(direct.contains(room_id));
        }
        // An invite from another server to a room this server is not in: its name is in the
        // stripped state that came with it. A knock's stripped state too: the client tells them
        // apart by the user's own member event.
        let mut invite_name = None;
        if r.plan.candidate.stripped() {
            let stripped = super::super::stripped_state(state, conn, user, room_id).await?;
            invite_name = stripped.events.iter().find_map(|e| {
                let event: serde_json::Value = serde_json::from_str(e.get()).ok()?;
                (event["type"] == "m.room.name" && event["state_key"] == "")
                    .then(|| event["content"]["name"].as_str().map(str::to_owned))
                    .flatten()
                    .filter(|n| !n.is_empty())
            });
            r.room.invite_state = Some(stripped.events.into_iter().map(Raw::from_json).collect());
        }
        let Some(snapshot) = crate::service::writer::room_snapshot_on(state, conn, room_id).await?
        else {
            r.room.name = invite_name;
            continue;
        };
        describe(&mut r.room, &snapshot, user, r.plan.candidate.stripped());
        if r.plan.candidate.stripped() && r.room.name.is_none() {
            r.room.name = invite_name;
        }
    }
    Ok(())
}

/// A room's `name`, `avatar` and (for members) `heroes`, `joined_count` and `invited_count`,
/// from its current state.
pub fn describe(
    room: &mut v5::response::Room,
    snapshot: &RoomSnapshot,
    user: &str,
    stripped: bool,
) {
    let name = snapshot
        .entry("m.room.name", "")
        .and_then(|e| e.content["name"].as_str().map(str::to_owned))
        .filter(|n| !n.is_empty());
    if let Some(avatar) = snapshot.entry("m.room.avatar", "") {
        room.avatar = match avatar.content["url"].as_str() {
            Some(url) if !url.is_empty() => ruma::JsOption::Some(OwnedMxcUri::from(url.to_owned())),
            _ => ruma::JsOption::Null,
        };
    }
    if !stripped {
        let members = snapshot.member_lists();
        room.joined_count = Some(uint(members.join.len() as i64));
        room.invited_count = Some(uint(members.invite.len() as i64));
        if name.is_none() {
            room.heroes = Some(heroes(snapshot, user));
        }
    }
    room.name = name;
}

/// Up to five other members (joined, then invited) with their display names and avatars, for a
/// room without a name.
fn heroes(snapshot: &RoomSnapshot, user: &str) -> Vec<v5::response::Hero> {
    let members = snapshot.member_lists();
    members
        .join
        .iter()
        .chain(members.invite.iter())
        .filter(|u| *u != user)
        .take(5)
        .filter_map(|u| {
            let id = OwnedUserId::try_from(u.as_str()).ok()?;
            let mut hero = v5::response::Hero::new(id);
            if let Some(e) = snapshot.entry("m.room.member", u) {
                hero.name = e.content["displayname"].as_str().map(str::to_owned);
                hero.avatar = e.content["avatar_url"]
                    .as_str()
                    .map(|a| OwnedMxcUri::from(a.to_owned()));
            }
            Some(hero)
        })
        .collect()
}

/// A room ID for the response.
pub fn room_id(room: &str) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(room).map_err(Error::internal)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::service::sync::sliding::required_state::RequiredState;

    fn selection(rooms: &[(&str, &str, i64)]) -> Selection {
        let config = RoomConfig {
            timeline_limit: 1,
            required_state: RequiredState::default(),
        };
        Selection {
            counts: BTreeMap::new(),
            list_rooms: HashMap::new(),
            subscribed: Vec::new(),
            rooms: rooms
                .iter()
                .map(|(id, membership, pos)| {
                    let c = Candidate {
                        room_id: (*id).into(),
                        membership: (*membership).into(),
                        membership_pos: *pos,
                        stamp: *pos,
                    };
                    ((*id).to_owned(), (c, config.clone()))
                })
                .collect(),
            direct: HashSet::new(),
            outside: Default::default(),
            memorable: true,
        }
    }

    fn sent(at: i64, m: &str, tl: u64) -> SentRoom {
        SentRoom {
            at,
            m: m.into(),
            tl,
            rs: Vec::new().into(),
        }
    }

    #[test]
    fn rooms_the_client_has_go_as_changes_and_new_ones_whole() {
        let sel = selection(&[
            ("!new", "join", 1),
            ("!known", "join", 1),
            ("!uptodate", "join", 1),
            ("!joined_since", "join", 8),
            ("!invite_known", "invite", 2),
            ("!bigger", "join", 1),
            ("!left", "leave", 7),
        ]);
        let previous = Position {
            rooms: HashMap::from([
                ("!known".to_owned(), sent(5, "join", 1)),
                ("!uptodate".to_owned(), sent(10, "join", 1)),
                ("!joined_since".to_owned(), sent(5, "invite", 1)),
                ("!invite_known".to_owned(), sent(5, "invite", 1)),
                ("!bigger".to_owned(), sent(5, "join", 0)),
                ("!left".to_owned(), sent(5, "join", 1)),
            ]),
            ..Position::default()
        };
        let plans = plan(&sel, Some(&previous), 10);
        let by_id: HashMap<&str, &Plan> = plans
            .iter()
            .map(|p| (p.candidate.room_id.as_str(), p))
            .collect();
        assert!(by_id["!new"].initial);
        assert!(!by_id["!known"].initial && by_id["!known"].after == 5);
        assert!(
            !by_id.contains_key("!uptodate"),
            "nothing after its position"
        );
        assert!(by_id["!joined_since"].initial, "membership changed");
        assert!(
            !by_id.contains_key("!invite_known"),
            "an invite is sent once"
        );
        assert!(by_id["!bigger"].initial, "config changed");
        let left = by_id["!left"];
        assert!(!left.initial && left.after == 5 && left.until == 7);
        // Without a previous position, everything is whole.
        assert!(plan(&sel, None, 10).iter().all(|p| p.initial));
    }
}

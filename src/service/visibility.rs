//! History visibility: which events of a room a user may see, per the spec's rules. Built from two
//! short histories — the user's membership and the room's `m.room.history_visibility` — so that any
//! number of events can be checked without further queries.

use sqlx::PgConnection;

use crate::store::events::EventRow;
use crate::{Result, store};

pub struct Visibility {
    /// (position, membership after that event), oldest first.
    memberships: Vec<(i64, String)>,
    /// (position, history_visibility after that event), oldest first.
    settings: Vec<(i64, String)>,
    /// The user is joined now: `shared` history is open to them.
    joined_now: bool,
}

impl Visibility {
    pub async fn load(conn: &mut PgConnection, room_id: &str, user_id: &str) -> Result<Self> {
        let memberships: Vec<(i64, String)> = store::events::state_key_history(
            &mut *conn,
            room_id,
            "m.room.member",
            user_id,
            "membership",
        )
        .await?
        .into_iter()
        .map(|(pos, m)| (pos, m.unwrap_or_else(|| "leave".into())))
        .collect();
        let settings = store::events::state_key_history(
            &mut *conn,
            room_id,
            "m.room.history_visibility",
            "",
            "history_visibility",
        )
        .await?
        .into_iter()
        .map(|(pos, v)| (pos, v.unwrap_or_else(|| "shared".into())))
        .collect();
        let joined_now = memberships.last().is_some_and(|(_, m)| m == "join");
        Ok(Self {
            memberships,
            settings,
            joined_now,
        })
    }

    /// From the two histories (oldest first), as `load` reads them: for many rooms read at once.
    pub fn from_histories(memberships: Vec<(i64, String)>, settings: Vec<(i64, String)>) -> Self {
        let joined_now = memberships.last().is_some_and(|(_, m)| m == "join");
        Self {
            memberships,
            settings,
            joined_now,
        }
    }

    /// The positions whose (non-membership) events the user may see, as disjoint inclusive ranges,
    /// oldest first: `can_see` only changes just after a change of membership or setting.
    pub fn visible_ranges(&self) -> Vec<(i64, i64)> {
        let mut starts: Vec<i64> = self
            .memberships
            .iter()
            .chain(&self.settings)
            .map(|(p, _)| p.saturating_add(1))
            .collect();
        starts.push(i64::MIN);
        starts.sort_unstable();
        starts.dedup();
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for (i, &start) in starts.iter().enumerate() {
            if !self.can_see(start, false) {
                continue;
            }
            let end = starts.get(i + 1).map_or(i64::MAX, |next| next - 1);
            match ranges.last_mut() {
                Some(last) if last.1.saturating_add(1) == start => last.1 = end,
                _ => ranges.push((start, end)),
            }
        }
        ranges
    }

    fn value_before(list: &[(i64, String)], pos: i64) -> Option<&str> {
        let i = list.partition_point(|(p, _)| *p < pos);
        i.checked_sub(1).map(|i| list[i].1.as_str())
    }

    /// Whether the user may see the event at `pos`; `own_member_event` when it is the user's own
    /// membership event (they see the event that changed their membership).
    pub fn can_see(&self, pos: i64, own_member_event: bool) -> bool {
        // Users always see the events that changed their own membership (their invite, their kick).
        if own_member_event {
            return true;
        }
        let setting = Self::value_before(&self.settings, pos).unwrap_or("shared");
        if setting == "world_readable" {
            return true;
        }
        let membership = Self::value_before(&self.memberships, pos).unwrap_or("leave");
        match (membership, setting) {
            ("join", _) => true,
            (_, "shared") => self.joined_now,
            ("invite", "invited") => true,
            _ => false,
        }
    }

    /// Whether the user was joined to the room at the event at `pos` (Synapse's
    /// `_check_membership(...).joined`, synapse/visibility.py). For the user's own member event, the
    /// more joined of the memberships before and after it counts, except that a leave (not a ban)
    /// after a join or an invite does not count as joined.
    pub fn joined_at(&self, pos: i64, own_member_event: bool) -> bool {
        let before = Self::value_before(&self.memberships, pos).unwrap_or("leave");
        if !own_member_event {
            return before == "join";
        }
        let after = Self::value_before(&self.memberships, pos + 1).unwrap_or("leave");
        if after == "leave" && matches!(before, "join" | "invite") {
            return false;
        }
        before == "join" || after == "join"
    }

    pub fn can_see_row(&self, row: &EventRow, user_id: &str) -> bool {
        let own = row.event_type == "m.room.member" && row.state_key.as_deref() == Some(user_id);
        self.can_see(row.stream_ordering, own)
    }

    /// The last position the user may see state at: their leave when they left, else `upto`.
    pub fn state_horizon(&self, upto: i64) -> i64 {
        match self.memberships.last() {
            Some((pos, m)) if m != "join" && m != "invite" => (*pos).min(upto),
            _ => upto,
        }
    }

    /// Whether the user is (or was) allowed to look into the room at all.
    pub fn may_read_room(&self) -> bool {
        self.joined_now
            || !self.memberships.is_empty()
            || self
                .settings
                .last()
                .is_some_and(|(_, v)| v == "world_readable")
    }

    pub fn is_joined(&self) -> bool {
        self.joined_now
    }

    /// True when every event is visible without checking one by one (the common case).
    pub fn all_visible(&self) -> bool {
        self.joined_now
            && self
                .settings
                .iter()
                .all(|(_, v)| v == "shared" || v == "world_readable")
    }
}

/// What another server may see of a room's history (Synapse's `filter_events_for_server`): events
/// under `shared` or `world_readable` history, and under `invited`/`joined` history those sent while
/// one of its users was joined (or invited, for `invited`).
pub struct ServerVisibility {
    /// (position, history_visibility after that event), oldest first.
    settings: Vec<(i64, String)>,
    /// Per user of the server: (position, membership after that event), oldest first.
    memberships: Vec<Vec<(i64, String)>>,
}

impl ServerVisibility {
    /// From the room's `history_visibility` history and the membership changes of the server's
    /// users (position, user, membership), both oldest first.
    pub fn new(settings: Vec<(i64, String)>, changes: Vec<(i64, String, String)>) -> Self {
        let mut by_user: std::collections::BTreeMap<String, Vec<(i64, String)>> =
            Default::default();
        for (pos, user, membership) in changes {
            by_user.entry(user).or_default().push((pos, membership));
        }
        Self {
            settings,
            memberships: by_user.into_values().collect(),
        }
    }

    /// Whether the server may see the event at `pos` (else it is given the event redacted).
    pub fn can_see(&self, pos: i64) -> bool {
        let setting = Visibility::value_before(&self.settings, pos).unwrap_or("shared");
        if setting == "shared" || setting == "world_readable" {
            return true;
        }
        self.memberships.iter().any(|history| {
            match Visibility::value_before(history, pos).unwrap_or("leave") {
                "join" => true,
                "invite" => setting == "invited",
                _ => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(memberships: &[(i64, &str)], settings: &[(i64, &str)]) -> Visibility {
        let m: Vec<(i64, String)> = memberships
            .iter()
            .map(|(p, s)| (*p, s.to_string()))
            .collect();
        Visibility::from_histories(
            m,
            settings.iter().map(|(p, s)| (*p, s.to_string())).collect(),
        )
    }

    #[test]
    fn servers_see_shared_history_and_the_rest_only_while_a_user_of_theirs_is_in() {
        let changes = |list: &[(i64, &str, &str)]| {
            list.iter()
                .map(|(p, u, m)| (*p, u.to_string(), m.to_string()))
                .collect()
        };
        let settings = |list: &[(i64, &str)]| {
            list.iter()
                .map(|(p, s)| (*p, s.to_string()))
                .collect::<Vec<_>>()
        };
        let shared = ServerVisibility::new(settings(&[(3, "shared")]), changes(&[]));
        assert!(
            shared.can_see(2) && shared.can_see(50),
            "shared: everything"
        );
        let joined = ServerVisibility::new(
            settings(&[(3, "joined")]),
            changes(&[
                (10, "@a:b", "join"),
                (20, "@a:b", "leave"),
                (15, "@c:b", "invite"),
            ]),
        );
        assert!(joined.can_see(3), "the setting applies after its event");
        assert!(!joined.can_see(5) && !joined.can_see(10), "before the join");
        assert!(joined.can_see(11) && joined.can_see(20), "while joined");
        assert!(
            !joined.can_see(21),
            "after the leave; an invite is not enough"
        );
        let invited = ServerVisibility::new(
            settings(&[(3, "invited")]),
            changes(&[(15, "@c:b", "invite")]),
        );
        assert!(!invited.can_see(15) && invited.can_see(16));
    }

    /// `visible_ranges` says exactly what `can_see` says, position by position.
    #[test]
    fn visible_ranges_agree_with_can_see() {
        let cases = [
            v(&[(10, "join")], &[(3, "shared")]),
            v(&[(10, "join"), (20, "leave")], &[(3, "shared")]),
            v(&[(10, "join")], &[(3, "joined")]),
            v(
                &[(8, "invite"), (10, "join")],
                &[(3, "invited"), (15, "joined")],
            ),
            v(&[(5, "join"), (9, "leave"), (14, "join")], &[(2, "joined")]),
            v(&[], &[(3, "world_readable"), (12, "joined")]),
            v(&[(4, "join")], &[]),
        ];
        for vis in cases {
            let ranges = vis.visible_ranges();
            for pos in 0..40 {
                let in_ranges = ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&pos));
                assert_eq!(in_ranges, vis.can_see(pos, false), "{pos}: {ranges:?}");
            }
            assert!(ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0), "{ranges:?}");
        }
        let vis = v(&[(10, "join")], &[(3, "joined")]);
        // Before any setting, history is `shared`.
        assert_eq!(vis.visible_ranges(), vec![(i64::MIN, 3), (11, i64::MAX)]);
    }

    #[test]
    fn shared_history_is_visible_to_current_members() {
        let vis = v(&[(10, "join")], &[(3, "shared")]);
        assert!(vis.can_see(5, false));
        assert!(vis.can_see(11, false));
    }

    #[test]
    fn after_leaving_only_events_while_joined_are_visible() {
        let vis = v(&[(10, "join"), (20, "leave")], &[(3, "shared")]);
        assert!(!vis.can_see(5, false));
        assert!(vis.can_see(15, false));
        assert!(vis.can_see(20, true), "the user's own leave event");
        assert!(!vis.can_see(25, false));
    }

    #[test]
    fn joined_visibility_hides_history_before_the_join() {
        let vis = v(&[(10, "join")], &[(3, "joined")]);
        assert!(!vis.can_see(5, false));
        assert!(vis.can_see(10, true));
        assert!(vis.can_see(12, false));
    }

    #[test]
    fn invited_visibility_shows_events_since_the_invite() {
        let vis = v(&[(8, "invite"), (10, "join")], &[(3, "invited")]);
        assert!(!vis.can_see(5, false));
        assert!(vis.can_see(9, false));
    }

    #[test]
    fn joined_at_is_the_membership_when_the_event_was_sent() {
        let vis = v(
            &[(10, "join"), (20, "leave"), (30, "join")],
            &[(3, "shared")],
        );
        assert!(!vis.joined_at(5, false));
        assert!(!vis.joined_at(10, false), "before the join");
        assert!(vis.joined_at(15, false));
        assert!(!vis.joined_at(25, false));
        assert!(vis.joined_at(31, false));
    }

    #[test]
    fn joined_at_own_member_event_takes_the_more_joined_side() {
        let vis = v(
            &[(8, "invite"), (10, "join"), (20, "leave"), (30, "ban")],
            &[(3, "shared")],
        );
        assert!(!vis.joined_at(8, true), "an invite from nothing");
        assert!(vis.joined_at(10, true), "the join itself");
        assert!(!vis.joined_at(20, true), "a leave after a join");
        let banned = v(&[(10, "join"), (20, "ban")], &[(3, "shared")]);
        assert!(
            banned.joined_at(20, true),
            "a ban after a join keeps the join"
        );
    }

    #[test]
    fn world_readable_is_visible_to_anyone() {
        let vis = v(&[], &[(3, "world_readable")]);
        assert!(vis.can_see(5, false));
        assert!(!vis.can_see(2, false));
    }
}

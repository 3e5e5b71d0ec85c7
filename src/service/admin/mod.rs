//! The server administration rules behind Synapse's admin API (`/_synapse/admin/…`) and the `axon`
//! command line: both call these, so a user created or a token deleted one way is the same as the
//! other. Admin permission is checked by the caller (the HTTP extractor; the CLI is local).

pub mod media;
pub mod notices;
pub mod purge;
pub mod reports;
pub mod room_delete;
pub mod rooms;
pub mod tokens;
pub mod users;

use ruma::{OwnedDeviceId, OwnedUserId};

use crate::service::auth::Requester;
use crate::{AppState, Error, Result};

/// The admin acting on a user's behalf (for rules written for the user's own requests).
pub fn acting_as(user_id: &str) -> Result<Requester> {
    Ok(Requester {
        user_id: OwnedUserId::try_from(user_id).map_err(Error::internal)?,
        device_id: OwnedDeviceId::from("ADMIN"),
        is_guest: false,
        is_admin: true,
        is_shadow_banned: false,
    })
}

/// `user_id` if it is a well-formed user ID of this server; 400 otherwise (Synapse: "Can only …
/// local users").
pub fn local_user(state: &AppState, user_id: &str) -> Result<String> {
    let parsed = ruma::UserId::parse(user_id)
        .map_err(|_| Error::invalid_param(format!("{user_id} is not a valid user ID")))?;
    if parsed.server_name() != state.server_name {
        // Synapse's SynapseError(400, "Can only look up local users"): M_UNKNOWN.
        return Err(Error::unknown("Can only manage local users"));
    }
    Ok(parsed.to_string())
}

/// A page of a listing: `from` (an offset) and `limit` as the admin API takes them.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub from: i64,
    pub limit: i64,
}

impl Page {
    /// Synapse refuses negative offsets and limits with 400 `M_INVALID_PARAM`.
    pub fn new(from: Option<i64>, limit: Option<i64>, default_limit: i64) -> Result<Self> {
        let from = from.unwrap_or(0);
        let limit = limit.unwrap_or(default_limit);
        if from < 0 {
            return Err(Error::invalid_param(
                "Query parameter from must be a string representing a positive integer.",
            ));
        }
        if limit < 0 {
            return Err(Error::invalid_param(
                "Query parameter limit must be a string representing a positive integer.",
            ));
        }
        Ok(Page {
            from,
            limit: limit.min(MAX_PAGE),
        })
    }

    /// The offset of the next page, when there may be one (Synapse's `next_token`).
    pub fn next(&self, returned: usize, total: i64) -> Option<i64> {
        let end = self.from + returned as i64;
        (end < total && returned > 0).then_some(end)
    }
}

/// No page is longer than this, whatever the client asks.
const MAX_PAGE: i64 = 1000;

/// `dir`: `f` (forwards, the default) or `b`.
pub fn descending(dir: Option<&str>) -> Result<bool> {
    match dir {
        None | Some("f") => Ok(false),
        Some("b") => Ok(true),
        Some(_) => Err(Error::invalid_param(
            "Unknown direction: dir must be 'f' or 'b'",
        )),
    }
}

/// A LIKE pattern matching `text` anywhere (its own `%`, `_` and `\` taken literally).
pub fn contains_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_escape_wildcards() {
        assert_eq!(contains_pattern("ab"), "%ab%");
        assert_eq!(contains_pattern("a%_\\"), "%a\\%\\_\\\\%");
    }

    #[test]
    fn pages() {
        let p = Page::new(Some(2), Some(2), 100).unwrap();
        assert_eq!(p.next(2, 5), Some(4));
        assert_eq!(p.next(1, 3), None);
        assert!(Page::new(Some(-1), None, 100).is_err());
        assert!(Page::new(None, Some(-1), 100).is_err());
        assert_eq!(Page::new(None, None, 100).unwrap().limit, 100);
    }
}

//! Mutual rooms (`GET /v1/mutual_rooms`, MSC2666): the rooms where both the requester and another
//! user are joined. As Synapse (synapse/rest/client/mutual_rooms.py): room IDs in code point
//! order, pages of 100, `next_batch` the last room ID of a page in unpadded URL-safe base64 (a
//! page starts after it, so rooms joined meanwhile with lower IDs wait for a fresh listing).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ruma::UserId;
use sqlx::PgPool;

use crate::{Error, Result, store};

/// Rooms per page (Synapse's `MUTUAL_ROOMS_BATCH_LIMIT`).
pub const BATCH_LIMIT: usize = 100;

/// One page of mutual rooms.
#[derive(Debug, PartialEq, Eq)]
pub struct MutualRooms {
    /// All the shared rooms, whatever the page.
    pub count: usize,
    /// This page's rooms.
    pub joined: Vec<String>,
    /// Where the next page starts; absent on the last page.
    pub next_batch: Option<String>,
}

/// The rooms `requester` and `other` are both joined to, the page after `from`. A non-compliant
/// user ID, oneself, or a malformed `from` is 400 `M_INVALID_PARAM`; a user nobody knows simply
/// shares no room (the spec asks for an empty list).
pub async fn mutual_rooms(
    db: &PgPool,
    requester: &UserId,
    other: &UserId,
    from: Option<&str>,
) -> Result<MutualRooms> {
    if other.validate_strict().is_err() {
        return Err(Error::invalid_param("Invalid user_id query parameter"));
    }
    if requester == other {
        return Err(Error::invalid_param(
            "You cannot request a list of shared rooms with yourself",
        ));
    }
    let after = from
        .filter(|f| !f.is_empty())
        .map(decode_batch)
        .transpose()?;
    let rooms = store::rooms::mutual_joined_rooms(db, requester.as_str(), other.as_str()).await?;
    Ok(page(rooms, after.as_deref(), from))
}

fn decode_batch(token: &str) -> Result<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| Error::invalid_param("Malformed from token"))
}

/// The page of `rooms` (sorted) after the room ID `after`.
fn page(rooms: Vec<String>, after: Option<&str>, from: Option<&str>) -> MutualRooms {
    let count = rooms.len();
    let start = after.map_or(0, |after| rooms.partition_point(|r| r.as_str() <= after));
    let mut joined: Vec<String> = rooms.into_iter().skip(start).collect();
    if joined.len() <= BATCH_LIMIT {
        return MutualRooms {
            count,
            joined,
            next_batch: None,
        };
    }
    joined.truncate(BATCH_LIMIT);
    // Opaque tokens stay within 255 characters; a room ID that long could repeat its own token, in
    // which case paging stops rather than loops.
    let mut token = URL_SAFE_NO_PAD.encode(joined[BATCH_LIMIT - 1].as_bytes());
    token.truncate(255);
    let next_batch = (Some(token.as_str()) != from).then_some(token);
    MutualRooms {
        count,
        joined,
        next_batch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("!r{i:04}:x")).collect()
    }

    #[test]
    fn a_short_list_is_one_page() {
        let page = page(rooms(3), None, None);
        assert_eq!(page.count, 3);
        assert_eq!(page.joined, rooms(3));
        assert_eq!(page.next_batch, None);
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let all = rooms(2 * BATCH_LIMIT + 5);
        let first = page(all.clone(), None, None);
        assert_eq!(first.joined, all[..BATCH_LIMIT]);
        let token = first.next_batch.unwrap();
        let after = decode_batch(&token).unwrap();
        let second = page(all.clone(), Some(&after), Some(&token));
        assert_eq!(second.joined, all[BATCH_LIMIT..2 * BATCH_LIMIT]);
        let token = second.next_batch.unwrap();
        let third = page(
            all.clone(),
            Some(&decode_batch(&token).unwrap()),
            Some(&token),
        );
        assert_eq!(third.joined, all[2 * BATCH_LIMIT..]);
        assert_eq!((third.count, third.next_batch), (all.len(), None));
    }

    #[test]
    fn a_token_after_every_room_gives_an_empty_page() {
        let page = page(rooms(3), Some("!zzz"), Some("x"));
        assert_eq!((page.count, page.joined.len()), (3, 0));
    }

    #[test]
    fn malformed_tokens_are_invalid_params() {
        for token in ["!!!", "_w"] {
            assert_eq!(
                decode_batch(token).unwrap_err().errcode(),
                "M_INVALID_PARAM"
            );
        }
    }
}

//! Server ACLs (`m.room.server_acl`): whether a room refuses requests from a server. Handlers of
//! room-scoped federation requests call `ensure_allowed` with the request's origin.

use ruma::ServerName;
use ruma::events::room::server_acl::RoomServerAclEventContent;
use serde_json::Value;

use crate::{AppState, Error, Result};

/// The ACL of `content`, read as Synapse reads it: a missing or non-boolean `allow_ip_literals` is
/// true, a missing or non-list `allow`/`deny` is empty, entries that are not strings are ignored.
pub fn parse(content: &Value) -> RoomServerAclEventContent {
    let strings = |key: &str| -> Vec<String> {
        content
            .get(key)
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let allow_ip_literals = content
        .get("allow_ip_literals")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    RoomServerAclEventContent::new(allow_ip_literals, strings("allow"), strings("deny"))
}

/// Whether the ACL content lets `server` in (globs `*` and `?` on the host, port ignored).
pub fn allows(content: &Value, server: &ServerName) -> bool {
    parse(content).is_allowed(server)
}

/// 403 `M_FORBIDDEN` when `room_id`'s current server ACL denies `origin`.
pub async fn ensure_allowed(state: &AppState, room_id: &str, origin: &ServerName) -> Result<()> {
    let Some(room) = crate::service::writer::room_snapshot(state, room_id).await? else {
        return Ok(());
    };
    match room.entry("m.room.server_acl", "") {
        Some(acl) if !allows(&acl.content, origin) => Err(Error::forbidden(format!(
            "Server {origin} is banned from this room by its server ACL"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(content: Value, server: &str) -> bool {
        allows(&content, <&ServerName>::try_from(server).unwrap())
    }

    #[test]
    fn globs_match_the_host_case_insensitively_and_ignore_ports() {
        let acl = json!({"allow": ["*.example.org", "good?.net"], "deny": ["evil.example.org"]});
        assert!(ok(acl.clone(), "matrix.example.org"));
        assert!(ok(acl.clone(), "MATRIX.Example.org:8448"));
        assert!(!ok(acl.clone(), "evil.example.org"), "deny wins");
        assert!(ok(acl.clone(), "good1.net"));
        assert!(!ok(acl.clone(), "good12.net"), "? is one character");
        assert!(!ok(acl.clone(), "example.com"), "not allowed");
        assert!(!ok(json!({}), "example.org"), "no allow list: nobody");
        assert!(ok(json!({"allow": ["*"]}), "anything.example"));
    }

    #[test]
    fn ip_literals_follow_allow_ip_literals() {
        let acl = json!({"allow": ["*"], "allow_ip_literals": false});
        assert!(!ok(acl.clone(), "1.2.3.4"));
        assert!(!ok(acl.clone(), "[::1]:8448"));
        assert!(ok(acl, "example.org"));
        assert!(ok(json!({"allow": ["*"]}), "1.2.3.4:80"), "default true");
        assert!(
            ok(
                json!({"allow": ["*"], "allow_ip_literals": "no"}),
                "1.2.3.4"
            ),
            "not a bool: true"
        );
    }

    #[test]
    fn malformed_lists_are_read_leniently() {
        assert!(
            !ok(json!({"allow": "*"}), "example.org"),
            "not a list: empty"
        );
        assert!(ok(
            json!({"allow": [1, "*"], "deny": [null]}),
            "example.org"
        ));
    }
}

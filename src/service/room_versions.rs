//! The room versions Axon creates and serves: every stable one, 1 to 12. What differs between them
//! (event format, redaction, authorization, canonical JSON) is read from ruma's
//! [`RoomVersionRules`], not from version-number comparisons.

use ruma::room_version_rules::{EventIdFormatVersion, RoomIdFormatVersion, RoomVersionRules};

/// A stable room version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoomVersion {
    V1,
    V2,
    V3,
    V4,
    V5,
    V6,
    V7,
    V8,
    V9,
    V10,
    V11,
    V12,
}

/// Every version, oldest first.
pub const ALL: [RoomVersion; 12] = [
    RoomVersion::V1,
    RoomVersion::V2,
    RoomVersion::V3,
    RoomVersion::V4,
    RoomVersion::V5,
    RoomVersion::V6,
    RoomVersion::V7,
    RoomVersion::V8,
    RoomVersion::V9,
    RoomVersion::V10,
    RoomVersion::V11,
    RoomVersion::V12,
];

impl RoomVersion {
    /// The version string as it appears in `m.room.create` `content.room_version`.
    pub fn as_str(self) -> &'static str {
        use RoomVersion::*;
        match self {
            V1 => "1",
            V2 => "2",
            V3 => "3",
            V4 => "4",
            V5 => "5",
            V6 => "6",
            V7 => "7",
            V8 => "8",
            V9 => "9",
            V10 => "10",
            V11 => "11",
            V12 => "12",
        }
    }

    /// The version's rules (ruma's constants, promoted to statics).
    pub fn rules(self) -> &'static RoomVersionRules {
        use RoomVersion::*;
        match self {
            V1 => &RoomVersionRules::V1,
            V2 => &RoomVersionRules::V2,
            V3 => &RoomVersionRules::V3,
            V4 => &RoomVersionRules::V4,
            V5 => &RoomVersionRules::V5,
            V6 => &RoomVersionRules::V6,
            V7 => &RoomVersionRules::V7,
            V8 => &RoomVersionRules::V8,
            V9 => &RoomVersionRules::V9,
            V10 => &RoomVersionRules::V10,
            V11 => &RoomVersionRules::V11,
            V12 => &RoomVersionRules::V12,
        }
    }

    /// Whether room creators have infinite power (v12 and later).
    pub fn has_privileged_creators(self) -> bool {
        self.rules()
            .authorization
            .explicitly_privilege_room_creators
    }

    /// Whether the create event names the creator in `content.creator` (v1–v10); later versions
    /// take the create event's sender.
    pub fn create_has_creator_field(self) -> bool {
        !self.rules().authorization.use_room_create_sender
    }

    /// Whether the room ID is derived from the create event's reference hash (v12); before, it is
    /// `!opaque:server_name`, chosen by the creating server.
    pub fn room_id_from_create(self) -> bool {
        self.rules().room_id_format == RoomIdFormatVersion::V2
    }

    /// Whether event IDs are `$opaque:server_name`, chosen by the server and carried in the PDU,
    /// with `prev_events`/`auth_events` as `[id, {"sha256": …}]` pairs (v1, v2).
    pub fn server_chosen_event_ids(self) -> bool {
        self.rules().event_id_format == EventIdFormatVersion::V1
    }

    /// Whether `redacts` lives in the content of `m.room.redaction` (v11+) rather than at the top
    /// level of the event.
    pub fn redacts_in_content(self) -> bool {
        self.rules().redaction.content_field_redacts
    }

    /// Whether PDUs carry the top-level `origin` key (v1–v10; v11 dropped it).
    pub fn has_origin(self) -> bool {
        // v11 removed `origin` along with the redaction changes that keep `redacts` in content.
        !self.redacts_in_content()
    }
}

/// The versions as `/capabilities` lists them.
pub const SUPPORTED: [&str; 12] = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
];

pub fn parse(version: &str) -> Option<RoomVersion> {
    ALL.into_iter().find(|v| v.as_str() == version)
}

pub fn rules(version: RoomVersion) -> &'static RoomVersionRules {
    version.rules()
}

pub fn name(version: RoomVersion) -> &'static str {
    version.as_str()
}

/// A stored client event with the room version's redaction algorithm applied: what a redacted
/// event, or an erased sender's event, is served as.
pub fn redact_client_json(version: RoomVersion, client_json: &str) -> crate::Result<String> {
    let object: ruma::canonical_json::CanonicalJsonObject =
        serde_json::from_str(client_json).map_err(crate::Error::internal)?;
    let redacted = ruma::canonical_json::redact(object, &rules(version).redaction, None)
        .map_err(|e| crate::Error::internal(format!("redaction: {e}")))?;
    Ok(ruma::CanonicalJsonValue::Object(redacted).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_parses_back_and_has_its_rules() {
        for v in ALL {
            assert_eq!(parse(v.as_str()), Some(v));
            let id = ruma::RoomVersionId::try_from(v.as_str()).unwrap();
            let (ours, theirs) = (v.rules(), id.rules().unwrap());
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{v:?}");
        }
        assert_eq!(parse("13"), None);
        assert_eq!(parse("org.example.custom"), None);
        assert!(
            RoomVersion::V1.server_chosen_event_ids() && RoomVersion::V2.server_chosen_event_ids()
        );
        assert!(!RoomVersion::V3.server_chosen_event_ids());
        assert!(RoomVersion::V10.has_origin() && !RoomVersion::V11.has_origin());
        assert!(RoomVersion::V10.create_has_creator_field());
        assert!(!RoomVersion::V11.create_has_creator_field());
        assert!(RoomVersion::V12.room_id_from_create() && !RoomVersion::V11.room_id_from_create());
    }
}

//! The room versions Axon creates and serves.

use ruma::room_version_rules::RoomVersionRules;

use crate::service::auth_rules::RoomVersion;

pub const SUPPORTED: [&str; 3] = ["10", "11", "12"];

pub fn parse(version: &str) -> Option<RoomVersion> {
    match version {
        "10" => Some(RoomVersion::V10),
        "11" => Some(RoomVersion::V11),
        "12" => Some(RoomVersion::V12),
        _ => None,
    }
}

pub fn rules(version: RoomVersion) -> RoomVersionRules {
    match version {
        RoomVersion::V10 => RoomVersionRules::V10,
        RoomVersion::V11 => RoomVersionRules::V11,
        RoomVersion::V12 => RoomVersionRules::V12,
    }
}

pub fn name(version: RoomVersion) -> &'static str {
    match version {
        RoomVersion::V10 => "10",
        RoomVersion::V11 => "11",
        RoomVersion::V12 => "12",
    }
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

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

//! Axon's integration tests: each drives a fresh Axon over HTTP, against its own PostgreSQL database.

mod common;

mod accounts;
mod e2ee;
mod email;
mod ephemeral;
mod erasure;
mod federation;
mod federation_rooms;
mod foundation;
mod guests;
mod hostile_input;
mod knocking;
mod legacy;
mod login_tokens;
mod long_poll;
mod media;
mod messaging;
mod mutual_rooms;
mod openid;
mod push_rules;
mod rate_limits;
mod registration_sessions;
mod reports;
mod robustness;
mod room_versions;
mod rooms;
mod rooms_profiles;
mod search;
mod spaces;
mod sync;
mod sync_contents;
mod sync_rules;
mod upgrades;

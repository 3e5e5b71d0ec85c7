//! The rules: no HTTP types and no SQL strings here.

pub mod accounts;
pub mod auth;
pub mod auth_rules;
pub mod events;
pub mod keys;
pub mod notifier;
pub mod rate_limit;
pub mod registration;
pub mod room_cache;
pub mod room_versions;
pub mod rooms;
pub mod uia;
pub mod writer;

//! The rules: no HTTP types and no SQL strings here.

pub mod accounts;
pub mod auth;
pub mod auth_rules;
pub mod directory;
pub mod e2ee;
pub mod events;
pub mod filter;
pub mod keys;
pub mod maintenance;
pub mod message_validation;
pub mod messages;
pub mod notifier;
pub mod profile;
pub mod rate_limit;
pub mod room_cache;
pub mod room_versions;
pub mod rooms;
pub mod sanitize;
pub mod sync;
pub mod timeline;
pub mod uia;
pub mod visibility;
pub mod writer;

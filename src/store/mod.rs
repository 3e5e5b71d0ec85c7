//! Every SQL statement lives here, grouped by table family. Functions take a connection or pool
//! (anything that executes) and return plain Rust types; no HTTP types, no rules.

pub mod account_data;
pub mod admin_jobs;
pub mod events;
pub mod federation_queue;
pub mod federation_rooms;
pub mod filters;
pub mod hierarchy;
pub mod key_backup;
pub mod keys;
pub mod login_tokens;
pub mod media;
pub mod media_admin;
pub mod openid_tokens;
pub mod pool;
pub mod presence;
pub mod purge;
pub mod push;
pub mod receipts;
pub mod registration;
pub mod reports;
pub mod room_admin;
pub mod rooms;
pub mod search;
pub mod secrets;
pub mod server_identity;
pub mod server_keys;
pub mod sliding_sync;
pub mod stream;
pub mod threepids;
pub mod to_device;
pub mod tokens;
pub mod uia;
pub mod user_admin;
pub mod users;

/// Milliseconds since the Unix epoch, the unit of every timestamp in the schema.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

//! Federation: this server among others. `client` sends signed requests (after `resolve` found
//! where and `net` checked the address); `keyring` keeps other servers' keys; `acl` answers whether
//! a room refuses a server; `invite`, `join` and `membership` move users in and out of rooms
//! shared with other servers.

pub mod acl;
pub mod client;
pub mod directory;
pub mod edus;
pub mod history;
pub mod inbound;
pub mod invite;
pub mod join;
pub mod keyring;
pub mod membership;
pub mod net;
pub mod outbound_edus;
pub mod queue;
pub mod resolve;

pub use client::FederationClient;
pub use keyring::KeyRing;

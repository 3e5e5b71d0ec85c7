//! Axon's integration tests: each drives a fresh Axon over HTTP, against its own PostgreSQL database.

mod common;

mod accounts;
mod e2ee;
mod ephemeral;
mod foundation;
mod hostile_input;
mod knocking;
mod long_poll;
mod media;
mod messaging;
mod rate_limits;
mod robustness;
mod rooms;
mod sync;
mod sync_contents;
mod sync_rules;

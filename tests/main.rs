//! Axon's integration tests: each drives a fresh Axon over HTTP, against its own PostgreSQL database.

mod common;

mod foundation;
mod messaging;
mod rooms;
mod sync;
mod e2ee;
mod ephemeral;
mod media;

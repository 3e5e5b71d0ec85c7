//! Server-server endpoints, one file per group. Each group's `routes()` carries full paths
//! (`/_matrix/federation/…`), so it can be mounted on the client listener (as now) and on a
//! federation listener alike.

pub mod openid;

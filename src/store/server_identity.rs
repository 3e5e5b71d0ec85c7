//! server_identity: the server name the database belongs to.

use sqlx::PgExecutor;

/// Records `server_name` if the database has none yet; returns the name it holds (that one, or
/// the one recorded before).
pub async fn claim(db: impl PgExecutor<'_>, server_name: &str) -> sqlx::Result<String> {
    // The no-op update makes RETURNING give the existing row on a conflict.
    sqlx::query_scalar!(
        "INSERT INTO server_identity (id, server_name) VALUES (TRUE, $1)
         ON CONFLICT (id) DO UPDATE SET id = server_identity.id
         RETURNING server_name",
        server_name
    )
    .fetch_one(db)
    .await
}

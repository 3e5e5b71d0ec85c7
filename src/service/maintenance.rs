//! Background housekeeping.

use std::time::Duration;

use crate::{AppState, store};

/// Transaction IDs are remembered at least this long (the spec asks for idempotent retries).
const TXN_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// Received federation transactions are remembered this long (a sender retries within minutes).
const INBOUND_TXN_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// Finished admin jobs (room deletions, purges) are remembered this long for their status.
const JOB_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// An unfinished admin job not updated for this long is taken for dead.
const STALE_JOB_MS: i64 = 6 * 60 * 60 * 1000;

pub fn start(state: AppState) {
    if state.config.retention.enabled {
        start_retention(state.clone());
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            prune_once(&state).await;
        }
    });
}

/// One round of pruning: each table that would otherwise grow without bound (see the README's
/// "Operating Axon"). A failing step is logged and the others still run.
pub async fn prune_once(state: &AppState) {
    let now = store::now_ms();
    report(
        &state.db,
        "transaction IDs",
        store::events::prune_txns(&state.db, now - TXN_RETENTION_MS).await,
    );
    report(
        &state.db,
        "received federation transactions",
        store::federation_queue::prune_inbound(&state.db, now - INBOUND_TXN_RETENTION_MS).await,
    );
    report(
        &state.db,
        "hierarchy pagination sessions",
        crate::service::spaces::prune_sessions(state).await,
    );
    report(
        &state.db,
        "finished admin jobs",
        store::admin_jobs::prune(&state.db, now - JOB_RETENTION_MS).await,
    );
    // A job not heard of for hours ran on a process that stopped: it will not finish.
    report(
        &state.db,
        "stale admin jobs",
        store::admin_jobs::fail_unfinished(&state.db, now - STALE_JOB_MS).await,
    );
    report(
        &state.db,
        "unused media IDs",
        store::media_admin::prune_expired_pending(&state.db, now).await,
    );
    report(
        &state.db,
        "UIA sessions",
        crate::service::uia::prune(state).await.map(|()| 0),
    );
    report(
        &state.db,
        "OpenID tokens",
        crate::service::openid::prune(&state.db).await,
    );
    report(
        &state.db,
        "login tokens",
        crate::service::login_tokens::prune(&state.db).await,
    );
    report(
        &state.db,
        "unused sliding sync positions",
        store::sliding_sync::prune_unused(
            &state.db,
            now - crate::service::sync::sliding::EXPIRY_MS,
        )
        .await,
    );
}

/// Logs a pruning step's outcome; a step that failed because the server is shutting down (the
/// pool is closed) is not worth a warning.
fn report<E: std::fmt::Display>(db: &sqlx::PgPool, what: &str, result: Result<u64, E>) {
    match result {
        Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned {what}"),
        Ok(_) => {}
        Err(e) if db.is_closed() => tracing::debug!(error = %e, "pruning {what} stopped"),
        Err(e) => tracing::warn!(error = %e, "pruning {what} failed"),
    }
}

/// The retention job (`[retention]`): purges expired events every `purge_interval_ms`.
fn start_retention(state: AppState) {
    tokio::spawn(async move {
        let period = Duration::from_millis(state.config.retention.purge_interval_ms.max(1000));
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            match crate::service::admin::purge::run_retention(&state).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "purged expired events"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the retention job failed"),
            }
        }
    });
}

/// For load balancers: the database answers.
pub async fn database_ready(state: &AppState) -> crate::Result<()> {
    store::stream::current(&state.db).await?;
    Ok(())
}

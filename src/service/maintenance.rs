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
    let report = Report { db: &state.db };
    report.step(
        "transaction IDs",
        store::events::prune_txns(&state.db, now - TXN_RETENTION_MS).await,
    );
    report.step(
        "received federation transactions",
        store::federation_queue::prune_inbound(&state.db, now - INBOUND_TXN_RETENTION_MS).await,
    );
    report.step(
        "hierarchy pagination sessions",
        crate::service::spaces::prune_sessions(state).await,
    );
    report.step(
        "finished admin jobs",
        store::admin_jobs::prune(&state.db, now - JOB_RETENTION_MS).await,
    );
    // A job not heard of for hours ran on a process that stopped: it will not finish.
    report.step(
        "stale admin jobs",
        store::admin_jobs::fail_unfinished(&state.db, now - STALE_JOB_MS).await,
    );
    report.step(
        "unused media IDs",
        store::media_admin::prune_expired_pending(&state.db, now).await,
    );
    report.step(
        "UIA sessions",
        crate::service::uia::prune(state).await.map(|()| 0),
    );
    report.step(
        "OpenID tokens",
        crate::service::openid::prune(&state.db).await,
    );
    report.step(
        "login tokens",
        crate::service::login_tokens::prune(&state.db).await,
    );
    report.step(
        "unused sliding sync positions",
        store::sliding_sync::prune_unused(
            &state.db,
            now - crate::service::sync::sliding::EXPIRY_MS,
        )
        .await,
    );
}

/// Logs each pruning step's outcome.
struct Report<'a> {
    /// Closed once the server is shutting down: a step that fails then is not worth a warning.
    db: &'a sqlx::PgPool,
}

impl Report<'_> {
    fn step<E: std::fmt::Display>(&self, what: &str, result: Result<u64, E>) {
        match result {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned {what}"),
            Ok(_) => {}
            Err(e) if self.db.is_closed() => tracing::debug!(error = %e, "pruning {what} stopped"),
            Err(e) => tracing::warn!(error = %e, "pruning {what} failed"),
        }
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

//! Background housekeeping.

use std::time::Duration;

use crate::{AppState, store};

/// Transaction IDs are remembered at least this long (the spec asks for idempotent retries).
const TXN_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

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
            let cutoff = store::now_ms() - TXN_RETENTION_MS;
            match store::events::prune_txns(&state.db, cutoff).await {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned old transaction IDs"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning transaction IDs failed"),
            }
            match crate::service::spaces::prune_sessions(&state).await {
                Ok(n) if n > 0 => {
                    tracing::info!(pruned = n, "pruned hierarchy pagination sessions")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning hierarchy sessions failed"),
            }
            let jobs =
                store::admin_jobs::prune(&state.db, store::now_ms() - JOB_RETENTION_MS).await;
            // A job not heard of for hours ran on a process that stopped: it will not finish.
            let stale =
                store::admin_jobs::fail_unfinished(&state.db, store::now_ms() - STALE_JOB_MS).await;
            let jobs = jobs.and(stale);
            if let Err(e) = jobs {
                tracing::warn!(error = %e, "pruning finished admin jobs failed");
            }
            let openid = crate::service::openid::prune(&state.db).await;
            let login = crate::service::login_tokens::prune(&state.db).await;
            if let Err(e) = openid.and(login) {
                tracing::warn!(error = %e, "pruning expired OpenID and login tokens failed");
            }
        }
    });
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

//! Background housekeeping.

use std::time::Duration;

use crate::{AppState, store};

/// Transaction IDs are remembered at least this long (the spec asks for idempotent retries).
const TXN_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

pub fn start(state: AppState) {
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
            let unused = store::now_ms() - crate::service::sync::sliding::EXPIRY_MS;
            match store::sliding_sync::prune_unused(&state.db, unused).await {
                Ok(n) if n > 0 => {
                    tracing::info!(pruned = n, "pruned unused sliding sync positions")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning sliding sync positions failed"),
            }
            let openid = crate::service::openid::prune(&state.db).await;
            let login = crate::service::login_tokens::prune(&state.db).await;
            if let Err(e) = openid.and(login) {
                tracing::warn!(error = %e, "pruning expired OpenID and login tokens failed");
            }
        }
    });
}

/// For load balancers: the database answers.
pub async fn database_ready(state: &AppState) -> crate::Result<()> {
    store::stream::current(&state.db).await?;
    Ok(())
}

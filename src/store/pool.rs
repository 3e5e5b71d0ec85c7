//! The connection pools' health: which database errors mean "the connection (or the database) is
//! gone" rather than "this statement failed", and dropping every pooled connection that predates
//! such a loss.
//!
//! Pools hand out connections without pinging them first (a round trip per query otherwise). After
//! PostgreSQL restarts, every idle connection is dead; the first request to notice marks the moment
//! and, from then on, the pools throw away any connection opened before it instead of handing it out.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// When this process started counting (a monotonic origin for `LOST_AT`).
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);
/// Microseconds after `ORIGIN` of the last connection loss seen; 0 for never.
static LOST_AT: AtomicU64 = AtomicU64::new(0);

/// Records that a connection was lost: connections opened before now are not handed out again.
pub fn connection_lost() {
    let now = ORIGIN.elapsed().as_micros() as u64;
    LOST_AT.fetch_max(now.max(1), Ordering::Relaxed);
}

/// Whether a connection opened `age` ago predates the last loss (and so is probably dead too).
fn predates_loss(age: Duration) -> bool {
    let lost = LOST_AT.load(Ordering::Relaxed);
    if lost == 0 {
        return false;
    }
    let opened = ORIGIN.elapsed().saturating_sub(age).as_micros() as u64;
    opened <= lost
}

/// Whether an error says the connection or the database is unavailable, not that the statement
/// was refused: I/O and TLS failures, the pool timing out or closed, and PostgreSQL's connection
/// exceptions (class 08), administrator or crash shutdown, "starting up" and too many connections.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Whether an error is the connection itself failing (as opposed to waiting too long for one).
pub fn is_connection_loss(error: &sqlx::Error) -> bool {
    is_unavailable(error) && !matches!(error, sqlx::Error::PoolTimedOut)
}

/// Whether PostgreSQL refused the data itself (text it cannot store, a value over its limits):
/// the input's fault, not the server's.
pub fn is_unstorable_input(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| matches!(&*code, "22P05" | "22021" | "54000" | "54001")),
        _ => false,
    }
}

/// Options for every pool whose connections may carry transactions: bounded waits, no connection
/// older than the last loss, and no transaction outliving the request that opened it.
pub fn options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    autocommit_options(max_connections, acquire_timeout)
        // A request cancelled (its client went away) while its BEGIN was on the wire leaves the
        // connection inside that transaction: sqlx 0.8 queues a rollback only once the BEGIN has
        // completed. The next user of the connection would then run in it — refused writes after a
        // read-only snapshot's BEGIN, or autocommitted writes left uncommitted. So every released
        // connection ends any transaction it is in (the connection options silence PostgreSQL's
        // warning when there is none).
        .after_release(|conn, _meta| {
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, "ROLLBACK").await?;
                Ok(true)
            })
        })
}

/// Options for a pool whose users only run single autocommitted statements and are never
/// cancelled (the writer's optimistic path): no transaction can be left open on it, so a release
/// costs no round trip. Bounded waits, and no connection older than the last loss.
pub fn autocommit_options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // sqlx pings every connection it hands out by default: a second round trip per query. A
        // connection that broke fails its query instead, marks the loss, and the pool drops the
        // others of its age (below).
        .test_before_acquire(false)
        .before_acquire(|_conn, meta| Box::pin(async move { Ok(!predates_loss(meta.age)) }))
}

/// Closes `pool` and waits (up to `within`) until every connection of it is closed. sqlx 0.8's
/// `Pool::close` alone can return while connections are still in use (launchbadge/sqlx#3217:
/// closing the idle ones hands out spare permits, which its wait for every permit then counts),
/// and a connection whose return began before the close goes on to the idle queue afterwards.
/// Either would be rolled back, pinged or left open against a database that may be stopping.
pub async fn close(pool: &sqlx::PgPool, within: Duration) {
    let drained = async {
        loop {
            // Each call closes what is idle by now.
            pool.close().await;
            if pool.size() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let _ = tokio::time::timeout(within, drained).await;
}

/// What every pooled connection is opened with: `after_release`'s `ROLLBACK` outside a transaction
/// is not worth a warning.
pub fn connect_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("client_min_messages", "error")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_before_a_loss_are_dropped() {
        // Opened a second ago: kept until a loss is recorded, dropped after.
        let age = Duration::from_secs(1);
        let _ = *ORIGIN;
        std::thread::sleep(Duration::from_millis(1100));
        connection_lost();
        assert!(predates_loss(age));
        // Opened after the loss: kept.
        std::thread::sleep(Duration::from_millis(5));
        assert!(!predates_loss(Duration::from_millis(1)));
    }
}

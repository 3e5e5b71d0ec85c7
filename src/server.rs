//! Start-up and shutdown: the database (configured or private), migrations, the HTTP listener.

use std::net::SocketAddr;
use std::str::FromStr;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::postgres::{Cluster, DataDirLock};
use crate::{AppState, Config};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The database Axon runs on, and the private cluster if it is ours to stop.
pub struct Database {
    pub pool: PgPool,
    pub owned_cluster: Option<Cluster>,
    /// The data directory of a command's private cluster: a server that started meanwhile (and holds
    /// the directory's lock) keeps the cluster running.
    pub command_data_dir: Option<std::path::PathBuf>,
}

/// Who opens the database: the server (which owns the private cluster: it holds the data
/// directory's lock) or an admin command (which stops the cluster only if it started it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    Server,
    Command,
}

impl Database {
    /// Closes the pool and stops the private cluster if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        // Requests have drained; a background task's statement gets a moment to finish (stopping
        // the cluster ends any connection still busy after it).
        crate::store::pool::close(&self.pool, std::time::Duration::from_secs(5)).await;
        if let Some(dir) = &self.command_data_dir
            && DataDirLock::is_held(dir)
        {
            return Ok(());
        }
        if let Some(cluster) = self.owned_cluster {
            tracing::info!("stopping the private PostgreSQL cluster");
            tokio::task::spawn_blocking(move || cluster.stop()).await??;
        }
        Ok(())
    }
}

/// Connects to `database.url`, or starts the private cluster under `data_dir/postgres`; then migrates.
/// The server (which holds the data directory's lock) owns the private cluster whether it started it
/// or finds it running: a cluster left by a server that was killed is adopted, and stopped on a
/// clean shutdown.
pub async fn open_database(config: &Config, opener: Opener) -> anyhow::Result<Database> {
    let (options, owned_cluster) = match &config.database.url {
        Some(url) => (PgConnectOptions::from_str(url)?, None),
        None => {
            let dir = config.data_dir.join("postgres");
            let cluster =
                tokio::task::spawn_blocking(move || -> anyhow::Result<(Cluster, bool)> {
                    let cluster = Cluster::init(&dir)?;
                    let started = cluster.start()?;
                    Ok((cluster, started))
                })
                .await??;
            let (cluster, started) = cluster;
            create_database_if_missing(&cluster, "axon").await?;
            if !started && opener == Opener::Server {
                tracing::info!("adopting the private PostgreSQL cluster left running");
            }
            let ours = started || opener == Opener::Server;
            (cluster.connect_options("axon"), ours.then_some(cluster))
        }
    };
    // PostgreSQL's own choice between a cached generic plan and one made per execution (`auto`):
    // an initial sync spent three times as long planning its statements as running them when every
    // execution was planned afresh (2,000 clients starting up: 12 s, against 10 s with `auto`). A
    // cached plan is made again when ANALYZE changes its tables' statistics, so one made while a
    // table was still empty does not outlive its growth.
    let options =
        crate::store::pool::connect_options(options.options([("plan_cache_mode", "auto")]));
    let target = describe_target(&options);
    let pool = crate::store::pool::options(
        config.database.max_connections,
        std::time::Duration::from_millis(config.database.acquire_timeout_ms),
    )
    // Opening a connection forks a PostgreSQL backend (milliseconds): kept open, half the pool is
    // ready for a burst of requests instead of the burst waiting on new connections.
    .min_connections(config.database.max_connections.div_ceil(2))
    .connect_with(options)
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to the database {target}: {e} (is PostgreSQL running, and is database.url right?)"
        )
    })?;
    MIGRATOR.run(&pool).await.map_err(explain_migration_error)?;
    check_server_name(&pool, &config.server_name).await?;
    let command_data_dir =
        (opener == Opener::Command && owned_cluster.is_some()).then(|| config.data_dir.clone());
    Ok(Database {
        pool,
        owned_cluster,
        command_data_dir,
    })
}

/// Where a connection goes, for messages: host (or socket directory), port and database, never
/// the password.
fn describe_target(options: &PgConnectOptions) -> String {
    let host = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    match options.get_database() {
        Some(db) => format!("\"{db}\" at {host}"),
        None => format!("at {host}"),
    }
}

/// A migration the database has but this binary does not know means a newer Axon ran on it.
pub fn explain_migration_error(error: sqlx::migrate::MigrateError) -> anyhow::Error {
    use sqlx::migrate::MigrateError;
    match error {
        MigrateError::VersionMissing(version) => anyhow::anyhow!(
            "the database was upgraded by a newer Axon: it has migration {version}, which Axon {} does not know. \
             Run the newer Axon (a database cannot be downgraded), or restore a backup taken before the upgrade",
            env!("CARGO_PKG_VERSION")
        ),
        MigrateError::VersionMismatch(version) => anyhow::anyhow!(
            "migration {version} in the database differs from the one this Axon ({}) has: \
             the database was migrated by a different build of Axon",
            env!("CARGO_PKG_VERSION")
        ),
        other => anyhow::anyhow!("migrating the database failed: {other}"),
    }
}

/// Records the server name in a new database, and refuses a database made for another name.
pub async fn check_server_name(pool: &PgPool, server_name: &str) -> anyhow::Result<()> {
    let recorded = crate::store::server_identity::claim(pool, server_name).await?;
    if recorded != server_name {
        anyhow::bail!(
            "this database belongs to server_name \"{recorded}\", but the configuration says \"{server_name}\": \
             a Matrix server cannot change its name. Set server_name back to \"{recorded}\", or use another database"
        );
    }
    Ok(())
}

pub async fn create_database_if_missing(cluster: &Cluster, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(&cluster.connect_options("postgres")).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

/// Runs the homeserver until SIGINT or SIGTERM, then drains requests and stops the private cluster.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // One server per private cluster, refused before anything touches the database.
    let _lock = match config.database.url {
        None => Some(DataDirLock::acquire(&config.data_dir)?),
        Some(_) => None,
    };
    let database = open_database(&config, Opener::Server).await?;
    let result = serve_on(config, database.pool.clone()).await;
    database.close().await?;
    result
}

async fn serve_on(config: Config, pool: PgPool) -> anyhow::Result<()> {
    let address = SocketAddr::new(config.listen.address, config.listen.port);
    // Both ports first: a port in use stops start-up before anything else starts.
    let listener = bind(address, "listen.port")?;
    let metrics_listener = match config.metrics.enabled {
        true => {
            let address = SocketAddr::new(config.metrics.address, config.metrics.port);
            Some(bind(address, "metrics.port")?)
        }
        false => None,
    };
    let state = AppState::build(config, pool).await?;
    if let (Some(listener), Some(router)) = (metrics_listener, state.metrics_router()) {
        tracing::info!(address = %listener.local_addr()?, "metrics on /metrics");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    tracing::info!(%address, server_name = %state.server_name, "Axon is listening");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let federation = start_federation(&state, stopped.clone()).await?;
    let mut client_stopped = stopped;
    crate::listener::serve_client(state.router(), listener, async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = client_stopped.changed() => {}
        }
    })
    .await;
    let _ = stop.send(true);
    if let Some(federation) = federation {
        let _ = federation.await;
    }
    tracing::info!("stopped accepting requests");
    // Other processes take this one's federation destinations over at once.
    state.outbox.shutdown().await;
    // The LISTEN task ends quietly when the database goes away now.
    state.notifier.stop();
    // The writer's pool is closed before the cluster stops: a connection it opens or returns
    // meanwhile (its start-up minimum, say) is then closed rather than pinged against a database
    // going away, which would log a warning.
    crate::store::pool::close(&state.writer_db, std::time::Duration::from_secs(5)).await;
    Ok(())
}

/// Binds the federation listener when federation is on; it stops when `stopped` turns true.
async fn start_federation(
    state: &AppState,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let f = &state.config.federation;
    if !state.config.federation_enabled() {
        return Ok(None);
    }
    if !f.verify_certificates {
        tracing::warn!(
            "federation.verify_certificates = false: other servers' TLS certificates are NOT checked; \
             anyone on the network path can impersonate them. Use this only for tests on one machine."
        );
    }
    let tls = match (&f.tls_certificate, &f.tls_private_key) {
        (Some(cert), Some(key)) => Some(crate::listener::tls_config(cert, key)?),
        _ => None,
    };
    let address = SocketAddr::new(f.address, f.port);
    let tcp = listen(address)?;
    tracing::info!(%address, tls = tls.is_some(), "federation listener");
    let router = state.federation_router();
    state.outbox.start();
    Ok(Some(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = crate::listener::serve_federation(router, tcp, tls, shutdown).await {
            tracing::error!(error = %e, "the federation listener failed");
        }
    })))
}

/// Binds `address`, saying which key to change when the port is taken.
fn bind(address: SocketAddr, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    listen(address).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "cannot listen on {address}: the port is already in use (another Axon, or another program?); choose another with {key}"
        ),
        std::io::ErrorKind::AddrNotAvailable => anyhow::anyhow!(
            "cannot listen on {address}: no network interface of this machine has that address"
        ),
        _ => anyhow::anyhow!("cannot listen on {address}: {e}"),
    })
}

/// How many connections the kernel may hold for us before they are accepted (it caps this at
/// `net.core.somaxconn`). The standard library's 128 is too few for a reconnect storm: thousands of
/// clients coming back after a restart found the queue full, their handshakes were dropped and
/// retried after 1, 3 and 7 seconds (2,000 clients reconnecting at once: all answered after
/// 17–73 s instead of 2–3 s).
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `address` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as the standard
/// library sets, so a restart does not wait for the old connections' `TIME_WAIT`).
fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::time::Duration;

    /// A reconnect storm fits in the kernel's queue while the server is busy: far more handshakes
    /// than the standard library's 128 complete before a single one is accepted.
    #[tokio::test]
    async fn a_reconnect_storm_queues_before_it_is_accepted() {
        let listener = super::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        // The kernel caps the queue at net.core.somaxconn (4096 on current kernels).
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let storm = 600.min(cap + 1);
        let connected = tokio::task::spawn_blocking(move || {
            // A full queue drops the handshake (the client retries after a second), so a short
            // bound tells a queued connection from a dropped one.
            (0..storm)
                .map_while(|_| {
                    TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        assert_eq!(
            connected.len(),
            storm,
            "connections queued before the first accept"
        );
        drop(listener);
    }
}

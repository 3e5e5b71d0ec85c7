//! Axon, a Matrix homeserver on PostgreSQL.
//!
//! The doors run one way: `api` (HTTP) → `service` (the rules) → `store` (every SQL statement).

pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod listener;
pub mod postgres;
pub mod server;
pub mod service;
pub mod store;

use std::ops::Deref;
use std::sync::Arc;

use ruma::OwnedServerName;
use ruma::signatures::Ed25519KeyPair;
use sqlx::PgPool;

pub use config::Config;
pub use error::{Error, Result};

/// Everything a request needs, passed explicitly to every handler and service.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub db: PgPool,
    /// The event writer's own connections (see `writer_pool`).
    pub writer_db: PgPool,
    pub server_name: OwnedServerName,
    pub signing_key: Ed25519KeyPair,
    /// CA certificates of `federation.extra_ca_file`, trusted by every outbound client.
    pub extra_roots: Vec<reqwest::Certificate>,
    /// Signed requests to other servers.
    pub federation: Arc<service::federation::FederationClient>,
    /// Other servers' keys.
    pub keyring: service::federation::KeyRing,
    /// The outbound transaction queue (its sender runs in servers, not in admin commands).
    pub outbox: Arc<service::federation::queue::Outbox>,
    pub notifier: service::notifier::Notifier,
    pub rooms: service::room_cache::RoomCache,
    pub writer: service::writer::Writer,
    pub tokens: service::auth::TokenCache,
    /// Parsed `/sync` filters, shared by the requests that name them.
    pub filters: service::filter::FilterCache,
    pub rate_limiter: service::rate_limit::RateLimiter,
    pub uia: service::uia::Uia,
    pub sync_members: service::sync::LazyMemberCache,
    /// Admission for database-path syncs (one connection each, queued fairly).
    pub sync_gate: service::sync::SyncGate,
    pub sync_counts: service::sync::SyncCounts,
    pub joined_rooms: service::sync::JoinedRoomsCache,
    pub presence_touches: service::presence::SyncTouches,
    /// Presence writes, committed in batches.
    pub presence_writer: service::presence_writer::PresenceWriter,
    /// Devices' last activity, recorded in batches.
    pub last_seen: service::last_seen::LastSeenWriter,
    pub push_rules: service::push::RulesetCache,
    /// Ignore lists, read on every sync.
    pub ignored: service::ignore::IgnoreCache,
    /// The erased users (few; their events are served pruned to later joiners).
    pub erased: service::erasure::ErasedUsers,
    pub typing: service::typing::Typing,
    pub recent: service::recent::RecentEvents,
    /// Outgoing mail; None when no SMTP host is configured (email is off).
    pub email: Option<service::email::EmailService>,
    /// What `GET /metrics` renders; None when metrics are off (`metrics.enabled`).
    pub metrics: Option<Arc<service::metrics::Scrape>>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Connects the pieces over a migrated database and starts the background tasks (the writer,
    /// the cross-process listener). Call `shutdown` to stop them.
    pub async fn build(config: Config, db: PgPool) -> Result<Self> {
        let server_name = OwnedServerName::try_from(config.server_name.as_str())
            .map_err(|e| Error::internal(format!("server_name: {e}")))?;
        let current_key = service::keys::load_or_generate(&db).await?;
        let signing_key = current_key.key_pair()?;
        let extra_roots =
            service::federation::net::load_extra_roots(config.federation.extra_ca_file.as_deref())?;
        let federation = Arc::new(service::federation::FederationClient::new(
            &config.federation,
            &extra_roots,
            server_name.clone(),
            current_key.key_pair()?,
        )?);
        let outbox = Arc::new(service::federation::queue::Outbox::new(
            db.clone(),
            federation.clone(),
        ));
        let keyring = service::federation::KeyRing::new(
            db.clone(),
            federation.clone(),
            &config.federation.trusted_key_servers,
        );
        let notifier = service::notifier::Notifier::new();
        let rooms = service::room_cache::RoomCache::default();
        let rate_limiter = service::rate_limit::RateLimiter::new(&config);
        let email = service::email::EmailService::from_config(&config)?;
        let writer_db = service::writer::writer_pool(&db);
        let metrics = match config.metrics.enabled {
            true => Some(Arc::new(service::metrics::Scrape::new(
                service::metrics::install().map_err(Error::internal)?,
                db.clone(),
                writer_db.clone(),
            ))),
            false => None,
        };
        let state = AppState(Arc::new(Inner {
            writer: service::writer::Writer::new(),
            tokens: service::auth::TokenCache::default(),
            filters: Default::default(),
            uia: service::uia::Uia,
            sync_members: Default::default(),
            sync_gate: service::sync::SyncGate::new(
                match config.database.max_concurrent_syncs {
                    0 => (db.options().get_max_connections() / 2) as usize,
                    n => n as usize,
                },
                std::time::Duration::from_millis(config.database.acquire_timeout_ms),
            ),
            sync_counts: Default::default(),
            joined_rooms: Default::default(),
            presence_touches: Default::default(),
            presence_writer: Default::default(),
            last_seen: Default::default(),
            push_rules: Default::default(),
            ignored: Default::default(),
            erased: Default::default(),
            typing: service::typing::Typing::new(),
            recent: Default::default(),
            email,
            metrics,
            writer_db,
            config,
            db,
            server_name,
            signing_key,
            extra_roots,
            federation,
            keyring,
            outbox,
            notifier,
            rooms,
            rate_limiter,
        }));
        state.writer.start(state.clone());
        state.presence_writer.start(state.clone());
        state.last_seen.start(state.db.clone());
        service::notifier::start_listener(state.clone()).await?;
        service::maintenance::start(state.clone());
        service::typing::start_listener(state.clone()).await?;
        service::presence::start_sweeper(state.clone());
        service::notifier::start_deferred_waker(state.clone());
        Ok(state)
    }

    /// The axum router with every endpoint and layer.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// The federation listener's router (server-server and key endpoints).
    pub fn federation_router(&self) -> axum::Router {
        api::federation::router(self.clone())
    }

    /// The metrics listener's router (`GET /metrics`), when metrics are on.
    pub fn metrics_router(&self) -> Option<axum::Router> {
        self.metrics.clone().map(api::metrics::router)
    }
}

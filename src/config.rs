//! The TOML configuration: every key has a default so that no file is needed at all.
//! `config.example.toml` documents each key; keep the two in step.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server_name: String,
    /// Where clients reach us; defaults to http://{listen.address}:{listen.port}/.
    pub public_baseurl: Option<String>,
    pub data_dir: PathBuf,
    pub default_room_version: String,
    pub listen: Listen,
    pub database: Database,
    pub registration: Registration,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub sessions: Sessions,
    pub openid: OpenId,
    pub login_token: LoginToken,
    pub messages: Messages,
    pub directory: Directory,
    pub log: Log,
    pub presence: Presence,
    pub turn: Turn,
    pub media: Media,
    pub email: Email,
    pub federation: Federation,
    pub admin: Admin,
    pub server_notices: ServerNotices,
    pub retention: Retention,
    pub metrics: Metrics,
}

/// The Prometheus endpoint: `GET /metrics` on a listener of its own, never on the client port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Off by default: nothing is recorded and no listener opens.
    pub enabled: bool,
    pub address: IpAddr,
    pub port: u16,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            enabled: false,
            address: IpAddr::from([127, 0, 0, 1]),
            port: 9090,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub address: IpAddr,
    pub port: u16,
    /// Axon runs behind a reverse proxy: take the client's address from the last
    /// `X-Forwarded-For` entry (Synapse's listener option of the same name). Off: the peer's.
    pub x_forwarded: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `postgres://…`; when absent Axon runs its own cluster under `data_dir/postgres`.
    pub url: Option<String>,
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before it is answered 503.
    pub acquire_timeout_ms: u64,
    /// How many database-path /sync computations run at once (each holds one connection); the rest
    /// queue in order. 0: half the pool.
    pub max_concurrent_syncs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationPolicy {
    Open,
    Token,
    Disabled,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct Registration {
    /// Unset: `open` for the zero-config private setup on loopback, `disabled` otherwise.
    pub policy: Option<RegistrationPolicy>,
    /// Enables Synapse-compatible `/_synapse/admin/v1/register`.
    pub shared_secret: Option<String>,
    /// Lets anyone register a guest account (`POST /register?kind=guest`), whatever `policy` says,
    /// as Synapse's `allow_guest_access`. Off by default.
    pub allow_guest_access: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_request_body: usize,
    pub max_upload: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Off: no limit at all, per address, per account or per user.
    pub enabled: bool,
    /// Sustained login/registration attempts per second per client IP.
    pub per_second: f64,
    /// Attempts allowed in a burst before the rate applies.
    pub burst: u32,
    /// Whether the per-user limits (message … report) apply. Unset: yes, except in the zero-config
    /// setup (private database, loopback listener), where registration is open too.
    pub per_user: Option<bool>,
    /// Wrong passwords per account (any address); once used up, even the right password waits.
    pub failed_login: Limit,
    /// Events sent per user: messages, state events, redactions.
    pub message: Limit,
    /// Rooms created per user (each also counts as a message).
    pub room_creation: Limit,
    /// Rooms joined per user.
    pub join: Limit,
    /// Invites sent into one room.
    pub invite_per_room: Limit,
    /// Invites received by one user.
    pub invite_per_user: Limit,
    /// Media uploads (and `/create`) per user.
    pub media_create: Limit,
    /// Content reports per user.
    pub report: Limit,
    /// Login tokens (`POST /v1/login/get_token`) per user, counted after UIA.
    pub login_token: Limit,
    /// Users named in /keys/query and devices in /keys/claim, per user (each counts one token).
    pub key_lookups: Limit,
    /// Validation mails, per client address and per email address.
    pub threepid_validation: Limit,
}

/// A token bucket: `burst` actions at once, then `per_second`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub per_second: f64,
    pub burst: u32,
}

impl Limit {
    const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sessions {
    /// Lifetime of the access tokens of clients that asked for refresh tokens (`refresh_token: true`).
    /// Other access tokens do not expire.
    pub refreshable_access_token_lifetime_ms: u64,
}

/// OpenID tokens (`POST /user/{userId}/openid/request_token`), which widgets, integration managers
/// and call servers exchange at `/_matrix/federation/v1/openid/userinfo` for the user's ID.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenId {
    /// How long a token is honoured, in milliseconds (Synapse: one hour, fixed).
    pub token_lifetime_ms: u64,
}

/// Logging in a new device from an existing session (`POST /v1/login/get_token`, then an
/// `m.login.token` login): Synapse's `login_via_existing_session`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginToken {
    /// Off by default: the endpoint answers 404 and `m.login.token` is not offered.
    pub enabled: bool,
    /// The requesting session must pass user-interactive authentication (the password) every time.
    pub require_ui_auth: bool,
    /// How long a login token is honoured, in milliseconds (Synapse's `token_timeout`, 5 minutes).
    pub lifetime_ms: u64,
}

impl Default for OpenId {
    fn default() -> Self {
        Self {
            token_lifetime_ms: 60 * 60 * 1000,
        }
    }
}

impl Default for LoginToken {
    fn default() -> Self {
        Self {
            enabled: false,
            require_ui_auth: true,
            lifetime_ms: 5 * 60 * 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Messages {
    /// Clean `formatted_body` HTML to the spec's allowlist before storing.
    pub sanitize_html: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Directory {
    /// The user directory searches every local user (but the searcher), not only those sharing a
    /// room with the searcher or sitting in public rooms.
    pub search_all_users: bool,
    /// Reading profiles (GET /profile/{userId} and its fields) needs an access token. Off, as in
    /// Synapse (its key of the same name): anyone may read them.
    pub require_auth_for_profile_requests: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Presence {
    /// Off: presence is neither stored nor sent, and everyone reads as offline.
    pub enabled: bool,
    /// An online user with no activity for this long becomes unavailable.
    pub idle_after_ms: u64,
    /// A user neither active nor syncing for this long becomes offline.
    pub offline_after_ms: u64,
}

/// TURN servers handed to clients by GET /voip/turnServer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Turn {
    /// e.g. `turn:turn.example.org:3478?transport=udp`; none: the endpoint answers `{}`.
    pub uris: Vec<String>,
    /// The TURN server's `static-auth-secret` (coturn `use-auth-secret`): time-limited credentials.
    pub shared_secret: Option<String>,
    /// Static credentials, when there is no shared secret.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Lifetime of the credentials, in seconds.
    pub ttl: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Media {
    /// Where uploaded files and thumbnails live; unset: `data_dir/media`.
    pub path: Option<PathBuf>,
    /// Whether media uploaded while this is set may also be fetched from the deprecated,
    /// unauthenticated `/_matrix/media/v3/download` and `/thumbnail`. Off by default: like Synapse
    /// after its freeze, new media is served only through the authenticated endpoints. The choice is
    /// recorded per file at upload, so turning it off later does not expose or hide older files.
    pub legacy_unauthenticated_downloads: bool,
    pub url_preview: UrlPreview,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrlPreview {
    /// URL previews make the server fetch arbitrary URLs for its users: off by default.
    pub enabled: bool,
    /// Networks (`"10.1.0.0/16"`, `"::1/128"`, or a bare address) that previews may reach although
    /// they are private, loopback or link-local. Empty: only public addresses.
    pub ip_range_allowlist: Vec<String>,
}

/// Talking to other Matrix servers (the server-server API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Federation {
    /// Unset: on when `server_name` is a real name, off for the zero-config `localhost`.
    pub enabled: Option<bool>,
    /// The federation listener's address and port (separate from the client listener).
    pub address: IpAddr,
    pub port: u16,
    /// PEM files for the listener's TLS; without them it speaks plain HTTP, for a reverse proxy
    /// that terminates TLS in front of it.
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    /// Delegation: served as `m.server` in `/.well-known/matrix/server` on the client listener.
    pub well_known_server: Option<String>,
    /// Notaries asked for other servers' keys (`POST /_matrix/key/v2/query`), before the servers.
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    /// Networks outbound requests may reach although they are private, loopback or link-local.
    pub ip_range_allowlist: Vec<String>,
    /// When set, the only servers Axon federates with (both ways).
    pub domain_allowlist: Option<Vec<String>>,
    /// Off only for tests on one machine: other servers' certificates are not checked.
    pub verify_certificates: bool,
    /// A PEM file of CA certificates trusted besides the public roots (by federation, push and
    /// URL-preview requests).
    pub extra_ca_file: Option<PathBuf>,
}

/// A notary: its name and, optionally, its keys (`{"ed25519:abc": "base64"}`); without them its
/// keys are fetched from it directly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyServer {
    pub server_name: String,
    pub verify_keys: Option<std::collections::BTreeMap<String, String>>,
}

impl Default for Federation {
    fn default() -> Self {
        Self {
            enabled: None,
            address: IpAddr::from([0, 0, 0, 0]),
            port: 8448,
            tls_certificate: None,
            tls_private_key: None,
            well_known_server: None,
            trusted_key_servers: vec![],
            ip_range_allowlist: vec![],
            domain_allowlist: None,
            verify_certificates: true,
            extra_ca_file: None,
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a local relay).
    None,
    /// Plain connection upgraded with STARTTLS (required; usually port 587).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

/// Outgoing mail, for email addresses on accounts and password resets. Without `smtp_host` email is
/// off: its endpoints answer that email is not supported and no flow offers it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Email {
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    /// Credentials for SMTP AUTH; none: no authentication.
    pub smtp_user: Option<String>,
    pub smtp_pass: Option<String>,
    /// The From: of every mail, e.g. `Axon <noreply@example.org>`.
    pub notif_from: String,
    /// How long the link in a validation mail works.
    pub validation_token_lifetime_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing-subscriber filter, e.g. `info` or `axon=debug,sqlx=warn`. `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
}

impl Log {
    /// The filter to log with: `level`, with ruma's authorization rules quiet below warnings
    /// unless `level` names them (they log each event they allow at INFO).
    pub fn filter_directives(&self) -> String {
        if self.level.contains("ruma_state_res") {
            self.level.clone()
        } else {
            format!("{},ruma_state_res=warn", self.level)
        }
    }
}

/// The Synapse-compatible admin API (`/_synapse/admin/…`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Lets admins get an access token for any user (`POST /_synapse/admin/v1/users/{userId}/login`).
    /// Off by default.
    pub allow_login_as: bool,
}

/// Server notices: messages from the server to a user, in a room of their own (Synapse's
/// `server_notices`). Off while `system_mxid_localpart` is unset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerNotices {
    /// The localpart of the user that sends the notices (created on first use).
    pub system_mxid_localpart: Option<String>,
    pub system_mxid_display_name: String,
    pub room_name: String,
}

impl Default for ServerNotices {
    fn default() -> Self {
        Self {
            system_mxid_localpart: None,
            system_mxid_display_name: "Server Notices".into(),
            room_name: "Server Notices".into(),
        }
    }
}

/// Message retention (`m.room.retention`, as Synapse's `retention`): a job deletes the events
/// older than each room's `max_lifetime` (state events stay). Off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub enabled: bool,
    /// The policy of rooms without an `m.room.retention` event.
    pub default_policy: RetentionPolicy,
    /// Rooms' `max_lifetime` is raised to at least this (milliseconds).
    pub allowed_lifetime_min: Option<i64>,
    /// Rooms' `max_lifetime` is lowered to at most this (milliseconds).
    pub allowed_lifetime_max: Option<i64>,
    /// How often the purge job runs, in milliseconds.
    pub purge_interval_ms: u64,
}

/// A retention policy's lifetimes, in milliseconds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    pub min_lifetime: Option<i64>,
    pub max_lifetime: Option<i64>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            enabled: false,
            default_policy: RetentionPolicy::default(),
            allowed_lifetime_min: None,
            allowed_lifetime_max: None,
            purge_interval_ms: 24 * 3600 * 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            public_baseurl: None,
            data_dir: PathBuf::from("./data"),
            default_room_version: "12".into(),
            listen: Listen::default(),
            database: Database::default(),
            registration: Registration::default(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            sessions: Sessions::default(),
            openid: OpenId::default(),
            login_token: LoginToken::default(),
            messages: Messages::default(),
            directory: Directory::default(),
            log: Log::default(),
            presence: Presence::default(),
            turn: Turn::default(),
            media: Media::default(),
            federation: Federation::default(),
            email: Email::default(),
            admin: Admin::default(),
            server_notices: ServerNotices::default(),
            retention: Retention::default(),
            metrics: Metrics::default(),
        }
    }
}

impl Default for Email {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 25,
            tls: SmtpTls::Starttls,
            smtp_user: None,
            smtp_pass: None,
            notif_from: "Axon <noreply@localhost>".into(),
            validation_token_lifetime_ms: 60 * 60 * 1000,
        }
    }
}

impl Default for Presence {
    fn default() -> Self {
        // Offline well after a long-polling /sync (30 s) would have come back.
        Self {
            enabled: true,
            idle_after_ms: 5 * 60 * 1000,
            offline_after_ms: 2 * 60 * 1000,
        }
    }
}

impl Default for Turn {
    fn default() -> Self {
        Self {
            uris: vec![],
            shared_secret: None,
            username: None,
            password: None,
            ttl: 86400,
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 8008,
            x_forwarded: false,
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            acquire_timeout_ms: 5000,
            max_concurrent_syncs: 0,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_body: 1024 * 1024,
            max_upload: 50 * 1024 * 1024,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        // Per address: generous enough for a test suite or a benchmark registering users from one
        // address, tight enough to make password guessing slow. The rest are Synapse's defaults.
        Self {
            enabled: true,
            per_second: 5.0,
            burst: 50,
            per_user: None,
            failed_login: Limit::new(0.17, 3),
            message: Limit::new(0.2, 10),
            room_creation: Limit::new(0.016, 10),
            join: Limit::new(0.1, 10),
            invite_per_room: Limit::new(0.3, 10),
            invite_per_user: Limit::new(0.003, 5),
            media_create: Limit::new(10.0, 50),
            report: Limit::new(1.0, 5),
            // About one a minute, as Synapse (fixed there): each token is another session.
            login_token: Limit::new(0.017, 1),
            key_lookups: Limit::new(200.0, 5000),
            threepid_validation: Limit::new(0.003, 5),
        }
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            refreshable_access_token_lifetime_ms: 5 * 60 * 1000,
        }
    }
}

impl Default for Messages {
    fn default() -> Self {
        Self {
            sanitize_html: true,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}

/// A configuration problem, worded for the operator: it names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Reads `path` if given, then applies environment overrides and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(|key| std::env::var(key).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        // toml's message already names the key and shows the offending line.
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// `AXON_DATABASE_URL` (or `DATABASE_URL`), `AXON_LISTEN_ADDRESS`, `AXON_LISTEN_PORT`, `AXON_DATA_DIR`,
    /// `AXON_SERVER_NAME`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(url) = var("AXON_DATABASE_URL").or_else(|| var("DATABASE_URL")) {
            self.database.url = Some(url);
        }
        if let Some(address) = var("AXON_LISTEN_ADDRESS") {
            self.listen.address = address.parse().map_err(|_| ConfigError::Invalid {
                key: "listen.address",
                message: format!("AXON_LISTEN_ADDRESS={address:?} is not an IP address"),
            })?;
        }
        if let Some(port) = var("AXON_LISTEN_PORT") {
            self.listen.port = port.parse().map_err(|_| ConfigError::Invalid {
                key: "listen.port",
                message: format!("AXON_LISTEN_PORT={port:?} is not a port number"),
            })?;
        }
        if let Some(dir) = var("AXON_DATA_DIR") {
            self.data_dir = dir.into();
        }
        if let Some(name) = var("AXON_SERVER_NAME") {
            self.server_name = name;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if ruma::ServerName::parse(&self.server_name).is_err() {
            return invalid(
                "server_name",
                "must be a valid Matrix server name such as example.org",
            );
        }
        if let Some(url) = &self.public_baseurl
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("public_baseurl", "must start with http:// or https://");
        }
        if !crate::service::room_versions::SUPPORTED.contains(&self.default_room_version.as_str()) {
            return invalid(
                "default_room_version",
                "must be one of \"10\", \"11\", \"12\"",
            );
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return invalid("database.url", "must be a postgres:// URL");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self.limits.max_request_body < 65536 {
            return invalid(
                "limits.max_request_body",
                "must be at least 65536 bytes (one event)",
            );
        }
        if self.rate_limits.per_second <= 0.0 || self.rate_limits.burst == 0 {
            return invalid("rate_limits", "per_second and burst must be positive");
        }
        let r = &self.rate_limits;
        for (key, limit) in [
            ("rate_limits.failed_login", r.failed_login),
            ("rate_limits.message", r.message),
            ("rate_limits.room_creation", r.room_creation),
            ("rate_limits.join", r.join),
            ("rate_limits.invite_per_room", r.invite_per_room),
            ("rate_limits.invite_per_user", r.invite_per_user),
            ("rate_limits.media_create", r.media_create),
            ("rate_limits.report", r.report),
            ("rate_limits.login_token", r.login_token),
            ("rate_limits.key_lookups", r.key_lookups),
            ("rate_limits.threepid_validation", r.threepid_validation),
        ] {
            if !(limit.per_second > 0.0 && limit.per_second.is_finite()) || limit.burst == 0 {
                return invalid(key, "per_second and burst must be positive");
            }
        }
        if self.sessions.refreshable_access_token_lifetime_ms < 1000 {
            return invalid(
                "sessions.refreshable_access_token_lifetime_ms",
                "must be at least 1000",
            );
        }
        if self.openid.token_lifetime_ms < 1000 {
            return invalid("openid.token_lifetime_ms", "must be at least 1000");
        }
        if self.login_token.lifetime_ms < 1000 {
            return invalid("login_token.lifetime_ms", "must be at least 1000");
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return invalid(
                "log.level",
                "is not a valid filter such as \"info\" or \"axon=debug\"",
            );
        }
        if self.limits.max_upload == 0 {
            return invalid("limits.max_upload", "must be at least 1 byte");
        }
        for network in &self.media.url_preview.ip_range_allowlist {
            if crate::service::media::preview::IpNetwork::parse(network).is_none() {
                return invalid(
                    "media.url_preview.ip_range_allowlist",
                    "entries must be IP networks such as \"127.0.0.1/32\" or \"fd00::/8\"",
                );
            }
        }
        if let Some(secret) = &self.registration.shared_secret
            && secret.is_empty()
        {
            return invalid("registration.shared_secret", "must not be empty");
        }
        if self.presence.idle_after_ms == 0 || self.presence.offline_after_ms == 0 {
            return invalid(
                "presence",
                "idle_after_ms and offline_after_ms must be positive",
            );
        }
        if self.turn.ttl == 0 {
            return invalid("turn.ttl", "must be at least 1 second");
        }
        if self.turn.shared_secret.as_deref() == Some("") {
            return invalid("turn.shared_secret", "must not be empty");
        }
        if self.turn.shared_secret.is_some()
            && (self.turn.username.is_some() || self.turn.password.is_some())
        {
            return invalid(
                "turn",
                "set either shared_secret or username and password, not both",
            );
        }
        if self.metrics.enabled
            && self.metrics.address == self.listen.address
            && self.metrics.port == self.listen.port
        {
            return invalid(
                "metrics.port",
                "must differ from listen.port: metrics are never served on the client listener",
            );
        }
        self.validate_email()?;
        self.validate_federation()
    }

    fn validate_email(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        let email = &self.email;
        if email.smtp_host.as_deref() == Some("") {
            return invalid(
                "email.smtp_host",
                "must not be empty (leave it out to turn email off)",
            );
        }
        if email.smtp_user.is_some() != email.smtp_pass.is_some() {
            return invalid("email", "set both smtp_user and smtp_pass, or neither");
        }
        if email
            .notif_from
            .parse::<lettre::message::Mailbox>()
            .is_err()
        {
            return invalid(
                "email.notif_from",
                "must be an address such as \"Axon <noreply@example.org>\"",
            );
        }
        if email.validation_token_lifetime_ms < 1000 {
            return invalid(
                "email.validation_token_lifetime_ms",
                "must be at least 1000",
            );
        }
        Ok(())
    }

    fn validate_federation(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        let f = &self.federation;
        if f.tls_certificate.is_some() != f.tls_private_key.is_some() {
            return invalid(
                "federation.tls_certificate",
                "set both tls_certificate and tls_private_key, or neither",
            );
        }
        for network in &f.ip_range_allowlist {
            if crate::service::media::preview::IpNetwork::parse(network).is_none() {
                return invalid(
                    "federation.ip_range_allowlist",
                    "entries must be IP networks such as \"127.0.0.0/8\" or \"fd00::/8\"",
                );
            }
        }
        if let Some(name) = &f.well_known_server
            && ruma::ServerName::parse(name).is_err()
        {
            return invalid(
                "federation.well_known_server",
                "must be a server name such as matrix.example.org:443",
            );
        }
        for server in &f.trusted_key_servers {
            if ruma::ServerName::parse(&server.server_name).is_err() {
                return invalid(
                    "federation.trusted_key_servers",
                    "server_name must be a server name such as matrix.org",
                );
            }
        }
        if self.federation_enabled() && self.server_name_is_local() {
            return invalid(
                "federation.enabled",
                "a server named localhost cannot federate: set server_name",
            );
        }
        Ok(())
    }

    /// Whether email is configured (an SMTP host is set).
    pub fn email_enabled(&self) -> bool {
        self.email.smtp_host.is_some()
    }

    /// Whether `server_name` is the zero-config `localhost` (with or without a port).
    fn server_name_is_local(&self) -> bool {
        let host = self.server_name.split(':').next().unwrap_or_default();
        host.eq_ignore_ascii_case("localhost")
    }

    /// `federation.enabled`, or when unset: on for a real server name, off for `localhost`.
    pub fn federation_enabled(&self) -> bool {
        self.federation
            .enabled
            .unwrap_or(!self.server_name_is_local())
    }

    pub fn public_baseurl(&self) -> String {
        match &self.public_baseurl {
            Some(url) if url.ends_with('/') => url.clone(),
            Some(url) => format!("{url}/"),
            None => match self.listen.address {
                IpAddr::V6(a) => format!("http://[{a}]:{}/", self.listen.port),
                IpAddr::V4(a) => format!("http://{a}:{}/", self.listen.port),
            },
        }
    }

    /// Where media files live: `media.path`, or `data_dir/media`.
    pub fn media_path(&self) -> PathBuf {
        self.media
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("media"))
    }

    /// The zero-config setup: Axon's private database and a loopback listener, a local trial.
    fn is_private_setup(&self) -> bool {
        self.database.url.is_none() && self.listen.address.is_loopback()
    }

    /// The effective policy: open only for the zero-config private setup on loopback.
    pub fn registration_policy(&self) -> RegistrationPolicy {
        self.registration
            .policy
            .unwrap_or(if self.is_private_setup() {
                RegistrationPolicy::Open
            } else {
                RegistrationPolicy::Disabled
            })
    }

    /// Whether the per-user rate limits apply (`rate_limits.per_user`): unset, on everywhere except in
    /// the zero-config private setup on loopback, where one local user (or a benchmark) may send as
    /// fast as the server goes. The per-address and failed-login limits do not depend on it.
    pub fn per_user_rate_limits(&self) -> bool {
        self.rate_limits
            .per_user
            .unwrap_or(!self.is_private_setup())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ruma_auth_rules_log_only_warnings_unless_asked() {
        let log = |level: &str| super::Log {
            level: level.into(),
            format: super::LogFormat::Human,
        };
        assert_eq!(log("info").filter_directives(), "info,ruma_state_res=warn");
        assert_eq!(
            log("axon=debug,ruma_state_res=debug").filter_directives(),
            "axon=debug,ruma_state_res=debug"
        );
        assert!(
            log("info")
                .filter_directives()
                .parse::<tracing_subscriber::EnvFilter>()
                .is_ok()
        );
    }

    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.port, 8008);
        assert_eq!(c.registration_policy(), RegistrationPolicy::Open);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[listen]\nprot = 1\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::from_toml("[listen]\nport = \"x\"\n").unwrap_err();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn database_url_closes_open_registration() {
        let mut c = Config::default();
        c.apply_env(|k| (k == "AXON_DATABASE_URL").then(|| "postgres://x/y".to_string()))
            .unwrap();
        assert_eq!(c.registration_policy(), RegistrationPolicy::Disabled);
    }

    #[test]
    fn presence_and_turn_sections_parse_and_validate() {
        let c = Config::from_toml("[presence]\nenabled = false\n[turn]\nuris = [\"turn:t.example.org\"]\nshared_secret = \"s\"\nttl = 60\n").unwrap();
        assert!(!c.presence.enabled);
        assert_eq!(c.turn.ttl, 60);
        c.validate().unwrap();
        let both = Config::from_toml("[turn]\nshared_secret = \"s\"\nusername = \"u\"\n").unwrap();
        assert!(both.validate().unwrap_err().to_string().contains("turn"));
        let zero = Config::from_toml("[presence]\nidle_after_ms = 0\n").unwrap();
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("presence")
        );
    }

    #[test]
    fn media_defaults_and_bad_allowlist() {
        let c = Config::from_toml("data_dir = \"/srv/axon\"\n").unwrap();
        assert_eq!(c.media_path(), PathBuf::from("/srv/axon/media"));
        assert!(!c.media.url_preview.enabled);
        assert!(!c.media.legacy_unauthenticated_downloads);
        let c = Config::from_toml("[media.url_preview]\nip_range_allowlist = [\"10.0.0.0/33\"]\n")
            .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("media.url_preview.ip_range_allowlist")
        );
    }

    #[test]
    fn rate_limit_tables_parse_and_per_user_limits_follow_the_setup() {
        // The old keys still work.
        let c = Config::from_toml("[rate_limits]\nenabled = true\nper_second = 1.0\nburst = 2\n")
            .unwrap();
        assert_eq!(c.rate_limits.burst, 2);
        assert_eq!(c.rate_limits.message.burst, 10);
        assert!(!c.per_user_rate_limits(), "zero-config setup: off");
        let c = Config::from_toml(
            "[database]\nurl = \"postgres://x/y\"\n[rate_limits.message]\nper_second = 3.0\nburst = 30\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.per_user_rate_limits(), "a real setup: on");
        assert_eq!(c.rate_limits.message.per_second, 3.0);
        let c = Config::from_toml("[rate_limits]\nper_user = true\n").unwrap();
        assert!(c.per_user_rate_limits());
        let c = Config::from_toml("[rate_limits.join]\nper_second = 0.0\nburst = 1\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("rate_limits.join")
        );
        let err = Config::from_toml("[rate_limits.join]\nper_second = 1.0\n").unwrap_err();
        assert!(err.contains("burst"), "{err}");
    }

    #[test]
    fn email_section_parses_and_validates() {
        let c = Config::from_toml("[email]\nsmtp_host = \"mail.example.org\"\nsmtp_port = 465\ntls = \"tls\"\nsmtp_user = \"u\"\nsmtp_pass = \"p\"\nnotif_from = \"Axon <a@example.org>\"\n").unwrap();
        c.validate().unwrap();
        assert!(c.email_enabled());
        assert_eq!(c.email.tls, SmtpTls::Tls);
        assert!(!Config::default().email_enabled());
        let half = Config::from_toml("[email]\nsmtp_user = \"u\"\n").unwrap();
        assert!(half.validate().unwrap_err().to_string().contains("email"));
        let from = Config::from_toml("[email]\nnotif_from = \"not an address\"\n").unwrap();
        assert!(
            from.validate()
                .unwrap_err()
                .to_string()
                .contains("email.notif_from")
        );
        assert!(Config::from_toml("[email]\ntls = \"ssl\"\n").is_err());
    }

    #[test]
    fn federation_follows_the_server_name_and_validates() {
        let c = Config::from_toml("").unwrap();
        assert!(!c.federation_enabled(), "zero-config localhost: off");
        assert_eq!(c.federation.port, 8448);
        assert!(c.federation.verify_certificates);
        let c = Config::from_toml("server_name = \"example.org\"\n").unwrap();
        assert!(c.federation_enabled());
        let c = Config::from_toml(
            "server_name = \"example.org\"\n[federation]\nenabled = false\ntrusted_key_servers = [{ server_name = \"matrix.org\", verify_keys = { \"ed25519:auto\" = \"Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw\" } }]\n",
        )
        .unwrap();
        assert!(!c.federation_enabled());
        c.validate().unwrap();
        for (toml, key) in [
            ("[federation]\nenabled = true\n", "federation.enabled"),
            (
                "[federation]\ntls_certificate = \"c.pem\"\n",
                "federation.tls_certificate",
            ),
            (
                "[federation]\nip_range_allowlist = [\"x\"]\n",
                "federation.ip_range_allowlist",
            ),
            (
                "[federation]\nwell_known_server = \"a b\"\n",
                "federation.well_known_server",
            ),
        ] {
            let c = Config::from_toml(toml).unwrap();
            assert!(
                c.validate().unwrap_err().to_string().contains(key),
                "{toml}"
            );
        }
    }

    #[test]
    fn bad_server_name_is_named() {
        let c = Config {
            server_name: "not a name".into(),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("server_name")
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The documented example must parse, and say exactly what the defaults are.
    #[test]
    fn config_example_parses_to_the_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
                .unwrap();
        let example = Config::from_toml(&text).unwrap();
        assert_eq!(format!("{example:?}"), format!("{:?}", Config::default()));
    }
}

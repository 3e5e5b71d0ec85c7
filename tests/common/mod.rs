//! The harness: one private PostgreSQL cluster per test run (the server's own cluster code), a
//! migrated template database, and for each test a fresh database cloned from it and an Axon on a
//! random port.

#![allow(dead_code)]

use std::sync::OnceLock;

use axon::postgres::Cluster;
use axon::{AppState, Config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

const TEMPLATE: &str = "axon_template";

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The cluster is a child of this thread and dies with it (PDEATHSIG): the thread lives as long
        // as the test process.
        std::thread::spawn(move || {
            let result = start_cluster();
            match result {
                Ok((cluster, child)) => {
                    tx.send(Ok(cluster)).unwrap();
                    let _child = child;
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => tx.send(Err(e)).unwrap(),
            }
        });
        rx.recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("test cluster: {e}"))
    })
}

fn start_cluster() -> Result<(Cluster, std::process::Child), String> {
    remove_stale_dirs();
    let dir = std::env::temp_dir().join(format!("axon-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = Cluster::init(&dir).map_err(|e| e.to_string())?;
    let child = cluster.spawn_ephemeral().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut conn = None;
        for _ in 0..300 {
            match PgConnection::connect_with(&cluster.connect_options("postgres")).await {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
        let mut conn = conn.ok_or("PostgreSQL did not start")?;
        sqlx::query(&format!("CREATE DATABASE {TEMPLATE}"))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(cluster.connect_options(TEMPLATE))
            .await
            .map_err(|e| e.to_string())?;
        axon::server::MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| e.to_string())?;
        pool.close().await;
        Ok::<_, String>(())
    })?;
    Ok((cluster, child))
}

/// Test clusters of runs whose process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("axon-test-")
            .and_then(|p| p.parse::<u32>().ok())
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh database cloned from the migrated template.
pub async fn fresh_database() -> (String, PgPool) {
    fresh_database_with_pool(10).await
}

/// Axon's own pool options (dead connections dropped after a loss, bounded waits) over `db_name`.
pub async fn test_pool(db_name: &str, max_connections: u32) -> PgPool {
    axon::store::pool::options(max_connections, std::time::Duration::from_secs(5))
        .connect_with(axon::store::pool::connect_options(
            cluster().connect_options(db_name),
        ))
        .await
        .unwrap()
}

/// A fresh database, and a pool of `max_connections` over it.
pub async fn fresh_database_with_pool(max_connections: u32) -> (String, PgPool) {
    let cluster = cluster();
    let name = format!(
        "t_{}",
        axon::service::auth::random_string(16).to_lowercase()
    );
    let mut conn = PgConnection::connect_with(&cluster.connect_options("postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let pool = test_pool(&name, max_connections).await;
    (name, pool)
}

pub fn test_config() -> Config {
    let mut config = Config {
        server_name: "test.local".into(),
        ..Config::default()
    };
    config.registration.policy = Some(axon::config::RegistrationPolicy::Open);
    config.rate_limits.enabled = false;
    config.federation.enabled = Some(false);
    config
}

pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub db: PgPool,
    pub db_name: String,
    /// The federation listener, for instances started with `spawn_federating`.
    pub fed: Option<FedListener>,
}

/// A test instance's TLS federation listener.
pub struct FedListener {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    /// The self-signed certificate (PEM file) the listener presents.
    pub cert_file: std::path::PathBuf,
    /// Holds the certificate and key files.
    pub dir: tempfile::TempDir,
    stop: tokio::sync::watch::Sender<bool>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl FedListener {
    /// Takes the federation listener down: no new connections, open ones closed once idle.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(serving) = self.serving.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), serving).await;
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, written to `dir`: (cert, key) paths.
pub fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// An Axon named `127.0.0.1:PORT` with a TLS federation listener on PORT (a self-signed
/// certificate made here), allowed to reach loopback, not checking certificates unless `configure`
/// says otherwise.
pub async fn spawn_federating(configure: impl FnOnce(&mut Config)) -> TestApp {
    let (db_name, db) = fresh_database().await;
    spawn_federating_on(db_name, db, configure).await
}

/// As `spawn_federating`, on a database of the caller's.
pub async fn spawn_federating_on(
    db_name: String,
    db: PgPool,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = self_signed_cert(dir.path());
    let mut config = test_config();
    config.server_name = format!("127.0.0.1:{port}");
    config.federation.enabled = Some(true);
    config.federation.ip_range_allowlist = vec!["127.0.0.0/8".into()];
    config.federation.verify_certificates = false;
    config.federation.tls_certificate = Some(cert_file.clone());
    config.federation.tls_private_key = Some(key_file.clone());
    configure(&mut config);
    init_logs();
    let mut app = spawn_on(config, db_name, db).await;
    app.state.outbox.start();
    let (stop, serving) = serve_federation(&app.state, tcp, &cert_file, &key_file);
    app.fed = Some(FedListener {
        url: format!("https://127.0.0.1:{port}"),
        port,
        cert_file,
        dir,
        stop,
        serving: Some(serving),
    });
    app
}

/// Serves `state`'s federation endpoints with TLS on `tcp` until told to stop.
fn serve_federation(
    state: &AppState,
    tcp: tokio::net::TcpListener,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let tls = axon::listener::tls_config(cert_file, key_file).unwrap();
    let router = state.federation_router();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let _ = axon::listener::serve_federation(router, tcp, Some(tls), shutdown).await;
    });
    (stop, serving)
}

impl FedListener {
    /// Serves `state`'s federation endpoints again on the same port, after `stop`: the server is
    /// back.
    pub async fn restart(&mut self, state: &AppState) {
        let mut tcp = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(t) => {
                    tcp = Some(t);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
        let tcp = tcp.expect("the federation port is free again");
        let key_file = self.dir.path().join("key.pem");
        let (stop, serving) = serve_federation(state, tcp, &self.cert_file, &key_file);
        self.stop = stop;
        self.serving = Some(serving);
    }
}

/// `old` dies (its federation sender stops where it is, keeping its leases; its federation
/// listener closes) and a new Axon process starts on its database, with its configuration and
/// federation port: a crash and a restart.
pub async fn crash_and_restart(old: &mut TestApp) -> TestApp {
    old.state.outbox.stop();
    let mut fed = old.fed.take().expect("a federating instance");
    fed.stop().await;
    let pool = test_pool(&old.db_name, 10).await;
    let mut app = spawn_on(old.state.config.clone(), old.db_name.clone(), pool).await;
    app.state.outbox.start();
    fed.restart(&app.state).await;
    app.fed = Some(fed);
    app
}

/// An HTTPS client for tests that trusts any certificate (the test's own self-signed ones).
pub fn insecure_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_config()).await
}

/// Server logs in test output when RUST_LOG is set.
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
}

pub async fn spawn_app_with(config: Config) -> TestApp {
    init_logs();
    let (db_name, db) = fresh_database().await;
    spawn_on(config, db_name, db).await
}

/// An Axon whose request pool holds only `max_connections` connections.
pub async fn spawn_app_with_pool(config: Config, max_connections: u32) -> TestApp {
    let (db_name, db) = fresh_database_with_pool(max_connections).await;
    spawn_on(config, db_name, db).await
}

/// Another Axon process on the same database (as several instances behind a load balancer).
pub async fn spawn_peer(app: &TestApp) -> TestApp {
    let pool = test_pool(&app.db_name, 10).await;
    spawn_on(app.state.config.clone(), app.db_name.clone(), pool).await
}

/// A migrated database named `axon` on a cluster of the caller's, once it accepts connections, and
/// a pool over it with Axon's options.
pub async fn wait_for_database(cluster: &Cluster) -> PgPool {
    for _ in 0..300 {
        if let Ok(mut conn) = PgConnection::connect_with(&cluster.connect_options("postgres")).await
        {
            sqlx::query("CREATE DATABASE axon")
                .execute(&mut conn)
                .await
                .unwrap();
            let pool = axon::store::pool::options(10, std::time::Duration::from_secs(1))
                .connect_with(axon::store::pool::connect_options(
                    cluster.connect_options("axon"),
                ))
                .await
                .unwrap();
            axon::server::MIGRATOR.run(&pool).await.unwrap();
            return pool;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("PostgreSQL did not start");
}

/// An Axon on a pool of the caller's.
pub async fn spawn_on_pool(config: Config, db: PgPool) -> TestApp {
    spawn_on(config, "axon".into(), db).await
}

async fn spawn_on(config: Config, db_name: String, db: PgPool) -> TestApp {
    let state = AppState::build(config, db.clone())
        .await
        .expect("building the app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = state.router();
    // The server's own client listener, so every test goes through it.
    tokio::spawn(axon::listener::serve_client(
        router,
        listener,
        std::future::pending(),
    ));
    TestApp {
        base_url: format!("http://{address}"),
        http: reqwest::Client::new(),
        state,
        db,
        db_name,
        fed: None,
    }
}

/// A response: status and JSON body (Null when the body is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected 200, got {} {}",
            self.status,
            self.body
        );
        self.body
    }

    #[track_caller]
    pub fn expect_err(&self, status: u16, errcode: &str) {
        assert_eq!(self.status.as_u16(), status, "status; body {}", self.body);
        assert_eq!(self.errcode(), errcode, "errcode; body {}", self.body);
    }
}

impl TestApp {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base_url, path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base_url, path))
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        Resp {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None, None).await
    }

    /// Registers `name` with the dummy stage and returns a logged-in user.
    pub async fn register(&self, name: &str) -> User {
        let body = json!({"username": name, "password": "correct horse", "auth": {"type": "m.login.dummy"}});
        let v = self
            .request(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(body),
            )
            .await
            .ok();
        User {
            app: self.clone_handle(),
            user_id: v["user_id"].as_str().unwrap().to_owned(),
            token: v["access_token"].as_str().unwrap().to_owned(),
            device_id: v["device_id"].as_str().unwrap().to_owned(),
        }
    }

    fn clone_handle(&self) -> AppHandle {
        AppHandle {
            base_url: self.base_url.clone(),
            http: self.http.clone(),
        }
    }

    /// The same user, seen through another instance.
    pub fn as_user(&self, user: &User) -> User {
        User {
            app: self.clone_handle(),
            ..user.clone()
        }
    }
}

#[derive(Clone)]
pub struct AppHandle {
    pub base_url: String,
    pub http: reqwest::Client,
}

/// A logged-in user, with helpers that read like the spec.
#[derive(Clone)]
pub struct User {
    pub app: AppHandle,
    pub user_id: String,
    pub token: String,
    pub device_id: String,
}

pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl User {
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let url = if path.starts_with("/_matrix") || path.starts_with("/_synapse") {
            format!("{}{}", self.app.base_url, path)
        } else {
            format!("{}/_matrix/client/v3{}", self.app.base_url, path)
        };
        let mut req = self.app.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        Resp {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request(Method::DELETE, path, None).await
    }
}

/// A `postgres://` URL for the test database `db_name` (the cluster listens only on its unix
/// socket), for running the `axon` binary against a test's database.
pub fn database_url(db_name: &str) -> String {
    format!(
        "postgres://axon@localhost/{db_name}?host={}",
        cluster().dir().display()
    )
}

/// A room made directly through the event writer (no createRoom presets): `drafts` are its first
/// events, and then each of `joiners` joins.
pub async fn writer_room(
    app: &TestApp,
    version: axon::service::room_versions::RoomVersion,
    drafts: Vec<axon::service::events::EventDraft>,
    joiners: &[&User],
) -> String {
    use axon::service::writer::Target;
    // Before v12 the creating server picks the room ID, on its own server name.
    let room_id = (!version.room_id_from_create()).then(|| {
        format!(
            "!{}:{}",
            axon::service::auth::random_string(18),
            app.state.server_name
        )
    });
    let target = Target::New {
        version,
        room_id,
        is_public: false,
        aliases: vec![],
    };
    let room_id = app
        .state
        .writer
        .submit(target, drafts, None)
        .await
        .unwrap()
        .room_id;
    for user in joiners {
        let u = user.user_id.as_str();
        let join = axon::service::events::EventDraft::new(
            "m.room.member",
            Some(u),
            u,
            serde_json::json!({"membership": "join"}),
        );
        app.state
            .writer
            .submit(Target::Existing(room_id.clone()), vec![join], None)
            .await
            .unwrap();
    }
    room_id
}

/// An empty database (not from the migrated template), for restoring a dump into.
pub async fn empty_database() -> String {
    let name = format!(
        "r_{}",
        axon::service::auth::random_string(16).to_lowercase()
    );
    let mut conn = PgConnection::connect_with(&cluster().connect_options("postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    name
}

/// Runs one of PostgreSQL's client programs (`pg_dump`, `pg_restore`) against the test cluster,
/// as its superuser over its socket; panics with its stderr if it fails.
pub fn pg_tool(program: &str, args: &[&str]) {
    let bindir = axon::postgres::find_bindir().unwrap();
    let out = std::process::Command::new(bindir.join(program))
        .arg("--host")
        .arg(cluster().dir())
        .args(["--username", "axon"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves the metrics router of `app` (built with `metrics.enabled`) on a port of its own;
/// returns its base URL.
pub async fn serve_metrics(app: &TestApp) -> String {
    let router = app.state.metrics_router().expect("metrics are enabled");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

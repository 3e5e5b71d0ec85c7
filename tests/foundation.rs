//! The foundation: error model, CORS, discovery endpoints, configuration, the private cluster.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn versions_lists_spec_versions() {
    let app = spawn_app().await;
    let v = app.get("/_matrix/client/versions").await.ok();
    let versions: Vec<&str> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(versions.contains(&"v1.11"), "{versions:?}");
}

/// Every version up to v1.15 adds only endpoints Axon serves or optional modules (v1.15: the room
/// summary, and `auth_metadata`, which a server without OAuth 2.0 answers 404 `M_UNRECOGNIZED`);
/// v1.16 adds custom profile fields, which Axon lacks.
#[tokio::test]
async fn versions_lists_every_served_version_up_to_v1_15() {
    let app = spawn_app().await;
    let v = app.get("/_matrix/client/versions").await.ok();
    let versions: Vec<&str> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for version in ["v1.12", "v1.13", "v1.14", "v1.15"] {
        assert!(versions.contains(&version), "{version}: {versions:?}");
    }
    assert!(!versions.contains(&"v1.16"), "{versions:?}");
    app.get("/_matrix/client/v1/auth_metadata")
        .await
        .expect_err(404, "M_UNRECOGNIZED");
}

/// Element Web sets up cross-signing only when it sees `org.matrix.e2e_cross_signing`; the other
/// flags are those Synapse advertises for features Axon implements.
#[tokio::test]
async fn versions_advertise_the_unstable_features_axon_implements() {
    let app = spawn_app().await;
    let v = app.get("/_matrix/client/versions").await.ok();
    let features = &v["unstable_features"];
    for flag in [
        "org.matrix.e2e_cross_signing",
        "org.matrix.msc2432",
        "org.matrix.msc2285.stable",
        "org.matrix.msc3440.stable",
        "org.matrix.msc3771",
        "org.matrix.msc3391",
        // Simplified sliding sync (MSC4186), served natively.
        "org.matrix.simplified_msc3575",
    ] {
        assert_eq!(features[flag], json!(true), "{flag}: {features}");
    }
    // Only what is implemented: nothing advertised as false, no labels.
    assert!(
        features
            .as_object()
            .unwrap()
            .values()
            .all(|v| *v == json!(true)),
        "{features}"
    );
}

#[tokio::test]
async fn well_known_points_at_public_baseurl() {
    let mut config = test_config();
    config.public_baseurl = Some("https://matrix.example.org".into());
    let app = spawn_app_with(config).await;
    let v = app.get("/.well-known/matrix/client").await.ok();
    assert_eq!(v["m.homeserver"]["base_url"], "https://matrix.example.org/");
}

#[tokio::test]
async fn capabilities_offer_room_versions_1_to_12_default_12() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let v = alice.get("/capabilities").await.ok();
    let rv = &v["capabilities"]["m.room_versions"];
    assert_eq!(rv["default"], "12");
    for version in 1..=12 {
        assert_eq!(rv["available"][version.to_string()], "stable", "{version}");
    }
    assert_eq!(rv["available"].as_object().unwrap().len(), 12);
    // Capabilities need a token.
    app.get("/_matrix/client/v3/capabilities")
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn unknown_endpoint_is_404_unrecognized() {
    let app = spawn_app().await;
    app.get("/_matrix/client/v3/no/such/endpoint")
        .await
        .expect_err(404, "M_UNRECOGNIZED");
    app.get("/nothing").await.expect_err(404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn wrong_method_is_405_unrecognized() {
    let app = spawn_app().await;
    app.request(Method::DELETE, "/_matrix/client/v3/login", None, None)
        .await
        .expect_err(405, "M_UNRECOGNIZED");
    app.request(Method::POST, "/_matrix/client/versions", None, None)
        .await
        .expect_err(405, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn body_that_is_not_json_is_m_not_json() {
    let app = spawn_app().await;
    let r = app
        .raw(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            b"{not json".to_vec(),
        )
        .await;
    r.expect_err(400, "M_NOT_JSON");
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_m_bad_json() {
    let app = spawn_app().await;
    let r = app
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": 5})),
        )
        .await;
    r.expect_err(400, "M_BAD_JSON");
    let r = app
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!([1, 2])),
        )
        .await;
    r.expect_err(400, "M_BAD_JSON");
}

#[tokio::test]
async fn oversized_body_is_m_too_large() {
    let app = spawn_app().await;
    let big = format!(
        "{{\"type\":\"m.login.password\",\"pad\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let r = app
        .raw(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            big.into_bytes(),
        )
        .await;
    r.expect_err(413, "M_TOO_LARGE");
}

#[tokio::test]
async fn cors_preflight_allows_any_origin() {
    let app = spawn_app().await;
    let resp = app
        .http
        .request(
            Method::OPTIONS,
            format!("{}/_matrix/client/v3/login", app.base_url),
        )
        .header("Origin", "https://app.element.io")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    for m in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for name in ["x-requested-with", "content-type", "authorization"] {
        assert!(headers.contains(name), "{headers}");
    }
    // Ordinary responses carry the origin header too.
    let r = app
        .http
        .get(format!("{}/_matrix/client/versions", app.base_url))
        .header("Origin", "https://x.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn r0_paths_and_unknown_query_parameters_work() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let r = alice
        .get("/_matrix/client/r0/account/whoami?_cacheBuster=12345")
        .await
        .ok();
    assert_eq!(r["user_id"], alice.user_id);
}

#[tokio::test]
async fn health_answers_ok() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!("{}/health", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn config_error_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("axon.toml");
    std::fs::write(&path, "[listen]\nport = \"eighty\"\n").unwrap();
    let err = axon::Config::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("port"), "{err}");
    std::fs::write(&path, "server_name = \"bad name!\"\n").unwrap();
    let config = axon::Config::from_file(&path).unwrap();
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("server_name")
    );
}

#[test]
fn bad_config_stops_the_binary_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("axon.toml");
    std::fs::write(&path, "[database]\nmax_connections = 0\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database.max_connections"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The private cluster: created on first start, reused, stopped and restarted with its data.
#[test]
fn managed_cluster_start_stop_restart_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let pgdir = dir.path().join("pg");
    if nix::unistd::geteuid().is_root() {
        // The postgres user must be able to reach the directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cluster = axon::postgres::Cluster::init(&pgdir).unwrap();
    assert!(cluster.start().unwrap(), "first start starts it");
    assert!(
        !cluster.start().unwrap(),
        "a second start reuses the running cluster"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        axon::server::create_database_if_missing(&cluster, "axon")
            .await
            .unwrap();
        let mut c = sqlx::PgConnection::connect_with(&cluster.connect_options("axon"))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE kept (v int)")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO kept VALUES (42)")
            .execute(&mut c)
            .await
            .unwrap();
    });
    cluster.stop().unwrap();
    assert!(!cluster.is_running());
    // No TCP port: the socket lives in the cluster directory.
    assert!(pgdir.join(".s.PGSQL.5432").exists() || !cluster.is_running());
    let again = axon::postgres::Cluster::init(&pgdir).unwrap();
    assert!(again.start().unwrap());
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect_with(&again.connect_options("axon"))
            .await
            .unwrap();
        let v: i32 = sqlx::query_scalar("SELECT v FROM kept")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(v, 42);
    });
    again.stop().unwrap();
}

use sqlx::Connection;

/// The `axon` binary with no config on `data_dir`, listening on `port`; its log goes to `log`.
fn spawn_server(
    data_dir: &std::path::Path,
    port: u16,
    log: std::process::Stdio,
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .env("AXON_DATA_DIR", data_dir)
        .env("AXON_LISTEN_PORT", port.to_string())
        .env_remove("AXON_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("AXON_DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory the postgres system user can reach (when the tests run as root).
fn reachable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn wait_up(rt: &tokio::runtime::Runtime, base: &str) {
    rt.block_on(async {
        for _ in 0..240 {
            if let Ok(r) = reqwest::get(format!("{base}/_matrix/client/versions")).await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        panic!("server did not come up");
    })
}

/// SIGTERM, then the clean exit it must lead to.
fn stop(mut child: std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    for _ in 0..120 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let _ = child.kill();
    panic!("server did not stop on SIGTERM");
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A second server on a data directory another one serves from is refused before it touches the
/// database; a server killed with SIGKILL leaves its cluster running, and the next server adopts
/// it, stops it on a clean shutdown, and logs no warning about its own database going away.
#[test]
fn one_server_per_data_directory_and_a_killed_servers_cluster_is_adopted() {
    let dir = reachable_tempdir();
    let data = dir.path().join("data");
    let rt = current_thread_runtime();
    let port = free_port();
    let first = spawn_server(&data, port, std::process::Stdio::null());
    wait_up(&rt, &format!("http://127.0.0.1:{port}"));

    let second = std::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .env("AXON_DATA_DIR", &data)
        .env("AXON_LISTEN_PORT", free_port().to_string())
        .env_remove("AXON_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("AXON_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("already running") && stderr.contains(&first.id().to_string()),
        "{stderr}"
    );
    assert!(
        !stderr.contains("migrat"),
        "it touched the database: {stderr}"
    );

    let mut first = first;
    first.kill().unwrap();
    first.wait().unwrap();
    let cluster = axon::postgres::Cluster::init(&data.join("postgres")).unwrap();
    assert!(cluster.is_running(), "PostgreSQL outlives a killed server");

    let log_path = dir.path().join("third.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let third = spawn_server(&data, port, log.into());
    wait_up(&rt, &format!("http://127.0.0.1:{port}"));
    stop(third);
    assert!(
        !cluster.is_running(),
        "the adopted cluster is stopped with the server"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}

/// The binary with no config: starts its private cluster, serves, and on SIGTERM drains, stops the
/// cluster and exits; a second start reuses the data.
#[test]
fn zero_config_server_starts_stops_and_restarts_with_its_data() {
    let dir = reachable_tempdir();
    let port = free_port();
    let start = || spawn_server(&dir.path().join("data"), port, std::process::Stdio::null());
    let rt = current_thread_runtime();
    let base = format!("http://127.0.0.1:{port}");
    let wait_up = |base: &str| wait_up(&rt, base);
    let child = start();
    wait_up(&base);
    // Zero-config registration is open: register someone to find again after the restart.
    let body = serde_json::json!({"username": "keeper", "password": "pw", "auth": {"type": "m.login.dummy"}});
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{base}/_matrix/client/v3/register"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    stop(child);
    let cluster = axon::postgres::Cluster::init(&dir.path().join("data/postgres")).unwrap();
    assert!(
        !cluster.is_running(),
        "the owned cluster is stopped with the server"
    );
    let child = start();
    wait_up(&base);
    let available = rt.block_on(async {
        reqwest::get(format!(
            "{base}/_matrix/client/v3/register/available?username=keeper"
        ))
        .await
        .unwrap()
        .status()
    });
    assert_eq!(
        available, 400,
        "the user registered before the restart is still there"
    );
    stop(child);
}

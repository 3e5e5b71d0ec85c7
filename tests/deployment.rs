//! Deploying Axon (issue #21): `--version`, `axon config check`, one clear line for each start-up
//! problem, and a backup restored into a fresh database serving the same rooms and history.
//! Tests that run the `axon` binary: `touch src/main.rs` before running them from another tree.

use std::process::{Command, Output};

use serde_json::json;

use crate::common::*;

/// The `axon` binary with none of the environment's configuration, plus `env`.
fn axon(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_axon"));
    cmd.args(args)
        .env_remove("AXON_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("AXON_DATABASE_URL")
        .env_remove("AXON_SERVER_NAME")
        .env_remove("AXON_LISTEN_PORT")
        .env("RUST_LOG", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Every case here ends by itself; a hang would be a failure.
    let out = wait_with_timeout(child, std::time::Duration::from_secs(60));
    out.expect("axon did not exit")
}

fn wait_with_timeout(mut child: std::process::Child, limit: std::time::Duration) -> Option<Output> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_is_printed() {
    let out = axon(&["--version"], &[]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), format!("axon {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn config_check_says_ok_or_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "server_name = \"example.org\"\n[metrics]\nenabled = true\nport = 9191\n",
    )
    .unwrap();
    let out = axon(&["config", "check", good.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[rate_limits.join]\nper_second = -1.0\nburst = 3\n").unwrap();
    let out = axon(&["config", "check", bad.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rate_limits.join"),
        "{}",
        stderr(&out)
    );

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[metrics]\nprot = 1\n").unwrap();
    let out = axon(&["config", "check", unknown.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("prot"), "{}", stderr(&out));

    let same_port = dir.path().join("same.toml");
    std::fs::write(&same_port, "[metrics]\nenabled = true\nport = 8008\n").unwrap();
    let out = axon(&["config", "check", same_port.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("metrics.port"), "{}", stderr(&out));

    let out = axon(&["config", "check", "/nonexistent/axon.toml"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/axon.toml"),
        "{}",
        stderr(&out)
    );
}

/// Nothing listens on port 1: one line naming the database, no panic, no backtrace.
#[test]
fn an_unreachable_database_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("axon.toml");
    std::fs::write(&config, "[database]\nacquire_timeout_ms = 500\n").unwrap();
    let out = axon(
        &["--config", config.to_str().unwrap()],
        &[(
            "AXON_DATABASE_URL",
            "postgres://axon:secret@127.0.0.1:1/axondb",
        )],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect to the database \"axondb\" at 127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the password was printed: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_port_in_use_is_named() {
    let rt = runtime();
    let (db_name, _pool) = rt.block_on(fresh_database());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let url = database_url(&db_name);
    let out = axon(
        &[],
        &[("AXON_DATABASE_URL", &url), ("AXON_LISTEN_PORT", &port)],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port}: the port is already in use"
        )),
        "{err}"
    );
    assert!(err.contains("listen.port"), "{err}");
}

#[test]
fn a_database_from_a_newer_axon_is_refused_clearly() {
    let rt = runtime();
    let (db_name, pool) = rt.block_on(fresh_database());
    rt.block_on(async {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99999, 'from the future', TRUE, '\\x00', 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
    });
    let url = database_url(&db_name);
    let out = axon(
        &["user", "create", "x", "--password-file", "/dev/null"],
        &[("AXON_DATABASE_URL", &url)],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("upgraded by a newer Axon") && err.contains("migration 99999"),
        "{err}"
    );
}

#[test]
fn a_database_of_another_server_name_is_refused() {
    let rt = runtime();
    let (db_name, pool) = rt.block_on(fresh_database());
    // The first start records the name.
    rt.block_on(axon::server::check_server_name(&pool, "first.example"))
        .unwrap();
    rt.block_on(axon::server::check_server_name(&pool, "first.example"))
        .unwrap();
    let url = database_url(&db_name);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let out = axon(
        &[],
        &[
            ("AXON_DATABASE_URL", &url),
            ("AXON_SERVER_NAME", "second.example"),
            ("AXON_LISTEN_PORT", &port),
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("belongs to server_name \"first.example\"")
            && err.contains("\"second.example\""),
        "{err}"
    );
}

/// pg_dump of a database with rooms and history, pg_restore into a fresh one, Axon started on the
/// restored database (migrations and server name checked as at start-up): the same rooms, names,
/// messages and logins.
#[tokio::test]
async fn a_restored_backup_serves_the_same_rooms_and_history() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let room = alice
        .post("/createRoom", json!({"name": "Backed up"}))
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..5 {
        alice
            .put(
                &format!("/rooms/{}/send/m.room.message/t{i}", enc(&room)),
                json!({"msgtype": "m.text", "body": format!("message {i}")}),
            )
            .await
            .ok();
    }
    axon::server::check_server_name(&app.db, "test.local")
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("axon.dump");
    let dump_path = dump.to_str().unwrap().to_owned();
    let source = app.db_name.clone();
    tokio::task::spawn_blocking(move || {
        pg_tool(
            "pg_dump",
            &["--format=custom", "--file", &dump_path, &source],
        )
    })
    .await
    .unwrap();
    let restored = empty_database().await;
    let (dump_path, target) = (dump.to_str().unwrap().to_owned(), restored.clone());
    tokio::task::spawn_blocking(move || {
        pg_tool(
            "pg_restore",
            &["--no-owner", "--dbname", &target, &dump_path],
        )
    })
    .await
    .unwrap();

    let mut config = test_config();
    config.database.url = Some(database_url(&restored));
    let database = axon::server::open_database(&config, axon::server::Opener::Command)
        .await
        .expect("the restored database opens as at start-up");
    let copy = spawn_on_pool(config, database.pool).await;
    let alice_again = copy.as_user(&alice);
    let joined = alice_again.get("/joined_rooms").await.ok();
    assert_eq!(joined["joined_rooms"], json!([room]));
    let name = alice_again
        .get(&format!("/rooms/{}/state/m.room.name/", enc(&room)))
        .await
        .ok();
    assert_eq!(name["name"], "Backed up");
    let messages = alice_again
        .get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(&room)))
        .await
        .ok();
    let bodies: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(
        bodies,
        [
            "message 4",
            "message 3",
            "message 2",
            "message 1",
            "message 0"
        ]
    );
    // The history goes on: a new message, and a password login.
    alice_again
        .put(
            &format!("/rooms/{}/send/m.room.message/after", enc(&room)),
            json!({"msgtype": "m.text", "body": "after the restore"}),
        )
        .await
        .ok();
    copy.request(
        reqwest::Method::POST,
        "/_matrix/client/v3/login",
        None,
        Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "correct horse"})),
    )
    .await
    .ok();
    // Restored under another name, it is refused.
    let mut other = test_config();
    other.server_name = "other.example".into();
    other.database.url = Some(database_url(&restored));
    let refused = axon::server::open_database(&other, axon::server::Opener::Command).await;
    let err = refused
        .err()
        .expect("another server_name is refused")
        .to_string();
    assert!(err.contains("test.local"), "{err}");
}

async fn login_from(app: &TestApp, forwarded_for: &str) -> reqwest::StatusCode {
    app.http
        .post(format!("{}/_matrix/client/v3/login", app.base_url))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "x"}))
        .send()
        .await
        .unwrap()
        .status()
}

/// Behind a proxy (`listen.x_forwarded`), each client has its own per-address bucket, keyed by
/// the proxy's (last) X-Forwarded-For entry; without the option the header is ignored.
#[tokio::test]
async fn behind_a_proxy_the_forwarded_address_is_the_clients() {
    let mut config = test_config();
    config.rate_limits.enabled = true;
    config.rate_limits.burst = 1;
    config.rate_limits.per_second = 0.001;
    config.listen.x_forwarded = true;
    let app = spawn_app_with(config.clone()).await;
    assert_eq!(login_from(&app, "198.51.100.1").await, 403);
    assert_eq!(login_from(&app, "198.51.100.1").await, 429);
    assert_eq!(
        login_from(&app, "198.51.100.2").await,
        403,
        "another client, its own bucket"
    );
    // A client's own leading entry does not escape its bucket.
    assert_eq!(login_from(&app, "203.0.113.77, 198.51.100.1").await, 429);

    config.listen.x_forwarded = false;
    let direct = spawn_app_with(config).await;
    assert_eq!(login_from(&direct, "198.51.100.1").await, 403);
    assert_eq!(
        login_from(&direct, "198.51.100.2").await,
        429,
        "the header is not trusted"
    );
}

/// A database from before the server name was recorded takes the name of its user IDs when the
/// upgrade migrates it, so the first start after the upgrade already refuses another name.
#[tokio::test]
async fn an_upgraded_database_knows_its_name_from_its_users() {
    let (db_name, pool) = fresh_database().await;
    for statement in [
        "DROP TABLE server_identity",
        "DELETE FROM _sqlx_migrations WHERE version = 20",
        "INSERT INTO users (user_id, created_ts) VALUES ('@old:old.example:8448', 0)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let mut config = test_config();
    config.database.url = Some(database_url(&db_name));
    let refused = axon::server::open_database(&config, axon::server::Opener::Command).await;
    let err = refused
        .err()
        .expect("another server_name is refused")
        .to_string();
    assert!(
        err.contains("\"old.example:8448\"") && err.contains("\"test.local\""),
        "{err}"
    );
    config.server_name = "old.example:8448".into();
    let database = axon::server::open_database(&config, axon::server::Opener::Command)
        .await
        .expect("its own name is accepted");
    database.close().await.unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server opens the metrics listener on `metrics.port`; the client port does not serve it.
#[tokio::test]
async fn the_server_serves_metrics_on_the_metrics_port() {
    let (db_name, _pool) = fresh_database().await;
    let (port, metrics_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("axon.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"test.local\"\n[listen]\nport = {port}\n[metrics]\nenabled = true\nport = {metrics_port}\n"
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .args(["--config", config.to_str().unwrap()])
        .env("AXON_DATABASE_URL", database_url(&db_name))
        .env_remove("AXON_LISTEN_PORT")
        .env_remove("AXON_SERVER_NAME")
        .env("RUST_LOG", "error")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = format!("http://127.0.0.1:{port}");
    // Up to a minute: a fresh database is migrated first, and the whole suite runs beside it.
    let mut up = false;
    for _ in 0..1200 {
        if let Ok(r) = reqwest::get(format!("{client}/_matrix/client/versions")).await
            && r.status() == 200
        {
            up = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if !up {
        let _ = child.start_kill();
        let output = child.wait_with_output().await.unwrap();
        panic!(
            "the server did not come up: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let scraped = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(
        text.contains("axon_http_request_duration_seconds_count{endpoint=\"/_matrix/client/versions\",method=\"GET\",status=\"200\"}"),
        "{text}"
    );
    let on_client = reqwest::get(format!("{client}/metrics")).await.unwrap();
    assert_eq!(on_client.status(), 404);
    child.kill().await.unwrap();
}

//! Axon's private PostgreSQL cluster, run from the installed server binaries.
//!
//! The server uses it when no database URL is configured; the tests use it for every run. The cluster
//! listens only on a unix socket inside its own directory. PostgreSQL refuses to run as root, so as
//! root the cluster is owned by and run as the `postgres` system user that the Debian package creates.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sqlx::postgres::PgConnectOptions;

mod lock;
pub use lock::DataDirLock;

/// The superuser initdb creates; it owns Axon's databases.
const SUPERUSER: &str = "axon";
pub const PACKAGE_HINT: &str = "PostgreSQL server binaries not found: install the PostgreSQL server package (apt-get install postgresql)";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{PACKAGE_HINT}")]
    NoBinaries,
    #[error(
        "running as root, but there is no `postgres` system user to run PostgreSQL as (install the postgresql package)"
    )]
    NoPostgresUser,
    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },
}

fn failed(what: impl Into<String>, detail: impl std::fmt::Display) -> ClusterError {
    ClusterError::Failed {
        what: what.into(),
        detail: detail.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    bindir: PathBuf,
    /// PGDATA; the unix socket lives here too.
    dir: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// The server binaries: `pg_config --bindir` if it has `initdb`, else the newest /usr/lib/postgresql/N/bin.
pub fn find_bindir() -> Result<PathBuf, ClusterError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(ClusterError::NoBinaries)
}

impl Cluster {
    /// Prepares `dir` as a cluster directory, running initdb the first time.
    pub fn init(dir: &Path) -> Result<Self, ClusterError> {
        let bindir = find_bindir()?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or(ClusterError::NoPostgresUser)?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("creating {}", dir.display()), e))?;
        let dir = std::fs::canonicalize(dir)
            .map_err(|e| failed(format!("resolving {}", dir.display()), e))?;
        // The socket path must fit in sun_path (107 bytes).
        if dir.join(".s.PGSQL.5432").as_os_str().len() > 100 {
            return Err(failed(
                "PostgreSQL data directory",
                format!(
                    "{} is too long a path for a unix socket; choose a shorter data_dir",
                    dir.display()
                ),
            ));
        }
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| failed(format!("giving {} to the postgres user", dir.display()), e))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed(format!("restricting {}", dir.display()), e))?;
        let cluster = Self {
            bindir,
            dir,
            run_as,
        };
        if !cluster.dir.join("PG_VERSION").exists() {
            cluster.initdb()?;
        }
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            // Root's working directory may not be readable by postgres.
            cmd.current_dir(&self.dir);
        }
        cmd
    }

    fn run(&self, what: &str, cmd: &mut Command) -> Result<(), ClusterError> {
        let out = cmd.output().map_err(|e| failed(what, e))?;
        if out.status.success() {
            Ok(())
        } else {
            let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if detail.is_empty() {
                detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            Err(failed(what, detail))
        }
    }

    fn initdb(&self) -> Result<(), ClusterError> {
        tracing::info!(dir = %self.dir.display(), "creating the private PostgreSQL cluster");
        self.run(
            "initdb",
            self.command("initdb").arg("-D").arg(&self.dir).args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ]),
        )
    }

    /// Server options: no TCP at all, the socket inside the cluster directory.
    fn server_options(&self) -> Vec<String> {
        vec![
            "-c".into(),
            "listen_addresses=".into(),
            "-c".into(),
            format!("unix_socket_directories={}", self.dir.display()),
            "-c".into(),
            "unix_socket_permissions=0700".into(),
        ]
    }

    pub fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the cluster in the background with pg_ctl. Returns false if it was already running
    /// (another Axon process, or the admin CLI beside a running server): then it is not ours to stop.
    pub fn start(&self) -> Result<bool, ClusterError> {
        if self.is_running() {
            return Ok(false);
        }
        // pg_ctl reports a stale postmaster.pid itself; PostgreSQL overwrites one whose process is gone.
        let options = self
            .server_options()
            .chunks(2)
            .map(|pair| format!("{} '{}'", pair[0], pair[1]))
            .collect::<Vec<_>>()
            .join(" ");
        self.run(
            "starting PostgreSQL",
            self.command("pg_ctl")
                .arg("start")
                .arg("-w")
                .args(["-t", "60"])
                .arg("-D")
                .arg(&self.dir)
                .arg("-l")
                .arg(self.dir.join("postgresql.log"))
                .arg("-o")
                .arg(options)
                .stdout(Stdio::null()),
        )?;
        Ok(true)
    }

    pub fn stop(&self) -> Result<(), ClusterError> {
        self.run(
            "stopping PostgreSQL",
            self.command("pg_ctl")
                .arg("stop")
                .arg("-w")
                .args(["-m", "fast"])
                .arg("-D")
                .arg(&self.dir),
        )
    }

    /// Runs the server as a child that dies with the calling thread (PR_SET_PDEATHSIG): for test runs,
    /// where nothing gets to clean up. Durability is traded for speed; the data is thrown away.
    pub fn spawn_ephemeral(&self) -> Result<std::process::Child, ClusterError> {
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(&self.dir)
            .args(self.server_options())
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=500",
            ]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().map_err(|e| failed("starting PostgreSQL", e))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.dir)
            .username(SUPERUSER)
            .database(database)
    }
}

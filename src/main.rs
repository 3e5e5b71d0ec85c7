//! The `axon` command: `axon [serve]`, `axon user …`, `axon registration-token …`, `axon report list`,
//! `axon config check FILE`, `axon --version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use axon::Config;
use axon::config::LogFormat;

#[derive(Parser)]
#[command(name = "axon", version, about = "A Matrix homeserver on PostgreSQL")]
struct Cli {
    /// The TOML configuration file (every key has a default; see config.example.toml).
    #[arg(long, short, env = "AXON_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(axon::cli::UserCommand),
    /// Manage registration tokens.
    #[command(subcommand, name = "registration-token")]
    RegistrationToken(axon::cli::TokenCommand),
    /// Content reports sent by users.
    #[command(subcommand)]
    Report(axon::cli::ReportCommand),
    /// The server's signing keys.
    #[command(subcommand)]
    Keys(axon::cli::KeysCommand),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Loads and validates FILE (with the environment's overrides) without starting anything:
    /// prints "ok", or the problem with the key it concerns.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    // glibc gives each thread group its own malloc arena and keeps their freed memory: under load the
    // server's resident size would grow many times over its working set. Two arenas are plenty.
    // A fixed mmap threshold: glibc otherwise raises it after the first large free, and the 19 MiB
    // blocks of every later password hash (argon2) then stay in the heap for good.
    // SAFETY: called before any other thread exists.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let cli = Cli::parse();
    if let Some(Command::Config(ConfigCommand::Check { file })) = &cli.command {
        return match Config::load(Some(file)) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("axon: {e}");
                ExitCode::from(2)
            }
        };
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("axon: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("axon: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                start_trimming();
                axon::server::serve(config).await
            }
            Command::User(cmd) => axon::cli::user(config, cmd).await,
            Command::RegistrationToken(cmd) => axon::cli::registration_token(config, cmd).await,
            Command::Report(cmd) => axon::cli::report(config, cmd).await,
            Command::Keys(cmd) => axon::cli::keys(config, cmd).await,
            Command::Config(_) => unreachable!("handled before the configuration is loaded"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Gives freed heap memory back to the system every few seconds. glibc returns memory only from
/// the top of its heaps, so after a burst (a reconnect storm of initial syncs, a fan-out to
/// thousands of long polls) the server would otherwise keep its peak size for good.
fn start_trimming() {
    let trimming = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                // SAFETY: malloc_trim takes glibc's arena locks itself; any thread may call it.
                unsafe {
                    nix::libc::malloc_trim(0);
                }
            }
        });
    if let Err(e) = trimming {
        tracing::warn!(error = %e, "could not start the memory trimming thread");
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log.filter_directives()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

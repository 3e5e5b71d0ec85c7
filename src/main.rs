//! The `axon` command: `axon [serve]`, `axon user …`, `axon registration-token …`, `axon report list`,
//! `axon config check FILE`, `axon --version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use axon::Config;
use axon::config::LogFormat;

/// jemalloc, not glibc's malloc. Serving thousands of waiting long polls and waking them all at
/// once is allocation-bound: measured on the crowd fixture, it cut the 2,000-member fan-out's p99
/// from ~165 ms to ~100 ms at the same or lower memory, and its background thread gives freed
/// pages back to the system (glibc kept a burst's peak until it was trimmed by hand).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
            Command::Serve => axon::server::serve(config).await,
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

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log.filter_directives()));
    // Colours only on a terminal: a log file or journal gets plain text (and each request's span
    // is formatted without them).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

//! The admin commands. They work against the configured or private database, also while the server
//! runs: changes that revoke sessions reach the running server's token cache through NOTIFY.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::Subcommand;

use crate::service::accounts;
use crate::service::admin::{reports, tokens, users};
use crate::{AppState, Config, store};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (the password is prompted for, or read from standard input or a file).
    Create {
        /// Localpart or full user ID.
        name: String,
        #[arg(long)]
        admin: bool,
        /// Read the password from this file instead of prompting.
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
    /// Set a new password; the user's sessions are logged out.
    ResetPassword {
        name: String,
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
        /// Keep the user's devices logged in.
        #[arg(long)]
        keep_sessions: bool,
    },
    /// Deactivate a user for good: sessions end, the user leaves every room, the name is never reissued.
    Deactivate {
        name: String,
        /// Also erase: users who join the user's rooms later see the user's events redacted.
        #[arg(long)]
        erase: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a registration token and print it.
    Create {
        /// How many registrations it allows (unlimited when absent).
        #[arg(long)]
        uses: Option<i32>,
        /// How long it stays valid, e.g. 90s, 30m, 12h, 7d (forever when absent).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        /// The token itself (random when absent): 1-64 of A-Z a-z 0-9 . _ ~ -
        #[arg(long)]
        token: Option<String>,
    },
    /// List registration tokens.
    List,
    /// Delete a registration token.
    Delete { token: String },
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// List content reports, newest first: id, time (ms), kind, reporter, what was reported, reason.
    List {
        /// How many to show.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key; the current one stays published as an old verify key, expired now.
    /// Running servers sign with the new key once restarted.
    Rotate,
}

pub async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let database = crate::server::open_database(&config, crate::server::Opener::Command).await?;
    let result = match command {
        KeysCommand::Rotate => crate::service::keys::rotate(&database.pool).await,
    };
    database.close().await?;
    let key_id = result?;
    println!("{key_id}");
    eprintln!("new signing key {key_id}; restart running servers to sign with it");
    Ok(())
}

pub async fn report(config: Config, command: ReportCommand) -> anyhow::Result<()> {
    with_state(config, async |state| match command {
        ReportCommand::List { limit } => {
            for r in reports::newest(state, limit).await? {
                let target = match r.kind.as_str() {
                    "event" => format!(
                        "{} in {}",
                        r.event_id.unwrap_or_default(),
                        r.room_id.unwrap_or_default()
                    ),
                    "room" => r.room_id.unwrap_or_default(),
                    _ => r.target_user_id.unwrap_or_default(),
                };
                // One report per line: the reason's line breaks and tabs are escaped.
                let reason = r.reason.map(|s| s.escape_default().to_string());
                println!(
                    "{}\t{}\t{}\t{}\t{target}\t{}",
                    r.id,
                    r.received_ts,
                    r.kind,
                    r.reporter,
                    reason.unwrap_or_default()
                );
            }
            Ok(())
        }
    })
    .await
}

pub async fn user(config: Config, command: UserCommand) -> anyhow::Result<()> {
    with_state(config, async |state| match command {
        UserCommand::Create {
            name,
            admin,
            password_file,
        } => {
            let user_id = accounts::validate_localpart(state, &localpart(state, &name)?)?;
            accounts::ensure_available(state, &user_id).await?;
            let password = read_password(password_file.as_deref())?;
            users::create(state, &user_id, Some(password), admin).await?;
            println!("created {user_id}{}", if admin { " (admin)" } else { "" });
            Ok(())
        }
        UserCommand::ResetPassword {
            name,
            password_file,
            keep_sessions,
        } => {
            let user_id = accounts::validate_localpart(state, &localpart(state, &name)?)?;
            let password = read_password(password_file.as_deref())?;
            users::reset_password(state, &user_id, password, !keep_sessions).await?;
            println!("password of {user_id} changed");
            Ok(())
        }
        UserCommand::Deactivate { name, erase } => {
            let user_id = accounts::validate_localpart(state, &localpart(state, &name)?)?;
            users::deactivate(state, &user_id, erase).await?;
            println!("deactivated {user_id}");
            Ok(())
        }
    })
    .await
}

pub async fn registration_token(config: Config, command: TokenCommand) -> anyhow::Result<()> {
    with_state(config, async |state| match command {
        TokenCommand::Create {
            uses,
            expires,
            token,
        } => {
            let expiry_ts = expires.map(|d| store::now_ms() + d.as_millis() as i64);
            let token = tokens::create_simple(state, token, uses, expiry_ts).await?;
            println!("{token}");
            Ok(())
        }
        TokenCommand::List => {
            let now = store::now_ms();
            for t in tokens::list(state, None).await? {
                let uses = match t.uses_allowed {
                    Some(allowed) => format!("{}/{allowed} uses", t.completed),
                    None => format!("{}/unlimited uses", t.completed),
                };
                let expiry = match t.expiry_ts {
                    Some(ts) => format!("expires at {ts} ms"),
                    None => "never expires".into(),
                };
                let status = if t.expiry_ts.is_some_and(|ts| ts <= now) {
                    "expired"
                } else if t.uses_allowed.is_some_and(|allowed| t.completed >= allowed) {
                    "used up"
                } else {
                    "valid"
                };
                println!("{}\t{uses}\t{expiry}\t{status}", t.token);
            }
            Ok(())
        }
        TokenCommand::Delete { token } => {
            tokens::delete(state, &token).await?;
            println!("deleted {token}");
            Ok(())
        }
    })
    .await
}

/// Runs `f` against the database, then closes it (and stops the private cluster if we started it).
async fn with_state(
    config: Config,
    f: impl AsyncFnOnce(&AppState) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let database = crate::server::open_database(&config, crate::server::Opener::Command).await?;
    let result = match AppState::build(config, database.pool.clone()).await {
        Ok(state) => f(&state).await,
        Err(e) => Err(e.into()),
    };
    database.close().await?;
    result
}

/// The localpart of `name`, which is a localpart or a user ID of this server.
fn localpart(state: &AppState, name: &str) -> anyhow::Result<String> {
    let name = name.to_lowercase();
    match name.strip_prefix('@') {
        Some(rest) => {
            let (local, server) = rest.split_once(':').unwrap_or((rest, ""));
            if server != state.server_name.as_str() {
                anyhow::bail!(
                    "{name} is not a user of this server ({})",
                    state.server_name
                );
            }
            Ok(local.to_owned())
        }
        None => Ok(name),
    }
}

/// The password from a file, or from the terminal (asked twice, not echoed), or from the first line
/// of standard input when it is not a terminal.
fn read_password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let password = match file {
        Some(path) => std::fs::read_to_string(path)?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        None if std::io::stdin().is_terminal() => {
            let first = prompt_hidden("Password: ")?;
            let second = prompt_hidden("Again: ")?;
            if first != second {
                anyhow::bail!("the passwords differ");
            }
            first
        }
        None => read_line()?,
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(password)
}

fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &silent)?;
    let line = read_line();
    tcsetattr(&stdin, SetArg::TCSANOW, &saved)?;
    eprintln!();
    line
}

/// `90s`, `30m`, `12h`, `7d`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30m, 12h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("x").is_err());
    }
}

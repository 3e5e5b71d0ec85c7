//! The admin commands. They work against the configured or private database, also while the server runs.

use clap::Subcommand;

use crate::Config;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        name: String,
        #[arg(long)]
        admin: bool,
        /// Read the password from this file instead of prompting.
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a registration token.
    Create {
        #[arg(long)]
        uses: Option<i32>,
    },
}

pub async fn user(config: Config, command: UserCommand) -> anyhow::Result<()> {
    let database = crate::server::open_database(&config).await?;
    let state = crate::AppState::build(config, database.pool.clone()).await?;
    let result = match command {
        UserCommand::Create {
            name,
            admin,
            password_file,
        } => {
            let password = match password_file {
                Some(path) => std::fs::read_to_string(path)?
                    .trim_end_matches('\n')
                    .to_owned(),
                None => anyhow::bail!("--password-file is required"),
            };
            let user_id =
                crate::service::accounts::validate_localpart(&state, &name.to_lowercase())?;
            crate::service::accounts::create_user(&state, &user_id, Some(password), admin).await?;
            println!("created {user_id}");
            Ok(())
        }
    };
    finish(database).await;
    result
}

pub async fn registration_token(_config: Config, _command: TokenCommand) -> anyhow::Result<()> {
    anyhow::bail!("registration tokens are not available yet")
}

async fn finish(database: crate::server::Database) {
    database.pool.close().await;
    if let Some(cluster) = database.owned_cluster {
        let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
    }
}

//! The command line. With no subcommand the binary serves.

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::config::Settings;
use crate::domain::{OrgScope, Role};
use crate::startup::{Application, open_store};

#[derive(Debug, Parser)]
#[command(
    name = "oauth-broker",
    version,
    about = "Holds OAuth connections and hands out fresh access tokens"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Re-encrypt every stored secret under the active (first) encryption key.
    RotateKeys,
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it once.
    Create {
        #[arg(long)]
        name: String,
        /// admin or workflow
        #[arg(long)]
        role: String,
        /// An org id, or `*` for every org.
        #[arg(long)]
        org: String,
    },
}

pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await?
        }
        Command::Migrate => {
            crate::store::open_pool(&settings.database_url, 1).await?;
            eprintln!("migrations applied");
        }
        Command::Keys {
            command: KeysCommand::Create { name, role, org },
        } => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("--role must be admin or workflow"))?;
            let scope = OrgScope::parse(&org).map_err(|e| anyhow::anyhow!("--org: {e}"))?;
            let name = crate::service::keys::parse_key_name(&name)
                .map_err(|_| anyhow::anyhow!("--name must match ^[A-Za-z0-9_.-]{{1,100}}$"))?;
            let store = open_store(&settings).await?;
            crate::startup::ensure_admin_key(&store, &settings, chrono::Utc::now()).await?;
            let (record, key) =
                crate::service::keys::create(&store, name, role, scope, "cli", chrono::Utc::now())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created key `{}` (id {}, role {}, org {}); it is shown only now:",
                record.name,
                record.id,
                record.role,
                record.org_scope.as_str()
            );
            println!("{}", key.expose_secret());
        }
        Command::RotateKeys => {
            let report = crate::startup::rotate_keys(&settings).await?;
            eprintln!(
                "rotate-keys: {} secret(s) re-encrypted, {} already under the active key",
                report.resealed, report.current
            );
        }
        Command::Openapi => print!("{}", crate::http::openapi::document()),
    }
    Ok(())
}

use clap::Parser;
use oauth_broker::{cli, config::Settings, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let settings = Settings::load()?;
    telemetry::init(settings.log_format);
    cli::run(cli, settings).await
}

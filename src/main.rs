use std::process::ExitCode;

use clap::Parser;
use oauth_broker::{cli, config::Settings, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => return refused(&e),
    };
    telemetry::init(settings.log_format);
    match cli::run(cli, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => refused(&format!("{e:#}")),
    }
}

/// Says what went wrong, with its causes, on one line: what to do is in the message, and
/// an operator has no use for a backtrace.
fn refused(what: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("oauth-broker: {what}");
    ExitCode::FAILURE
}

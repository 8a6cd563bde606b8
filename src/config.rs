//! Settings from `OAUTH_BROKER_*` environment variables, over an optional TOML file
//! named by `OAUTH_BROKER_CONFIG`. Secrets are `SecretString` and never print.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Largest request body accepted, per the contract (413 beyond it).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Address to bind, e.g. `127.0.0.1:8080`; port 0 picks a free port (tests).
    pub listen: String,
    /// Base of `redirect_uri`; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// `sqlite://path` or `postgres://...`. Secret because it may carry a password.
    pub database_url: SecretString,
    /// `kid:base64key,...`, first is active.
    pub encryption_keys: Option<SecretString>,
    /// Key file; defaults to `<database file>.key` beside a SQLite database.
    pub encryption_key_file: Option<PathBuf>,
    /// Ensured to exist as an admin key for every org at start.
    pub bootstrap_admin_key: Option<SecretString>,
    pub refresh_cron: String,
    pub refresh_threshold_seconds: u64,
    pub refresh_concurrency: usize,
    /// Provider calls in flight per run to one provider host, so that one slow provider
    /// cannot take every slot.
    pub refresh_concurrency_per_host: usize,
    /// Lifetime assumed when a token response has no `expires_in`.
    pub default_token_lifetime_seconds: u64,
    /// Comma-separated origins `return_to` may point at.
    pub allowed_return_origins: Option<String>,
    pub allow_private_provider_addresses: bool,
    pub log_format: LogFormat,
    /// Requests per minute per API key; 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// How long a process may answer a credentials lookup from memory (ms); 0 = never.
    /// Its own writes are seen at once, and so are other replicas' on PostgreSQL (they
    /// announce them); so this only bounds staleness should an announcement be lost, or
    /// when a second process writes the same SQLite file. Default 30 s.
    pub credentials_cache_ms: u64,
    /// Database pool size.
    pub database_max_connections: u32,
    /// HTTP worker threads; defaults to the number of cores.
    pub http_workers: Option<usize>,
    /// How long events and finished refresher runs are kept (days).
    pub history_retention_days: u64,
    /// Longest lifetime of an on-behalf-of session (default 90 days).
    pub obo_session_max_lifetime_seconds: u64,
    /// Run the scheduled refresher in this process.
    pub refresher_enabled: bool,
    /// Delay of the refresher's run after start.
    pub refresh_startup_delay_seconds: u64,
    /// Timeout of each attempt of a provider call.
    pub provider_timeout_ms: u64,
    /// First backoff between attempts of a provider call (doubles, plus jitter).
    pub provider_retry_base_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            database_url: SecretString::from("sqlite://./data/oauth-broker.db"),
            encryption_keys: None,
            encryption_key_file: None,
            bootstrap_admin_key: None,
            refresh_cron: "0 */30 * * * *".into(),
            refresh_threshold_seconds: 4 * 3600,
            refresh_concurrency: 64,
            refresh_concurrency_per_host: 8,
            default_token_lifetime_seconds: 3600,
            allowed_return_origins: None,
            allow_private_provider_addresses: false,
            log_format: LogFormat::Pretty,
            rate_limit_per_minute: 0,
            credentials_cache_ms: 30_000,
            database_max_connections: 16,
            http_workers: None,
            provider_timeout_ms: 10_000,
            provider_retry_base_ms: 250,
            refresher_enabled: true,
            refresh_startup_delay_seconds: 10,
            obo_session_max_lifetime_seconds: 90 * 86_400,
            history_retention_days: 30,
        }
    }
}

/// Only the non-secret defaults are serialized into the figment; secrets come from
/// the environment or the file.
#[derive(Serialize)]
struct Defaults {
    listen: String,
    database_url: String,
    refresh_cron: String,
    refresh_threshold_seconds: u64,
    refresh_concurrency: usize,
    refresh_concurrency_per_host: usize,
    default_token_lifetime_seconds: u64,
    allow_private_provider_addresses: bool,
    log_format: LogFormat,
    rate_limit_per_minute: u32,
    credentials_cache_ms: u64,
    database_max_connections: u32,
    provider_timeout_ms: u64,
    provider_retry_base_ms: u64,
    refresher_enabled: bool,
    refresh_startup_delay_seconds: u64,
    obo_session_max_lifetime_seconds: u64,
    history_retention_days: u64,
}

impl Settings {
    /// Reads the file named by `OAUTH_BROKER_CONFIG` (if any), then the environment.
    pub fn load() -> Result<Self, Box<figment::Error>> {
        let d = Settings::default();
        let defaults = Defaults {
            listen: d.listen,
            database_url: d.database_url.expose_secret().to_owned(),
            refresh_cron: d.refresh_cron,
            refresh_threshold_seconds: d.refresh_threshold_seconds,
            refresh_concurrency: d.refresh_concurrency,
            refresh_concurrency_per_host: d.refresh_concurrency_per_host,
            default_token_lifetime_seconds: d.default_token_lifetime_seconds,
            allow_private_provider_addresses: d.allow_private_provider_addresses,
            log_format: d.log_format,
            rate_limit_per_minute: d.rate_limit_per_minute,
            credentials_cache_ms: d.credentials_cache_ms,
            database_max_connections: d.database_max_connections,
            provider_timeout_ms: d.provider_timeout_ms,
            provider_retry_base_ms: d.provider_retry_base_ms,
            refresher_enabled: d.refresher_enabled,
            refresh_startup_delay_seconds: d.refresh_startup_delay_seconds,
            obo_session_max_lifetime_seconds: d.obo_session_max_lifetime_seconds,
            history_retention_days: d.history_retention_days,
        };
        let mut figment = Figment::from(Serialized::defaults(defaults));
        if let Ok(path) = std::env::var("OAUTH_BROKER_CONFIG") {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(Env::prefixed("OAUTH_BROKER_").ignore(&["config"]))
            .extract()
            .map_err(Box::new)
    }

    /// How long a process may answer a credentials lookup from memory.
    pub fn credentials_cache(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.credentials_cache_ms)
    }

    /// The public base URL without a trailing slash.
    pub fn public_base(&self, bound: &std::net::SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{bound}"),
        }
    }

    pub fn return_origins(&self) -> Vec<String> {
        self.allowed_return_origins
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_hides_secrets() {
        let settings = Settings {
            database_url: SecretString::from("postgres://user:hunter2@db/x"),
            bootstrap_admin_key: Some(SecretString::from("obk_topsecret")),
            ..Settings::default()
        };
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("topsecret"),
            "{debug}"
        );
    }
}

//! oauth-broker holds OAuth 2.0 connections for many organizations and hands fresh
//! access tokens to the code that needs them.
//!
//! A tour, from the outside in. Each layer uses only the layers below it:
//!
//! ```text
//! main, cli, startup  ->  http  ->  service  ->  oauth, store  ->  domain  ->  crypto, clock
//!                      (config is read by any layer and reads none)
//! ```
#![forbid(unsafe_code)]

/// The command line: `serve`, `migrate`, `keys create`, `rotate-keys`, `openapi`.
pub mod cli;
/// Wiring: opens the store (proving the keys open its data), makes sure an admin key
/// exists, builds the service context and the HTTP server, schedules the refresher.
pub mod startup;
/// Logging setup.
pub mod telemetry;

/// Everything HTTP: routes, extractors, API-key authentication, problem+json errors,
/// metrics, the OpenAPI document.
pub mod http;

/// The rules, below HTTP: connections, grants, credentials and refreshes (single
/// flight, leases), authorization, on-behalf-of, keys, workflows, the refresher. Its
/// context is `service::Broker`.
pub mod service;

/// Calls to OAuth providers: token requests, retries, error classes, on-behalf-of
/// exchanges and assertion checks.
pub mod oauth;
/// The storage traits and their SQLite and PostgreSQL implementations.
pub mod store;

/// Values that are valid by construction and the records every layer shares.
pub mod domain;

/// The clock, which tests can move.
pub mod clock;
/// Sealing secrets at rest with XChaCha20-Poly1305; hashing for lookups.
pub mod crypto;

/// Settings from `OAUTH_BROKER_*` variables and an optional TOML file.
pub mod config;

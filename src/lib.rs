//! oauth-broker holds OAuth 2.0 connections for many organizations and hands fresh
//! access tokens to the code that needs them.
//!
//! A tour, from the outside in:
#![forbid(unsafe_code)]

/// Caller authentication (API keys) and authorization (roles and org scopes).
pub mod auth;
/// The command line: `serve`, `migrate`, `keys create`, `rotate-keys`, `openapi`.
pub mod cli;
/// The clock, which tests can move.
pub mod clock;
/// Settings from `OAUTH_BROKER_*` variables and an optional TOML file.
pub mod config;
/// Sealing secrets at rest with XChaCha20-Poly1305.
pub mod crypto;
/// Values that are valid by construction: names, org ids, URLs, scopes.
pub mod domain;
/// `ApiError` and its problem+json rendering.
pub mod error;
/// Request metrics and the Prometheus registry.
pub mod metrics;
/// Calls to OAuth providers: token requests, retries, error classes.
pub mod oauth;
/// The OpenAPI document.
pub mod openapi;
/// The scheduled refresher.
pub mod refresher;
/// HTTP handlers, one module per resource.
pub mod routes;
/// What handlers call: connection management rules shared by routes and commands.
pub mod service;
/// Builds and runs the HTTP server; the start-up checks (keys, bootstrap admin).
pub mod startup;
/// What every handler shares.
pub mod state;
/// The storage trait and its SQLite and PostgreSQL implementations.
pub mod store;
/// Logging setup.
pub mod telemetry;

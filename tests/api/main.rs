//! API tests: every scenario runs against SQLite and PostgreSQL (see `helpers.rs`).

mod helpers;
#[path = "../e2e/provider.rs"]
mod provider;
#[path = "../support/mod.rs"]
mod support;

mod auth;
mod bad_input;
mod connections;
mod credentials;
mod e2e;
mod flows;
mod hardening;
mod lists;
mod obo;
mod openapi;
mod refresher;
mod review;
mod scale;
mod secrets;
mod security;
mod workflows;

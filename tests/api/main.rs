//! API tests: every scenario runs against SQLite and PostgreSQL (see `helpers.rs`).

mod helpers;

mod connections;
mod openapi;

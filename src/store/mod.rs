//! Storage: one `Store` trait composed of a capability trait per aggregate (one file
//! each), implemented for SQLite and PostgreSQL by one SQL text per query (`sql.rs` says
//! how), the database picked from the URL's scheme at start.
//!
//! Secrets cross this boundary in clear only as `SecretString`; they are sealed on the
//! way in and opened on the way out with the keyring, bound to org, row and column.

mod connect;
mod connections;
mod credentials;
mod error;
mod events;
mod import;
mod keys;
mod lookups;
mod meta;
mod open;
mod pending;
mod postgres;
mod retention;
mod rotation;
mod runs;
mod sessions;
mod sql;
mod sqlite;
mod types;
mod workflows;

pub use connect::{redact_database_url, sqlite_path};
pub use connections::ConnectionStore;
pub use connections::IssuedToken;
pub use credentials::{CLAIM_PREFIX, Claim, ClaimPosition, CredentialStore};
pub use error::{StoreError, StoreResult};
pub use events::EventStore;
pub use import::{ImportStore, ImportedConnection};
pub use keys::KeyStore;
pub use lookups::{Lookups, Usable};
pub use meta::MetaStore;
pub use open::{DynStore, Store, open_pool};
pub use pending::{PendingStore, StartAuthorization};
pub use retention::{History, RetentionStore};
pub use rotation::RotationStore;
pub use runs::RunStore;
pub use sessions::SessionStore;
pub use sql::AnyPool;
pub use types::*;
pub use workflows::WorkflowStore;

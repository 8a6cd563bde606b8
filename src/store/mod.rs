//! Storage: one `Store` trait composed of a capability trait per aggregate (one file
//! each), implemented for SQLite and PostgreSQL by one SQL text per query (`sql.rs` says
//! how), the database picked from the URL's scheme at start.
//!
//! Secrets cross this boundary in clear only as `SecretString`; they are sealed on the
//! way in and opened on the way out with the keyring, bound to org, row and column.

mod connections;
mod credentials;
mod database_url;
mod events;
mod keys;
mod lookups;
mod meta;
mod pending;
mod postgres;
mod rotation;
mod runs;
mod sessions;
mod sql;
mod sqlite;
mod types;
mod workflows;

use std::sync::Arc;

use secrecy::SecretString;

use crate::crypto::Keyring;
use crate::domain::SealedError;

pub use connections::ConnectionStore;
pub use credentials::CredentialStore;
pub use database_url::{redact_database_url, sqlite_path};
pub use events::EventStore;
pub use keys::KeyStore;
pub use lookups::{Lookups, Usable};
pub use meta::MetaStore;
pub use pending::PendingStore;
pub use rotation::RotationStore;
pub use runs::RunStore;
pub use sessions::SessionStore;
pub use types::*;
pub use workflows::WorkflowStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. a duplicate connection name).
    #[error("{0}")]
    Conflict(String),
    /// The row changed since it was read (optimistic concurrency).
    #[error("the row was changed by another writer")]
    Stale,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Crypto(#[from] SealedError),
    #[error("a stored row is not readable: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the database could not be reached (as opposed to a bad query or row).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::Io(_)
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_),
            ) => true,
            // SQLSTATE classes 08 (connection exception), 53 (insufficient resources),
            // 57P (operator intervention: shutdown, cannot connect now), and 55000 (e.g.
            // a database that does not allow connections).
            StoreError::Database(sqlx::Error::Database(e)) => e.code().is_some_and(|c| {
                c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57P")
                    || c == "55000"
                    || c == "3D000"
            }),
            _ => false,
        }
    }

    /// True when the database refused a write because its storage is full: SQLite's
    /// `SQLITE_FULL` (result code 13, in the low byte of an extended code) or
    /// PostgreSQL's SQLSTATE 53100 `disk_full`. Reads still work; writes work again once
    /// there is room, without a restart.
    pub fn is_storage_full(&self) -> bool {
        let StoreError::Database(sqlx::Error::Database(e)) = self else {
            return false;
        };
        if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
            const SQLITE_FULL: i32 = 13;
            e.code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| c & 0xff == SQLITE_FULL)
        } else {
            e.code().is_some_and(|c| c == "53100")
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Rows that carry a refresh lease (`lease_owner`, `lease_until`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leased {
    Connection,
    OboSession,
}

/// Which database backs the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Every read and write the service makes: each capability trait in its aggregate's
/// file, implemented once for both databases. Implementations seal and open secrets.
///
/// A `DynStore` reaches every capability's methods without importing its trait (a trait
/// object has its supertraits' methods as its own); code generic over a store names the
/// capabilities it needs (`S: ConnectionStore + KeyStore`).
pub trait Store:
    MetaStore
    + ConnectionStore
    + CredentialStore
    + PendingStore
    + SessionStore
    + KeyStore
    + WorkflowStore
    + RunStore
    + EventStore
    + RotationStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;
    fn keyring(&self) -> &Keyring;
}

/// A shared store handle.
pub type DynStore = Arc<dyn Store>;

/// Opens and migrates the database without a keyring (for the key check at start).
pub async fn open_pool(database_url: &SecretString, max_connections: u32) -> StoreResult<AnyPool> {
    use secrecy::ExposeSecret;
    let url = database_url.expose_secret();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(AnyPool::Postgres(
            postgres::open(url, max_connections).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(AnyPool::Sqlite(sqlite::open(url, max_connections).await?))
    } else {
        Err(StoreError::Corrupt(
            "the database URL must start with sqlite:// or postgres://".into(),
        ))
    }
}

/// The pool settings both databases share.
fn pool_options<DB: sqlx::Database>(max_connections: u32) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(std::time::Duration::from_secs(10))
        // No ping on every checkout (a round trip on the credentials hot path: +21%
        // measured); a dead connection shows as an error and the pool replaces it.
        .test_before_acquire(false)
        // A connection whose transaction the database ended by itself (SQLite rolls
        // back on SQLITE_FULL, and sqlx's own ROLLBACK then fails) must not be handed
        // out again mid-transaction: the pool closes it instead. One atomic read.
        .before_acquire(|conn, _| {
            Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
        })
}

/// A migrated pool before a keyring is chosen; also what the store queries through
/// (`sql::on_db!`).
#[derive(Clone)]
pub enum AnyPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl AnyPool {
    pub fn backend(&self) -> Backend {
        match self {
            AnyPool::Sqlite(_) => Backend::Sqlite,
            AnyPool::Postgres(_) => Backend::Postgres,
        }
    }

    /// A store over this pool that seals with `keyring` (pools are shared handles) and
    /// remembers credentials lookups in `lookups` (`Lookups::off()` for none).
    pub fn store(&self, keyring: Arc<Keyring>, lookups: Arc<Lookups>) -> DynStore {
        Arc::new(sql::SqlStore::new(self.clone(), keyring, lookups))
    }
}

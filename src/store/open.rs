//! Opening the store: migrating the database named by a URL, the `Store` trait that
//! composes every capability, and the handle services hold.

use std::sync::Arc;

use secrecy::SecretString;

use super::connections::ConnectionStore;
use super::credentials::CredentialStore;
use super::error::{StoreError, StoreResult};
use super::events::EventStore;
use super::import::ImportStore;
use super::keys::KeyStore;
use super::lookups::Lookups;
use super::meta::MetaStore;
use super::pending::PendingStore;
use super::retention::RetentionStore;
use super::rotation::RotationStore;
use super::runs::RunStore;
use super::sessions::SessionStore;
use super::sql::{AnyPool, SqlStore};
use super::types::Backend;
use super::workflows::WorkflowStore;
use super::{postgres, sqlite};
use crate::crypto::Keyring;

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
    + ImportStore
    + RotationStore
    + RetentionStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;
    fn keyring(&self) -> &Keyring;
}

/// A shared store handle.
pub type DynStore = Arc<dyn Store>;

impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.db.backend()
    }

    fn keyring(&self) -> &Keyring {
        &self.keyring
    }
}

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
        Arc::new(SqlStore::new(self.clone(), keyring, lookups))
    }
}

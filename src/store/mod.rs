//! Storage: one `Store` trait, implemented for SQLite and PostgreSQL by one body of SQL
//! (`sql.rs`), picked from the database URL's scheme at start.
//!
//! Secrets cross this boundary in clear only as `SecretString`; they are sealed on the
//! way in and opened on the way out with the keyring, bound to org, row and column.

mod database_url;
mod lookups;
mod postgres;
mod sql;
mod sqlite;
mod types;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::crypto::Keyring;
use crate::domain::{
    ApiKey, Connection, ConnectionName, ConnectionSecrets, Dependency, DisabledWorkflow, Event,
    NewApiKey, NewConnection, NewEvent, NewPending, OboSession, OrgId, PendingAuthorization,
    RefreshRun, RunError, SealedError, SecretWrites,
};

pub use database_url::{redact_database_url, sqlite_path};
pub use lookups::{Lookups, Usable};
pub use types::*;

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

/// Every read and write the service makes. Implementations seal and open secrets.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    fn keyring(&self) -> &Keyring;

    /// Reachable and migrated.
    async fn ping(&self) -> StoreResult<()>;

    // --- meta: the key check -------------------------------------------------------
    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;
    /// Inserts or replaces.
    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Rows holding ciphertexts (connections and pending authorizations).
    async fn count_sealed_rows(&self) -> StoreResult<i64>;

    // --- connections ---------------------------------------------------------------
    /// Inserts the connection and its `created` event in one transaction.
    async fn insert_connection(
        &self,
        new: NewConnection,
        event: NewEvent,
    ) -> StoreResult<Connection>;
    async fn get_connection(
        &self,
        org: &OrgId,
        name: &ConnectionName,
    ) -> StoreResult<Option<Connection>>;
    /// Connections of the given orgs, ordered by org then name.
    async fn list_connections(&self, orgs: &[OrgId]) -> StoreResult<Vec<Connection>>;
    /// Writes every mutable column of `conn` if its version is still current, applies
    /// the secret writes and appends the events, all in one transaction. Returns the
    /// row as stored (version incremented). `StoreError::Stale` if someone else wrote.
    async fn save_connection(
        &self,
        conn: &Connection,
        secrets: SecretWrites,
        events: Vec<NewEvent>,
    ) -> StoreResult<Connection>;
    /// Deletes the connection, its pending authorizations and dependencies; when
    /// `disable_workflows`, records each dependent workflow as disabled; appends the
    /// `deleted` event. One transaction.
    async fn delete_connection(
        &self,
        conn: &Connection,
        disable_workflows: bool,
        event: NewEvent,
    ) -> StoreResult<()>;
    async fn get_connection_by_id(&self, id: &str) -> StoreResult<Option<Connection>>;

    // --- pending authorizations ---------------------------------------------------
    async fn insert_pending(&self, pending: NewPending) -> StoreResult<()>;
    /// Deletes and returns the pending authorization in one statement, so a state is
    /// used at most once however many callbacks race for it.
    async fn take_pending(&self, state_hash: &str) -> StoreResult<Option<PendingAuthorization>>;
    /// Removes pending authorizations that expired before `now`; returns how many.
    async fn purge_expired_pending(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Opens the connection's secrets.
    fn open_secrets(&self, conn: &Connection) -> StoreResult<ConnectionSecrets> {
        Ok(conn.open_secrets(self.keyring())?)
    }

    // --- events --------------------------------------------------------------------
    async fn insert_events(&self, events: Vec<NewEvent>) -> StoreResult<()>;
    /// Newest first.
    async fn list_events(&self, connection_id: &str, limit: i64) -> StoreResult<Vec<Event>>;

    // --- credentials and refreshing -------------------------------------------------
    /// The connection `name` of `org`, else of GLOBAL: one query.
    async fn find_for_credentials(
        &self,
        org: &OrgId,
        name: &ConnectionName,
    ) -> StoreResult<Option<Connection>>;
    /// `find_for_credentials`, answered from this process's memory when it read the same
    /// lookup moments ago and `usable` accepts the connection it remembers (see
    /// `lookups.rs` for exactly when).
    async fn find_for_credentials_cached(
        &self,
        org: &OrgId,
        name: &ConnectionName,
        usable: &Usable,
    ) -> StoreResult<Option<Arc<Connection>>>;
    /// Takes the refresh lease of a connection if nobody holds a live one. The lease
    /// makes one replica the only one calling the provider for this grant.
    async fn try_lease(
        &self,
        what: Leased,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn release_lease(&self, what: Leased, id: &str, owner: &str) -> StoreResult<()>;
    /// A page of connections the refresher should renew, ordered by id after `after_id`.
    async fn due_connections(
        &self,
        due_before: DateTime<Utc>,
        now: DateTime<Utc>,
        after_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<Connection>>;
    async fn insert_refresh_run(&self, run: &RefreshRun) -> StoreResult<()>;
    async fn finish_refresh_run(&self, run: &RefreshRun) -> StoreResult<()>;
    /// Records that run `id` is still going (its process is alive) at `at`.
    async fn beat_refresh_run(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Finishes, with `error` as their only error, the unfinished runs with no sign of
    /// life (heartbeat, or start) after `silent_since`: their process died. Each ends at
    /// its last sign of life. Returns how many.
    async fn finish_silent_refresh_runs(
        &self,
        silent_since: DateTime<Utc>,
        error: &RunError,
    ) -> StoreResult<u64>;
    /// The newest finished run, and the newest unfinished run started after `since`.
    async fn latest_refresh_runs(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<(Option<RefreshRun>, Option<RefreshRun>)>;

    // --- workflows -----------------------------------------------------------------
    /// Ids of workflows whose dependency on `name` resolves to the connection of `org`
    /// (their own org's, or GLOBAL's when their org has none of that name), sorted.
    async fn dependent_workflows(
        &self,
        org: &OrgId,
        name: &ConnectionName,
    ) -> StoreResult<Vec<String>>;
    /// Registers or updates a dependency.
    async fn upsert_dependency(&self, dep: &Dependency) -> StoreResult<()>;
    async fn list_dependencies(
        &self,
        workflow_id: &str,
        org: &OrgId,
    ) -> StoreResult<Vec<Dependency>>;
    async fn delete_dependency(
        &self,
        workflow_id: &str,
        org: &OrgId,
        name: &ConnectionName,
    ) -> StoreResult<bool>;
    async fn touch_dependency(
        &self,
        workflow_id: &str,
        org: &OrgId,
        name: &ConnectionName,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn is_workflow_disabled(&self, workflow_id: &str, org: &OrgId) -> StoreResult<bool>;
    async fn list_disabled_workflows(&self, org: &OrgId) -> StoreResult<Vec<DisabledWorkflow>>;
    async fn enable_workflow(&self, workflow_id: &str, org: &OrgId) -> StoreResult<bool>;

    // --- on-behalf-of sessions -------------------------------------------------------
    /// Inserts a session; `session.sealed` is ignored, the tokens are sealed here.
    async fn insert_obo_session(
        &self,
        session: &OboSession,
        access_token: &SecretString,
        refresh_token: &SecretString,
    ) -> StoreResult<()>;
    async fn get_obo_session(&self, id: &str) -> StoreResult<Option<OboSession>>;
    async fn list_obo_sessions(
        &self,
        org: &OrgId,
        connection_name: Option<&ConnectionName>,
    ) -> StoreResult<Vec<OboSession>>;
    /// Writes status, tokens and times if the version is current (`Stale` otherwise).
    async fn save_obo_session(
        &self,
        session: &OboSession,
        secrets: SecretWrites,
    ) -> StoreResult<OboSession>;

    /// Active, unexpired sessions whose token expires before `due_before`, by id after `after_id`.
    async fn due_obo_sessions(
        &self,
        due_before: DateTime<Utc>,
        now: DateTime<Utc>,
        after_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<OboSession>>;
    /// Deletes sessions that expired or were revoked before `before`.
    async fn purge_obo_sessions(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // --- api keys ------------------------------------------------------------------
    async fn insert_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey>;
    /// An active (not revoked) key by the SHA-256 of its secret.
    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>>;
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;
    /// True when a key was revoked now.
    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> StoreResult<bool>;
    async fn count_active_api_keys(&self) -> StoreResult<i64>;

    // --- maintenance ---------------------------------------------------------------
    /// Re-seals every ciphertext under the keyring's active key.
    async fn rotate_keys(&self) -> StoreResult<RotationReport>;
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

/// A migrated pool before a keyring is chosen.
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
        match self {
            AnyPool::Sqlite(pool) => Arc::new(sql::SqlStore::new(pool.clone(), keyring, lookups)),
            AnyPool::Postgres(pool) => Arc::new(sql::SqlStore::new(pool.clone(), keyring, lookups)),
        }
    }
}

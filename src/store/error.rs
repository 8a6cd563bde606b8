//! What can go wrong in the store, and which failures mean "the database is not there".

use crate::domain::SealedError;

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

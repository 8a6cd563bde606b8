//! The store over either database, and the few macros that let one SQL text serve both.
//! sqlx's SQLite driver accepts PostgreSQL-style `$n` placeholders, so each query is
//! written once; `on_db!` expands its body once per pool type (sqlx's `Any` driver
//! cannot carry our types, see `shared/CRATES.md`). Where the dialects differ,
//! `Dialect` says how.

use std::sync::Arc;

use secrecy::ExposeSecret;

use super::error::StoreError;
use super::lookups::Lookups;
use crate::crypto::{Aad, Keyring, OpenError};
use crate::domain::{Sealed, SealedError, SecretWrite, SecretWrites, fields};

/// A migrated pool before a keyring is chosen; also what the store queries through
/// (`sql::on_db!`).
#[derive(Clone)]
pub enum AnyPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A pool and the keyring that seals what goes into it. Each capability trait is
/// implemented for it in its aggregate's file.
pub(super) struct SqlStore {
    pub(super) db: AnyPool,
    pub(super) keyring: Arc<Keyring>,
    pub(super) lookups: Arc<Lookups>,
}

impl SqlStore {
    /// A store; when `lookups` are on, it also follows other replicas' announced writes
    /// where the database carries them (a background task, for as long as the pool).
    pub(super) fn new(db: AnyPool, keyring: Arc<Keyring>, lookups: Arc<Lookups>) -> Self {
        if lookups.is_on()
            && let AnyPool::Postgres(pool) = &db
        {
            tokio::spawn(super::postgres::follow_announcements(
                pool.clone(),
                lookups.clone(),
            ));
        }
        Self {
            db,
            keyring,
            lookups,
        }
    }

    /// How this store's database speaks.
    pub(super) fn dialect(&self) -> &'static Dialect {
        match self.db {
            AnyPool::Sqlite(_) => &SQLITE,
            AnyPool::Postgres(_) => &POSTGRES,
        }
    }
}

/// What differs between the two SQL dialects.
pub(super) struct Dialect {
    /// Starts a transaction that will write. SQLite takes the write lock up front so a
    /// read-then-write transaction cannot fail with SQLITE_BUSY halfway.
    pub(super) begin_write: &'static str,
    /// Announces a write to the other replicas (`$1`: the channel, `ANNOUNCEMENTS`; `$2`:
    /// the announcement), delivered when the transaction commits; `None` where the
    /// database cannot.
    pub(super) announce: Option<&'static str>,
}

const SQLITE: Dialect = Dialect {
    begin_write: "begin immediate",
    // One process per database file: its own writes are all it needs to know of.
    announce: None,
};

const POSTGRES: Dialect = Dialect {
    begin_write: "begin",
    announce: Some("select pg_notify($1, $2)"),
};

/// Runs `$body` with `$pool` bound to the store's pool, whichever database it is: the
/// body is expanded once per pool type, so its queries are checked against both.
macro_rules! on_db {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            $crate::store::sql::AnyPool::Sqlite($pool) => $body,
            $crate::store::sql::AnyPool::Postgres($pool) => $body,
        }
    };
}
pub(super) use on_db;

/// Runs `$body` with `$tx` bound to a new write transaction (`Dialect::begin_write`).
/// The body commits it, with `commit_write!` where it wrote to connections; returning
/// early rolls it back.
macro_rules! in_write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        $crate::store::sql::on_db!($store, |pool| {
            let mut $tx = pool.begin_with($store.dialect().begin_write).await?;
            $body
        })
    };
}
pub(super) use in_write_tx;

/// Announces a write (`Dialect::announce`) on `$executor`, inside its transaction. The
/// dialect is asked at run time: SQLite's expansion holds the statement and never runs it.
macro_rules! announce {
    ($store:expr, $executor:expr, $announcement:expr) => {
        if let Some(sql) = $store.dialect().announce {
            sqlx::query(sql)
                .bind($crate::store::lookups::ANNOUNCEMENTS)
                .bind($announcement)
                .execute($executor)
                .await?;
        }
    };
}
pub(super) use announce;

/// Commits `$tx`, a write to the connections named `$name` (and, when `$workflows`, to
/// disabled workflows): announced to the other replicas with the commit, and forgotten
/// by this process's lookups whatever the commit's outcome (it may have happened).
macro_rules! commit_write {
    ($store:expr, $tx:ident, $name:expr, $workflows:expr) => {{
        let name: &str = $name;
        let workflows: bool = $workflows;
        $crate::store::sql::announce!(
            $store,
            &mut *$tx,
            $crate::store::lookups::connection_written(name)
        );
        if workflows {
            $crate::store::sql::announce!(
                $store,
                &mut *$tx,
                $crate::store::lookups::WORKFLOWS_WRITTEN
            );
        }
        let committed = $tx.commit().await;
        $store.lookups.wrote(name);
        if workflows {
            $store.lookups.wrote_workflows();
        }
        committed?;
    }};
}
pub(super) use commit_write;

pub(super) fn unique_to_conflict(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
        _ => StoreError::Database(e),
    }
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("maps and lists of strings always serialize")
}

/// The sealed values once `writes` are applied to what is stored now (`current`), new
/// ones sealed under `aad`, which binds a field to its row.
pub(super) fn apply_writes<'a>(
    keyring: &Keyring,
    current: &Sealed,
    writes: &SecretWrites,
    aad: impl Fn(&'static str) -> Aad<'a>,
) -> Sealed {
    let apply = |current: &Option<String>, write: &SecretWrite, field| match write {
        SecretWrite::Keep => current.clone(),
        SecretWrite::Clear => None,
        SecretWrite::Set(secret) => Some(keyring.seal(secret.expose_secret(), aad(field))),
    };
    Sealed {
        client_secret: apply(
            &current.client_secret,
            &writes.client_secret,
            fields::CLIENT_SECRET,
        ),
        access_token: apply(
            &current.access_token,
            &writes.access_token,
            fields::ACCESS_TOKEN,
        ),
        refresh_token: apply(
            &current.refresh_token,
            &writes.refresh_token,
            fields::REFRESH_TOKEN,
        ),
    }
}

/// The error for a sealed value of `row`'s `field` that does not open with our keys.
pub(super) fn sealed_error(
    row: impl FnOnce() -> String,
    field: &'static str,
) -> impl FnOnce(OpenError) -> StoreError {
    move |source| {
        StoreError::Crypto(SealedError {
            row: row(),
            field,
            source,
        })
    }
}

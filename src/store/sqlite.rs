//! SQLite: the embedded default. WAL so readers never wait for the writer, a busy
//! timeout so writers queue instead of failing, foreign keys on.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::error::StoreResult;

pub async fn open(url: &str, max_connections: u32) -> StoreResult<sqlx::SqlitePool> {
    if let Some(path) = super::connect::sqlite_path(url)
        && let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
    }
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable across application crashes in WAL mode; only a power loss
        // can drop the last transactions.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .statement_cache_capacity(256);
    let pool = super::connect::pool_options::<sqlx::Sqlite>(max_connections)
        .min_connections(1)
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    Ok(pool)
}

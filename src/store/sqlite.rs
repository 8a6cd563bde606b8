//! SQLite: the embedded default. WAL so readers never wait for the writer, a busy
//! timeout so writers queue instead of failing, foreign keys on.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::error::StoreResult;

pub async fn open(url: &str, max_connections: u32) -> StoreResult<sqlx::SqlitePool> {
    if let Some(path) = super::connect::sqlite_path(url) {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        create_private(&path).map_err(sqlx::Error::Io)?;
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

/// Creates the database file readable by its owner alone, as the key file is: it holds
/// sealed secrets and every org's configuration. SQLite gives the `-wal` and `-shm`
/// files it creates beside it the database file's permissions. An existing file keeps
/// its permissions (the operator chose them), with a warning if others may read it.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the database file can be read by other users: `chmod 600` it (and its -wal and -shm files)"
                );
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

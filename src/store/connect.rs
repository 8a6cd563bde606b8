//! Connecting: reading database URLs (the SQLite file a URL names, a URL fit for a log
//! line) and the pool settings both databases share.

use std::path::PathBuf;

/// `sqlite://./data/x.db?mode=rwc` -> `./data/x.db`; `None` for other schemes or memory.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(PathBuf::from(path))
    }
}

/// The database URL with any password replaced, for logs.
pub fn redact_database_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("********"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// The pool settings both databases share.
pub(super) fn pool_options<DB: sqlx::Database>(
    max_connections: u32,
) -> sqlx::pool::PoolOptions<DB> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(
            sqlite_path("sqlite://./data/oauth-broker.db"),
            Some(PathBuf::from("./data/oauth-broker.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///var/x.db?mode=rwc"),
            Some(PathBuf::from("/var/x.db"))
        );
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
    }

    #[test]
    fn database_passwords_are_redacted() {
        let shown = redact_database_url("postgres://user:hunter2@db:5432/broker");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

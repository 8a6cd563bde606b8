//! Reading database URLs: the SQLite file a URL names, and a URL fit for a log line.

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

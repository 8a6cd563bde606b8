//! The test database, seen from behind the service's back: a SQLite file in a temporary
//! folder, or a fresh PostgreSQL database per test dropped when the test ends; its rows
//! as text, statements run directly, and what it holds on disk.

use std::path::Path;
use std::time::Duration;

use sqlx::{Column, Connection, Row};

use super::skip;

/// Where PostgreSQL is when `OAUTH_BROKER_TEST_POSTGRES_URL` does not say.
pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL server tests create their databases on (its URL names any database).
fn postgres_admin_url() -> String {
    std::env::var("OAUTH_BROKER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub enum TestDb {
    /// A SQLite file in a temporary folder of its own, removed with it.
    Sqlite { dir: tempfile::TempDir, url: String },
    /// A PostgreSQL database created for this test.
    Postgres { url: String },
    /// A database this value does not own: a replica's view of another `TestDb`'s, or a
    /// SQLite file in a folder the test holds itself. The kind follows the URL's scheme.
    Shared { url: String },
}

/// Each test's PostgreSQL database is dropped when the test ends (pass or fail), so runs
/// leave nothing behind (SQLite files go with their temporary folder).
impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres { url } = self else {
            return;
        };
        let Some((_, name)) = url.rsplit_once('/') else {
            return;
        };
        let name = name.to_owned();
        let admin = postgres_admin_url();
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                let drop = format!("drop database if exists {name} with (force)");
                sqlx::query(sqlx::AssertSqlSafe(drop))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

impl TestDb {
    /// Creates an empty database of the given kind (SQLite: `broker.db` in a temporary
    /// folder), or `None` (skipped) if unavailable.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(TestDb::sqlite_named("broker.db")),
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    /// A SQLite file called `file_name` in a temporary folder of its own.
    pub fn sqlite_named(file_name: &str) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join(file_name).display());
        TestDb::Sqlite { dir, url }
    }

    /// `broker.db` in `dir`, a folder the test holds (and removes) itself.
    pub fn sqlite_in(dir: &Path) -> TestDb {
        TestDb::Shared {
            url: format!("sqlite://{}", dir.join("broker.db").display()),
        }
    }

    /// Another view of this database, which leaves it to this value to remove.
    pub fn view(&self) -> TestDb {
        TestDb::Shared {
            url: self.url().to_owned(),
        }
    }

    /// A fresh `ob_test_<random>` database, or `None` (skipped) when PostgreSQL is not there.
    async fn postgres() -> Option<TestDb> {
        let admin = postgres_admin_url();
        let connect = sqlx::PgConnection::connect(&admin);
        let mut conn = match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                skip(&format!("PostgreSQL not reachable at {admin}: {e}"));
                return None;
            }
            Err(_) => {
                skip(&format!("PostgreSQL not reachable at {admin}: timeout"));
                return None;
            }
        };
        let name = format!("ob_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Some(TestDb::Postgres {
            url: format!("{base}/{name}"),
        })
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url } | TestDb::Shared { url } => url,
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.url().starts_with("sqlite:")
    }

    /// The folder of a SQLite database; `None` for PostgreSQL.
    pub fn sqlite_dir(&self) -> Option<&Path> {
        match self {
            TestDb::Sqlite { dir, .. } => Some(dir.path()),
            TestDb::Shared { url } if self.is_sqlite() => {
                Path::new(url.trim_start_matches("sqlite://")).parent()
            }
            TestDb::Postgres { .. } | TestDb::Shared { .. } => None,
        }
    }

    /// Runs one statement against the test database directly (behind the service's back).
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.is_sqlite() {
            let mut c = sqlx::SqliteConnection::connect(self.url()).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        } else {
            let mut c = sqlx::PgConnection::connect(self.url()).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }

    /// The rows of a query, each column rendered as text (`NULL` for null).
    pub async fn query_texts(&self, sql: &str) -> Vec<Vec<String>> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.is_sqlite() {
            let mut c = sqlx::SqliteConnection::connect(self.url()).await.unwrap();
            let rows = sqlx::query(sql).fetch_all(&mut c).await.unwrap();
            rows.iter().map(render_row).collect()
        } else {
            let mut c = sqlx::PgConnection::connect(self.url()).await.unwrap();
            let rows = sqlx::query(sql).fetch_all(&mut c).await.unwrap();
            rows.iter().map(render_row).collect()
        }
    }

    /// The first column of the first row of a query, as a number.
    pub async fn number(&self, sql: &str) -> i64 {
        let rows = self.query_texts(sql).await;
        rows[0][0]
            .parse()
            .unwrap_or_else(|_| panic!("`{sql}` is not a number: {rows:?}"))
    }

    /// Every row of every table, rendered as text, in a stable order: what "the
    /// database did not change" compares.
    pub async fn snapshot(&self) -> Vec<String> {
        const TABLES: &[&str] = &[
            "meta",
            "connections",
            "pending_authorizations",
            "api_keys",
            "events",
            "workflow_dependencies",
            "disabled_workflows",
            "refresh_runs",
        ];
        let mut out = Vec::new();
        for table in TABLES {
            let rows = self
                .query_texts(&format!("select * from {table} order by 1"))
                .await;
            for row in rows {
                out.push(format!("{table}: {}", row.join(" | ")));
            }
        }
        out
    }

    /// Everything the database holds on disk (SQLite files) or as text (PostgreSQL),
    /// for searching secrets in clear.
    pub async fn raw_contents(&self) -> Vec<u8> {
        match self.sqlite_dir() {
            Some(dir) => {
                let mut all = Vec::new();
                for entry in std::fs::read_dir(dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.to_string_lossy().contains("broker.db") {
                        all.extend(std::fs::read(path).unwrap());
                    }
                }
                all
            }
            None => self.snapshot().await.join("\n").into_bytes(),
        }
    }

    /// SQLite's own verdict on the file must be `ok` (PostgreSQL: nothing to check).
    pub async fn assert_integrity(&self) {
        if self.is_sqlite() {
            let verdict = self.query_texts("pragma integrity_check").await;
            assert_eq!(
                verdict,
                vec![vec!["ok".to_owned()]],
                "PRAGMA integrity_check"
            );
        }
    }
}

/// A row's columns as text: strings as they are, integers in decimal, `NULL` for null,
/// and `<column>` for any other type.
pub fn render_row<R: Row>(row: &R) -> Vec<String>
where
    usize: sqlx::ColumnIndex<R>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (0..row.columns().len())
        .map(|i| {
            if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                v.unwrap_or_else(|| "NULL".into())
            } else if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                v.map_or_else(|| "NULL".into(), |n| n.to_string())
            } else {
                format!("<{}>", row.columns()[i].name())
            }
        })
        .collect()
}

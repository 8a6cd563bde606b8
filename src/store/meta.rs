//! The store's own state: whether the database answers, the key check's record, and
//! how many rows hold ciphertexts.

use async_trait::async_trait;

use super::error::StoreResult;
use super::sql::{SqlStore, on_db};

/// Reads and writes about the database itself rather than an aggregate.
#[async_trait]
pub trait MetaStore {
    /// Reachable and migrated.
    async fn ping(&self) -> StoreResult<()>;
    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;
    /// Inserts or replaces.
    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Rows holding ciphertexts (connections, pending authorizations and OBO sessions).
    async fn count_sealed_rows(&self) -> StoreResult<i64>;
}

#[async_trait]
impl MetaStore for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        // Reads the migrations table: reachable *and* migrated.
        on_db!(self, |pool| {
            sqlx::query("select count(*) from _sqlx_migrations")
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        let value: Option<(String,)> = on_db!(self, |pool| {
            sqlx::query_as("select value from meta where key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await
        })?;
        Ok(value.map(|(v,)| v))
    }

    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        on_db!(self, |pool| {
            sqlx::query(
                "insert into meta (key, value) values ($1, $2) \
                 on conflict (key) do update set value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    async fn count_sealed_rows(&self) -> StoreResult<i64> {
        let (n,): (i64,) = on_db!(self, |pool| {
            sqlx::query_as(
                "select (select count(*) from connections) \
                      + (select count(*) from pending_authorizations) \
                      + (select count(*) from obo_sessions)",
            )
            .fetch_one(pool)
            .await
        })?;
        Ok(n)
    }
}

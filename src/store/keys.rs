//! API keys: who may call the broker, stored by the SHA-256 of their secret.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::error::{StoreError, StoreResult};
use super::sql::{SqlStore, on_db, unique_to_conflict};
use super::types::{from_ms, to_ms};
use crate::domain::{ApiKey, NewApiKey, OrgScope, Page, PageRequest, Role};

/// API keys.
#[async_trait]
pub trait KeyStore {
    async fn insert_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey>;
    /// An active (not revoked) key by the SHA-256 of its secret.
    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>>;
    /// A revoked key by the SHA-256 of its secret (a revoked key stays revoked).
    async fn find_revoked_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>>;
    /// A page of the keys, by name (names are unique); the page key is the name.
    async fn list_api_keys(&self, page: &PageRequest<String>) -> StoreResult<Page<ApiKey>>;
    /// True when a key was revoked now.
    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> StoreResult<bool>;
    async fn count_active_api_keys(&self) -> StoreResult<i64>;
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn insert_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey> {
        let row: ApiKeyRow = on_db!(self, |pool| {
            sqlx::query_as(
            "insert into api_keys (id, name, role, org_scope, key_hash, key_prefix, created_at, \
             created_by) values ($1, $2, $3, $4, $5, $6, $7, $8) \
             returning id, name, role, org_scope, key_prefix, created_at, created_by, revoked_at",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(key.org_scope.as_str())
        .bind(&key.key_hash)
        .bind(&key.key_prefix)
        .bind(to_ms(key.now))
        .bind(&key.created_by)
        .fetch_one(pool)
        .await
        })
        .map_err(|e| {
            unique_to_conflict(e, || {
                format!("an API key named `{}` already exists", key.name)
            })
        })?;
        row.try_into()
    }

    async fn find_revoked_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        let row: Option<ApiKeyRow> = on_db!(self, |pool| {
            sqlx::query_as(
                "select id, name, role, org_scope, key_prefix, created_at, created_by, revoked_at \
                 from api_keys where key_hash = $1 and revoked_at is not null",
            )
            .bind(key_hash)
            .fetch_optional(pool)
            .await
        })?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        let row: Option<ApiKeyRow> = on_db!(self, |pool| {
            sqlx::query_as(
                "select id, name, role, org_scope, key_prefix, created_at, created_by, revoked_at \
                 from api_keys where key_hash = $1 and revoked_at is null",
            )
            .bind(key_hash)
            .fetch_optional(pool)
            .await
        })?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn list_api_keys(&self, page: &PageRequest<String>) -> StoreResult<Page<ApiKey>> {
        let rows: Vec<ApiKeyRow> = on_db!(self, |pool| {
            sqlx::query_as(
                "select id, name, role, org_scope, key_prefix, created_at, created_by, revoked_at \
                 from api_keys where name > $1 order by name limit $2",
            )
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(page.fetch() as i64)
            .fetch_all(pool)
            .await
        })?;
        let rows = rows
            .into_iter()
            .map(ApiKey::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page))
    }

    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let revoked = on_db!(self, |pool| {
            sqlx::query("update api_keys set revoked_at = $2 where id = $1 and revoked_at is null")
                .bind(id)
                .bind(to_ms(now))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(revoked == 1)
    }

    async fn count_active_api_keys(&self) -> StoreResult<i64> {
        let (n,): (i64,) = on_db!(self, |pool| {
            sqlx::query_as("select count(*) from api_keys where revoked_at is null")
                .fetch_one(pool)
                .await
        })?;
        Ok(n)
    }
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    name: String,
    role: String,
    org_scope: String,
    key_prefix: String,
    created_at: i64,
    created_by: String,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;
    fn try_from(r: ApiKeyRow) -> StoreResult<Self> {
        let bad = |what: &str| StoreError::Corrupt(format!("api key {}: bad {what}", r.id));
        Ok(ApiKey {
            role: Role::parse(&r.role).ok_or_else(|| bad("role"))?,
            org_scope: OrgScope::parse(&r.org_scope).map_err(|_| bad("org_scope"))?,
            id: r.id,
            name: r.name,
            key_prefix: r.key_prefix,
            created_at: from_ms(r.created_at),
            created_by: r.created_by,
            revoked_at: r.revoked_at.map(from_ms),
        })
    }
}

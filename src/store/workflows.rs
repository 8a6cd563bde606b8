//! Workflows as the broker knows them: which connections each depends on, and which are
//! disabled because a connection they needed was deleted.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::error::{StoreError, StoreResult};
use super::lookups::WORKFLOWS_WRITTEN;
use super::sql::{SqlStore, announce, on_db};
use super::types::{from_ms, to_ms};
use crate::domain::{ConnectionName, Dependency, DisabledWorkflow, OrgId, Page, PageRequest};

/// Workflow dependencies and disabled workflows.
#[async_trait]
pub trait WorkflowStore {
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
    /// Records a read on a registered dependency; false when there is none.
    async fn touch_dependency(
        &self,
        workflow_id: &str,
        org: &OrgId,
        name: &ConnectionName,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn is_workflow_disabled(&self, workflow_id: &str, org: &OrgId) -> StoreResult<bool>;
    /// A page of the org's disabled workflows, by workflow id (the page key).
    async fn list_disabled_workflows(
        &self,
        org: &OrgId,
        page: &PageRequest<String>,
    ) -> StoreResult<Page<DisabledWorkflow>>;
    async fn enable_workflow(&self, workflow_id: &str, org: &OrgId) -> StoreResult<bool>;
}

/// Dependencies (`d`) that resolve to the connection `$2` of org `$1`: the workflow's own
/// org, or GLOBAL when the workflow's org has no connection of that name.
macro_rules! resolves_to {
    () => {
        "d.connection_name = $2 and (d.org_id = $1 or ($1 = 'GLOBAL' and not exists \
         (select 1 from connections c where c.org_id = d.org_id and c.name = d.connection_name)))"
    };
}
pub(super) use resolves_to;

/// A dependency's row.
type DependencyRow = (String, String, String, Option<String>, i64, Option<i64>);
/// A disabled workflow's row.
type DisabledRow = (String, String, String, i64, Option<String>);

#[async_trait]
impl WorkflowStore for SqlStore {
    async fn dependent_workflows(
        &self,
        org: &OrgId,
        name: &ConnectionName,
    ) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = on_db!(self, |pool| {
            sqlx::query_as(concat!(
                "select distinct workflow_id from workflow_dependencies d where ",
                resolves_to!(),
                " order by workflow_id"
            ))
            .bind(org.as_str())
            .bind(name.as_str())
            .fetch_all(pool)
            .await
        })?;
        Ok(rows.into_iter().map(|(w,)| w).collect())
    }

    async fn upsert_dependency(&self, dep: &Dependency) -> StoreResult<()> {
        on_db!(self, |pool| {
            sqlx::query(
                "insert into workflow_dependencies \
                 (workflow_id, org_id, connection_name, workflow_name, registered_at) \
                 values ($1, $2, $3, $4, $5) on conflict (workflow_id, org_id, connection_name) \
                 do update set workflow_name = excluded.workflow_name",
            )
            .bind(&dep.workflow_id)
            .bind(dep.org_id.as_str())
            .bind(dep.connection_name.as_str())
            .bind(&dep.workflow_name)
            .bind(to_ms(dep.registered_at))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    async fn list_dependencies(
        &self,
        workflow_id: &str,
        org: &OrgId,
    ) -> StoreResult<Vec<Dependency>> {
        let rows: Vec<DependencyRow> = on_db!(self, |pool| {
            sqlx::query_as(
                "select workflow_id, org_id, connection_name, workflow_name, registered_at, \
                 last_accessed_at from workflow_dependencies \
                 where workflow_id = $1 and org_id = $2 order by connection_name",
            )
            .bind(workflow_id)
            .bind(org.as_str())
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter()
            .map(
                |(workflow_id, org_id, name, workflow_name, registered_at, last_accessed_at)| {
                    Ok(Dependency {
                        workflow_id,
                        org_id: OrgId::parse(&org_id)
                            .map_err(|_| StoreError::Corrupt("dependency org".into()))?,
                        connection_name: ConnectionName::parse(&name)
                            .map_err(|_| StoreError::Corrupt("dependency name".into()))?,
                        workflow_name,
                        registered_at: from_ms(registered_at),
                        last_accessed_at: last_accessed_at.map(from_ms),
                    })
                },
            )
            .collect()
    }

    async fn delete_dependency(
        &self,
        workflow_id: &str,
        org: &OrgId,
        name: &ConnectionName,
    ) -> StoreResult<bool> {
        let deleted = on_db!(self, |pool| {
            sqlx::query(
                "delete from workflow_dependencies \
                 where workflow_id = $1 and org_id = $2 and connection_name = $3",
            )
            .bind(workflow_id)
            .bind(org.as_str())
            .bind(name.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(deleted == 1)
    }

    /// Records a read on a registered dependency; false when there is none.
    async fn touch_dependency(
        &self,
        workflow_id: &str,
        org: &OrgId,
        name: &ConnectionName,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let touched = on_db!(self, |pool| {
            sqlx::query(
                "update workflow_dependencies set last_accessed_at = $4 \
                 where workflow_id = $1 and org_id = $2 and connection_name = $3",
            )
            .bind(workflow_id)
            .bind(org.as_str())
            .bind(name.as_str())
            .bind(to_ms(now))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(touched > 0)
    }

    async fn is_workflow_disabled(&self, workflow_id: &str, org: &OrgId) -> StoreResult<bool> {
        if let Some(disabled) = self.lookups.disabled(org.as_str(), workflow_id) {
            return Ok(disabled);
        }
        let ticket = self.lookups.ticket();
        // count(*) is a bigint on both backends (a bare `1` is int4 on PostgreSQL).
        let (n,): (i64,) = on_db!(self, |pool| {
            sqlx::query_as(
                "select count(*) from disabled_workflows where workflow_id = $1 and org_id = $2",
            )
            .bind(workflow_id)
            .bind(org.as_str())
            .fetch_one(pool)
            .await
        })?;
        self.lookups
            .remember_disabled(ticket, org.as_str(), workflow_id, n > 0);
        Ok(n > 0)
    }

    async fn list_disabled_workflows(
        &self,
        org: &OrgId,
        page: &PageRequest<String>,
    ) -> StoreResult<Page<DisabledWorkflow>> {
        let rows: Vec<DisabledRow> = on_db!(self, |pool| {
            sqlx::query_as(
                "select workflow_id, org_id, disabled_reason, disabled_at, related_oauth_connection \
                 from disabled_workflows where org_id = $1 and workflow_id > $2 \
                 order by workflow_id limit $3",
            )
            .bind(org.as_str())
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(page.fetch() as i64)
            .fetch_all(pool)
            .await
        })?;
        let rows = rows
            .into_iter()
            .map(
                |(workflow_id, org_id, disabled_reason, disabled_at, related_oauth_connection)| {
                    Ok(DisabledWorkflow {
                        workflow_id,
                        org_id: OrgId::parse(&org_id)
                            .map_err(|_| StoreError::Corrupt("disabled org".into()))?,
                        disabled_reason,
                        disabled_at: from_ms(disabled_at),
                        related_oauth_connection,
                    })
                },
            )
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page))
    }

    async fn enable_workflow(&self, workflow_id: &str, org: &OrgId) -> StoreResult<bool> {
        let done = on_db!(self, |pool| {
            sqlx::query("delete from disabled_workflows where workflow_id = $1 and org_id = $2")
                .bind(workflow_id)
                .bind(org.as_str())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        self.lookups.wrote_workflows();
        let enabled = done? == 1;
        if enabled {
            on_db!(self, |pool| { announce!(self, pool, WORKFLOWS_WRITTEN) });
        }
        Ok(enabled)
    }
}

//! Workflow dependencies: which workflows use which connections (so deleting a
//! connection can warn, or disable them), and re-enabling a disabled workflow.

use super::{Broker, Error, Result};
use crate::domain::{
    ConnectionName, Dependency, DisabledWorkflow, OrgId, Page, PageRequest, WorkflowId,
};

/// Registers (or updates) `workflow`'s use of connection `name`, which must exist in
/// `org` or GLOBAL.
pub async fn register(
    broker: &Broker,
    org: &OrgId,
    workflow: &WorkflowId,
    name: ConnectionName,
    workflow_name: Option<String>,
) -> Result<Dependency> {
    if broker
        .store
        .find_for_credentials(org, &name)
        .await?
        .is_none()
    {
        return Err(Error::NotFound(format!(
            "no connection `{name}` in org `{org}` or GLOBAL"
        )));
    }
    let dependency = Dependency {
        workflow_id: workflow.to_string(),
        org_id: org.clone(),
        connection_name: name,
        workflow_name,
        registered_at: broker.clock.now(),
        last_accessed_at: None,
    };
    broker.store.upsert_dependency(&dependency).await?;
    Ok(dependency)
}

pub async fn list(broker: &Broker, org: &OrgId, workflow: &WorkflowId) -> Result<Vec<Dependency>> {
    Ok(broker
        .store
        .list_dependencies(workflow.as_str(), org)
        .await?)
}

pub async fn remove(
    broker: &Broker,
    org: &OrgId,
    workflow: &WorkflowId,
    name: &ConnectionName,
) -> Result<()> {
    if !broker
        .store
        .delete_dependency(workflow.as_str(), org, name)
        .await?
    {
        return Err(Error::NotFound("no such dependency".into()));
    }
    Ok(())
}

/// A page of the org's disabled workflows, by workflow id.
pub async fn disabled(
    broker: &Broker,
    org: &OrgId,
    page: &PageRequest<String>,
) -> Result<Page<DisabledWorkflow>> {
    Ok(broker.store.list_disabled_workflows(org, page).await?)
}

pub async fn enable(broker: &Broker, org: &OrgId, workflow: &WorkflowId) -> Result<()> {
    if !broker.store.enable_workflow(workflow.as_str(), org).await? {
        return Err(Error::NotFound(format!(
            "workflow `{workflow}` is not disabled in org `{org}`"
        )));
    }
    Ok(())
}

//! `/api/oauth/workflows`: which workflows depend on which connections, and workflows
//! disabled because a connection they needed was deleted. Registering is open to
//! workflow keys; the rest needs an admin key.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use crate::domain::Caller;
use crate::domain::FieldErrors;
use crate::domain::{ConnectionName, WorkflowId};
use crate::domain::{Dependency, DisabledWorkflow};
use crate::http::auth::Org;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::extract::{OrgHeader, parse_name};
use crate::http::pagination::{DEFAULT_LIMIT, PageInfo, PageParams};
use crate::service::Broker;
use crate::service::workflows as service;

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDependency {
    /// A connection of the org, or of GLOBAL. Validation: `^[A-Za-z0-9_-]{1,100}$`.
    pub connection_name: String,
    /// A human name for the workflow. Validation: at most 200 characters.
    #[validate(length(max = 200))]
    pub workflow_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyView {
    pub connection_name: String,
    /// The workflow's org.
    pub org_id: String,
    pub workflow_name: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub last_accessed_at: Option<DateTime<Utc>>,
}

impl From<Dependency> for DependencyView {
    fn from(d: Dependency) -> Self {
        Self {
            connection_name: d.connection_name.to_string(),
            org_id: d.org_id.to_string(),
            workflow_name: d.workflow_name,
            registered_at: d.registered_at,
            last_accessed_at: d.last_accessed_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyList {
    pub workflow_id: String,
    pub connections: Vec<DependencyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisabledWorkflowView {
    pub workflow_id: String,
    pub org_id: String,
    pub disabled_reason: String,
    pub disabled_at: DateTime<Utc>,
    pub related_oauth_connection: Option<String>,
}

impl From<DisabledWorkflow> for DisabledWorkflowView {
    fn from(d: DisabledWorkflow) -> Self {
        Self {
            workflow_id: d.workflow_id,
            org_id: d.org_id.to_string(),
            disabled_reason: d.disabled_reason,
            disabled_at: d.disabled_at,
            related_oauth_connection: d.related_oauth_connection,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisabledList {
    pub workflows: Vec<DisabledWorkflowView>,
    /// Items in this page.
    pub count: usize,
    pub has_more: bool,
    /// Pass as `starting_after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Enabled {
    pub workflow_id: String,
    pub enabled: bool,
}

fn parse_workflow(raw: &str) -> Result<WorkflowId, ApiError> {
    WorkflowId::parse(raw).map_err(|e| FieldErrors::single("workflow_id", e.0).into())
}

#[utoipa::path(
    post, path = "/api/oauth/workflows/{workflow_id}/dependencies", tag = "workflows", operation_id = "register_dependency",
    params(("workflow_id" = String, Path), OrgHeader),
    request_body = RegisterDependency,
    responses(
        (status = 201, body = DependencyView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Neither the org nor GLOBAL has this connection", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[post("/workflows/{workflow_id}/dependencies")]
pub async fn register(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    workflow_id: web::Path<String>,
    JsonBody(body): JsonBody<RegisterDependency>,
) -> Result<HttpResponse, ApiError> {
    caller.require_org(&org)?;
    let workflow = parse_workflow(&workflow_id)?;
    let name = ConnectionName::parse(&body.connection_name)
        .map_err(|e| FieldErrors::single("connection_name", e.0))?;
    let dependency = service::register(&broker, &org, &workflow, name, body.workflow_name).await?;
    Ok(HttpResponse::Created().json(DependencyView::from(dependency)))
}

#[utoipa::path(
    get, path = "/api/oauth/workflows/{workflow_id}/dependencies", tag = "workflows", operation_id = "list_dependencies",
    params(("workflow_id" = String, Path), OrgHeader),
    responses(
        (status = 200, body = DependencyList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[get("/workflows/{workflow_id}/dependencies")]
pub async fn list(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    workflow_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let workflow = parse_workflow(&workflow_id)?;
    let deps = service::list(&broker, &org, &workflow).await?;
    Ok(HttpResponse::Ok().json(DependencyList {
        workflow_id: workflow.to_string(),
        connections: deps.into_iter().map(DependencyView::from).collect(),
    }))
}

#[utoipa::path(
    delete, path = "/api/oauth/workflows/{workflow_id}/dependencies/{connection_name}", tag = "workflows", operation_id = "delete_dependency",
    params(("workflow_id" = String, Path), ("connection_name" = String, Path), OrgHeader),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[delete("/workflows/{workflow_id}/dependencies/{connection_name}")]
pub async fn remove(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let (workflow_id, name) = path.into_inner();
    let workflow = parse_workflow(&workflow_id)?;
    let name = parse_name(&name)?;
    service::remove(&broker, &org, &workflow, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get, path = "/api/oauth/workflows/disabled", tag = "workflows", operation_id = "list_disabled_workflows",
    params(PageParams, OrgHeader),
    responses(
        (status = 200, body = DisabledList, description = "By workflow id"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[get("/workflows/disabled")]
pub async fn disabled(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    QueryParams(query): QueryParams<PageParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let page = query.request::<String>(DEFAULT_LIMIT)?;
    let page = service::disabled(&broker, &org, &page).await?;
    let info = PageInfo::of(&page, |w| w.workflow_id.clone());
    Ok(HttpResponse::Ok().json(DisabledList {
        workflows: page
            .items
            .into_iter()
            .map(DisabledWorkflowView::from)
            .collect(),
        count: info.count,
        has_more: info.has_more,
        next_cursor: info.next_cursor,
    }))
}

#[utoipa::path(
    post, path = "/api/oauth/workflows/{workflow_id}/enable", tag = "workflows", operation_id = "enable_workflow",
    params(("workflow_id" = String, Path), OrgHeader),
    responses(
        (status = 200, body = Enabled),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The workflow is not disabled", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[post("/workflows/{workflow_id}/enable")]
pub async fn enable(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    workflow_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let workflow = parse_workflow(&workflow_id)?;
    service::enable(&broker, &org, &workflow).await?;
    Ok(HttpResponse::Ok().json(Enabled {
        workflow_id: workflow.to_string(),
        enabled: true,
    }))
}

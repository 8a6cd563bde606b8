//! `GET /api/oauth/credentials/{name}`: a valid access token for workflow code (role
//! workflow or admin). The caller's org first, then GLOBAL; refreshed on demand.

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, Duration, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::{Caller, Connection, FieldErrors, WorkflowId};
use crate::http::auth::Org;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{OrgHeader, QueryParams, parse_name};
use crate::service::Broker;
use crate::service::credentials;

pub const WORKFLOW_HEADER: &str = "x-workflow-id";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CredentialsQuery {
    /// Seconds the token must stay valid; refreshed first otherwise. 0 to 86400, default 300.
    pub min_valid_for: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct WorkflowHeader {
    /// The calling workflow; the read is recorded on its dependency.
    #[serde(rename = "X-Workflow-Id")]
    #[param(rename = "X-Workflow-Id")]
    pub x_workflow_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Credentials {
    pub connection_name: String,
    /// The org whose connection served the token (the caller's, or `GLOBAL`).
    pub org_id: String,
    pub access_token: String,
    pub token_type: String,
    /// Ready to send: `Bearer <token>`.
    pub authorization_header: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
}

impl Credentials {
    /// The answer for a token; `token_type` defaults to `Bearer`.
    pub fn new(
        connection_name: &str,
        org_id: &str,
        access_token: &str,
        token_type: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
        scopes: Vec<String>,
    ) -> Self {
        let token_type = token_type.unwrap_or("Bearer").to_owned();
        Self {
            connection_name: connection_name.to_owned(),
            org_id: org_id.to_owned(),
            authorization_header: format!("{token_type} {access_token}"),
            access_token: access_token.to_owned(),
            token_type,
            expires_at,
            scopes,
        }
    }

    /// The answer for a connection's stored token.
    pub fn of_connection(conn: &Connection, access_token: &str) -> Self {
        Self::new(
            conn.name.as_str(),
            conn.org_id.as_str(),
            access_token,
            conn.token_type.as_deref(),
            conn.token_expires_at,
            conn.token_scopes
                .clone()
                .unwrap_or_else(|| conn.config.scopes.clone()),
        )
    }
}

#[utoipa::path(
    get, path = "/api/oauth/credentials/{name}", tag = "credentials", operation_id = "get_credentials",
    params(("name" = String, Path, description = "Connection name"), CredentialsQuery, OrgHeader, WorkflowHeader),
    responses(
        (status = 200, body = Credentials, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another org's key, or a disabled workflow", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Neither the org nor GLOBAL has this connection", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`connection_unavailable` (with `connection_status`), `busy`, or `unavailable` (the database)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[get("/credentials/{name}")]
pub async fn get_credentials(
    broker: web::Data<Broker>,
    req: HttpRequest,
    caller: Caller,
    Org(org): Org,
    name: web::Path<String>,
    QueryParams(query): QueryParams<CredentialsQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_org(&org)?;
    let name = parse_name(&name)?;
    let min_valid_for = query.min_valid_for.unwrap_or(300);
    if !(0..=86_400).contains(&min_valid_for) {
        return Err(FieldErrors::single("min_valid_for", "must be between 0 and 86400").into());
    }
    let workflow = match req.headers().get(WORKFLOW_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| WorkflowId::parse(v).ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("X-Workflow-Id must match ^[A-Za-z0-9_.:-]{1,128}$".into())
                })?,
        ),
    };
    let served = credentials::read(
        &broker,
        &org,
        &name,
        Duration::seconds(min_valid_for),
        workflow,
        &caller,
    )
    .await
    .map_err(|e| ApiError::from(e).for_caller(&caller))?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(Credentials::of_connection(
            &served.connection,
            served.access_token.expose_secret(),
        )))
}

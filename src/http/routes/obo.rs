//! On-behalf-of (role workflow or admin): exchange a user's token for a downstream one,
//! and long-running sessions that keep a user's delegated grant alive.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use crate::domain::Caller;
use crate::domain::ConnectionName;
use crate::domain::FieldErrors;
use crate::domain::OboSession;
use crate::http::auth::Org;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::extract::{OrgHeader, parse_name};
use crate::http::pagination::{DEFAULT_LIMIT, PageInfo, PageParams};
use crate::http::routes::credentials::Credentials;
use crate::service::Broker;
use crate::service::obo;

const MAX_ASSERTION: usize = 16 * 1024;

fn check_assertion_size(assertion: &SecretString) -> Result<(), ApiError> {
    let len = assertion.expose_secret().len();
    if len == 0 || len > MAX_ASSERTION {
        return Err(FieldErrors::single(
            "assertion",
            format!("must be 1 to {MAX_ASSERTION} characters"),
        )
        .into());
    }
    Ok(())
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OboRequest {
    /// The user's access token, as received by the middle tier. Never stored or logged.
    #[schema(value_type = String, format = Password)]
    pub assertion: SecretString,
    /// Defaults to the connection's scopes. Validation: at most 100 RFC 6749 scope tokens.
    pub scopes: Option<Vec<String>>,
    /// The `claims` of an earlier `claims_challenge`, passed on to the provider.
    /// Validation: at most 8192 characters.
    #[validate(length(max = 8192))]
    pub claims: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OboCredentials {
    #[serde(flatten)]
    pub credentials: Credentials,
    /// Whether the token came from the cache (no exchange).
    pub cached: bool,
}

#[utoipa::path(
    post, path = "/api/oauth/credentials/{name}/on-behalf-of", tag = "on-behalf-of", operation_id = "exchange_on_behalf_of",
    params(("name" = String, Path, description = "An on_behalf_of connection"), OrgHeader),
    request_body = OboRequest,
    responses(
        (status = 200, body = OboCredentials, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`, `assertion_invalid`, `obo_rejected` or `claims_challenge` (with `claims` and a `WWW-Authenticate` challenge)", body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "`obo_misconfigured` (with `provider_code`) or `provider_error`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[post("/credentials/{name}/on-behalf-of")]
pub async fn exchange(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    name: web::Path<String>,
    JsonBody(body): JsonBody<OboRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_org(&org)?;
    let name = parse_name(&name)?;
    check_assertion_size(&body.assertion)?;
    let done = obo::exchange(
        &broker,
        &org,
        &name,
        body.assertion,
        body.scopes,
        body.claims,
    )
    .await
    .map_err(|e| ApiError::from(e).for_caller(&caller))?;
    let token = &done.token;
    let credentials = Credentials::new(
        done.connection.name.as_str(),
        done.connection.org_id.as_str(),
        token.access_token.expose_secret(),
        Some(&token.token_type),
        Some(token.expires_at),
        token.scopes.clone(),
    );
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(OboCredentials {
            credentials,
            cached: done.cached,
        }))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// An on_behalf_of connection of the org (or GLOBAL).
    pub connection_name: String,
    /// The user's access token. Never stored or logged.
    #[schema(value_type = String, format = Password)]
    pub assertion: SecretString,
    /// At most the configured maximum (default 90 days), at least 60.
    pub max_lifetime_seconds: Option<i64>,
    /// Validation: at most 200 characters.
    #[validate(length(max = 200))]
    pub label: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCreated {
    pub session_id: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub connection_name: String,
    pub org_id: String,
    pub label: Option<String>,
    pub created_by: String,
    /// `active`, `failed`, `revoked` or `expired`.
    pub status: String,
    pub status_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub token_expires_at: Option<DateTime<Utc>>,
}

impl SessionView {
    fn new(s: OboSession, now: DateTime<Utc>) -> Self {
        let status = if s.revoked_at.is_some() {
            "revoked".to_owned()
        } else if s.expires_at <= now {
            "expired".to_owned()
        } else {
            s.status.clone()
        };
        Self {
            session_id: s.id,
            connection_name: s.connection_name.to_string(),
            org_id: s.org_id.to_string(),
            label: s.label,
            created_by: s.created_by,
            status,
            status_message: s.status_message,
            created_at: s.created_at,
            expires_at: s.expires_at,
            revoked_at: s.revoked_at,
            last_used_at: s.last_used_at,
            token_expires_at: s.token_expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
    /// Items in this page.
    pub count: usize,
    pub has_more: bool,
    /// Pass as `starting_after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Only sessions of this connection.
    pub connection_name: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 1024)]
    pub starting_after: Option<String>,
}

fn parse_session_id(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::NotFound("no such session".into()))
}

#[utoipa::path(
    post, path = "/api/oauth/obo-sessions", tag = "on-behalf-of", operation_id = "create_obo_session",
    params(OrgHeader),
    request_body = CreateSession,
    responses(
        (status = 201, body = SessionCreated),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[post("/obo-sessions")]
pub async fn create_session(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    JsonBody(body): JsonBody<CreateSession>,
) -> Result<HttpResponse, ApiError> {
    caller.require_org(&org)?;
    let name = ConnectionName::parse(&body.connection_name)
        .map_err(|e| FieldErrors::single("connection_name", e.0))?;
    check_assertion_size(&body.assertion)?;
    let session = obo::create_session(
        &broker,
        &caller,
        &org,
        &name,
        body.assertion,
        body.max_lifetime_seconds,
        body.label,
    )
    .await
    .map_err(|e| ApiError::from(e).for_caller(&caller))?;
    Ok(HttpResponse::Created().json(SessionCreated {
        session_id: session.id,
        expires_at: session.expires_at,
    }))
}

#[utoipa::path(
    get, path = "/api/oauth/obo-sessions", tag = "on-behalf-of", operation_id = "list_obo_sessions",
    params(SessionQuery, OrgHeader),
    responses(
        (status = 200, body = SessionList, description = "Admin keys see the org's sessions; workflow keys their own"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[get("/obo-sessions")]
pub async fn list_sessions(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    QueryParams(query): QueryParams<SessionQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_org(&org)?;
    let name = query
        .connection_name
        .as_deref()
        .map(parse_name)
        .transpose()?;
    let page = PageParams {
        limit: query.limit,
        starting_after: query.starting_after,
    }
    .request::<String>(DEFAULT_LIMIT)?;
    let now = broker.clock.now();
    let page = obo::list_sessions(&broker, &caller, &org, name.as_ref(), &page).await?;
    let info = PageInfo::of(&page, |s| s.id.clone());
    Ok(HttpResponse::Ok().json(SessionList {
        sessions: page
            .items
            .into_iter()
            .map(|s| SessionView::new(s, now))
            .collect(),
        count: info.count,
        has_more: info.has_more,
        next_cursor: info.next_cursor,
    }))
}

#[utoipa::path(
    get, path = "/api/oauth/obo-sessions/{id}/credentials", tag = "on-behalf-of", operation_id = "obo_session_credentials",
    params(("id" = String, Path, description = "Session id"), OrgHeader),
    responses(
        (status = 200, body = Credentials, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another key's session", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`gone`: expired or revoked", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`connection_unavailable`: the user's grant was revoked upstream; or `unavailable` (the database)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[get("/obo-sessions/{id}/credentials")]
pub async fn session_credentials(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_org(&org)?;
    let id = parse_session_id(&id)?;
    let (session, served_by, token) = obo::session_credentials(&broker, &caller, &org, &id)
        .await
        .map_err(|e| ApiError::from(e).for_caller(&caller))?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(Credentials::new(
            session.connection_name.as_str(),
            served_by.as_str(),
            token.expose_secret(),
            session.token_type.as_deref(),
            session.token_expires_at,
            session.scopes.clone(),
        )))
}

#[utoipa::path(
    delete, path = "/api/oauth/obo-sessions/{id}", tag = "on-behalf-of", operation_id = "revoke_obo_session",
    params(("id" = String, Path, description = "Session id"), OrgHeader),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Already revoked", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[delete("/obo-sessions/{id}")]
pub async fn revoke_session(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_org(&org)?;
    let id = parse_session_id(&id)?;
    obo::revoke_session(&broker, &caller, &org, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

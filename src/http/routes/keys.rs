//! `/api/oauth/keys`: API keys (admin of every org). A key is shown once, at creation.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use crate::domain::ApiKey;
use crate::domain::Caller;
use crate::domain::FieldErrors;
use crate::domain::{OrgScope, Role};
use crate::http::auth::Authenticator;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::pagination::{DEFAULT_LIMIT, PageInfo, PageParams};
use crate::service::Broker;
use crate::service::keys as service;

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Validation: `^[A-Za-z0-9_.-]{1,100}$`, unique.
    pub name: String,
    pub role: Role,
    /// One org id, or `*` for every org (GLOBAL included).
    pub org_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub org_id: String,
    /// The first characters of the key, to recognise it.
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            role: k.role,
            org_id: k.org_scope.as_str().to_owned(),
            key_prefix: k.key_prefix,
            created_at: k.created_at,
            created_by: k.created_by,
            revoked_at: k.revoked_at,
        }
    }
}

/// The new key; `key` is shown only in this response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub org_id: String,
    pub key: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKeyView>,
    /// Items in this page.
    pub count: usize,
    pub has_more: bool,
    /// Pass as `starting_after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    post, path = "/api/oauth/keys", tag = "keys", operation_id = "create_key",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, body = CreatedKey, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[post("/keys")]
pub async fn create(
    broker: web::Data<Broker>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_global_admin()?;
    let mut errors = FieldErrors::default();
    let name = match service::parse_key_name(&body.name) {
        Ok(n) => Some(n),
        Err(_) => {
            errors.add("name", "must match ^[A-Za-z0-9_.-]{1,100}$");
            None
        }
    };
    let scope = errors.take("org_id", OrgScope::parse(&body.org_id));
    errors.finish()?;
    let (record, key) = service::create(
        &broker.store,
        name.expect("checked"),
        body.role,
        scope.expect("checked"),
        &caller.name,
        broker.clock.now(),
    )
    .await?;
    tracing::info!(key = %record.name, role = %record.role, org = record.org_scope.as_str(), by = %caller.name, "api key created");
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedKey {
            id: record.id,
            name: record.name,
            role: record.role,
            org_id: record.org_scope.as_str().to_owned(),
            key: key.expose_secret().to_owned(),
            created_at: record.created_at,
        }))
}

#[utoipa::path(
    get, path = "/api/oauth/keys", tag = "keys", operation_id = "list_keys",
    params(PageParams),
    responses(
        (status = 200, body = KeyList, description = "By name"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[get("/keys")]
pub async fn list(
    broker: web::Data<Broker>,
    caller: Caller,
    QueryParams(query): QueryParams<PageParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require_global_admin()?;
    let page = query.request::<String>(DEFAULT_LIMIT)?;
    let page = service::list(&broker, &page).await?;
    let info = PageInfo::of(&page, |k| k.name.clone());
    Ok(HttpResponse::Ok().json(KeyList {
        keys: page.items.into_iter().map(ApiKeyView::from).collect(),
        count: info.count,
        has_more: info.has_more,
        next_cursor: info.next_cursor,
    }))
}

#[utoipa::path(
    delete, path = "/api/oauth/keys/{id}", tag = "keys", operation_id = "revoke_key",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked; refused within 5 seconds on every replica"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[delete("/keys/{id}")]
pub async fn revoke(
    broker: web::Data<Broker>,
    auth: web::Data<Authenticator>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_global_admin()?;
    service::revoke(&broker, &id).await?;
    auth.keys.clear();
    tracing::info!(key_id = %id, by = %caller.name, "api key revoked");
    Ok(HttpResponse::NoContent().finish())
}

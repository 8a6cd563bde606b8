//! Per-connection actions (role admin): start an authorization, test, force a refresh.

use actix_web::{HttpResponse, post, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use crate::domain::Caller;
use crate::http::auth::Org;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::JsonBody;
use crate::http::extract::{OrgHeader, parse_name};
use crate::http::routes::connections::ConnectionView;
use crate::service::Broker;
use crate::service::{authorization, refresh as refreshes, testing};

#[derive(Debug, Default, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// Where to send the browser after the callback; its origin must be in
    /// `OAUTH_BROKER_ALLOWED_RETURN_ORIGINS`. Validation: at most 2048 characters.
    #[validate(length(max = 2048))]
    pub return_to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeResponse {
    /// Open this in the user's browser.
    pub authorization_url: String,
    /// The single-use state (also inside `authorization_url`).
    pub state: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestResult {
    Success,
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestResponse {
    pub test_result: TestResult,
    pub message: String,
    pub tested_at: DateTime<Utc>,
}

#[utoipa::path(
    post, path = "/api/oauth/connections/{name}/authorize", tag = "connections", operation_id = "authorize_connection",
    params(("name" = String, Path, description = "Connection name"), OrgHeader),
    request_body(content = Option<AuthorizeRequest>, description = "Optional"),
    responses(
        (status = 200, body = AuthorizeResponse),
        (status = 400, description = "Not an authorization_code connection", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[post("/connections/{name}/authorize")]
pub async fn authorize(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    name: web::Path<String>,
    JsonBody(body): JsonBody<AuthorizeRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let name = parse_name(&name)?;
    let started = authorization::start(&broker, &org, &name, body.return_to, &caller.name).await?;
    Ok(HttpResponse::Ok().json(AuthorizeResponse {
        authorization_url: started.authorization_url,
        state: started.state.expose_secret().to_owned(),
        expires_at: started.expires_at,
    }))
}

#[utoipa::path(
    post, path = "/api/oauth/connections/{name}/test", tag = "connections", operation_id = "test_connection",
    params(("name" = String, Path, description = "Connection name"), OrgHeader),
    responses(
        (status = 200, body = TestResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[post("/connections/{name}/test")]
pub async fn test(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let name = parse_name(&name)?;
    let outcome = testing::test_connection(&broker, &org, &name, &caller.name).await?;
    Ok(HttpResponse::Ok().json(TestResponse {
        test_result: if outcome.success {
            TestResult::Success
        } else {
            TestResult::Failed
        },
        message: outcome.message,
        tested_at: outcome.tested_at,
    }))
}

#[utoipa::path(
    post, path = "/api/oauth/connections/{name}/refresh", tag = "connections", operation_id = "refresh_connection",
    params(("name" = String, Path, description = "Connection name"), OrgHeader),
    responses(
        (status = 200, body = ConnectionView, description = "Refreshed"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The connection has no grant to refresh yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "`provider_error`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[post("/connections/{name}/refresh")]
pub async fn refresh(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let name = parse_name(&name)?;
    let conn = refreshes::force_refresh(&broker, &org, &name, &caller.name).await?;
    Ok(HttpResponse::Ok().json(ConnectionView::new(&conn, &broker)))
}

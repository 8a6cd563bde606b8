//! The OpenAPI 3.1 document, generated from the handlers' annotations. The committed
//! copy is `openapi/openapi.json`; a test fails when it is stale
//! (`cargo run -- openapi > openapi/openapi.json` regenerates it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::routes::{
    callback, connections, credentials, flows, keys, obo, ops, refresh, workflows,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "oauth-broker",
        description = "Holds OAuth 2.0 connections for many organizations and hands fresh access tokens to workflow code.",
        license(name = "Apache-2.0")
    ),
    paths(
        connections::list,
        connections::create,
        connections::get,
        connections::patch,
        connections::delete,
        connections::events,
        flows::authorize,
        flows::test,
        flows::refresh,
        callback::callback_get,
        callback::callback_post,
        credentials::get_credentials,
        obo::exchange,
        obo::create_session,
        obo::list_sessions,
        obo::session_credentials,
        obo::revoke_session,
        workflows::register,
        workflows::list,
        workflows::remove,
        workflows::disabled,
        workflows::enable,
        refresh::status,
        refresh::run,
        keys::create,
        keys::list,
        keys::revoke,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(crate::http::error::Problem, crate::http::error::ErrorCode)),
    modifiers(&BearerKey, &CommonResponses, &ResponseDescriptions),
    tags(
        (name = "connections", description = "OAuth connections of an organization (admin)"),
        (name = "callback", description = "Where providers return the browser (no auth: the state is the credential)"),
        (name = "credentials", description = "Tokens for workflow code (workflow or admin keys)"),
        (name = "on-behalf-of", description = "Token exchange on behalf of a user, and long-running sessions"),
        (name = "workflows", description = "Workflow dependencies on connections"),
        (name = "refresher", description = "The background refresher (admin of every org)"),
        (name = "keys", description = "API keys (admin of every org)"),
        (name = "operations", description = "Health, readiness and metrics (no auth)"),
    )
)]
pub struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("oauth-broker API key")
                    .build(),
            ),
        );
    }
}

/// Answers any API route can give, whatever its handler: 429 (the per-key rate limit,
/// when it is on), 500, and 503 (the database unreachable, or, for writes, its storage
/// full). Added where a handler did not declare its own.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            ContentBuilder, Ref, ResponseBuilder, header::HeaderBuilder, schema::Type,
        };
        let problem = |description: &str, retry_after: bool| {
            let mut response = ResponseBuilder::new().description(description).content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            );
            if retry_after {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(
                            utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer),
                        ))
                        .description(Some("Seconds to wait before retrying"))
                        .build(),
                );
            }
            response.build()
        };
        let common = [
            (
                "429",
                problem(
                    "`rate_limited`: this API key's requests per minute are used up",
                    true,
                ),
            ),
            (
                "500",
                problem("`internal`: a fault inside the service (logged)", false),
            ),
            (
                "503",
                problem(
                    "`unavailable`: the database cannot be reached, or its storage is full (writes); nothing was changed",
                    true,
                ),
            ),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/oauth/") || path.starts_with("/api/oauth/callback/") {
                continue;
            }
            for op in operations(item) {
                for (status, response) in &common {
                    op.responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| response.clone().into());
                }
            }
        }
    }
}

/// The operations of a path, whatever their method.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}

/// OpenAPI requires a description on every response; utoipa leaves it empty unless
/// one is written, so each empty one gets its status's reason phrase.
struct ResponseDescriptions;

impl Modify for ResponseDescriptions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
                for (status, response) in op.responses.responses.iter_mut() {
                    if let RefOr::T(response) = response
                        && response.description.is_empty()
                    {
                        response.description = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| actix_web::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("Response")
                            .to_owned();
                    }
                }
            }
        }
    }
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    json.push('\n');
    json
}

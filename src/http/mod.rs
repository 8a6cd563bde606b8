//! Everything HTTP: the routes (one module per resource), the extractors (API-key
//! authentication, the org header, JSON bodies and query strings), `ApiError` and its
//! problem+json rendering, the metrics middleware, the OpenAPI document, and the 405
//! table. Handlers parse input, check the caller's rights, call a service function and
//! shape the answer; they hold no SQL and no crypto.

pub mod auth;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod routes;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use self::auth::Authenticator;
use self::error::ApiError;
use self::metrics::Metrics;
use self::openapi::ApiDoc;
use self::routes::{callback, connections, credentials, flows, keys, obo, ops, refresh, workflows};

/// The HTTP server of `broker` on `listener` (`workers` threads, else one per core):
/// every route, the headers every answer carries, request metrics and logs. Stops
/// gracefully on SIGTERM/SIGINT, letting requests in flight finish (30 s at most).
pub fn server(
    broker: Arc<crate::service::Broker>,
    listener: TcpListener,
    workers: Option<usize>,
) -> std::io::Result<Server> {
    let broker = web::Data::from(broker);
    let auth = web::Data::new(Authenticator::new(broker.settings.rate_limit_per_minute));
    let metrics = web::Data::new(Metrics::default());
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(broker.clone())
            .app_data(auth.clone())
            .app_data(metrics.clone())
            .configure(configure)
            .default_service(web::to(not_found))
            .wrap(
                DefaultHeaders::new()
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("Cache-Control", "no-store")),
            )
            .wrap(from_fn(docs_policy))
            .wrap(from_fn(metrics::track))
    })
    .shutdown_timeout(30);
    if let Some(workers) = workers {
        server = server.workers(workers.max(1));
    }
    Ok(server.listen(listener)?.run())
}

/// Registers every route of the service, the OpenAPI document and its UI at `/docs`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    routes(cfg);
    cfg.service(web::redirect("/docs", "/docs/"))
        .service(SwaggerUi::new("/docs/{_:.*}").url("/api-docs/openapi.json", ApiDoc::openapi()));
}

/// The docs UI's Content-Security-Policy: its scripts, styles and the document come
/// from the broker itself (utoipa's vendored Swagger UI has no inline script); nothing
/// else loads, nothing frames it. Swagger UI sets inline styles on its own elements.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn docs_policy(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let docs = req.path() == "/docs" || req.path().starts_with("/docs/");
    let mut response = next.call(req).await?;
    if docs {
        response.headers_mut().insert(
            actix_web::http::header::CONTENT_SECURITY_POLICY,
            actix_web::http::header::HeaderValue::from_static(DOCS_CSP),
        );
    }
    Ok(response)
}

/// What answers a path no route matches.
async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}

fn routes(cfg: &mut web::ServiceConfig) {
    let doc = ApiDoc::openapi();
    let (api, ops_paths): (Vec<_>, Vec<_>) = doc
        .paths
        .paths
        .iter()
        .map(|(path, item)| (path.clone(), documented_methods(item).join(", ")))
        .partition(|(path, _)| path.starts_with(API_PREFIX));
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics);
    not_allowed(cfg, ops_paths, "");
    cfg.service(
        web::scope(API_PREFIX)
            // First: actix tries resources in order, and this is the hot path.
            .service(credentials::get_credentials)
            .service(connections::list)
            .service(connections::create)
            .service(connections::get)
            .service(connections::patch)
            .service(connections::delete)
            .service(connections::events)
            .service(flows::authorize)
            .service(flows::test)
            .service(flows::refresh)
            .service(callback::callback_get)
            .service(callback::callback_post)
            .service(obo::exchange)
            .service(obo::create_session)
            .service(obo::list_sessions)
            .service(obo::session_credentials)
            .service(obo::revoke_session)
            // `disabled` before `{workflow_id}` routes that could match it.
            .service(workflows::disabled)
            .service(workflows::register)
            .service(workflows::list)
            .service(workflows::remove)
            .service(workflows::enable)
            .service(refresh::status)
            .service(refresh::run)
            .service(keys::create)
            .service(keys::list)
            .service(keys::revoke)
            .configure(|scope| not_allowed(scope, api, API_PREFIX)),
    );
}

const API_PREFIX: &str = "/api/oauth";

/// Every documented path answers 405 with `Allow` for methods it does not have. These
/// resources come after the real ones: actix tries resources in order, and a route
/// whose method guard fails falls through to them.
fn not_allowed(cfg: &mut web::ServiceConfig, paths: Vec<(String, String)>, prefix: &str) {
    for (path, allow) in paths {
        let relative = path.strip_prefix(prefix).unwrap_or(&path).to_owned();
        cfg.service(web::resource(relative).to(move || {
            let allow = allow.clone();
            async move { Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed { allow }) }
        }));
    }
}

fn documented_methods(item: &utoipa::openapi::PathItem) -> Vec<&'static str> {
    [
        (item.get.is_some(), "GET"),
        (item.post.is_some(), "POST"),
        (item.put.is_some(), "PUT"),
        (item.patch.is_some(), "PATCH"),
        (item.delete.is_some(), "DELETE"),
    ]
    .into_iter()
    .filter_map(|(has, m)| has.then_some(m))
    .collect()
}

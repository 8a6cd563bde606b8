//! HTTP handlers, one module per resource. Handlers parse input, check the caller's
//! rights, call the service layer and shape the answer; they hold no SQL and no crypto.

pub mod callback;
pub mod connections;
pub mod credentials;
pub mod extract;
pub mod flows;
pub mod keys;
pub mod obo;
pub mod ops;
pub mod refresh;
pub mod workflows;

use actix_web::web;

use crate::error::ApiError;

/// Registers every route of the service.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let doc = <crate::openapi::ApiDoc as utoipa::OpenApi>::openapi();
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

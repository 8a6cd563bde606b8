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

/// Registers every route of the service.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(
            web::scope("/api/oauth")
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
                .service(credentials::get_credentials)
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
                .service(keys::revoke),
        );
}

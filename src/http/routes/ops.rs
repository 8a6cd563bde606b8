//! Operations routes, without authentication: liveness, readiness, metrics.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::{ApiError, Problem};
use crate::http::metrics::Metrics;
use crate::service::Broker;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health, description = "The process is up")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, body = Health, description = "The database is reachable and migrated"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/readyz")]
pub async fn readyz(broker: web::Data<Broker>) -> Result<HttpResponse, ApiError> {
    match broker.store.ping().await {
        Ok(()) => Ok(HttpResponse::Ok().json(Health {
            status: "ready".into(),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::DatabaseUnavailable)
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String, description = "Prometheus text format")))]
#[get("/metrics")]
pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}

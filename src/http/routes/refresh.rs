//! `/api/oauth/refresh`: the refresher's state, and a run on demand (admin of every org).

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Caller;
use crate::domain::{RefreshRun, RunError};
use crate::http::error::{ApiError, Problem};
use crate::service::Broker;
use crate::service::refresher;

#[derive(Debug, Serialize, ToSchema)]
pub struct Run {
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `schedule`, `manual` or `startup`.
    pub trigger: String,
    pub considered: i64,
    pub refreshed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub errors: Vec<RunError>,
}

impl From<RefreshRun> for Run {
    fn from(r: RefreshRun) -> Self {
        Self {
            started_at: r.started_at,
            finished_at: r.finished_at,
            trigger: r.trigger,
            considered: r.considered,
            refreshed: r.refreshed,
            failed: r.failed,
            skipped: r.skipped,
            errors: r.errors,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshStatus {
    pub last_run: Option<Run>,
    /// A run in progress on this or another replica.
    pub running: Option<Run>,
    pub next_run_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunStarted {
    pub status: String,
}

#[utoipa::path(
    get, path = "/api/oauth/refresh/status", tag = "refresher", operation_id = "refresh_status",
    responses(
        (status = 200, body = RefreshStatus),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[get("/refresh/status")]
pub async fn status(broker: web::Data<Broker>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require_global_admin()?;
    let status = refresher::status(&broker).await?;
    Ok(HttpResponse::Ok().json(RefreshStatus {
        last_run: status.last_run.map(Run::from),
        running: status.running.map(Run::from),
        next_run_at: status.next_run_at,
    }))
}

#[utoipa::path(
    post, path = "/api/oauth/refresh/run", tag = "refresher", operation_id = "start_refresh_run",
    responses(
        (status = 202, body = RunStarted, description = "A run started"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`busy`: a run is in progress", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[post("/refresh/run")]
pub async fn run(broker: web::Data<Broker>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require_global_admin()?;
    let Some(guard) = refresher::try_begin(&broker) else {
        return Err(ApiError::Busy {
            status: actix_web::http::StatusCode::CONFLICT,
            detail: "a refresher run is in progress".into(),
        });
    };
    tokio::spawn(refresher::run_with(guard, "manual"));
    Ok(HttpResponse::Accepted().json(RunStarted {
        status: "started".into(),
    }))
}

//! `GET /api/oauth/credentials/{name}`: a valid access token for workflow code (role
//! workflow or admin). The caller's org first, then GLOBAL; refreshed on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, Duration, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Org};
use crate::domain::{Connection, NewEvent};
use crate::domain::{ConnectionStatus, EventKind, WorkflowId};
use crate::error::{ApiError, FieldErrors, Problem};
use crate::routes::connections::{OrgHeader, parse_name};
use crate::routes::extract::QueryParams;
use crate::service::credentials::{Unavailable, ensure_fresh};
use crate::service::grants::has_fresh_token;
use crate::state::AppState;

pub const WORKFLOW_HEADER: &str = "x-workflow-id";
/// `credentials_read` events are recorded at most this often per connection and workflow,
/// so a busy workflow does not turn every read into a write.
const READ_EVENT_INTERVAL: StdDuration = StdDuration::from_secs(60);

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
    pub fn new(conn: &Connection, access_token: String) -> Self {
        let token_type = conn.token_type.clone().unwrap_or_else(|| "Bearer".into());
        Self {
            connection_name: conn.name.to_string(),
            org_id: conn.org_id.to_string(),
            authorization_header: format!("{token_type} {access_token}"),
            access_token,
            token_type,
            expires_at: conn.token_expires_at,
            scopes: conn
                .token_scopes
                .clone()
                .unwrap_or_else(|| conn.config.scopes.clone()),
        }
    }
}

/// Reads recorded at once, at most: the rest wait their turn off the request path, so
/// that a burst of first reads (one write each) cannot take every pooled connection from
/// the reads themselves (measured: p99 1.2 s at 16 connections before this bound).
const READ_RECORDS_AT_ONCE: usize = 2;

/// Last recorded read (dependency touch and `credentials_read` event) per (connection,
/// workflow), and the writes recording them.
pub struct ReadEvents {
    seen: Mutex<HashMap<(String, String), Instant>>,
    writers: Arc<tokio::sync::Semaphore>,
}

impl Default for ReadEvents {
    fn default() -> Self {
        Self {
            seen: Mutex::default(),
            writers: Arc::new(tokio::sync::Semaphore::new(READ_RECORDS_AT_ONCE)),
        }
    }
}

impl ReadEvents {
    fn due(&self, connection_id: &str, workflow: &str) -> bool {
        let mut seen = self.seen.lock().expect("read events lock");
        if seen.len() > 50_000 {
            seen.retain(|_, at| at.elapsed() < READ_EVENT_INTERVAL);
        }
        let key = (connection_id.to_owned(), workflow.to_owned());
        match seen.get(&key) {
            Some(at) if at.elapsed() < READ_EVENT_INTERVAL => false,
            _ => {
                seen.insert(key, Instant::now());
                true
            }
        }
    }
}

pub fn unavailable_error(e: Unavailable) -> ApiError {
    match e {
        Unavailable::Status { status, message } => ApiError::ConnectionUnavailable {
            status: status.to_string(),
            message,
        },
        Unavailable::Busy => ApiError::Busy {
            status: actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            detail: "another replica is refreshing this connection and did not finish in time; retry shortly".into(),
        },
        Unavailable::Internal(_) => ApiError::internal(anyhow::anyhow!("refresh failed inside the service")),
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
    state: web::Data<AppState>,
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
        return Err(FieldErrors::single(
            "min_valid_for",
            "must be between 0 and 86400",
        ));
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
    if let Some(w) = &workflow
        && state.store.is_workflow_disabled(w.as_str(), &org).await?
    {
        return Err(ApiError::Forbidden(format!(
            "workflow `{w}` is disabled (a connection it depends on was deleted); enable it with POST /api/oauth/workflows/{w}/enable"
        )));
    }
    let min_valid = Duration::seconds(min_valid_for);
    let now = state.clock.now();
    // A remembered connection only when it can be served as is; anything that may need
    // a refresh or a status answer is read from the database.
    let servable = move |conn: &Connection| {
        conn.status == ConnectionStatus::Completed && has_fresh_token(conn, now, min_valid)
    };
    let conn = state
        .store
        .find_for_credentials_cached(&org, &name, &servable)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("no connection `{name}` in org `{org}` or GLOBAL"))
        })?;
    let conn = ensure_fresh(state.clone().into_inner(), conn, min_valid, "credentials")
        .await
        .map_err(unavailable_error)?;
    let token = conn
        .open_access_token(state.store.keyring())?
        .ok_or_else(|| ApiError::ConnectionUnavailable {
            status: conn.status.to_string(),
            message: Some("no access token is stored".into()),
        })?;
    if let Some(w) = workflow {
        record_read(&state, &conn, &org, w, &caller.name);
    }
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(Credentials::new(&conn, token.expose_secret().to_owned())))
}

/// Records the read on the workflow's dependency and (throttled) as an event, off the
/// request's path.
fn record_read(
    state: &web::Data<AppState>,
    conn: &Connection,
    org: &crate::domain::OrgId,
    workflow: WorkflowId,
    actor: &str,
) {
    // One write per connection and workflow a minute: a busy workflow must not turn
    // every read into a write on the database's single writer (SQLite).
    if !state.read_events.due(&conn.id, workflow.as_str()) {
        return;
    }
    let event = NewEvent::for_connection(
        conn,
        EventKind::CredentialsRead,
        actor,
        state.clock.now(),
        Some(format!("workflow {workflow}")),
    );
    let state = state.clone();
    let org = org.clone();
    let name = conn.name.clone();
    let writers = state.read_events.writers.clone();
    tokio::spawn(async move {
        let Ok(_turn) = writers.acquire_owned().await else {
            return;
        };
        let now = state.clock.now();
        if let Err(e) = state
            .store
            .touch_dependency(workflow.as_str(), &org, &name, now)
            .await
        {
            tracing::warn!(error = %e, "could not record a credentials read");
        }
        if let Err(e) = state.store.insert_events(vec![event]).await {
            tracing::warn!(error = %e, "could not record a credentials_read event");
        }
    });
}

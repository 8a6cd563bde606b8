//! `ApiError`: every failure a handler can answer with, rendered as RFC 9457
//! `application/problem+json` with the contract's `code`.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{Caller, FieldErrors, Forbidden};
use crate::oauth::OboError;
use crate::service::{Error as ServiceError, NoToken, OboFailure};

/// The contract's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    DependentsExist,
    ValidationFailed,
    BadRequest,
    PayloadTooLarge,
    RateLimited,
    ConnectionUnavailable,
    ProviderError,
    Busy,
    Internal,
    AssertionInvalid,
    OboRejected,
    ClaimsChallenge,
    OboMisconfigured,
    Gone,
    /// The database cannot be reached; retry later.
    Unavailable,
    MethodNotAllowed,
}

impl ErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::DependentsExist => "dependents_exist",
            Self::ValidationFailed => "validation_failed",
            Self::BadRequest => "bad_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::ConnectionUnavailable => "connection_unavailable",
            Self::ProviderError => "provider_error",
            Self::Busy => "busy",
            Self::Internal => "internal",
            Self::AssertionInvalid => "assertion_invalid",
            Self::OboRejected => "obo_rejected",
            Self::ClaimsChallenge => "claims_challenge",
            Self::OboMisconfigured => "obo_misconfigured",
            Self::Gone => "gone",
            Self::Unavailable => "unavailable",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:oauth-broker:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: ErrorCode,
    /// Validation failures by field name (`validation_failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
    /// Workflows that depend on the connection (`dependents_exist` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependent_workflows: Option<Vec<String>>,
    /// The connection's status (`connection_unavailable` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_status: Option<String>,
    /// Why the connection cannot give a token (`connection_unavailable` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// The claims the provider asks for (`claims_challenge` only): send them back as
    /// `claims` once the user satisfied them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<String>,
    /// The provider's own error code (`obo_misconfigured`), e.g. `AADSTS50013`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// Quote this when asking about the failure: it is on the service's log line too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl From<validator::ValidationErrors> for FieldErrors {
    fn from(errors: validator::ValidationErrors) -> Self {
        let mut out = FieldErrors::default();
        collect_validator_errors(&mut out, "", &errors);
        out
    }
}

fn collect_validator_errors(
    out: &mut FieldErrors,
    prefix: &str,
    errors: &validator::ValidationErrors,
) {
    use validator::ValidationErrorsKind;
    for (field, kind) in errors.errors() {
        let name = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for e in list {
                    let message = e
                        .message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| describe(e));
                    out.add(name.clone(), message);
                }
            }
            ValidationErrorsKind::Struct(inner) => collect_validator_errors(out, &name, inner),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    collect_validator_errors(out, &format!("{name}[{index}]"), inner);
                }
            }
        }
    }
}

fn describe(e: &validator::ValidationError) -> String {
    match e.code.as_ref() {
        "length" => match (e.params.get("min"), e.params.get("max")) {
            (Some(min), Some(max)) => format!("length must be between {min} and {max}"),
            (None, Some(max)) => format!("length must be at most {max}"),
            (Some(min), None) => format!("length must be at least {min}"),
            _ => "length is out of range".into(),
        },
        "range" => "value is out of range".into(),
        other => format!("is invalid ({other})"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("dependents exist: {workflows:?}")]
    DependentsExist { workflows: Vec<String> },
    #[error("validation failed: {0:?}")]
    Validation(FieldErrors),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("rate limited, retry after {retry_after_seconds}s")]
    RateLimited { retry_after_seconds: u64 },
    #[error("connection unavailable ({status})")]
    ConnectionUnavailable {
        status: String,
        message: Option<String>,
    },
    #[error("provider error: {0}")]
    Provider(String),
    #[error("busy (HTTP {}): {detail}", status.as_u16())]
    Busy { status: StatusCode, detail: String },
    /// On-behalf-of failures (401 or 502, see `code`).
    #[error("on-behalf-of: {detail}")]
    Obo {
        code: ErrorCode,
        detail: String,
        claims: Option<String>,
        provider_code: Option<String>,
        correlation_id: String,
    },
    /// The database cannot be reached.
    #[error("the database is unavailable")]
    DatabaseUnavailable,
    /// The database's storage is full: writes are refused until an operator makes room
    /// (reads still work). Code `unavailable`, with a detail that says why.
    #[error("the database's storage is full")]
    StorageFull,
    /// The path exists, the method does not.
    #[error("method not allowed (allowed: {allow})")]
    MethodNotAllowed { allow: String },
    /// A session that expired or was revoked.
    #[error("gone: {0}")]
    Gone(String),
    /// Anything unexpected: logged whole, answered generically.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::DependentsExist { .. } => ErrorCode::DependentsExist,
            Self::Validation(_) => ErrorCode::ValidationFailed,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::ConnectionUnavailable { .. } => ErrorCode::ConnectionUnavailable,
            Self::Provider(_) => ErrorCode::ProviderError,
            Self::Busy { .. } => ErrorCode::Busy,
            Self::Obo { code, .. } => *code,
            Self::Gone(_) => ErrorCode::Gone,
            Self::DatabaseUnavailable | Self::StorageFull => ErrorCode::Unavailable,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    /// This answer as `caller` may see it: a workflow key is told what happened in the
    /// broker's words, never the provider's (which an admin sees, in the connection's
    /// `status_message` and events, and the log under the same correlation id).
    pub fn for_caller(self, caller: &Caller) -> Self {
        if caller.is_admin() {
            return self;
        }
        match self {
            // The assertion's own faults are the broker's findings: they stay.
            Self::Obo {
                code: ErrorCode::AssertionInvalid,
                ..
            } => self,
            Self::ConnectionUnavailable { status, .. } => {
                let message = match status.as_str() {
                    "not_connected" => {
                        "the connection is not connected: an admin must authorize it"
                    }
                    "waiting_callback" => "the connection waits for its authorization callback",
                    "testing" => "the connection is being tested",
                    "failed" => {
                        "the connection failed and needs an admin, who sees why in its status"
                    }
                    _ => "the provider is failing; retry shortly",
                };
                Self::ConnectionUnavailable {
                    status,
                    message: Some(message.into()),
                }
            }
            Self::Obo {
                code,
                claims,
                provider_code,
                correlation_id,
                ..
            } => {
                let detail = match code {
                    ErrorCode::OboRejected => {
                        "the user's session is no longer valid; sign in again"
                    }
                    ErrorCode::ClaimsChallenge => {
                        "the provider requires additional claims; repeat the request with `claims` after the user satisfies them"
                    }
                    ErrorCode::OboMisconfigured => {
                        "the connection's client, audience or scopes are misconfigured; an admin sees why in the log"
                    }
                    ErrorCode::ProviderError => {
                        "the provider could not be reached or answered badly"
                    }
                    _ => "the on-behalf-of exchange failed",
                };
                let detail = format!("{detail} (correlation id {correlation_id})");
                Self::Obo {
                    code,
                    detail,
                    claims,
                    provider_code,
                    correlation_id,
                }
            }
            other => other,
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status_code();
        let code = self.code();
        let mut problem = Problem {
            type_uri: format!("urn:oauth-broker:problem:{}", code.as_str()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: String::new(),
            code,
            errors: None,
            dependent_workflows: None,
            connection_status: None,
            status_message: None,
            claims: None,
            provider_code: None,
            correlation_id: None,
        };
        problem.detail = match self {
            Self::Unauthorized(d)
            | Self::Forbidden(d)
            | Self::NotFound(d)
            | Self::Conflict(d)
            | Self::BadRequest(d) => d.clone(),
            Self::Provider(d) => d.clone(),
            Self::Busy { detail, .. } => detail.clone(),
            Self::Gone(d) => d.clone(),
            Self::DatabaseUnavailable => "the database is unavailable; retry shortly".into(),
            Self::StorageFull => "the database's storage is full, so nothing was changed; reads \
                                  still work. Retry once an operator has freed space"
                .into(),
            Self::MethodNotAllowed { allow } => format!("this path allows {allow}"),
            Self::Obo {
                detail,
                claims,
                provider_code,
                correlation_id,
                ..
            } => {
                problem.claims = claims.clone();
                problem.provider_code = provider_code.clone();
                problem.correlation_id = Some(correlation_id.clone());
                detail.clone()
            }
            Self::DependentsExist { workflows } => {
                problem.dependent_workflows = Some(workflows.clone());
                format!(
                    "{} workflow(s) depend on this connection; delete with confirm_disable_workflows=true to disable them",
                    workflows.len()
                )
            }
            Self::Validation(errors) => {
                let errors = errors.clone().into_map();
                let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
                let detail = format!("invalid field(s): {}", fields.join(", "));
                problem.errors = Some(errors);
                detail
            }
            Self::PayloadTooLarge => format!(
                "request body exceeds {} bytes",
                crate::config::BODY_LIMIT_BYTES
            ),
            Self::RateLimited {
                retry_after_seconds,
            } => format!("too many requests for this API key; retry after {retry_after_seconds} s"),
            Self::ConnectionUnavailable { status, message } => {
                problem.connection_status = Some(status.clone());
                problem.status_message = message.clone();
                format!("the connection cannot give a token (status {status})")
            }
            // 5xx bodies never carry internals; the log has the cause chain.
            Self::Internal(_) => "an internal error occurred; see the service log".into(),
        };
        problem
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::DependentsExist { .. } => StatusCode::CONFLICT,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ConnectionUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Provider(_) => StatusCode::BAD_GATEWAY,
            Self::Busy { status, .. } => *status,
            Self::Gone(_) => StatusCode::GONE,
            Self::DatabaseUnavailable | Self::StorageFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Obo { code, .. } => match code {
                ErrorCode::OboMisconfigured | ErrorCode::ProviderError => StatusCode::BAD_GATEWAY,
                _ => StatusCode::UNAUTHORIZED,
            },
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(e) = self {
            tracing::error!(error = format!("{e:#}"), "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        response
            .content_type("application/problem+json")
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Self::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, allow.as_str()));
        }
        if matches!(self, Self::DatabaseUnavailable) {
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        if matches!(self, Self::StorageFull) {
            // Space rarely comes back within seconds: a slower retry.
            response.insert_header((header::RETRY_AFTER, "30"));
        }
        if matches!(self, Self::Unauthorized(_)) {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Self::Obo {
            claims: Some(claims),
            ..
        } = self
        {
            // As Entra does: the claims JSON, base64-encoded, in a Bearer challenge.
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(claims.as_bytes());
            response.insert_header((
                header::WWW_AUTHENTICATE,
                format!("Bearer error=\"insufficient_claims\", claims=\"{encoded}\""),
            ));
        }
        if let Self::RateLimited {
            retry_after_seconds,
        } = self
        {
            response.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
        }
        response.json(self.problem())
    }
}

impl From<crate::domain::SealedError> for ApiError {
    fn from(e: crate::domain::SealedError) -> Self {
        crate::store::StoreError::from(e).into()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::Stale => ApiError::Conflict(
                "the resource was changed by another request; read it again and retry".into(),
            ),
            // Before `is_unavailable`, which counts PostgreSQL's disk_full too: the
            // operator needs to know it is space, not the network.
            other if other.is_storage_full() => {
                let cause = anyhow::Error::from(other);
                tracing::error!(
                    error = format!("{cause:#}"),
                    "the database's storage is full: writes fail until space is freed"
                );
                ApiError::StorageFull
            }
            other if other.is_unavailable() => {
                tracing::error!(error = %other, "database unavailable");
                ApiError::DatabaseUnavailable
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        ApiError::Validation(errors)
    }
}

impl From<Forbidden> for ApiError {
    fn from(e: Forbidden) -> Self {
        ApiError::Forbidden(e.0)
    }
}

impl From<NoToken> for ApiError {
    fn from(e: NoToken) -> Self {
        match e {
            NoToken::Status { status, message } => ApiError::ConnectionUnavailable {
                status: status.to_string(),
                message,
            },
            NoToken::ProviderFailed { status, message } => ApiError::ConnectionUnavailable {
                status: status.to_string(),
                message: Some(message),
            },
            NoToken::Busy => ApiError::Busy {
                status: StatusCode::SERVICE_UNAVAILABLE,
                detail: "another replica is refreshing this connection and did not finish in time; retry shortly".into(),
            },
            NoToken::Internal(_) => {
                ApiError::internal(anyhow::anyhow!("refresh failed inside the service"))
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(d) => ApiError::NotFound(d),
            ServiceError::Invalid(errors) => ApiError::Validation(errors),
            ServiceError::NotApplicable(d) => ApiError::BadRequest(d),
            ServiceError::Conflict(d) => ApiError::Conflict(d),
            ServiceError::DependentsExist(workflows) => ApiError::DependentsExist { workflows },
            ServiceError::Forbidden(d) => ApiError::Forbidden(d),
            ServiceError::Gone(d) => ApiError::Gone(d),
            ServiceError::NoToken(e) => e.into(),
            ServiceError::Provider(d) => ApiError::Provider(d),
            ServiceError::Obo(failure) => obo_problem(failure),
            ServiceError::Store(e) => e.into(),
            ServiceError::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// An on-behalf-of failure as the contract answers it, with a correlation id that is on
/// the log line too.
fn obo_problem(failure: OboFailure) -> ApiError {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let (code, detail, claims, provider_code) = match failure {
        OboFailure::AssertionInvalid { connection, reason } => {
            tracing::info!(%correlation_id, connection = %connection, reason = %reason, "assertion refused");
            (ErrorCode::AssertionInvalid, reason, None, None)
        }
        OboFailure::Exchange { connection, error } => {
            tracing::warn!(%correlation_id, connection = %connection, error = %error, "on-behalf-of exchange failed");
            match error {
                OboError::Rejected(detail) => (
                    ErrorCode::OboRejected,
                    format!("the user's session is no longer valid; sign in again ({detail})"),
                    None,
                    None,
                ),
                OboError::ClaimsChallenge {
                    claims,
                    description,
                } => (
                    ErrorCode::ClaimsChallenge,
                    format!(
                        "the provider requires additional claims; repeat the request with `claims` after the user satisfies them ({description})"
                    ),
                    Some(claims),
                    None,
                ),
                OboError::Misconfigured {
                    provider_code,
                    description,
                } => (
                    ErrorCode::OboMisconfigured,
                    format!(
                        "the connection's client, audience or scopes are misconfigured: {description}"
                    ),
                    None,
                    Some(provider_code),
                ),
                OboError::Provider(detail) => (
                    ErrorCode::ProviderError,
                    format!("the provider could not be reached or answered badly: {detail}"),
                    None,
                    None,
                ),
            }
        }
    };
    ApiError::Obo {
        code,
        detail,
        claims,
        provider_code,
        correlation_id,
    }
}

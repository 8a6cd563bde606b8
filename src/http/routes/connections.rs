//! `/api/oauth/connections`: create, list, read, edit and delete connections (role admin).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::{Validate, ValidationError};

use crate::domain::Caller;
use crate::domain::ConnectionFilter;
use crate::domain::FieldErrors;
use crate::domain::{AssertionRules, Connection, ConnectionConfig, Event};
use crate::domain::{
    ConnectionName, ConnectionStatus, EventKind, FlowType, OboGrant, OrgId, ProviderUrl, Scopes,
    TokenAuthMethod,
};
use crate::http::auth::Org;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{JsonBody, OrgHeader, QueryParams, parse_name};
use crate::http::pagination::{DEFAULT_HISTORY_LIMIT, DEFAULT_LIMIT, PageInfo, PageParams};
use crate::service::Broker;
use crate::service::connections::{self as service, CreateInput, PatchInput};

const MAX_SECRET: usize = 8192;
const MAX_EXTRA_PARAMS: usize = 32;

/// How a claimed assertion is checked locally before an on-behalf-of exchange.
#[derive(Debug, Clone, Serialize, Deserialize, Validate, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AssertionValidation {
    /// Expected `iss`. Validation: 1 to 2048 characters.
    #[validate(length(min = 1, max = 2048))]
    #[schema(min_length = 1, max_length = 2048)]
    pub issuer: String,
    /// Accepted `aud` values. Validation: 1 to 20 entries.
    #[validate(length(min = 1, max = 20))]
    #[schema(min_items = 1, max_items = 20)]
    pub audiences: Vec<String>,
    /// Expected `tid` (Microsoft Entra tenant). Validation: at most 128 characters.
    #[validate(length(max = 128))]
    #[schema(max_length = 128)]
    pub tenant_id: Option<String>,
    /// Where the signing keys are published. Validation: https, or http on loopback.
    #[validate(custom(function = "valid_url"))]
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = r"^(https://|http://(localhost|127\.[0-9.]+|\[::1\])(:[0-9]+)?/?)"
    )]
    pub jwks_url: String,
}

/// A new connection.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnectionRequest {
    /// Validation: `^[A-Za-z0-9_-]{1,100}$`, unique in the org.
    #[validate(custom(function = "valid_name"))]
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,100}$", min_length = 1, max_length = 100)]
    pub connection_name: String,
    pub oauth_flow_type: FlowType,
    /// Validation: 1 to 512 characters.
    #[validate(length(min = 1, max = 512))]
    #[schema(min_length = 1, max_length = 512)]
    pub client_id: String,
    /// Write-only. Optional only for authorization_code public clients (PKCE).
    /// Validation: 1 to 8192 characters.
    #[schema(value_type = Option<String>, format = Password, min_length = 1, max_length = 8192)]
    pub client_secret: Option<SecretString>,
    /// Required for authorization_code. Validation: https, or http on loopback.
    #[validate(custom(function = "valid_url"))]
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = r"^(https://|http://(localhost|127\.[0-9.]+|\[::1\])(:[0-9]+)?/?)"
    )]
    pub authorization_url: Option<String>,
    /// Validation: https, or http on loopback.
    #[validate(custom(function = "valid_url"))]
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = r"^(https://|http://(localhost|127\.[0-9.]+|\[::1\])(:[0-9]+)?/?)"
    )]
    pub token_url: String,
    /// Validation: at most 100 RFC 6749 scope tokens.
    #[serde(default)]
    #[validate(custom(function = "valid_scopes"))]
    pub scopes: Vec<String>,
    /// Write-only. Required for refresh_token (an imported grant).
    #[schema(value_type = Option<String>, format = Password, min_length = 1, max_length = 8192)]
    pub refresh_token: Option<SecretString>,
    /// Default `client_secret_basic`.
    pub token_auth_method: Option<TokenAuthMethod>,
    /// Added to the authorization URL. Validation: at most 32 entries.
    #[serde(default)]
    #[validate(custom(function = "valid_params"))]
    pub extra_authorization_params: BTreeMap<String, String>,
    /// Added to token requests. Validation: at most 32 entries.
    #[serde(default)]
    #[validate(custom(function = "valid_params"))]
    pub extra_token_params: BTreeMap<String, String>,
    /// GET with the token; 2xx means the connection works.
    #[validate(custom(function = "valid_url"))]
    pub test_url: Option<String>,
    /// Required for on_behalf_of.
    pub obo_grant: Option<OboGrant>,
    #[validate(nested)]
    pub assertion_validation: Option<AssertionValidation>,
}

/// An edit; every field is optional and absent fields are left as they are (`null` is
/// refused, except where it removes a value). Changing `client_id`, `client_secret`, a
/// URL, `scopes` or the flow discards stored tokens and resets the status to
/// `not_connected`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchConnectionRequest {
    /// Connections cannot be renamed; if given it must equal the current name.
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub connection_name: Option<String>,
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub oauth_flow_type: Option<FlowType>,
    /// Validation: 1 to 512 characters.
    #[validate(length(min = 1, max = 512))]
    #[schema(nullable = false, min_length = 1, max_length = 512)]
    #[serde(default, deserialize_with = "not_null")]
    pub client_id: Option<String>,
    /// Write-only; `null` removes it (a public client).
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(default, deserialize_with = "double_option")]
    pub client_secret: Option<Option<SecretString>>,
    #[validate(custom(function = "valid_url"))]
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub authorization_url: Option<String>,
    #[validate(custom(function = "valid_url"))]
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub token_url: Option<String>,
    #[validate(custom(function = "valid_scopes"))]
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub scopes: Option<Vec<String>>,
    /// Write-only: imports a new grant for the refresh_token flow.
    #[schema(nullable = false, value_type = Option<String>, format = Password, min_length = 1, max_length = 8192)]
    #[serde(default, deserialize_with = "not_null")]
    pub refresh_token: Option<SecretString>,
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub token_auth_method: Option<TokenAuthMethod>,
    #[validate(custom(function = "valid_params"))]
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub extra_authorization_params: Option<BTreeMap<String, String>>,
    #[validate(custom(function = "valid_params"))]
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub extra_token_params: Option<BTreeMap<String, String>>,
    /// `null` removes it.
    #[schema(value_type = Option<String>)]
    #[serde(default, deserialize_with = "double_option")]
    #[validate(custom(function = "valid_url"))]
    pub test_url: Option<Option<String>>,
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub obo_grant: Option<OboGrant>,
    #[validate(nested)]
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "not_null")]
    pub assertion_validation: Option<AssertionValidation>,
}

/// An edit's field that may be left out (kept as it is) but not set to `null`: a
/// `null` would otherwise read as "absent" and silently change nothing.
fn not_null<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de)?
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("may be left out, but not null"))
}

/// Distinguishes an absent field (`None`) from `null` (`Some(None)`).
fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

fn invalid(message: String) -> ValidationError {
    let mut e = ValidationError::new("invalid");
    e.message = Some(message.into());
    e
}

fn valid_name(value: &str) -> Result<(), ValidationError> {
    ConnectionName::parse(value)
        .map(|_| ())
        .map_err(|e| invalid(e.0))
}

fn valid_url(value: &str) -> Result<(), ValidationError> {
    ProviderUrl::parse(value)
        .map(|_| ())
        .map_err(|e| invalid(e.0))
}

fn valid_scopes(value: &[String]) -> Result<(), ValidationError> {
    Scopes::parse(value).map(|_| ()).map_err(|e| invalid(e.0))
}

/// Secrets are checked by hand: `validator` would copy a failing value into its error.
fn check_secret(errors: &mut FieldErrors, field: &str, value: Option<&SecretString>) {
    use secrecy::ExposeSecret;
    if let Some(value) = value {
        let len = value.expose_secret().len();
        if len == 0 || len > MAX_SECRET {
            errors.add(field, format!("must be 1 to {MAX_SECRET} characters"));
        }
    }
}

fn valid_params(value: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if value.len() > MAX_EXTRA_PARAMS {
        return Err(invalid(format!("at most {MAX_EXTRA_PARAMS} parameters")));
    }
    for (k, v) in value {
        let key_ok = !k.is_empty()
            && k.len() <= 100
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !key_ok {
            return Err(invalid(format!(
                "parameter name `{}` must match ^[A-Za-z0-9_.-]{{1,100}}$",
                k.escape_default()
            )));
        }
        if v.len() > 2048 {
            return Err(invalid(format!(
                "value of `{k}` must be at most 2048 characters"
            )));
        }
    }
    Ok(())
}

impl From<AssertionValidation> for AssertionRules {
    fn from(v: AssertionValidation) -> Self {
        Self {
            issuer: v.issuer,
            audiences: v.audiences,
            tenant_id: v.tenant_id,
            jwks_url: v.jwks_url,
        }
    }
}

impl From<AssertionRules> for AssertionValidation {
    fn from(r: AssertionRules) -> Self {
        Self {
            issuer: r.issuer,
            audiences: r.audiences,
            tenant_id: r.tenant_id,
            jwks_url: r.jwks_url,
        }
    }
}

impl CreateConnectionRequest {
    fn into_input(self) -> Result<CreateInput, ApiError> {
        // `validator` already checked every field; the parses below cannot fail, but
        // they are what gives us the domain types.
        let mut errors = FieldErrors::default();
        let name = errors.take(
            "connection_name",
            ConnectionName::parse(&self.connection_name),
        );
        check_secret(&mut errors, "client_secret", self.client_secret.as_ref());
        check_secret(&mut errors, "refresh_token", self.refresh_token.as_ref());
        errors.finish()?;
        let input = CreateInput {
            name: name.expect("checked above"),
            config: ConnectionConfig {
                flow_type: self.oauth_flow_type,
                client_id: self.client_id,
                authorization_url: self.authorization_url,
                token_url: self.token_url,
                scopes: Scopes::parse(&self.scopes)
                    .map_err(|e| FieldErrors::single("scopes", e.0))?
                    .as_slice()
                    .to_vec(),
                token_auth_method: self
                    .token_auth_method
                    .unwrap_or(TokenAuthMethod::ClientSecretBasic),
                extra_authorization_params: self.extra_authorization_params,
                extra_token_params: self.extra_token_params,
                test_url: self.test_url,
                obo_grant: self.obo_grant,
                assertion_validation: self.assertion_validation.map(Into::into),
            },
            client_secret: self.client_secret,
            refresh_token: self.refresh_token,
        };
        Ok(input)
    }
}

/// A connection as shown to admins: never a secret or a token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionView {
    pub connection_name: String,
    pub org_id: String,
    pub oauth_flow_type: FlowType,
    pub client_id: String,
    pub authorization_url: Option<String>,
    pub token_url: String,
    pub scopes: Vec<String>,
    pub token_auth_method: TokenAuthMethod,
    pub extra_authorization_params: BTreeMap<String, String>,
    pub extra_token_params: BTreeMap<String, String>,
    pub test_url: Option<String>,
    pub obo_grant: Option<OboGrant>,
    pub assertion_validation: Option<AssertionValidation>,
    /// Absolute callback URL to register with the provider.
    pub redirect_uri: String,
    pub status: ConnectionStatus,
    pub status_message: Option<String>,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub has_client_secret: bool,
    pub has_refresh_token: bool,
    pub last_refresh_at: Option<DateTime<Utc>>,
    pub last_test_at: Option<DateTime<Utc>>,
    pub refresh_failures: i64,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
}

impl ConnectionView {
    pub fn new(conn: &Connection, broker: &Broker) -> Self {
        Self {
            connection_name: conn.name.to_string(),
            org_id: conn.org_id.to_string(),
            oauth_flow_type: conn.config.flow_type,
            client_id: conn.config.client_id.clone(),
            authorization_url: conn.config.authorization_url.clone(),
            token_url: conn.config.token_url.clone(),
            scopes: conn.config.scopes.clone(),
            token_auth_method: conn.config.token_auth_method,
            extra_authorization_params: conn.config.extra_authorization_params.clone(),
            extra_token_params: conn.config.extra_token_params.clone(),
            test_url: conn.config.test_url.clone(),
            obo_grant: conn.config.obo_grant,
            assertion_validation: conn.config.assertion_validation.clone().map(Into::into),
            redirect_uri: broker.redirect_uri(conn.name.as_str()),
            status: conn.status,
            status_message: conn.status_message.clone(),
            token_expires_at: conn.token_expires_at,
            has_client_secret: conn.has_client_secret(),
            has_refresh_token: conn.has_refresh_token(),
            last_refresh_at: conn.last_refresh_at,
            last_test_at: conn.last_test_at,
            refresh_failures: conn.refresh_failures,
            created_at: conn.created_at,
            created_by: conn.created_by.clone(),
            updated_at: conn.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    pub connections: Vec<ConnectionView>,
    /// Items in this page.
    pub count: usize,
    pub has_more: bool,
    /// Pass as `starting_after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    /// Key name, `refresher` or `callback`.
    pub actor: String,
    pub detail: Option<String>,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        Self {
            at: e.at,
            kind: e.kind,
            actor: e.actor,
            detail: e.detail,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
    /// Items in this page.
    pub count: usize,
    pub has_more: bool,
    /// Pass as `starting_after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Also list GLOBAL connections (only for keys of every org). Default true.
    pub include_global: Option<bool>,
    /// Only connections in this status.
    pub status: Option<ConnectionStatus>,
    /// Only connections whose name starts with this.
    #[param(max_length = 100)]
    pub q: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 1024)]
    pub starting_after: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete even when workflows depend on it, and disable them. Default false.
    pub confirm_disable_workflows: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Items per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 1024)]
    pub starting_after: Option<String>,
}

/// Orgs a listing covers: the caller's, plus GLOBAL for keys of every org.
fn listed_orgs(caller: &Caller, org: &OrgId, include_global: bool) -> Vec<OrgId> {
    let mut orgs = vec![org.clone()];
    if include_global && !org.is_global() && caller.sees_every_org() {
        orgs.push(OrgId::global());
    }
    orgs
}

#[utoipa::path(
    get, path = "/api/oauth/connections", tag = "connections", operation_id = "list_connections",
    params(ListQuery, OrgHeader),
    responses(
        (status = 200, body = ConnectionList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[get("/connections")]
pub async fn list(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let page = PageParams {
        limit: query.limit,
        starting_after: query.starting_after.clone(),
    }
    .request::<(String, String)>(DEFAULT_LIMIT)?;
    let name_prefix = match query.q.as_deref().filter(|q| !q.is_empty()) {
        Some(q) => Some(parse_name(q).map_err(|_| {
            ApiError::from(FieldErrors::single(
                "q",
                "a name prefix: letters, digits, '_' and '-', at most 100",
            ))
        })?),
        None => None,
    };
    let filter = ConnectionFilter {
        orgs: listed_orgs(&caller, &org, query.include_global.unwrap_or(true)),
        status: query.status,
        name_prefix: name_prefix.map(|n| n.as_str().to_owned()),
    };
    let page = service::list(&broker, &filter, &page).await?;
    let info = PageInfo::of(&page, |c| (c.org_id.to_string(), c.name.to_string()));
    Ok(HttpResponse::Ok().json(ConnectionList {
        connections: page
            .items
            .iter()
            .map(|c| ConnectionView::new(c, &broker))
            .collect(),
        count: info.count,
        has_more: info.has_more,
        next_cursor: info.next_cursor,
    }))
}

#[utoipa::path(
    post, path = "/api/oauth/connections", tag = "connections", operation_id = "create_connection",
    params(OrgHeader),
    request_body = CreateConnectionRequest,
    responses(
        (status = 201, body = ConnectionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[post("/connections")]
pub async fn create(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    JsonBody(body): JsonBody<CreateConnectionRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let conn = service::create(&broker, &org, body.into_input()?, &caller.name).await?;
    Ok(HttpResponse::Created().json(ConnectionView::new(&conn, &broker)))
}

#[utoipa::path(
    get, path = "/api/oauth/connections/{name}", tag = "connections", operation_id = "get_connection",
    params(("name" = String, Path, description = "Connection name"), OrgHeader),
    responses(
        (status = 200, body = ConnectionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[get("/connections/{name}")]
pub async fn get(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let name = parse_name(&name)?;
    let conn = service::get(&broker, &org, &name).await?;
    Ok(HttpResponse::Ok().json(ConnectionView::new(&conn, &broker)))
}

#[utoipa::path(
    patch, path = "/api/oauth/connections/{name}", tag = "connections", operation_id = "update_connection",
    params(("name" = String, Path, description = "Connection name"), OrgHeader),
    request_body = PatchConnectionRequest,
    responses(
        (status = 200, body = ConnectionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[patch("/connections/{name}")]
pub async fn patch(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    name: web::Path<String>,
    JsonBody(body): JsonBody<PatchConnectionRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let name = parse_name(&name)?;
    if let Some(new_name) = &body.connection_name
        && new_name != name.as_str()
    {
        return Err(FieldErrors::single(
            "connection_name",
            "connections cannot be renamed; create a new connection instead",
        )
        .into());
    }
    let mut errors = FieldErrors::default();
    check_secret(
        &mut errors,
        "client_secret",
        body.client_secret.as_ref().and_then(Option::as_ref),
    );
    check_secret(&mut errors, "refresh_token", body.refresh_token.as_ref());
    errors.finish()?;
    let input = PatchInput {
        flow_type: body.oauth_flow_type,
        client_id: body.client_id,
        client_secret: body.client_secret,
        authorization_url: body.authorization_url,
        token_url: body.token_url,
        scopes: body
            .scopes
            .map(|s| Scopes::parse(&s).map(|s| s.as_slice().to_vec()))
            .transpose()
            .map_err(|e| FieldErrors::single("scopes", e.0))?,
        refresh_token: body.refresh_token,
        token_auth_method: body.token_auth_method,
        extra_authorization_params: body.extra_authorization_params,
        extra_token_params: body.extra_token_params,
        test_url: body.test_url,
        obo_grant: body.obo_grant,
        assertion_validation: body.assertion_validation.map(Into::into),
    };
    let conn = service::update(&broker, &org, &name, input, &caller.name).await?;
    Ok(HttpResponse::Ok().json(ConnectionView::new(&conn, &broker)))
}

#[utoipa::path(
    delete, path = "/api/oauth/connections/{name}", tag = "connections", operation_id = "delete_connection",
    params(("name" = String, Path, description = "Connection name"), DeleteQuery, OrgHeader),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`dependents_exist`: workflows depend on it", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[delete("/connections/{name}")]
pub async fn delete(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    name: web::Path<String>,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let name = parse_name(&name)?;
    service::delete(
        &broker,
        &org,
        &name,
        query.confirm_disable_workflows.unwrap_or(false),
        &caller.name,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get, path = "/api/oauth/connections/{name}/events", tag = "connections", operation_id = "list_connection_events",
    params(("name" = String, Path, description = "Connection name"), EventsQuery, OrgHeader),
    responses(
        (status = 200, body = EventList, description = "Newest first"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[get("/connections/{name}/events")]
pub async fn events(
    broker: web::Data<Broker>,
    caller: Caller,
    Org(org): Org,
    name: web::Path<String>,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin(&org)?;
    let name = parse_name(&name)?;
    let page = PageParams {
        limit: query.limit,
        starting_after: query.starting_after,
    }
    .request::<i64>(DEFAULT_HISTORY_LIMIT)?;
    let page = service::events(&broker, &org, &name, &page).await?;
    let info = PageInfo::of(&page, |e| e.id);
    Ok(HttpResponse::Ok().json(EventList {
        events: page.items.into_iter().map(EventView::from).collect(),
        count: info.count,
        has_more: info.has_more,
        next_cursor: info.next_cursor,
    }))
}

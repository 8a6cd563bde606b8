//! Connection management: create, edit (credential-changing edits reset the grant),
//! delete (refused while workflows depend on it, unless they are to be disabled).

use std::collections::BTreeMap;

use secrecy::SecretString;

use super::{Broker, Error, Result};
use crate::domain::{
    AssertionRules, ConnectionName, ConnectionStatus, EventKind, FieldErrors, FlowType, OboGrant,
    OrgId,
};
use crate::domain::{
    Connection, ConnectionConfig, NewConnection, NewEvent, SecretWrite, SecretWrites,
};

/// Parameters the service sets itself; extra parameters may not override them.
pub const RESERVED_AUTHORIZATION_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];
pub const RESERVED_TOKEN_PARAMS: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "code_verifier",
    "client_id",
    "client_secret",
    "refresh_token",
    "scope",
    "assertion",
    "subject_token",
    "subject_token_type",
    "requested_token_use",
];

/// Checks the rules that involve several fields, for create and for the result of a patch.
pub fn check_config(
    config: &ConnectionConfig,
    has_client_secret: bool,
    has_refresh_token: bool,
    errors: &mut FieldErrors,
) {
    match config.flow_type {
        FlowType::AuthorizationCode => {
            if config.authorization_url.is_none() {
                errors.add(
                    "authorization_url",
                    "is required for the authorization_code flow",
                );
            }
        }
        FlowType::ClientCredentials | FlowType::OnBehalfOf => {
            if !has_client_secret {
                errors.add(
                    "client_secret",
                    format!("is required for the {} flow", config.flow_type),
                );
            }
        }
        FlowType::RefreshToken => {
            if !has_refresh_token {
                errors.add("refresh_token", "is required for the refresh_token flow");
            }
        }
    }
    if config.flow_type == FlowType::OnBehalfOf && config.obo_grant.is_none() {
        errors.add("obo_grant", "is required for the on_behalf_of flow");
    }
    for key in config.extra_authorization_params.keys() {
        if RESERVED_AUTHORIZATION_PARAMS.contains(&key.as_str()) {
            errors.add(
                "extra_authorization_params",
                format!("`{key}` is set by the service and cannot be overridden"),
            );
        }
    }
    for key in config.extra_token_params.keys() {
        if RESERVED_TOKEN_PARAMS.contains(&key.as_str()) {
            errors.add(
                "extra_token_params",
                format!("`{key}` is set by the service and cannot be overridden"),
            );
        }
    }
}

pub struct CreateInput {
    pub name: ConnectionName,
    pub config: ConnectionConfig,
    pub client_secret: Option<SecretString>,
    pub refresh_token: Option<SecretString>,
}

pub async fn create(
    broker: &Broker,
    org: &OrgId,
    input: CreateInput,
    actor: &str,
) -> Result<Connection> {
    let mut errors = FieldErrors::default();
    check_config(
        &input.config,
        input.client_secret.is_some(),
        input.refresh_token.is_some(),
        &mut errors,
    );
    errors.finish()?;
    let now = broker.clock.now();
    let event = NewEvent {
        org_id: org.clone(),
        connection_id: String::new(), // set by the store once the id exists
        connection_name: input.name.clone(),
        at: now,
        kind: EventKind::Created,
        actor: actor.to_owned(),
        detail: Some(format!("flow {}", input.config.flow_type)),
    };
    let conn = broker
        .store
        .insert_connection(
            NewConnection {
                org_id: org.clone(),
                name: input.name,
                config: input.config,
                client_secret: input.client_secret,
                refresh_token: input.refresh_token,
                created_by: actor.to_owned(),
                now,
            },
            event,
        )
        .await?;
    tracing::info!(org = %conn.org_id, connection = %conn.name, flow = %conn.config.flow_type, "connection created");
    if conn.config.flow_type == FlowType::OnBehalfOf {
        // It holds no token of its own: usable as soon as it is validly configured.
        let mut next = conn.clone();
        next.status = ConnectionStatus::Completed;
        let event = super::grants::status_event(
            &conn,
            ConnectionStatus::Completed,
            actor,
            conn.created_at,
            None,
        );
        return Ok(broker
            .store
            .save_connection(&next, SecretWrites::default(), vec![event])
            .await?);
    }
    // Grants that need no browser are redeemed at once; a provider failure still
    // creates the connection, `failed` with the provider's reason.
    if matches!(
        conn.config.flow_type,
        FlowType::ClientCredentials | FlowType::RefreshToken
    ) {
        return match super::grants::acquire(broker, &conn, actor, EventKind::TokenAcquired).await {
            Ok(updated) => Ok(updated),
            Err(super::grants::GrantError::Provider(error)) => {
                // At creation there is no token to keep serving, so even a transient
                // failure leaves the connection unusable: `failed`, with the reason.
                let conn = get(broker, org, &conn.name).await?;
                if conn.status == ConnectionStatus::Failed {
                    return Ok(conn);
                }
                let now = broker.clock.now();
                let mut next = conn.clone();
                next.status = ConnectionStatus::Failed;
                next.status_message = Some(error.to_string());
                next.updated_at = now;
                let event = super::grants::status_event(
                    &conn,
                    ConnectionStatus::Failed,
                    actor,
                    now,
                    Some(error.to_string()),
                );
                Ok(broker
                    .store
                    .save_connection(&next, SecretWrites::default(), vec![event])
                    .await?)
            }
            Err(super::grants::GrantError::Store(e)) => Err(e.into()),
        };
    }
    Ok(conn)
}

/// An edit: `None` leaves a field as it is.
#[derive(Default)]
pub struct PatchInput {
    pub flow_type: Option<FlowType>,
    pub client_id: Option<String>,
    /// `Some(None)` removes the secret (a public client).
    pub client_secret: Option<Option<SecretString>>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub refresh_token: Option<SecretString>,
    pub token_auth_method: Option<crate::domain::TokenAuthMethod>,
    pub extra_authorization_params: Option<BTreeMap<String, String>>,
    pub extra_token_params: Option<BTreeMap<String, String>>,
    /// `Some(None)` removes the test URL.
    pub test_url: Option<Option<String>>,
    pub obo_grant: Option<OboGrant>,
    pub assertion_validation: Option<AssertionRules>,
}

pub async fn get(broker: &Broker, org: &OrgId, name: &ConnectionName) -> Result<Connection> {
    broker
        .store
        .get_connection(org, name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no connection `{name}` in org `{org}`")))
}

pub async fn update(
    broker: &Broker,
    org: &OrgId,
    name: &ConnectionName,
    patch: PatchInput,
    actor: &str,
) -> Result<Connection> {
    let current = get(broker, org, name).await?;
    let mut next = current.clone();
    let c = &mut next.config;
    // What identifies the grant: changing any of it invalidates the stored tokens.
    let mut credentials_changed = false;
    let mut changed = Vec::new();
    macro_rules! set {
        ($field:ident, $value:expr, $credential:expr) => {
            if let Some(value) = $value {
                if c.$field != value {
                    c.$field = value;
                    changed.push(stringify!($field));
                    credentials_changed |= $credential;
                }
            }
        };
    }
    set!(flow_type, patch.flow_type, true);
    set!(client_id, patch.client_id, true);
    set!(authorization_url, patch.authorization_url.map(Some), true);
    set!(token_url, patch.token_url, true);
    set!(scopes, patch.scopes, true);
    set!(token_auth_method, patch.token_auth_method, false);
    set!(
        extra_authorization_params,
        patch.extra_authorization_params,
        false
    );
    set!(extra_token_params, patch.extra_token_params, false);
    set!(test_url, patch.test_url, false);
    set!(obo_grant, patch.obo_grant.map(Some), true);
    set!(
        assertion_validation,
        patch.assertion_validation.map(Some),
        true
    );

    let mut secrets = SecretWrites::default();
    let mut has_secret = current.has_client_secret();
    let client_secret_given = patch.client_secret.is_some();
    if let Some(secret) = patch.client_secret {
        has_secret = secret.is_some();
        secrets.client_secret = match secret {
            Some(s) => SecretWrite::Set(s),
            None => SecretWrite::Clear,
        };
        changed.push("client_secret");
        credentials_changed = true;
    }
    let mut has_refresh = current.has_refresh_token();
    let imported_refresh_token = patch.refresh_token.is_some();
    if let Some(token) = patch.refresh_token {
        has_refresh = true;
        secrets.refresh_token = SecretWrite::Set(token);
        changed.push("refresh_token");
    }
    if credentials_changed {
        // "Needs reconnection": the old grant belongs to the old client or scopes.
        secrets.access_token = SecretWrite::Clear;
        if !imported_refresh_token {
            secrets.refresh_token = SecretWrite::Clear;
            has_refresh = false;
        }
    }

    let mut errors = FieldErrors::default();
    check_config(&next.config, has_secret, has_refresh, &mut errors);
    let moved: Vec<&str> = next
        .config
        .secret_destinations()
        .into_iter()
        .zip(current.config.secret_destinations())
        .filter(|((_, new), (_, old))| new != old)
        .map(|((field, _), _)| field)
        .collect();
    if !moved.is_empty() && current.has_client_secret() && !client_secret_given {
        errors.add(
            "client_secret",
            format!(
                "changing {} sends the client secret there: give client_secret again in the same request",
                moved.join(", ")
            ),
        );
    }
    errors.finish()?;
    if changed.is_empty() {
        return Ok(current);
    }

    let now = broker.clock.now();
    let mut events = vec![NewEvent::for_connection(
        &current,
        EventKind::Updated,
        actor,
        now,
        Some(format!("changed: {}", changed.join(", "))),
    )];
    if credentials_changed || imported_refresh_token {
        next.token_type = None;
        next.token_expires_at = None;
        next.token_scopes = None;
        next.refresh_failures = 0;
        next.next_refresh_attempt_at = None;
        if next.status != ConnectionStatus::NotConnected {
            events.push(NewEvent::for_connection(
                &current,
                EventKind::StatusChanged,
                actor,
                now,
                Some(format!(
                    "{} -> not_connected: credentials changed",
                    next.status
                )),
            ));
        }
        next.status = ConnectionStatus::NotConnected;
        next.status_message = Some("credentials changed; needs reconnection".into());
        if next.config.flow_type == FlowType::OnBehalfOf {
            // Nothing to reconnect: it exchanges per request.
            next.status = ConnectionStatus::Completed;
            next.status_message = None;
        }
    }
    next.updated_at = now;
    if credentials_changed && current.config.flow_type == FlowType::OnBehalfOf {
        // Users' sessions were granted to the old client at the old token endpoint:
        // their refresh tokens must not go to the new one. Ended first, so a failed
        // save leaves them ended rather than pointed at the new endpoint.
        let ended = broker
            .store
            .revoke_obo_sessions_of(&current.id, now)
            .await?;
        if ended > 0 {
            events.push(NewEvent::for_connection(
                &current,
                EventKind::StatusChanged,
                actor,
                now,
                Some(format!(
                    "{ended} obo session(s) revoked: the connection's client or token endpoint changed"
                )),
            ));
        }
    }
    Ok(broker.store.save_connection(&next, secrets, events).await?)
}

pub async fn delete(
    broker: &Broker,
    org: &OrgId,
    name: &ConnectionName,
    confirm_disable_workflows: bool,
    actor: &str,
) -> Result<()> {
    let conn = get(broker, org, name).await?;
    let dependents = broker.store.dependent_workflows(org, name).await?;
    if !dependents.is_empty() && !confirm_disable_workflows {
        return Err(Error::DependentsExist(dependents));
    }
    let now = broker.clock.now();
    let detail = if dependents.is_empty() {
        None
    } else {
        Some(format!("disabled workflows: {}", dependents.join(", ")))
    };
    let event = NewEvent::for_connection(&conn, EventKind::Deleted, actor, now, detail);
    broker
        .store
        .delete_connection(&conn, !dependents.is_empty(), event)
        .await?;
    tracing::info!(org = %org, connection = %name, disabled = dependents.len(), "connection deleted");
    Ok(())
}

/// A page of the connections `filter` selects, ordered by org then name.
pub async fn list(
    broker: &Broker,
    filter: &crate::domain::ConnectionFilter,
    page: &crate::domain::PageRequest<(String, String)>,
) -> Result<crate::domain::Page<Connection>> {
    Ok(broker.store.list_connections(filter, page).await?)
}

/// A page of a connection's events, newest first.
pub async fn events(
    broker: &Broker,
    org: &OrgId,
    name: &ConnectionName,
    page: &crate::domain::PageRequest<i64>,
) -> Result<crate::domain::Page<crate::domain::Event>> {
    let conn = get(broker, org, name).await?;
    Ok(broker.store.list_events(&conn.id, page).await?)
}

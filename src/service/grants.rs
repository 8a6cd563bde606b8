//! Getting tokens for a connection and recording the outcome: a new client-credentials
//! grant, a refresh of the stored grant, or a code exchange. Every outcome writes the
//! connection and its events in one transaction.

use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::Broker;
use crate::domain::{
    Connection, ConnectionStatus, EventKind, FlowType, NewEvent, SecretWrite, SecretWrites,
};
use crate::oauth::{ProviderError, TokenSet};
use crate::store::StoreError;

/// How long callers wait after a transient failure before asking the provider again.
pub const TRANSIENT_COOLDOWN_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    Provider(ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Asks the provider for a new access token for `conn`'s grant and stores the result.
/// On a provider failure the failure is recorded (see `record_failure`) and returned.
pub async fn acquire(
    broker: &Broker,
    conn: &Connection,
    actor: &str,
    success_kind: EventKind,
) -> Result<Connection, GrantError> {
    let secrets = broker.store.open_secrets(conn)?;
    let provider = &broker.provider;
    let result = match conn.config.flow_type {
        FlowType::ClientCredentials => provider.client_credentials(conn, &secrets).await,
        FlowType::RefreshToken | FlowType::AuthorizationCode => match &secrets.refresh_token {
            Some(token) => provider.refresh(conn, &secrets, token).await,
            None => Err(ProviderError::Permanent {
                code: "no_refresh_token".into(),
                description: Some(match conn.config.flow_type {
                    FlowType::AuthorizationCode => {
                        "no refresh token is stored: authorize the connection (again)".into()
                    }
                    _ => "no refresh token is stored: import one with PATCH".into(),
                }),
            }),
        },
        FlowType::OnBehalfOf => Err(ProviderError::Permanent {
            code: "not_refreshable".into(),
            description: Some("on_behalf_of connections hold no token of their own".into()),
        }),
    };
    let now = broker.clock.now();
    if let Err(ProviderError::Permanent { code, .. }) = &result
        && code == "invalid_grant"
        && secrets.refresh_token.is_some()
    {
        // Another replica (or an earlier request) may have rotated the refresh token
        // after we read it: then the grant is fine and the stored row is the answer.
        if let Some(current) = broker.store.get_connection_by_id(&conn.id).await?
            && current.sealed.refresh_token != conn.sealed.refresh_token
        {
            tracing::info!(org = %conn.org_id, connection = %conn.name, "invalid_grant after a rotation by someone else; using their tokens");
            return Ok(current);
        }
    }
    match result {
        Ok(tokens) => Ok(record_tokens(
            broker,
            conn,
            tokens,
            actor,
            success_kind,
            ConnectionStatus::Completed,
            Vec::new(),
            now,
        )
        .await?),
        Err(error) => {
            record_failure(broker, conn, &error, actor, EventKind::RefreshFailed, now).await?;
            Err(GrantError::Provider(error))
        }
    }
}

/// Stores new tokens: the access token always, the refresh token only when the provider
/// sent one (RFC 6749 6: otherwise the old one stays valid), and sets `status`.
#[allow(clippy::too_many_arguments)]
pub async fn record_tokens(
    broker: &Broker,
    conn: &Connection,
    tokens: TokenSet,
    actor: &str,
    kind: EventKind,
    status: ConnectionStatus,
    mut events: Vec<NewEvent>,
    now: DateTime<Utc>,
) -> Result<Connection, StoreError> {
    let default_lifetime = broker.settings.default_token_lifetime_seconds;
    // A missing `expires_in` means "unknown", not "never": assume the default lifetime
    // so the refresher still renews it before it silently dies.
    let lifetime = tokens.lifetime(default_lifetime).as_secs();
    let lifetime_note = match tokens.expires_in {
        Some(_) => format!("expires in {lifetime} s"),
        None => format!("no expires_in; assuming {lifetime} s"),
    };
    let mut next = conn.clone();
    next.token_type = Some(tokens.token_type.clone());
    next.token_expires_at = Some(now + Duration::seconds(lifetime as i64));
    if tokens.scopes.is_some() {
        next.token_scopes = tokens.scopes.clone();
    }
    next.last_refresh_at = Some(now);
    next.refresh_failures = 0;
    next.next_refresh_attempt_at = None;
    next.updated_at = now;
    let rotated = tokens.refresh_token.is_some() && conn.has_refresh_token();
    let detail = format!(
        "{lifetime_note}{}",
        if rotated {
            "; refresh token rotated"
        } else {
            ""
        }
    );
    events.push(NewEvent::for_connection(
        conn,
        kind,
        actor,
        now,
        Some(detail),
    ));
    if conn.status != status {
        events.push(status_event(conn, status, actor, now, None));
    }
    next.status = status;
    next.status_message = None;
    let secrets = SecretWrites {
        access_token: SecretWrite::Set(tokens.access_token),
        refresh_token: tokens
            .refresh_token
            .map(SecretWrite::Set)
            .unwrap_or(SecretWrite::Keep),
        ..SecretWrites::default()
    };
    let mut attempt = 0;
    loop {
        match broker
            .store
            .save_connection(&next, secrets.clone(), events.clone())
            .await
        {
            Ok(saved) => {
                tracing::info!(org = %saved.org_id, connection = %saved.name, kind = %kind, "tokens stored");
                return Ok(saved);
            }
            // Someone edited the row while we talked to the provider. If the grant is
            // unchanged (an unrelated edit), put the new tokens on the fresh row: a
            // rotated refresh token must not be lost. If the grant changed, the edit
            // discarded these tokens on purpose.
            Err(StoreError::Stale) if attempt < 3 => {
                attempt += 1;
                let Some(fresh) = broker.store.get_connection_by_id(&conn.id).await? else {
                    return Err(StoreError::Stale);
                };
                if fresh.config != conn.config || !same_refresh_token(broker, &fresh, conn)? {
                    return Err(StoreError::Stale);
                }
                let mut rebased = fresh.clone();
                rebased.token_type = next.token_type.clone();
                rebased.token_expires_at = next.token_expires_at;
                rebased.token_scopes = next.token_scopes.clone();
                rebased.last_refresh_at = next.last_refresh_at;
                rebased.refresh_failures = 0;
                rebased.next_refresh_attempt_at = None;
                rebased.status = next.status;
                rebased.status_message = None;
                rebased.updated_at = now;
                next = rebased;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether two versions of a row hold the same refresh token. Their ciphertexts differ
/// when `rotate-keys` re-sealed the row meanwhile, so those are compared opened.
fn same_refresh_token(broker: &Broker, a: &Connection, b: &Connection) -> Result<bool, StoreError> {
    if a.sealed.refresh_token == b.sealed.refresh_token {
        return Ok(true);
    }
    let (a, b) = (broker.store.open_secrets(a)?, broker.store.open_secrets(b)?);
    Ok(match (a.refresh_token, b.refresh_token) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (a, b) => a.is_none() && b.is_none(),
    })
}

/// Permanent failures set `failed` and stop refreshing until someone acts; transient
/// ones keep the status (a still-valid token is still served), count the failure and
/// start a cooldown.
pub async fn record_failure(
    broker: &Broker,
    conn: &Connection,
    error: &ProviderError,
    actor: &str,
    kind: EventKind,
    now: DateTime<Utc>,
) -> Result<Connection, StoreError> {
    let mut next = conn.clone();
    next.refresh_failures += 1;
    next.updated_at = now;
    let mut events = vec![NewEvent::for_connection(
        conn,
        kind,
        actor,
        now,
        Some(error.to_string()),
    )];
    if error.is_permanent() {
        next.status = ConnectionStatus::Failed;
        next.status_message = Some(error.to_string());
        next.next_refresh_attempt_at = None;
        if conn.status != ConnectionStatus::Failed {
            events.push(status_event(
                conn,
                ConnectionStatus::Failed,
                actor,
                now,
                Some(error.to_string()),
            ));
        }
    } else {
        next.next_refresh_attempt_at = Some(now + Duration::seconds(TRANSIENT_COOLDOWN_SECONDS));
    }
    tracing::warn!(org = %conn.org_id, connection = %conn.name, permanent = error.is_permanent(), error = %error, "provider call failed");
    broker
        .store
        .save_connection(&next, SecretWrites::default(), events)
        .await
}

pub fn status_event(
    conn: &Connection,
    to: ConnectionStatus,
    actor: &str,
    now: DateTime<Utc>,
    why: Option<String>,
) -> NewEvent {
    let detail = match why {
        Some(why) => format!("{} -> {to}: {why}", conn.status),
        None => format!("{} -> {to}", conn.status),
    };
    NewEvent::for_connection(conn, EventKind::StatusChanged, actor, now, Some(detail))
}

/// The outcome of a connection test.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub success: bool,
    pub message: String,
    pub tested_at: DateTime<Utc>,
}

/// Obtains a token if needed, then GETs `test_url` with it (2xx = success). Records
/// `last_test_at`, the `tested` event, and, when `settle` is given, moves the status
/// there on success or to `failed` otherwise (the end of an authorization).
pub async fn test(
    broker: &Broker,
    conn: &Connection,
    actor: &str,
    settle: Option<ConnectionStatus>,
) -> Result<(Connection, TestOutcome), StoreError> {
    let mut conn = conn.clone();
    let mut failure: Option<String> = None;
    if !conn.has_fresh_token(broker.clock.now(), Duration::seconds(30)) {
        match acquire(broker, &conn, actor, EventKind::TokenAcquired).await {
            Ok(updated) => conn = updated,
            Err(GrantError::Provider(e)) => {
                failure = Some(format!("could not obtain a token: {e}"));
                conn = broker
                    .store
                    .get_connection_by_id(&conn.id)
                    .await?
                    .unwrap_or(conn);
            }
            Err(GrantError::Store(e)) => return Err(e),
        }
    }
    let message = match (&failure, &conn.config.test_url) {
        (Some(f), _) => f.clone(),
        (None, None) => "a token was obtained (no test_url is set)".to_owned(),
        (None, Some(url)) => {
            let secrets = broker.store.open_secrets(&conn)?;
            let token = secrets
                .access_token
                .unwrap_or_else(|| SecretString::from(""));
            match broker
                .provider
                .outbound()
                .get_with_token(url, secrecy::ExposeSecret::expose_secret(&token))
                .await
            {
                Ok(status) if (200..300).contains(&status) => format!("test_url answered {status}"),
                Ok(status) => {
                    failure = Some(format!("test_url answered {status}"));
                    format!("test_url answered {status}")
                }
                Err(e) => {
                    failure = Some(format!("test_url: {e}"));
                    format!("test_url: {e}")
                }
            }
        }
    };
    let now = broker.clock.now();
    let success = failure.is_none();
    let mut next = conn.clone();
    next.last_test_at = Some(now);
    next.updated_at = now;
    let mut events = vec![NewEvent::for_connection(
        &conn,
        EventKind::Tested,
        actor,
        now,
        Some(format!(
            "{}: {message}",
            if success { "success" } else { "failed" }
        )),
    )];
    if let Some(target) = settle {
        let to = if success {
            target
        } else {
            ConnectionStatus::Failed
        };
        if conn.status != to {
            events.push(status_event(&conn, to, actor, now, Some(message.clone())));
        }
        next.status = to;
        next.status_message = if success { None } else { Some(message.clone()) };
    }
    let saved = broker
        .store
        .save_connection(&next, SecretWrites::default(), events)
        .await?;
    Ok((
        saved,
        TestOutcome {
            success,
            message,
            tested_at: now,
        },
    ))
}

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
                if !same_grant(broker, &fresh, conn)? {
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

/// Whether two versions of a row hold the same grant: the same grant configuration,
/// client secret and refresh token. Ciphertexts differ when `rotate-keys` re-sealed the
/// row meanwhile, so secrets are compared opened.
fn same_grant(broker: &Broker, a: &Connection, b: &Connection) -> Result<bool, StoreError> {
    if !a.config.same_grant_as(&b.config) {
        return Ok(false);
    }
    if a.sealed.refresh_token == b.sealed.refresh_token
        && a.sealed.client_secret == b.sealed.client_secret
    {
        return Ok(true);
    }
    let (a, b) = (broker.store.open_secrets(a)?, broker.store.open_secrets(b)?);
    let same = |a: Option<SecretString>, b: Option<SecretString>| match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (a, b) => a.is_none() && b.is_none(),
    };
    Ok(same(a.refresh_token, b.refresh_token) && same(a.client_secret, b.client_secret))
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

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use secrecy::SecretString;

    use super::*;
    use crate::clock::Clock;
    use crate::service::connections::{PatchInput, update};
    use crate::service::test_support::{client_credentials, numbered_tokens, test_broker};

    fn tokens(access: &str) -> TokenSet {
        TokenSet {
            access_token: SecretString::from(access),
            token_type: "Bearer".into(),
            expires_in: Some(StdDuration::from_secs(3600)),
            refresh_token: None,
            scopes: None,
        }
    }

    fn access_token(broker: &Broker, conn: &Connection) -> String {
        let token = conn
            .open_access_token(broker.store.keyring())
            .unwrap()
            .unwrap();
        token.expose_secret().to_owned()
    }

    #[tokio::test]
    async fn new_tokens_are_put_on_a_row_an_unrelated_edit_changed_meanwhile() {
        // Arrange: a refresh read the row; then an admin changed its test URL.
        let t = test_broker().await;
        let server = numbered_tokens("cc", 3600).await;
        let read = client_credentials(&t.broker, "graph", &format!("{}/token", server.uri())).await;
        let patch = PatchInput {
            test_url: Some(Some("https://api.example.com/me".into())),
            ..PatchInput::default()
        };
        update(&t.broker, &read.org_id, &read.name, patch, "admin")
            .await
            .unwrap();

        // Act: the refresh stores what the provider answered, against the row it read.
        let now = t.clock.now();
        let saved = record_tokens(
            &t.broker,
            &read,
            tokens("new"),
            "test",
            EventKind::Refreshed,
            ConnectionStatus::Completed,
            Vec::new(),
            now,
        )
        .await
        .expect("rebased on the edited row");

        // Assert: both the edit and the new token are kept.
        assert_eq!(access_token(&t.broker, &saved), "new");
        assert_eq!(
            saved.config.test_url.as_deref(),
            Some("https://api.example.com/me")
        );
        assert!(saved.version > read.version + 1, "saved after the edit");
    }

    #[tokio::test]
    async fn new_tokens_for_a_grant_an_edit_replaced_meanwhile_are_discarded() {
        // Arrange: a refresh read the row; then an admin changed the client id, which
        // discards the grant ("needs reconnection").
        let t = test_broker().await;
        let server = numbered_tokens("cc", 3600).await;
        let read = client_credentials(&t.broker, "graph", &format!("{}/token", server.uri())).await;
        let patch = PatchInput {
            client_id: Some("client-2".into()),
            ..PatchInput::default()
        };
        update(&t.broker, &read.org_id, &read.name, patch, "admin")
            .await
            .unwrap();

        // Act
        let now = t.clock.now();
        let result = record_tokens(
            &t.broker,
            &read,
            tokens("stale"),
            "test",
            EventKind::Refreshed,
            ConnectionStatus::Completed,
            Vec::new(),
            now,
        )
        .await;

        // Assert: refused, and the row keeps the edit without a token.
        assert!(matches!(result, Err(StoreError::Stale)), "{result:?}");
        let row = t
            .broker
            .store
            .get_connection_by_id(&read.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.config.client_id, "client-2");
        assert!(
            !row.has_access_token(),
            "the old grant's token is not put on the new one"
        );
        assert_eq!(row.status, ConnectionStatus::NotConnected);
    }
}

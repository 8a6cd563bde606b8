//! The authorization code flow (RFC 6749 4.1 with PKCE, RFC 7636; RFC 9700 2.1):
//! `start` creates a single-use, time-limited state bound to the org and connection;
//! `callback` consumes it atomically, exchanges the code, stores the tokens and tests.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::grants::{self, status_event};
use super::{Broker, Error, Result};
use crate::domain::{
    ConnectionName, ConnectionStatus, EventKind, FieldErrors, FlowType, NewEvent, NewPending, OrgId,
};
use crate::oauth::ProviderError;
use crate::store::StartAuthorization;

pub const STATE_LIFETIME_MINUTES: i64 = 10;
/// Authorizations a connection may have under way at once; a new one drops the oldest.
pub const MAX_PENDING_PER_CONNECTION: usize = 10;

pub fn state_hash(state: &str) -> String {
    crate::crypto::sha256_hex(state.as_bytes())
}

pub struct Started {
    pub authorization_url: String,
    pub state: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// Checks `return_to` against the configured origins (no open redirect): an absolute
/// http(s) URL without user information (`https://evil.example@app.example/` reads as
/// one host to a person and another to a browser), whose origin is allowed.
pub fn check_return_to(broker: &Broker, return_to: &str) -> Result<()> {
    let url = url::Url::parse(return_to)
        .map_err(|_| FieldErrors::single("return_to", "must be an absolute URL"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(FieldErrors::single("return_to", "must be an http or https URL").into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            FieldErrors::single("return_to", "must not carry a user name or password").into(),
        );
    }
    let origin = url.origin().ascii_serialization();
    if broker
        .settings
        .return_origins()
        .iter()
        .any(|o| o == &origin)
    {
        Ok(())
    } else {
        Err(FieldErrors::single(
            "return_to",
            format!("origin {origin} is not in OAUTH_BROKER_ALLOWED_RETURN_ORIGINS"),
        )
        .into())
    }
}

pub async fn start(
    broker: &Broker,
    org: &OrgId,
    name: &ConnectionName,
    return_to: Option<String>,
    actor: &str,
) -> Result<Started> {
    if let Some(r) = &return_to {
        check_return_to(broker, r)?;
    }
    let conn = super::connections::get(broker, org, name).await?;
    if conn.config.flow_type != FlowType::AuthorizationCode {
        return Err(Error::NotApplicable(format!(
            "only authorization_code connections are authorized in a browser; this one is {}",
            conn.config.flow_type
        )));
    }
    let now = broker.clock.now();
    let _ = broker.store.purge_expired_pending(now).await;
    let secrets = broker.store.open_secrets(&conn)?;
    let redirect_uri = broker.redirect_uri(name.as_str());
    let started = broker
        .provider
        .start_authorization(&conn, &secrets, &redirect_uri)
        .map_err(|e| Error::NotApplicable(e.to_string()))?;
    let expires_at = now + Duration::minutes(STATE_LIFETIME_MINUTES);
    broker
        .store
        .start_authorization(StartAuthorization {
            pending: NewPending {
                state_hash: state_hash(started.state.expose_secret()),
                org_id: org.clone(),
                connection_id: conn.id.clone(),
                pkce_verifier: started.pkce_verifier,
                redirect_uri,
                return_to,
                created_at: now,
                expires_at,
            },
            connection_name: &conn.name,
            keep: MAX_PENDING_PER_CONNECTION,
            started: NewEvent::for_connection(&conn, EventKind::AuthorizeStarted, actor, now, None),
            status_changed: status_event(
                &conn,
                ConnectionStatus::WaitingCallback,
                actor,
                now,
                None,
            ),
        })
        .await?;
    Ok(Started {
        authorization_url: started.url,
        state: started.state,
        expires_at,
    })
}

/// What the provider sent to the callback.
#[derive(Default)]
pub struct CallbackParams {
    pub code: Option<SecretString>,
    pub state: Option<SecretString>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

pub struct CallbackOutcome {
    pub success: bool,
    /// Shown on the page (escaped there).
    pub message: String,
    pub return_to: Option<String>,
}

fn refused(message: impl Into<String>) -> CallbackOutcome {
    CallbackOutcome {
        success: false,
        message: message.into(),
        return_to: None,
    }
}

const ACTOR: &str = "callback";

pub async fn callback(
    broker: &Arc<Broker>,
    name: &str,
    params: CallbackParams,
) -> Result<CallbackOutcome> {
    let Some(raw_state) = params.state else {
        return Ok(refused("The callback has no state parameter."));
    };
    let Ok(name) = ConnectionName::parse(name) else {
        return Ok(refused("Unknown connection."));
    };
    // Consumed before anything else: a state works once, whatever happens next.
    let Some(pending) = broker
        .store
        .take_pending(&state_hash(raw_state.expose_secret()))
        .await?
    else {
        return Ok(refused(
            "This authorization link is unknown or was already used. Start the authorization again.",
        ));
    };
    let now = broker.clock.now();
    if pending.expires_at < now {
        return Ok(refused(
            "This authorization expired (it is valid for 10 minutes). Start the authorization again.",
        ));
    }
    let Some(conn) = broker
        .store
        .get_connection_by_id(&pending.connection_id)
        .await?
    else {
        return Ok(refused("The connection no longer exists."));
    };
    if conn.name != name || conn.org_id != pending.org_id {
        tracing::warn!(org = %conn.org_id, connection = %conn.name, callback_path = %name, "state used on another connection's callback");
        return Ok(refused("This state was issued for another connection."));
    }
    let return_to = pending.return_to.clone();
    let fail = |message: String| CallbackOutcome {
        success: false,
        message,
        return_to: return_to.clone(),
    };

    if let Some(error) = params.error {
        let provider_error = ProviderError::Permanent {
            code: crate::oauth::sanitize(&error),
            description: params
                .error_description
                .as_deref()
                .map(crate::oauth::sanitize),
        };
        grants::record_failure(
            broker,
            &conn,
            &provider_error,
            ACTOR,
            EventKind::CallbackFailed,
            now,
        )
        .await?;
        return Ok(fail(format!("The provider refused: {provider_error}")));
    }
    let Some(code) = params.code else {
        let error = ProviderError::Permanent {
            code: "missing_code".into(),
            description: Some("the callback carried neither code nor error".into()),
        };
        grants::record_failure(broker, &conn, &error, ACTOR, EventKind::CallbackFailed, now)
            .await?;
        return Ok(fail("The callback carried no authorization code.".into()));
    };

    let secrets = broker.store.open_secrets(&conn)?;
    let exchanged = broker
        .provider
        .exchange_code(
            &conn,
            &secrets,
            &code,
            &pending.pkce_verifier,
            &pending.redirect_uri,
        )
        .await;
    let now = broker.clock.now();
    let tokens = match exchanged {
        Ok(tokens) => tokens,
        Err(error) => {
            // A failed exchange needs a new authorization whatever the cause: the code
            // is single-use and may already be spent.
            let error = match error {
                ProviderError::Transient { reason, .. } => ProviderError::Permanent {
                    code: "exchange_failed".into(),
                    description: Some(reason),
                },
                permanent => permanent,
            };
            grants::record_failure(broker, &conn, &error, ACTOR, EventKind::CallbackFailed, now)
                .await?;
            return Ok(fail(format!("The code exchange failed: {error}")));
        }
    };
    let testing = conn.config.test_url.is_some();
    let events = vec![NewEvent::for_connection(
        &conn,
        EventKind::CallbackSucceeded,
        ACTOR,
        now,
        None,
    )];
    let stored = grants::record_tokens(
        broker,
        &conn,
        tokens,
        ACTOR,
        EventKind::TokenAcquired,
        if testing {
            ConnectionStatus::Testing
        } else {
            ConnectionStatus::Completed
        },
        events,
        now,
    )
    .await?;
    // This grant replaces whatever an older link would have connected.
    if let Err(e) = broker.store.drop_pending_of(&conn.id).await {
        tracing::warn!(error = %e, "could not drop the connection's older authorization links");
    }
    if testing {
        let (_, outcome) =
            super::testing::test(broker, &stored, ACTOR, Some(ConnectionStatus::Completed)).await?;
        if !outcome.success {
            return Ok(fail(format!(
                "The connection was authorized but its test failed: {}",
                outcome.message
            )));
        }
    }
    Ok(CallbackOutcome {
        success: true,
        message: format!(
            "The connection `{}` is ready. You can close this window.",
            conn.name
        ),
        return_to,
    })
}

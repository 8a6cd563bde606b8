//! On-behalf-of: exchange a user's token for a downstream token (cached by the hash of
//! the assertion, never the assertion itself), and long-running sessions that keep a
//! user's delegated grant alive after their own token expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::in_process::{OboToken, SessionOutcome};
use super::refresh::with_lease;
use super::{Broker, Error, NoToken, OboFailure, Result};
use crate::crypto::sha256_hex;
use crate::domain::{
    AssertionRules, Caller, Connection, ConnectionName, ConnectionStatus, EventKind, FieldErrors,
    FlowType, NewEvent, OboGrant, OboSession, OrgId, Scopes, SecretWrite, SecretWrites,
};
use crate::oauth::{OboError, OboExchange, ProviderError, TokenSet};
use crate::store::Leased;

/// Cached tokens are served until this long before they expire.
pub const CACHE_MARGIN_MINUTES: i64 = 5;

/// The connection's OBO settings.
struct OboConfig {
    grant: OboGrant,
    rules: Option<AssertionRules>,
}

fn config(conn: &Connection) -> Result<OboConfig> {
    let grant = conn.config.obo_grant.ok_or_else(|| {
        Error::Internal(anyhow::anyhow!("on_behalf_of connection without obo_grant"))
    })?;
    Ok(OboConfig {
        grant,
        rules: conn.config.assertion_validation.clone(),
    })
}

fn exchange_failed(error: OboError, connection: &ConnectionName) -> Error {
    Error::Obo(OboFailure::Exchange {
        connection: connection.clone(),
        error,
    })
}

fn assertion_invalid(reason: String, connection: &ConnectionName) -> Error {
    Error::Obo(OboFailure::AssertionInvalid {
        connection: connection.clone(),
        reason,
    })
}

async fn obo_connection(broker: &Broker, org: &OrgId, name: &ConnectionName) -> Result<Connection> {
    let conn = broker
        .store
        .find_for_credentials(org, name)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!("no connection `{name}` in org `{org}` or GLOBAL"))
        })?;
    if conn.config.flow_type != FlowType::OnBehalfOf {
        return Err(Error::NotApplicable(format!(
            "`{name}` is a {} connection; on-behalf-of needs an on_behalf_of connection",
            conn.config.flow_type
        )));
    }
    Ok(conn)
}

/// Local checks of the assertion: the configured validation, and never a chained token.
async fn check_assertion(
    broker: &Broker,
    conn: &Connection,
    cfg: &OboConfig,
    assertion: &SecretString,
    scopes: &[String],
) -> Result<()> {
    let downstream = crate::oauth::downstream_resources(scopes);
    let token = assertion.expose_secret();
    match &cfg.rules {
        Some(rules) => match broker
            .obo
            .jwks
            .validate(token, rules, broker.clock.now(), &downstream)
            .await
        {
            Ok(_) => Ok(()),
            // The issuer's keys being unreachable is not the user's fault.
            Err(crate::oauth::JwtError::Jwks(reason)) => Err(exchange_failed(
                OboError::Provider(format!("the issuer's JWKS could not be read: {reason}")),
                &conn.name,
            )),
            Err(e) => Err(assertion_invalid(e.to_string(), &conn.name)),
        },
        None => {
            if crate::oauth::unverified_audiences(token)
                .iter()
                .any(|a| downstream.contains(a))
            {
                return Err(assertion_invalid(
                    crate::oauth::JwtError::Chained.to_string(),
                    &conn.name,
                ));
            }
            Ok(())
        }
    }
}

fn to_token(
    tokens: &TokenSet,
    now: DateTime<Utc>,
    default_lifetime: u64,
    scopes: &[String],
) -> OboToken {
    let lifetime = tokens.lifetime(default_lifetime).as_secs();
    OboToken {
        access_token: tokens.access_token.clone(),
        token_type: tokens.token_type.clone(),
        expires_at: now + Duration::seconds(lifetime as i64),
        scopes: tokens.scopes.clone().unwrap_or_else(|| scopes.to_vec()),
    }
}

pub struct Exchanged {
    pub connection: Connection,
    pub token: Arc<OboToken>,
    pub cached: bool,
}

/// `POST /credentials/{name}/on-behalf-of`.
pub async fn exchange(
    broker: &Broker,
    org: &OrgId,
    name: &ConnectionName,
    assertion: SecretString,
    scopes: Option<Vec<String>>,
    claims: Option<String>,
) -> Result<Exchanged> {
    let conn = obo_connection(broker, org, name).await?;
    let cfg = config(&conn)?;
    let scopes = match scopes {
        Some(s) => {
            let asked = Scopes::parse(&s).map_err(|e| FieldErrors::single("scopes", e.0))?;
            // A caller narrows the connection's scopes, never widens them: an admin chose
            // what this middle tier may act as.
            if let Some(other) = asked
                .as_slice()
                .iter()
                .find(|s| !conn.config.scopes.contains(s))
            {
                return Err(FieldErrors::single(
                    "scopes",
                    format!("`{other}` is not one of the connection's scopes"),
                )
                .into());
            }
            asked.as_slice().to_vec()
        }
        None => conn.config.scopes.clone(),
    };
    // A chained token is refused for any resource the connection may reach, whatever the
    // caller narrowed the request to.
    check_assertion(broker, &conn, &cfg, &assertion, &conn.config.scopes).await?;

    // The key holds a hash of the assertion, never the assertion.
    let key = sha256_hex(
        format!(
            "{}\n{}\n{}\n{}",
            conn.org_id,
            conn.id,
            scopes.join(" "),
            sha256_hex(assertion.expose_secret().as_bytes())
        )
        .as_bytes(),
    );
    let now = broker.clock.now();
    let margin = Duration::minutes(CACHE_MARGIN_MINUTES);
    if claims.is_none()
        && let Some(hit) = broker.obo.tokens.get(&key).await
    {
        if hit.expires_at - margin > now {
            return Ok(Exchanged {
                connection: conn,
                token: hit,
                cached: true,
            });
        }
        broker.obo.tokens.invalidate(&key).await;
    }
    if claims.is_some() {
        // A step-up answer replaces whatever was cached for this assertion.
        broker.obo.tokens.invalidate(&key).await;
    }
    let ran = Arc::new(AtomicBool::new(false));
    let secrets = broker.store.open_secrets(&conn)?;
    let ran_inside = ran.clone();
    let default_lifetime = broker.settings.default_token_lifetime_seconds;
    let result = broker
        .obo
        .tokens
        .try_get_with(key, async {
            ran_inside.store(true, Ordering::SeqCst);
            let tokens = broker
                .provider
                .exchange_on_behalf_of(
                    &conn,
                    &secrets,
                    OboExchange {
                        grant: cfg.grant,
                        assertion: &assertion,
                        scopes: &scopes,
                        claims: claims.as_deref(),
                    },
                )
                .await?;
            Ok::<_, OboError>(Arc::new(to_token(
                &tokens,
                broker.clock.now(),
                default_lifetime,
                &scopes,
            )))
        })
        .await;
    match result {
        Ok(token) => Ok(Exchanged {
            connection: conn,
            token,
            cached: !ran.load(Ordering::SeqCst),
        }),
        Err(e) => Err(exchange_failed((*e).clone(), name)),
    }
}

// --- long-running sessions ---------------------------------------------------------

/// May `caller` use this session? Sessions are bound to their org and to the key that
/// created them; an admin of the org may use and revoke them too.
fn authorize_session(caller: &Caller, org: &OrgId, session: &OboSession) -> Result<()> {
    if &session.org_id != org {
        return Err(Error::NotFound("no such session".into()));
    }
    if session.created_by_key_id == caller.key_id || caller.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "this session belongs to another API key".into(),
        ))
    }
}

fn session_event(
    session: &OboSession,
    connection_id: &str,
    kind: EventKind,
    actor: &str,
    now: DateTime<Utc>,
    what: &str,
) -> NewEvent {
    NewEvent {
        org_id: session.org_id.clone(),
        connection_id: connection_id.to_owned(),
        connection_name: session.connection_name.clone(),
        at: now,
        kind,
        actor: actor.to_owned(),
        detail: Some(format!("obo session {}: {what}", session.id)),
    }
}

pub async fn create_session(
    broker: &Broker,
    caller: &Caller,
    org: &OrgId,
    name: &ConnectionName,
    assertion: SecretString,
    max_lifetime_seconds: Option<i64>,
    label: Option<String>,
) -> Result<OboSession> {
    let limit = broker.settings.obo_session_max_lifetime_seconds as i64;
    let lifetime = max_lifetime_seconds.unwrap_or(limit);
    if !(60..=limit).contains(&lifetime) {
        return Err(FieldErrors::single(
            "max_lifetime_seconds",
            format!("must be between 60 and {limit}"),
        )
        .into());
    }
    let conn = obo_connection(broker, org, name).await?;
    let cfg = config(&conn)?;
    let mut scopes = conn.config.scopes.clone();
    check_assertion(broker, &conn, &cfg, &assertion, &scopes).await?;
    if !scopes.iter().any(|s| s == "offline_access") {
        scopes.push("offline_access".into());
    }
    let secrets = broker.store.open_secrets(&conn)?;
    let tokens = broker
        .provider
        .exchange_on_behalf_of(
            &conn,
            &secrets,
            OboExchange {
                grant: cfg.grant,
                assertion: &assertion,
                scopes: &scopes,
                claims: None,
            },
        )
        .await
        .map_err(|e| exchange_failed(e, name))?;
    let Some(refresh_token) = tokens.refresh_token.clone() else {
        return Err(exchange_failed(OboError::Misconfigured {
                provider_code: "no_refresh_token".into(),
                description: "the exchange returned no refresh token (is offline_access granted to the client?)".into(),
            },
            name,
        ));
    };
    let now = broker.clock.now();
    let token = to_token(
        &tokens,
        now,
        broker.settings.default_token_lifetime_seconds,
        &scopes,
    );
    let session = OboSession {
        id: uuid::Uuid::new_v4().to_string(),
        org_id: org.clone(),
        connection_id: conn.id.clone(),
        connection_name: conn.name.clone(),
        label,
        created_by: caller.name.clone(),
        created_by_key_id: caller.key_id.clone(),
        scopes,
        token_type: Some(token.token_type.clone()),
        token_expires_at: Some(token.expires_at),
        status: "active".into(),
        status_message: None,
        created_at: now,
        expires_at: now + Duration::seconds(lifetime),
        revoked_at: None,
        last_used_at: None,
        version: 1,
        sealed: Default::default(),
    };
    broker
        .store
        .insert_obo_session(&session, &token.access_token, &refresh_token)
        .await?;
    broker
        .store
        .insert_events(vec![session_event(
            &session,
            &conn.id,
            EventKind::TokenAcquired,
            &caller.name,
            now,
            "created",
        )])
        .await?;
    tracing::info!(org = %org, connection = %name, session = %session.id, "obo session created");
    Ok(session)
}

pub async fn get_session(
    broker: &Broker,
    caller: &Caller,
    org: &OrgId,
    id: &str,
) -> Result<OboSession> {
    let session = broker
        .store
        .get_obo_session(id)
        .await?
        .ok_or_else(|| Error::NotFound("no such session".into()))?;
    authorize_session(caller, org, &session)?;
    Ok(session)
}

fn gone(session: &OboSession, now: DateTime<Utc>) -> Option<Error> {
    if session.revoked_at.is_some() {
        Some(Error::Gone("the session was revoked".into()))
    } else if session.expires_at <= now {
        Some(Error::Gone(
            "the session reached its maximum lifetime".into(),
        ))
    } else {
        None
    }
}

/// A fresh access token for the session, refreshed on demand; every use is an event.
/// The session, the org whose connection serves it, and a fresh access token.
pub async fn session_credentials(
    broker: &Arc<Broker>,
    caller: &Caller,
    org: &OrgId,
    id: &str,
) -> Result<(OboSession, OrgId, SecretString)> {
    let session = get_session(broker, caller, org, id).await?;
    let now = broker.clock.now();
    if let Some(e) = gone(&session, now) {
        return Err(e);
    }
    let session = if session
        .token_expires_at
        .is_some_and(|at| at > now + Duration::seconds(300))
    {
        session
    } else {
        let (fresh, _) = refresh_session(broker, &session.id, Duration::seconds(300)).await?;
        (*fresh).clone()
    };
    if session.status != "active" {
        return Err(NoToken::Status {
            status: ConnectionStatus::Failed,
            message: session.status_message.clone(),
        }
        .into());
    }
    let token = session
        .open_tokens(broker.store.keyring())?
        .access_token
        .ok_or_else(|| NoToken::Status {
            status: ConnectionStatus::Failed,
            message: Some("the session holds no access token".into()),
        })?;
    // Recorded (last use and a `credentials_read` event) at most once a minute per
    // session and key: a read must not be a write each time.
    let saved = if broker.reads.due(&session.id, &caller.key_id, "", now) {
        let mut used = session.clone();
        used.last_used_at = Some(now);
        let saved = match broker
            .store
            .save_obo_session(&used, SecretWrites::default())
            .await
        {
            Ok(s) => s,
            Err(_) => session.clone(), // a concurrent refresh won the row: the token is still good
        };
        broker
            .store
            .insert_events(vec![session_event(
                &saved,
                &saved.connection_id,
                EventKind::CredentialsRead,
                &caller.name,
                now,
                "credentials read",
            )])
            .await?;
        saved
    } else {
        session
    };
    // The org whose connection served it (GLOBAL's, for an org without its own).
    let served_by = broker
        .store
        .get_connection_by_id(&saved.connection_id)
        .await?
        .map(|c| c.org_id)
        .unwrap_or_else(|| saved.org_id.clone());
    Ok((saved, served_by, token))
}

/// Refreshes a session's token so that it stays valid `min_valid` more: single flight
/// in this process, a lease across replicas. A caller that joined a refresh started
/// for a shorter need starts its own after it, as connection refreshes do
/// (`refresh::refresh`). `Ok((session, true))` when this caller's refresh called the
/// provider.
pub async fn refresh_session(
    broker: &Arc<Broker>,
    id: &str,
    min_valid: Duration,
) -> SessionOutcome {
    loop {
        let leader = broker.clone();
        let owned_id = id.to_owned();
        let (outcome, led) = broker
            .obo
            .sessions
            .run(id, move || async move {
                refresh_session_leased(&leader, &owned_id, min_valid).await
            })
            .await;
        match outcome {
            Ok((session, called)) if led => return Ok((session, called)),
            Ok((session, _)) if fresh_for(&session, broker.clock.now(), min_valid) => {
                return Ok((session, false));
            }
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn fresh_for(session: &OboSession, now: DateTime<Utc>, min_valid: Duration) -> bool {
    session
        .token_expires_at
        .is_some_and(|at| at > now + min_valid)
}

async fn refresh_session_leased(
    broker: &Arc<Broker>,
    id: &str,
    min_valid: Duration,
) -> SessionOutcome {
    with_lease(
        broker,
        Leased::OboSession,
        id,
        || refresh_session_holding_lease(broker, id, min_valid),
        || async {
            let session = broker.store.get_obo_session(id).await.map_err(|e| {
                tracing::error!(error = %e, "store failure during a session refresh");
                NoToken::Internal(e.to_string())
            })?;
            Ok(session
                .filter(|s| fresh_for(s, broker.clock.now(), min_valid))
                .map(|s| (Arc::new(s), false)))
        },
    )
    .await
}

async fn refresh_session_holding_lease(
    broker: &Arc<Broker>,
    id: &str,
    min_valid: Duration,
) -> SessionOutcome {
    let internal = |e: crate::store::StoreError| NoToken::Internal(e.to_string());
    let Some(session) = broker.store.get_obo_session(id).await.map_err(internal)? else {
        return Err(NoToken::Internal("the session disappeared".into()));
    };
    if fresh_for(&session, broker.clock.now(), min_valid) || session.status != "active" {
        return Ok((Arc::new(session), false));
    }
    let Some(conn) = broker
        .store
        .get_connection_by_id(&session.connection_id)
        .await
        .map_err(internal)?
    else {
        return Err(NoToken::Internal(
            "the session's connection was deleted".into(),
        ));
    };
    let secrets = broker.store.open_secrets(&conn).map_err(internal)?;
    let tokens = session
        .open_tokens(broker.store.keyring())
        .map_err(|e| internal(e.into()))?;
    let Some(refresh_token) = tokens.refresh_token else {
        return Err(NoToken::Internal(
            "the session holds no refresh token".into(),
        ));
    };
    let result = broker
        .provider
        .refresh_with_scopes(&conn, &secrets, &refresh_token, &session.scopes)
        .await;
    let now = broker.clock.now();
    let mut next = session.clone();
    let (writes, event) = match result {
        Ok(tokens) => {
            let token = to_token(
                &tokens,
                now,
                broker.settings.default_token_lifetime_seconds,
                &session.scopes,
            );
            next.token_type = Some(token.token_type.clone());
            next.token_expires_at = Some(token.expires_at);
            let writes = SecretWrites {
                access_token: SecretWrite::Set(token.access_token.clone()),
                refresh_token: tokens
                    .refresh_token
                    .map(SecretWrite::Set)
                    .unwrap_or_default(),
                ..Default::default()
            };
            (
                writes,
                session_event(
                    &session,
                    &conn.id,
                    EventKind::Refreshed,
                    "refresher",
                    now,
                    "refreshed",
                ),
            )
        }
        Err(ProviderError::Permanent { code, description }) => {
            next.status = "failed".into();
            next.status_message = Some(format!(
                "the user's grant was revoked or expired upstream ({code}{})",
                description.map(|d| format!(": {d}")).unwrap_or_default()
            ));
            let event = session_event(
                &session,
                &conn.id,
                EventKind::RefreshFailed,
                "refresher",
                now,
                &code,
            );
            broker
                .store
                .insert_events(vec![event])
                .await
                .map_err(internal)?;
            let saved = broker
                .store
                .save_obo_session(&next, SecretWrites::default())
                .await
                .map_err(internal)?;
            return Err(NoToken::ProviderFailed {
                status: ConnectionStatus::Failed,
                message: saved.status_message.unwrap_or_default(),
            });
        }
        Err(ProviderError::Transient { reason, .. }) => {
            return Err(NoToken::ProviderFailed {
                status: ConnectionStatus::Completed,
                message: format!("the provider is failing: {reason}"),
            });
        }
    };
    let saved = broker
        .store
        .save_obo_session(&next, writes)
        .await
        .map_err(internal)?;
    broker
        .store
        .insert_events(vec![event])
        .await
        .map_err(internal)?;
    Ok((Arc::new(saved), true))
}

pub async fn revoke_session(broker: &Broker, caller: &Caller, org: &OrgId, id: &str) -> Result<()> {
    let session = get_session(broker, caller, org, id).await?;
    if session.revoked_at.is_some() {
        return Err(Error::Gone("the session was already revoked".into()));
    }
    let now = broker.clock.now();
    let mut next = session.clone();
    next.revoked_at = Some(now);
    next.token_expires_at = None;
    let writes = SecretWrites {
        access_token: SecretWrite::Clear,
        refresh_token: SecretWrite::Clear,
        ..Default::default()
    };
    let saved = broker.store.save_obo_session(&next, writes).await?;
    broker
        .store
        .insert_events(vec![session_event(
            &saved,
            &saved.connection_id,
            EventKind::StatusChanged,
            &caller.name,
            now,
            "revoked",
        )])
        .await?;
    Ok(())
}

/// A page of the org's sessions (of one connection, when named) that `caller` may use:
/// all of them for an admin, else those its key created.
pub async fn list_sessions(
    broker: &Broker,
    caller: &Caller,
    org: &OrgId,
    connection_name: Option<&ConnectionName>,
    page: &crate::domain::PageRequest<String>,
) -> Result<crate::domain::Page<OboSession>> {
    let own = (!caller.is_admin()).then_some(caller.key_id.as_str());
    Ok(broker
        .store
        .list_obo_sessions(org, connection_name, own, page)
        .await?)
}

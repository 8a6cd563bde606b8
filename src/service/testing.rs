//! The connection test: a token (obtained through the same single flight and lease as
//! every refresh), then a GET of `test_url` with it. Ends an authorization (the callback
//! settles `testing` into `completed` or `failed`) and answers `POST /connections/{name}/test`.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use secrecy::SecretString;

use super::grants::status_event;
use super::refresh::{Need, refresh};
use super::{Broker, NoToken, Result};
use crate::domain::{
    Connection, ConnectionName, ConnectionStatus, EventKind, NewEvent, OrgId, SecretWrites,
};
use crate::store::StoreError;

/// A token that expires sooner than this is renewed before the test uses it.
const TOKEN_MARGIN_SECONDS: i64 = 30;

fn describe(e: &NoToken) -> String {
    match e {
        NoToken::Status { message, .. } => message.clone().unwrap_or_else(|| e.to_string()),
        NoToken::ProviderFailed { message, .. } => message.clone(),
        NoToken::Busy | NoToken::Internal(_) => e.to_string(),
    }
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
    broker: &Arc<Broker>,
    conn: &Connection,
    actor: &str,
    settle: Option<ConnectionStatus>,
) -> Result<(Connection, TestOutcome), StoreError> {
    let mut conn = conn.clone();
    let mut failure: Option<String> = None;
    let need = Need {
        any_status: true,
        ..Need::valid_for(Duration::seconds(TOKEN_MARGIN_SECONDS))
    };
    if !need.met_by(&conn, broker.clock.now()) {
        // Through the refreshes' single flight and lease like every use of the grant.
        match refresh(broker, &conn.id, need, actor).await {
            Ok(r) => conn = (*r.connection).clone(),
            Err(e) => {
                failure = Some(format!("could not obtain a token: {}", describe(&e)));
                conn = broker
                    .store
                    .get_connection_by_id(&conn.id)
                    .await?
                    .unwrap_or(conn);
            }
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

/// `POST /connections/{name}/test`.
pub async fn test_connection(
    broker: &Arc<Broker>,
    org: &OrgId,
    name: &ConnectionName,
    actor: &str,
) -> Result<TestOutcome> {
    let conn = super::connections::get(broker, org, name).await?;
    let (_, outcome) = test(broker, &conn, actor, None).await?;
    Ok(outcome)
}

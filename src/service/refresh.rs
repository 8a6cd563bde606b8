//! Fresh tokens on demand, one provider call however many callers: callers for one
//! connection in this process share one refresh (single flight), and replicas sharing
//! the database take a lease on the row before calling the provider, re-checking the
//! row once they hold it (another replica may just have refreshed).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};

use super::grants::{self, GrantError};
use super::{Broker, FlightOutcome, NoToken};
use crate::domain::{Connection, ConnectionName, ConnectionStatus, EventKind, OrgId};
use crate::store::Leased;

/// How long a lease protects a refresh: longer than the provider call can take.
pub const LEASE_SECONDS: i64 = 60;
/// How long a caller waits for another replica's refresh before answering `busy`.
pub const WAIT_FOR_OTHER_REPLICA: StdDuration = StdDuration::from_secs(15);
const POLL_INTERVAL: StdDuration = StdDuration::from_millis(100);

pub type Outcome = Result<Arc<Connection>, NoToken>;

fn unavailable(conn: &Connection) -> NoToken {
    NoToken::Status {
        status: conn.status,
        message: conn.status_message.clone().or_else(|| {
            Some(match conn.status {
                ConnectionStatus::NotConnected => {
                    "the connection is not connected: authorize it".into()
                }
                ConnectionStatus::WaitingCallback => {
                    "waiting for the authorization callback".into()
                }
                ConnectionStatus::Testing => "the connection is being tested".into(),
                ConnectionStatus::Failed => "the connection failed".into(),
                ConnectionStatus::Completed => "the token expired and could not be renewed".into(),
            })
        }),
    }
}

/// Returns the connection with a token valid for `min_valid` more, refreshing it first
/// if needed.
pub async fn ensure_fresh(
    broker: &Arc<Broker>,
    conn: Arc<Connection>,
    min_valid: Duration,
    actor: &'static str,
) -> Outcome {
    let now = broker.clock.now();
    if conn.has_fresh_token(now, min_valid) {
        return Ok(conn);
    }
    let still_valid = conn.has_fresh_token(now, Duration::zero());
    if conn.status != ConnectionStatus::Completed || !conn.renewable() {
        return Err(unavailable(&conn));
    }
    if conn.next_refresh_attempt_at.is_some_and(|at| at > now) {
        // Cooling down after a transient failure: do not hammer a failing provider.
        return if still_valid {
            Ok(conn)
        } else {
            Err(NoToken::Status {
                status: conn.status,
                message: Some(
                    "the provider is failing; the next refresh attempt is after a short cooldown"
                        .into(),
                ),
            })
        };
    }
    let outcome = single_flight(broker, &conn.id, min_valid, None, actor)
        .await
        .map(|(fresh, _)| fresh);
    match outcome {
        Ok(fresh) if fresh.has_fresh_token(broker.clock.now(), Duration::zero()) => Ok(fresh),
        Ok(fresh) => Err(unavailable(&fresh)),
        // A transient failure while the old token is still valid: serve it.
        Err(NoToken::Status { .. }) | Err(NoToken::Busy) if still_valid => Ok(conn),
        Err(e) => Err(e),
    }
}

/// Joins (or leads) the refresh of connection `id`.
pub async fn single_flight(
    broker: &Arc<Broker>,
    id: &str,
    min_valid: Duration,
    refreshed_since: Option<DateTime<Utc>>,
    actor: &'static str,
) -> FlightOutcome {
    let broker2 = broker.clone();
    let id2 = id.to_owned();
    broker
        .refreshes
        .run(id, move || async move {
            refresh_with_lease(&broker2, &id2, min_valid, refreshed_since, actor).await
        })
        .await
}

fn done_already(
    conn: &Connection,
    now: DateTime<Utc>,
    min_valid: Duration,
    since: Option<DateTime<Utc>>,
) -> bool {
    conn.has_fresh_token(now, min_valid)
        || since.is_some_and(|s| {
            conn.last_refresh_at.is_some_and(|at| at >= s)
                && conn.has_fresh_token(now, Duration::zero())
        })
}

/// Takes the row's lease, re-checks, refreshes, releases; or waits for the replica that
/// holds the lease, up to `WAIT_FOR_OTHER_REPLICA`.
async fn refresh_with_lease(
    broker: &Arc<Broker>,
    id: &str,
    min_valid: Duration,
    refreshed_since: Option<DateTime<Utc>>,
    actor: &'static str,
) -> FlightOutcome {
    with_lease(
        broker,
        Leased::Connection,
        id,
        || refresh_holding_lease(broker, id, min_valid, refreshed_since, actor),
        || async {
            let Some(conn) = broker
                .store
                .get_connection_by_id(id)
                .await
                .map_err(store_failure)?
            else {
                return Err(NoToken::Status {
                    status: ConnectionStatus::NotConnected,
                    message: Some("the connection was deleted".into()),
                });
            };
            if done_already(&conn, broker.clock.now(), min_valid, refreshed_since) {
                return Ok(Some((Arc::new(conn), false)));
            }
            if conn.status != ConnectionStatus::Completed {
                return Err(unavailable(&conn));
            }
            Ok(None)
        },
    )
    .await
}

fn store_failure(e: crate::store::StoreError) -> NoToken {
    tracing::error!(error = %e, "store failure during a refresh");
    NoToken::Internal(e.to_string())
}

/// Runs `holding` while this process holds the refresh lease of row `id`, so that one
/// replica only calls the provider for it. While another replica holds the lease, polls
/// `waiting` (which re-reads the row: `Some` when the other replica's work answers this
/// caller too) until `WAIT_FOR_OTHER_REPLICA` has passed, then answers `Busy`. A lease
/// this process cannot release expires by itself after `LEASE_SECONDS`.
pub async fn with_lease<T, Held, Wait>(
    broker: &Broker,
    what: Leased,
    id: &str,
    holding: impl FnOnce() -> Held,
    mut waiting: impl FnMut() -> Wait,
) -> Result<T, NoToken>
where
    Held: Future<Output = Result<T, NoToken>>,
    Wait: Future<Output = Result<Option<T>, NoToken>>,
{
    let owner = format!("{}:{}", broker.replica_id, uuid::Uuid::new_v4().simple());
    let deadline = Instant::now() + WAIT_FOR_OTHER_REPLICA;
    loop {
        let now = broker.clock.now();
        let leased = broker
            .store
            .try_lease(
                what,
                id,
                &owner,
                now,
                now + Duration::seconds(LEASE_SECONDS),
            )
            .await
            .map_err(store_failure)?;
        if leased {
            let result = holding().await;
            if let Err(e) = broker.store.release_lease(what, id, &owner).await {
                tracing::warn!(error = %e, "could not release a refresh lease");
            }
            return result;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        if let Some(answer) = waiting().await? {
            return Ok(answer);
        }
        if Instant::now() >= deadline {
            return Err(NoToken::Busy);
        }
    }
}

async fn refresh_holding_lease(
    broker: &Arc<Broker>,
    id: &str,
    min_valid: Duration,
    refreshed_since: Option<DateTime<Utc>>,
    actor: &'static str,
) -> FlightOutcome {
    let internal = store_failure;
    // Re-read under the lease: another replica may have refreshed meanwhile.
    let Some(conn) = broker
        .store
        .get_connection_by_id(id)
        .await
        .map_err(internal)?
    else {
        return Err(NoToken::Status {
            status: ConnectionStatus::NotConnected,
            message: Some("the connection was deleted".into()),
        });
    };
    if done_already(&conn, broker.clock.now(), min_valid, refreshed_since) {
        return Ok((Arc::new(conn), false));
    }
    if conn.status != ConnectionStatus::Completed || !conn.renewable() {
        return Err(unavailable(&conn));
    }
    match grants::acquire(broker, &conn, actor, EventKind::Refreshed).await {
        Ok(fresh) => Ok((Arc::new(fresh), true)),
        Err(GrantError::Provider(e)) => Err(NoToken::Status {
            status: if e.is_permanent() {
                ConnectionStatus::Failed
            } else {
                conn.status
            },
            message: Some(e.to_string()),
        }),
        Err(GrantError::Store(e)) => Err(internal(e)),
    }
}

/// A forced refresh of connection `name` (`POST /connections/{name}/refresh`).
pub async fn force_refresh(
    broker: &Broker,
    org: &OrgId,
    name: &ConnectionName,
    actor: &str,
) -> super::Result<Connection> {
    let conn = super::connections::get(broker, org, name).await?;
    if !conn.renewable() {
        return Err(super::Error::Conflict(
            "the connection has no grant to refresh: authorize it (or import a refresh token) first".into(),
        ));
    }
    match grants::acquire(broker, &conn, actor, EventKind::Refreshed).await {
        Ok(conn) => Ok(conn),
        Err(GrantError::Provider(e)) => Err(super::Error::Provider(format!(
            "the provider refused the refresh: {e}"
        ))),
        Err(GrantError::Store(e)) => Err(e.into()),
    }
}

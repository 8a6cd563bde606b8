//! Fresh tokens on demand, one provider call however many callers: callers for one
//! connection in this process share one refresh (single flight), and replicas sharing
//! the database take a lease on the row before calling the provider, re-checking the
//! row once they hold it (another replica may just have refreshed).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::domain::Connection;
use crate::domain::{ConnectionStatus, EventKind, FlowType};
use crate::service::grants::{self, GrantError, has_fresh_token};
use crate::state::AppState;
use crate::store::Leased;

/// How long a lease protects a refresh: longer than the provider call can take.
pub const LEASE_SECONDS: i64 = 60;
/// How long a caller waits for another replica's refresh before answering `busy`.
pub const WAIT_FOR_OTHER_REPLICA: StdDuration = StdDuration::from_secs(15);
const POLL_INTERVAL: StdDuration = StdDuration::from_millis(100);

/// Why no token could be given.
#[derive(Debug, Clone, PartialEq)]
pub enum Unavailable {
    /// The connection cannot give a token now (`connection_unavailable`).
    Status {
        status: ConnectionStatus,
        message: Option<String>,
    },
    /// Another replica holds the refresh and did not finish in time.
    Busy,
    /// A database failure (logged where it happened).
    Internal(String),
}

pub type Outcome = Result<Arc<Connection>, Unavailable>;
/// A refresh's result, and whether this refresh is the one that called the provider.
pub type FlightOutcome = Result<(Arc<Connection>, bool), Unavailable>;

/// In-process single flight: concurrent callers for one key share one execution.
pub struct SingleFlight<T> {
    inflight: Arc<Mutex<HashMap<String, Shared<BoxFuture<'static, T>>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Runs `work` for `key` unless it is already running, then every caller gets its result.
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F) -> T
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let future = {
            let mut inflight = self.inflight.lock().expect("single flight lock");
            if let Some(existing) = inflight.get(key) {
                existing.clone()
            } else {
                let map = self.inflight.clone();
                let owned_key = key.to_owned();
                let work = work();
                let future = async move {
                    let result = work.await;
                    map.lock().expect("single flight lock").remove(&owned_key);
                    result
                }
                .boxed()
                .shared();
                inflight.insert(key.to_owned(), future.clone());
                future
            }
        };
        future.await
    }
}

/// Whether this connection's grant can be renewed without a person.
pub fn renewable(conn: &Connection) -> bool {
    match conn.config.flow_type {
        FlowType::ClientCredentials => true,
        FlowType::AuthorizationCode | FlowType::RefreshToken => conn.has_refresh_token(),
        FlowType::OnBehalfOf => false,
    }
}

fn unavailable(conn: &Connection) -> Unavailable {
    Unavailable::Status {
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
    state: Arc<AppState>,
    conn: Arc<Connection>,
    min_valid: Duration,
    actor: &'static str,
) -> Outcome {
    let now = state.clock.now();
    if has_fresh_token(&conn, now, min_valid) {
        return Ok(conn);
    }
    let still_valid = has_fresh_token(&conn, now, Duration::zero());
    if conn.status != ConnectionStatus::Completed || !renewable(&conn) {
        return Err(unavailable(&conn));
    }
    if conn.next_refresh_attempt_at.is_some_and(|at| at > now) {
        // Cooling down after a transient failure: do not hammer a failing provider.
        return if still_valid {
            Ok(conn)
        } else {
            Err(Unavailable::Status {
                status: conn.status,
                message: Some(
                    "the provider is failing; the next refresh attempt is after a short cooldown"
                        .into(),
                ),
            })
        };
    }
    let outcome = single_flight(&state, &conn.id, min_valid, None, actor)
        .await
        .map(|(fresh, _)| fresh);
    match outcome {
        Ok(fresh) if has_fresh_token(&fresh, state.clock.now(), Duration::zero()) => Ok(fresh),
        Ok(fresh) => Err(unavailable(&fresh)),
        // A transient failure while the old token is still valid: serve it.
        Err(Unavailable::Status { .. }) | Err(Unavailable::Busy) if still_valid => Ok(conn),
        Err(e) => Err(e),
    }
}

/// Joins (or leads) the refresh of connection `id`.
pub async fn single_flight(
    state: &Arc<AppState>,
    id: &str,
    min_valid: Duration,
    refreshed_since: Option<DateTime<Utc>>,
    actor: &'static str,
) -> FlightOutcome {
    let state2 = state.clone();
    let id2 = id.to_owned();
    state
        .refreshes
        .run(id, move || async move {
            refresh_with_lease(&state2, &id2, min_valid, refreshed_since, actor).await
        })
        .await
}

fn done_already(
    conn: &Connection,
    now: DateTime<Utc>,
    min_valid: Duration,
    since: Option<DateTime<Utc>>,
) -> bool {
    has_fresh_token(conn, now, min_valid)
        || since.is_some_and(|s| {
            conn.last_refresh_at.is_some_and(|at| at >= s)
                && has_fresh_token(conn, now, Duration::zero())
        })
}

/// Takes the row's lease, re-checks, refreshes, releases; or waits for the replica that
/// holds the lease, up to `WAIT_FOR_OTHER_REPLICA`.
async fn refresh_with_lease(
    state: &Arc<AppState>,
    id: &str,
    min_valid: Duration,
    refreshed_since: Option<DateTime<Utc>>,
    actor: &'static str,
) -> FlightOutcome {
    with_lease(
        state,
        Leased::Connection,
        id,
        || refresh_holding_lease(state, id, min_valid, refreshed_since, actor),
        || async {
            let Some(conn) = state
                .store
                .get_connection_by_id(id)
                .await
                .map_err(store_failure)?
            else {
                return Err(Unavailable::Status {
                    status: ConnectionStatus::NotConnected,
                    message: Some("the connection was deleted".into()),
                });
            };
            if done_already(&conn, state.clock.now(), min_valid, refreshed_since) {
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

fn store_failure(e: crate::store::StoreError) -> Unavailable {
    tracing::error!(error = %e, "store failure during a refresh");
    Unavailable::Internal(e.to_string())
}

/// Runs `holding` while this process holds the refresh lease of row `id`, so that one
/// replica only calls the provider for it. While another replica holds the lease, polls
/// `waiting` (which re-reads the row: `Some` when the other replica's work answers this
/// caller too) until `WAIT_FOR_OTHER_REPLICA` has passed, then answers `Busy`. A lease
/// this process cannot release expires by itself after `LEASE_SECONDS`.
pub async fn with_lease<T, Held, Wait>(
    state: &AppState,
    what: Leased,
    id: &str,
    holding: impl FnOnce() -> Held,
    mut waiting: impl FnMut() -> Wait,
) -> Result<T, Unavailable>
where
    Held: Future<Output = Result<T, Unavailable>>,
    Wait: Future<Output = Result<Option<T>, Unavailable>>,
{
    let owner = format!("{}:{}", state.replica_id, uuid::Uuid::new_v4().simple());
    let deadline = Instant::now() + WAIT_FOR_OTHER_REPLICA;
    loop {
        let now = state.clock.now();
        let leased = state
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
            if let Err(e) = state.store.release_lease(what, id, &owner).await {
                tracing::warn!(error = %e, "could not release a refresh lease");
            }
            return result;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        if let Some(answer) = waiting().await? {
            return Ok(answer);
        }
        if Instant::now() >= deadline {
            return Err(Unavailable::Busy);
        }
    }
}

async fn refresh_holding_lease(
    state: &Arc<AppState>,
    id: &str,
    min_valid: Duration,
    refreshed_since: Option<DateTime<Utc>>,
    actor: &'static str,
) -> FlightOutcome {
    let internal = store_failure;
    // Re-read under the lease: another replica may have refreshed meanwhile.
    let Some(conn) = state
        .store
        .get_connection_by_id(id)
        .await
        .map_err(internal)?
    else {
        return Err(Unavailable::Status {
            status: ConnectionStatus::NotConnected,
            message: Some("the connection was deleted".into()),
        });
    };
    if done_already(&conn, state.clock.now(), min_valid, refreshed_since) {
        return Ok((Arc::new(conn), false));
    }
    if conn.status != ConnectionStatus::Completed || !renewable(&conn) {
        return Err(unavailable(&conn));
    }
    match grants::acquire(state, &conn, actor, EventKind::Refreshed).await {
        Ok(fresh) => Ok((Arc::new(fresh), true)),
        Err(GrantError::Provider(e)) => Err(Unavailable::Status {
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

//! Every use of a connection's refresh token goes through here: on-demand refreshes of
//! the credentials endpoint, the refresher's runs, forced refreshes and connection
//! tests. One provider call however many callers:
//!
//! - in one process, callers for one connection share one refresh (single flight);
//! - across replicas sharing the database, the refresh holds a lease on the row and
//!   re-reads it once it holds it (another replica may just have refreshed);
//! - each caller states its own `Need`, and judges the shared outcome by it: a caller
//!   that joined a refresh started for someone else's need, whose outcome does not meet
//!   its own, starts one of its own right after. A refresh token that a provider
//!   rotates is therefore never sent twice (RFC 9700 4.14.2: a reused rotated token
//!   may revoke the whole grant), and nobody is answered with less than it asked for.

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
/// How many shared refreshes a caller joins or leads before it takes what it has.
const MAX_FLIGHTS: usize = 3;

/// What a caller needs of a connection's token. Met when either condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The token stays valid at least this long.
    pub fresh_for: Option<Duration>,
    /// A refresh finished since this instant, and its token is still valid.
    pub refreshed_since: Option<DateTime<Utc>>,
    /// Whether a refresh that finished at that very instant counts: it does for a run's
    /// cycle (the tick's instant belongs to the cycle), not for a forced refresh (a
    /// refresh that finished as the force arrived began before it).
    pub since_inclusive: bool,
    /// Refresh whatever the connection's status: an admin's explicit action may revive
    /// a failed connection. Reads and the refresher only refresh `completed` ones.
    pub any_status: bool,
}

impl Need {
    /// A token valid for `min_valid` more (the credentials endpoint).
    pub fn valid_for(min_valid: Duration) -> Self {
        Self {
            fresh_for: Some(min_valid),
            refreshed_since: None,
            since_inclusive: false,
            any_status: false,
        }
    }

    /// A token obtained after `since` (a forced refresh asked for at `since`: it joins
    /// a refresh in flight that finishes after it was asked for).
    pub fn refreshed_after(since: DateTime<Utc>) -> Self {
        Self {
            fresh_for: None,
            refreshed_since: Some(since),
            since_inclusive: false,
            any_status: true,
        }
    }

    /// A refresher run's need: valid for the threshold, unless the connection was
    /// refreshed since the run's cycle began (by any replica).
    pub fn for_run(threshold: Duration, cycle_began: DateTime<Utc>) -> Self {
        Self {
            fresh_for: Some(threshold),
            refreshed_since: Some(cycle_began),
            since_inclusive: true,
            any_status: false,
        }
    }

    pub fn met_by(&self, conn: &Connection, now: DateTime<Utc>) -> bool {
        self.fresh_for.is_some_and(|d| conn.has_fresh_token(now, d))
            || self.refreshed_since.is_some_and(|since| {
                conn.last_refresh_at
                    .is_some_and(|at| at > since || (self.since_inclusive && at == since))
                    && conn.has_fresh_token(now, Duration::zero())
            })
    }
}

/// What a refresh gave a caller.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub connection: Arc<Connection>,
    /// A refresh this caller led called the provider (so a run counts a refresh once,
    /// by the run that made it).
    pub called_provider: bool,
}

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
/// if needed. When even a new token lives shorter than `min_valid` (the provider's
/// tokens are short), the new token is served: it is the longest-lived one there is.
pub async fn ensure_fresh(
    broker: &Arc<Broker>,
    conn: Arc<Connection>,
    min_valid: Duration,
    actor: &'static str,
) -> Result<Arc<Connection>, NoToken> {
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
    match refresh(broker, &conn.id, Need::valid_for(min_valid), actor).await {
        Ok(r)
            if r.connection
                .has_fresh_token(broker.clock.now(), Duration::zero()) =>
        {
            Ok(r.connection)
        }
        Ok(r) => Err(unavailable(&r.connection)),
        // A transient failure while the old token is still valid: serve it.
        Err(NoToken::ProviderFailed { .. }) | Err(NoToken::Busy) if still_valid => Ok(conn),
        Err(e) => Err(e),
    }
}

/// Refreshes connection `id` as `need` requires: joins the refresh in flight in this
/// process, or leads one (under the row's lease), and starts its own when the one it
/// joined was for another need and does not meet this one.
pub async fn refresh(
    broker: &Arc<Broker>,
    id: &str,
    need: Need,
    actor: &str,
) -> Result<Refreshed, NoToken> {
    let mut flights = 0;
    loop {
        flights += 1;
        let leader = broker.clone();
        let owned_id = id.to_owned();
        let actor = actor.to_owned();
        let (outcome, led) = broker
            .refreshes
            .run(id, move || async move {
                refresh_with_lease(&leader, &owned_id, need, &actor).await
            })
            .await;
        let last_chance = flights >= MAX_FLIGHTS;
        match outcome {
            Ok((connection, called)) if led => {
                return Ok(Refreshed {
                    connection,
                    called_provider: called,
                });
            }
            Ok((connection, _)) if last_chance || need.met_by(&connection, broker.clock.now()) => {
                return Ok(Refreshed {
                    connection,
                    called_provider: false,
                });
            }
            // A refresh for another need whose outcome does not meet ours: ours next.
            Ok(_) => continue,
            // Someone else's refresh refused a status our need does not mind.
            Err(NoToken::Status { .. }) if !led && need.any_status && !last_chance => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Takes the row's lease, re-checks, refreshes, releases; or waits for the replica that
/// holds the lease, up to `WAIT_FOR_OTHER_REPLICA`.
async fn refresh_with_lease(
    broker: &Arc<Broker>,
    id: &str,
    need: Need,
    actor: &str,
) -> FlightOutcome {
    with_lease(
        broker,
        Leased::Connection,
        id,
        || refresh_holding_lease(broker, id, need, actor),
        || async {
            let conn = read(broker, id).await?;
            if need.met_by(&conn, broker.clock.now()) {
                return Ok(Some((Arc::new(conn), false)));
            }
            if conn.status != ConnectionStatus::Completed && !need.any_status {
                return Err(unavailable(&conn));
            }
            Ok(None)
        },
    )
    .await
}

async fn read(broker: &Broker, id: &str) -> Result<Connection, NoToken> {
    broker
        .store
        .get_connection_by_id(id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| NoToken::Status {
            status: ConnectionStatus::NotConnected,
            message: Some("the connection was deleted".into()),
        })
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
    need: Need,
    actor: &str,
) -> FlightOutcome {
    // Re-read under the lease: another replica may have refreshed meanwhile.
    let conn = read(broker, id).await?;
    if need.met_by(&conn, broker.clock.now()) {
        return Ok((Arc::new(conn), false));
    }
    if (conn.status != ConnectionStatus::Completed && !need.any_status) || !conn.renewable() {
        return Err(unavailable(&conn));
    }
    match grants::acquire(broker, &conn, actor, EventKind::Refreshed).await {
        Ok(fresh) => Ok((Arc::new(fresh), true)),
        Err(GrantError::Provider(e)) => Err(NoToken::ProviderFailed {
            status: if e.is_permanent() {
                ConnectionStatus::Failed
            } else {
                conn.status
            },
            message: e.to_string(),
        }),
        Err(GrantError::Store(e)) => Err(store_failure(e)),
    }
}

/// A forced refresh of connection `name` (`POST /connections/{name}/refresh`): a token
/// obtained after the request arrived. It joins a refresh in flight (whose token is that
/// new) or waits for the replica holding the lease, rather than racing either.
pub async fn force_refresh(
    broker: &Arc<Broker>,
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
    let asked_at = broker.clock.now();
    match refresh(broker, &conn.id, Need::refreshed_after(asked_at), actor).await {
        Ok(r) => Ok((*r.connection).clone()),
        Err(NoToken::ProviderFailed { message, .. }) => Err(super::Error::Provider(format!(
            "the provider refused the refresh: {message}"
        ))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionConfig, FlowType, OrgId, Sealed, TokenAuthMethod};
    use chrono::TimeZone;

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 9, 0, 0).unwrap() + Duration::minutes(minutes)
    }

    /// A completed connection whose token was obtained at `refreshed` and expires at
    /// `expires`.
    fn connection(refreshed: i64, expires: i64) -> Connection {
        Connection {
            id: "c1".into(),
            org_id: OrgId::global(),
            name: ConnectionName::parse("graph").unwrap(),
            config: ConnectionConfig {
                flow_type: FlowType::ClientCredentials,
                client_id: "client".into(),
                authorization_url: None,
                token_url: "https://login.example.com/token".into(),
                scopes: vec![],
                token_auth_method: TokenAuthMethod::ClientSecretBasic,
                extra_authorization_params: Default::default(),
                extra_token_params: Default::default(),
                test_url: None,
                obo_grant: None,
                assertion_validation: None,
            },
            status: ConnectionStatus::Completed,
            status_message: None,
            token_type: Some("Bearer".into()),
            token_expires_at: Some(at(expires)),
            token_scopes: None,
            last_refresh_at: Some(at(refreshed)),
            last_test_at: None,
            refresh_failures: 0,
            next_refresh_attempt_at: None,
            created_at: at(-60),
            created_by: "test".into(),
            updated_at: at(refreshed),
            version: 1,
            sealed: Sealed {
                access_token: Some("sealed".into()),
                ..Sealed::default()
            },
        }
    }

    #[test]
    fn a_caller_needs_its_own_minimum_validity() {
        // Refreshed at 9:00, expires at 9:10; it is 9:08.
        let conn = connection(0, 10);
        let now = at(8);
        assert!(Need::valid_for(Duration::seconds(60)).met_by(&conn, now));
        assert!(
            !Need::valid_for(Duration::seconds(121)).met_by(&conn, now),
            "119 s left do not meet a need of 121 s"
        );
    }

    #[test]
    fn a_run_skips_what_was_refreshed_since_its_cycle_began_and_nothing_older() {
        // Expires at 9:30, threshold 4 h: due by validity alone.
        let conn = connection(5, 30);
        let threshold = Duration::hours(4);
        assert!(
            Need::for_run(threshold, at(4)).met_by(&conn, at(6)),
            "refreshed after the cycle began: skipped"
        );
        assert!(
            !Need::for_run(threshold, at(6)).met_by(&conn, at(6)),
            "refreshed a minute before the cycle began: refreshed again"
        );
        assert!(
            Need::for_run(threshold, at(5)).met_by(&conn, at(6)),
            "refreshed as the cycle began: skipped"
        );
    }

    #[test]
    fn a_forced_refresh_is_met_only_by_a_token_obtained_after_it_was_asked_for() {
        let conn = connection(0, 60);
        assert!(
            !Need::refreshed_after(at(1)).met_by(&conn, at(1)),
            "a token from before"
        );
        assert!(
            !Need::refreshed_after(at(0)).met_by(&conn, at(1)),
            "a token from a refresh that finished as it was asked for began before"
        );
        assert!(
            Need::refreshed_after(at(-1)).met_by(&conn, at(1)),
            "a token from after"
        );
        assert!(
            !Need::refreshed_after(at(-1)).met_by(&connection(0, 1), at(2)),
            "a new token that has expired does not count"
        );
    }

    #[test]
    fn a_token_without_an_access_token_meets_nothing() {
        let mut conn = connection(0, 60);
        conn.sealed.access_token = None;
        assert!(!Need::valid_for(Duration::zero()).met_by(&conn, at(1)));
        assert!(!Need::refreshed_after(at(-1)).met_by(&conn, at(1)));
    }

    mod flights {
        use std::pin::pin;

        use super::*;
        use crate::clock::Clock;
        use crate::service::test_support::{client_credentials, numbered_tokens, test_broker};

        /// Calls to `server` so far.
        async fn calls(server: &wiremock::MockServer) -> usize {
            server.received_requests().await.unwrap_or_default().len()
        }

        #[tokio::test]
        async fn a_caller_that_joins_a_run_s_skip_still_gets_a_token_that_lasts_as_long_as_it_asked()
         {
            // Arrange: a connection refreshed at 09:05 with a 600 s token; at 09:13:20 it
            // has 100 s left. A run of the cycle that began at 09:00 has nothing to do.
            let t = test_broker().await;
            let server = numbered_tokens("cc", 600).await;
            let conn =
                client_credentials(&t.broker, "graph", &format!("{}/token", server.uri())).await;
            t.clock.advance(Duration::minutes(5));
            let refreshed = refresh(
                &t.broker,
                &conn.id,
                Need::valid_for(Duration::seconds(400)),
                "test",
            )
            .await
            .unwrap();
            assert!(refreshed.called_provider);
            t.clock.advance(Duration::seconds(500));
            let cycle_began = t.clock.now() - Duration::seconds(800);

            // Act: the run leads a flight; a caller asking 200 s joins it before it runs.
            // The test runs on one thread: the run's flight is registered on its first
            // poll, and its task cannot run before the next await.
            let conn = Arc::new(
                t.broker
                    .store
                    .get_connection_by_id(&conn.id)
                    .await
                    .unwrap()
                    .unwrap(),
            );
            let id = conn.id.clone();
            let mut run = pin!(refresh(
                &t.broker,
                &id,
                Need::for_run(Duration::hours(4), cycle_began),
                "refresher",
            ));
            assert!(futures::poll!(&mut run).is_pending());
            let caller = ensure_fresh(&t.broker, conn, Duration::seconds(200), "credentials");
            let (run, served) = futures::future::join(run, caller).await;

            // Assert: the run skipped; the caller got a new token, not the run's verdict.
            let run = run.unwrap();
            assert!(!run.called_provider, "the run had nothing to do");
            let served = served.unwrap();
            let left = served.token_expires_at.unwrap() - t.clock.now();
            assert!(
                left >= Duration::seconds(200),
                "the caller asked 200 s and got {left}"
            );
            assert_eq!(
                calls(&server).await,
                3,
                "creation, the 09:05 refresh, the caller's refresh"
            );
        }

        #[tokio::test]
        async fn a_caller_that_joins_a_refresh_meeting_its_need_makes_no_call_of_its_own() {
            let t = test_broker().await;
            let server = numbered_tokens("cc", 3600).await;
            let conn =
                client_credentials(&t.broker, "graph", &format!("{}/token", server.uri())).await;
            t.clock.advance(Duration::seconds(3500));

            let mut first = pin!(refresh(
                &t.broker,
                &conn.id,
                Need::valid_for(Duration::seconds(300)),
                "a"
            ));
            assert!(futures::poll!(&mut first).is_pending());
            let second = refresh(
                &t.broker,
                &conn.id,
                Need::valid_for(Duration::seconds(60)),
                "b",
            );
            let (first, second) = futures::future::join(first, second).await;

            assert!(
                first.unwrap().called_provider,
                "the leader called the provider"
            );
            assert!(
                !second.unwrap().called_provider,
                "the joiner was served by it"
            );
            assert_eq!(calls(&server).await, 2, "creation and one refresh");
        }
    }
}

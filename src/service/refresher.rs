//! The refresher: on a cron schedule (default every 30 minutes) and once shortly after
//! start, renew every renewable connection of every org whose token expires within the
//! threshold (default 4 hours) or whose expiry is unknown. It pages through connections
//! (memory stays flat), calls providers with bounded concurrency, and uses the same
//! single flight and leases as the credentials endpoint, so it never races a caller or
//! another replica.
//!
//! Each due connection is refreshed once per cycle across replicas: a scheduled run (or
//! the one after start) skips what was refreshed since the cycle's scheduled tick, the
//! same instant on every replica; a run started by hand refreshes everything due that
//! was not refreshed since it began. A run counts only the refreshes it made.
//!
//! A run's record says "running" until the run finishes it. A process that dies mid-run
//! never does, so a run beats a heartbeat on its record while it goes, and a record
//! silent for `SILENT_AFTER` is finished as interrupted (`finish_interrupted`, before
//! each run and whenever the status is read). Its leases lapse by themselves.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use tokio_cron_scheduler::{Job, JobScheduler};

use super::refresh::{Need, refresh};
use super::{Broker, NoToken};
use crate::domain::{RefreshRun, RunError};
use crate::store::{CLAIM_PREFIX, Claim, ClaimPosition};

const PAGE_SIZE: i64 = 500;
/// Connections claimed by one statement; a batch is refreshed before the next is claimed.
const BATCH: i64 = 256;
/// How long a claim holds a batch: as long as a refresh lease, so a dead replica's
/// batch is free again as soon as its leases would be. A claim only reserves: each
/// connection's turn takes the lease and re-reads the row like any refresh, and a caller
/// that needs a claimed connection first takes it (the turn then finds it done).
const CLAIM_SECONDS: i64 = super::refresh::LEASE_SECONDS;
const MAX_RECORDED_ERRORS: usize = 100;
/// How often a run in progress records that its process is alive.
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// A run silent this long (six heartbeats: a slow database or replicas' clocks a few
/// seconds apart are no false alarm) is taken for dead. Should a live run be taken for
/// dead all the same, its own end overwrites the record.
const SILENT_AFTER: Duration = Duration::seconds(30);
const INTERRUPTED: &str = "interrupted: the process running this run stopped before it \
                           finished; connections it did not reach are refreshed by a later run";

/// Holds the "a run is in progress" flag of this process; clears it when dropped.
pub struct RunGuard(Arc<Broker>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.0.refresher.end();
    }
}

/// `None` when a run is already in progress in this process.
pub fn try_begin(broker: &Arc<Broker>) -> Option<RunGuard> {
    broker.refresher.begin().then(|| RunGuard(broker.clone()))
}

/// Starts a run if none is in progress here; `None` if one is.
pub async fn run(broker: Arc<Broker>, trigger: &str) -> Option<RefreshRun> {
    let guard = try_begin(&broker)?;
    Some(run_with(guard, trigger).await)
}

/// The run itself, for a caller that already holds the guard.
pub async fn run_with(guard: RunGuard, trigger: &str) -> RefreshRun {
    let broker = &guard.0;
    let started = broker.clock.now();
    let mut run = RefreshRun {
        id: uuid::Uuid::new_v4().to_string(),
        trigger: trigger.to_owned(),
        owner: broker.replica_id.clone(),
        started_at: started,
        finished_at: None,
        considered: 0,
        refreshed: 0,
        failed: 0,
        skipped: 0,
        errors: Vec::new(),
    };
    finish_interrupted(broker).await;
    if let Err(e) = broker.store.insert_refresh_run(&run).await {
        tracing::error!(error = %e, "could not record the start of a refresher run");
    }
    broker.refresher.show(&run);
    let _heartbeat = Heartbeat::start(broker.clone(), run.id.clone());
    if let Err(e) = broker.store.purge_expired_pending(started).await {
        tracing::warn!(error = %e, "could not purge expired pending authorizations");
    }

    let threshold = Duration::seconds(broker.settings.refresh_threshold_seconds as i64);
    let cycle_began = cycle_began(&broker.settings.refresh_cron, trigger, started);
    let need = Need::for_run(threshold, cycle_began);
    let concurrency = broker.settings.refresh_concurrency.max(1);
    let limits = Limits::new(concurrency, broker.settings.refresh_concurrency_per_host);
    let mut after = ClaimPosition::Start;
    let claim_owner = format!("{CLAIM_PREFIX}{}", broker.replica_id);
    loop {
        // One statement claims a batch: with several replicas each takes its own.
        let now = broker.clock.now();
        let claim = Claim {
            owner: &claim_owner,
            now,
            until: now + Duration::seconds(CLAIM_SECONDS),
            due_before: started + threshold,
            not_refreshed_since: cycle_began,
            after: &after,
            limit: BATCH,
        };
        let batch = match broker.store.claim_due_connections(&claim).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "refresher could not claim due connections");
                run.errors.push(RunError {
                    org_id: "-".into(),
                    connection_name: "-".into(),
                    message: "the database could not be read; the run stopped early".into(),
                });
                break;
            }
        };
        let Some(last) = batch.last() else { break };
        after = ClaimPosition::after(last);
        run.considered += batch.len() as i64;
        let mut results = futures::stream::iter(batch)
            .map(|conn| {
                let limits = &limits;
                async move {
                    let (org, name) = (conn.org_id.clone(), conn.name.clone());
                    // The host's slot first, then the run's: a connection waiting for a
                    // busy provider does not hold a slot another provider could use.
                    let _host = limits.host(&conn.config.token_url).await;
                    let _run = limits.overall().await;
                    let outcome = refresh(broker, &conn.id, need, "refresher").await;
                    (org, name, outcome)
                }
            })
            .buffer_unordered(BATCH as usize);
        while let Some((org, name, outcome)) = results.next().await {
            // Counted once, by the run whose call reached the provider.
            let called = outcome.map(|r| r.called_provider);
            tally(&mut run, called, org.as_str(), || name.to_string());
        }
        if let Err(e) = broker.store.release_claims(&claim_owner).await {
            tracing::warn!(error = %e, "could not release the run's claims (they lapse by themselves)");
        }
        broker.refresher.show(&run);
    }
    refresh_sessions(broker, &mut run, started, threshold, concurrency).await;
    let purged = super::retention::purge_history(broker).await;
    if purged != Default::default() {
        tracing::info!(
            events = purged.events,
            refresh_runs = purged.refresh_runs,
            ended_sessions = purged.ended_sessions,
            "purged history past its retention"
        );
    }
    run.finished_at = Some(broker.clock.now());
    if let Err(e) = broker.store.finish_refresh_run(&run).await {
        tracing::error!(error = %e, "could not record the end of a refresher run");
    }
    tracing::info!(
        trigger,
        considered = run.considered,
        refreshed = run.refreshed,
        failed = run.failed,
        skipped = run.skipped,
        "refresher run finished"
    );
    run
}

/// Keeps long-running on-behalf-of sessions alive.
async fn refresh_sessions(
    broker: &Arc<Broker>,
    run: &mut RefreshRun,
    started: DateTime<Utc>,
    threshold: Duration,
    concurrency: usize,
) {
    let mut after = String::new();
    loop {
        let page = match broker
            .store
            .due_obo_sessions(started + threshold, started, &after, PAGE_SIZE)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "refresher could not read due obo sessions");
                break;
            }
        };
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        run.considered += page.len() as i64;
        let mut results = futures::stream::iter(page)
            .map(|session| async move {
                let outcome = super::obo::refresh_session(broker, &session.id, threshold).await;
                (session, outcome)
            })
            .buffer_unordered(concurrency);
        while let Some((session, outcome)) = results.next().await {
            let called = outcome.map(|(_, called)| called);
            tally(run, called, session.org_id.as_str(), || {
                format!("{} (obo session {})", session.connection_name, session.id)
            });
        }
    }
}

/// How many provider calls a run makes at once: in all, and to each provider host.
struct Limits {
    overall: Arc<tokio::sync::Semaphore>,
    per_host: usize,
    hosts: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl Limits {
    fn new(overall: usize, per_host: usize) -> Self {
        Self {
            overall: Arc::new(tokio::sync::Semaphore::new(overall.max(1))),
            per_host: per_host.max(1),
            hosts: Default::default(),
        }
    }

    async fn overall(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.overall
            .clone()
            .acquire_owned()
            .await
            .expect("the run's semaphore is never closed")
    }

    /// A slot for calls to the server of `url`: its host and port (the whole URL when it
    /// has no host).
    async fn host(&self, url: &str) -> tokio::sync::OwnedSemaphorePermit {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?;
                Some(match u.port_or_known_default() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                })
            })
            .unwrap_or_else(|| url.to_owned());
        let semaphore = self
            .hosts
            .lock()
            .expect("host limits lock")
            .entry(host)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_host)))
            .clone();
        semaphore
            .acquire_owned()
            .await
            .expect("a host's semaphore is never closed")
    }
}

/// When the cycle a run belongs to began. A scheduled run (and the run after start,
/// which catches up a cycle this process may have missed) belongs to the cycle of the
/// latest scheduled tick: the same instant on every replica, so what one replica
/// refreshed in this cycle the others skip. A run started by hand begins its own.
fn cycle_began(cron: &str, trigger: &str, started: DateTime<Utc>) -> DateTime<Utc> {
    if trigger == "manual" {
        return started;
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(cron)
        .ok()
        .and_then(|schedule| schedule.find_previous_occurrence(&started, true).ok())
        .unwrap_or(started)
}

/// Finishes as interrupted the runs whose process stopped before finishing them.
pub async fn finish_interrupted(broker: &Broker) {
    let error = RunError {
        org_id: "-".into(),
        connection_name: "-".into(),
        message: INTERRUPTED.into(),
    };
    match broker
        .store
        .finish_silent_refresh_runs(broker.clock.now() - SILENT_AFTER, &error)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            runs = n,
            "refresher runs left unfinished by a process that stopped were recorded as interrupted"
        ),
        Err(e) => tracing::warn!(error = %e, "could not look for interrupted refresher runs"),
    }
}

/// Beats the run's heartbeat every `HEARTBEAT_EVERY` until dropped (with the run).
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(broker: Arc<Broker>, run_id: String) -> Self {
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                if let Err(e) = broker
                    .store
                    .beat_refresh_run(&run_id, broker.clock.now())
                    .await
                {
                    tracing::warn!(error = %e, "could not record the refresher run's heartbeat");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn push_error(run: &mut RefreshRun, org_id: &str, connection_name: &str, message: String) {
    if run.errors.len() < MAX_RECORDED_ERRORS {
        run.errors.push(RunError {
            org_id: org_id.to_owned(),
            connection_name: connection_name.to_owned(),
            message,
        });
    }
}

/// Counts one connection's (or session's) outcome in `run`: refreshed when this run's
/// call reached the provider, skipped when there was nothing to do (or another replica
/// held it too long), failed with its reason otherwise.
fn tally(
    run: &mut RefreshRun,
    outcome: Result<bool, NoToken>,
    org_id: &str,
    what: impl FnOnce() -> String,
) {
    let message = match outcome {
        Ok(true) => return run.refreshed += 1,
        Ok(false) | Err(NoToken::Busy) => return run.skipped += 1,
        Err(NoToken::Status { message, .. }) => message.unwrap_or_default(),
        Err(NoToken::ProviderFailed { message, .. } | NoToken::Internal(message)) => message,
    };
    run.failed += 1;
    push_error(run, org_id, &what(), message);
}

/// Schedules runs on the configured cron and one `startup` run after `delay`.
pub async fn schedule(
    broker: Arc<Broker>,
    delay: std::time::Duration,
) -> anyhow::Result<JobScheduler> {
    let scheduler = JobScheduler::new().await?;
    let job_state = broker.clone();
    let job = Job::new_async(broker.settings.refresh_cron.as_str(), move |_, _| {
        let broker = job_state.clone();
        Box::pin(async move {
            // Ticks overlap when a run outlasts the interval; the guard skips them.
            if run(broker, "schedule").await.is_none() {
                tracing::warn!("a refresher run is still in progress; this tick is skipped");
            }
        })
    })
    .map_err(|e| {
        anyhow::anyhow!("OAUTH_BROKER_REFRESH_CRON is not a valid six-field cron expression: {e}")
    })?;
    let id = scheduler.add(job).await?;
    scheduler.start().await?;
    broker.refresher.scheduled(scheduler.clone(), id);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        run(broker, "startup").await;
    });
    Ok(scheduler)
}

/// What `GET /refresh/status` shows.
pub struct Status {
    /// The newest finished run.
    pub last_run: Option<RefreshRun>,
    /// A run in progress on this or another replica.
    pub running: Option<RefreshRun>,
    pub next_run_at: Option<DateTime<Utc>>,
}

pub async fn status(broker: &Broker) -> super::Result<Status> {
    finish_interrupted(broker).await;
    let now = broker.clock.now();
    let (last_run, running_elsewhere) = broker
        .store
        .latest_refresh_runs(now - Duration::hours(1))
        .await?;
    Ok(Status {
        last_run,
        running: broker.refresher.current().or(running_elsewhere),
        next_run_at: broker.refresher.next_run_at().await,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, h, m, s).unwrap()
    }

    #[test]
    fn a_scheduled_run_belongs_to_the_cycle_of_the_latest_tick() {
        let cron = "0 */30 * * * *";
        assert_eq!(cycle_began(cron, "schedule", at(9, 30, 0)), at(9, 30, 0));
        assert_eq!(
            cycle_began(cron, "schedule", at(9, 31, 5)),
            at(9, 30, 0),
            "a tick that fired late"
        );
        assert_eq!(
            cycle_began(cron, "startup", at(9, 59, 59)),
            at(9, 30, 0),
            "the run after start catches up the current cycle"
        );
    }

    #[test]
    fn a_run_started_by_hand_begins_its_own_cycle() {
        assert_eq!(
            cycle_began("0 */30 * * * *", "manual", at(9, 31, 5)),
            at(9, 31, 5)
        );
    }
}

//! What one process keeps in memory between service calls: the refresher's run in
//! progress, the on-behalf-of caches, the log of recorded credentials reads, and what a
//! connection refresh in flight answers. The `Broker` holds one of each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio_cron_scheduler::JobScheduler;

use super::error::NoToken;
use super::single_flight::SingleFlight;
use crate::domain::{Connection, OboSession, RefreshRun};
use crate::oauth::{JwksCache, Outbound};

/// A connection refresh's result, and whether this refresh is the one that called the
/// provider.
pub type FlightOutcome = Result<(Arc<Connection>, bool), NoToken>;

// --- the refresher --------------------------------------------------------------------

/// The refresher in this process: whether a run is in progress, its record so far, and
/// the cron schedule.
#[derive(Default)]
pub struct RefresherState {
    running: AtomicBool,
    current: Mutex<Option<RefreshRun>>,
    schedule: Mutex<Option<(JobScheduler, uuid::Uuid)>>,
}

impl RefresherState {
    /// Marks a run in progress; false if one already is.
    pub fn begin(&self) -> bool {
        self.running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The run in progress ended.
    pub fn end(&self) {
        *self.current.lock().expect("refresher lock") = None;
        self.running.store(false, Ordering::SeqCst);
    }

    /// What the run in progress has done so far.
    pub fn show(&self, run: &RefreshRun) {
        *self.current.lock().expect("refresher lock") = Some(run.clone());
    }

    pub fn current(&self) -> Option<RefreshRun> {
        self.current.lock().expect("refresher lock").clone()
    }

    pub fn scheduled(&self, scheduler: JobScheduler, job: uuid::Uuid) {
        *self.schedule.lock().expect("refresher lock") = Some((scheduler, job));
    }

    pub async fn next_run_at(&self) -> Option<DateTime<Utc>> {
        let schedule = self.schedule.lock().expect("refresher lock").clone();
        let (mut scheduler, id) = schedule?;
        scheduler.next_tick_for_job(id).await.ok().flatten()
    }
}

// --- on-behalf-of -----------------------------------------------------------------------

const DEFAULT_CACHE_CAPACITY: u64 = 10_000;

/// A downstream token from an exchange.
pub struct OboToken {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    pub scopes: Vec<String>,
}

/// A session refresh's result, and whether this refresh called the provider.
pub type SessionOutcome = Result<(Arc<OboSession>, bool), NoToken>;

/// What on-behalf-of keeps in memory: the issuers' keys, the exchanged tokens, and the
/// session refreshes in flight.
pub struct OboCaches {
    pub jwks: JwksCache,
    pub tokens: moka::future::Cache<String, Arc<OboToken>>,
    pub sessions: SingleFlight<SessionOutcome>,
}

impl OboCaches {
    pub fn new(outbound: Arc<Outbound>) -> Self {
        Self {
            jwks: JwksCache::new(outbound),
            tokens: moka::future::Cache::new(DEFAULT_CACHE_CAPACITY),
            sessions: SingleFlight::default(),
        }
    }
}

// --- credentials reads ---------------------------------------------------------------------

/// A read is recorded at most this often per connection, key and workflow, so a busy
/// workflow does not turn every read into a write.
const READ_EVENT_INTERVAL: chrono::Duration = chrono::Duration::seconds(60);
/// Distinct workflows recorded per connection and key in one interval, at most: a key
/// that sends a new `X-Workflow-Id` on every read cannot turn reads into writes.
const WORKFLOWS_PER_INTERVAL: usize = 16;
/// Reads recorded at once, at most: the rest wait their turn off the request path, so
/// that a burst of first reads (one write each) cannot take every pooled connection from
/// the reads themselves (measured: p99 1.2 s at 16 connections before this bound).
const READ_RECORDS_AT_ONCE: usize = 2;

/// When a read interval began, and the workflows recorded in it.
type Recorded = (DateTime<Utc>, Vec<String>);

/// Reads recorded lately (dependency touch and `credentials_read` event), by (connection
/// or session, key): when the interval began and which workflows it recorded; and the
/// writes recording them.
pub struct ReadLog {
    seen: Mutex<HashMap<(String, String), Recorded>>,
    pub writers: Arc<tokio::sync::Semaphore>,
}

impl Default for ReadLog {
    fn default() -> Self {
        Self {
            seen: Mutex::default(),
            writers: Arc::new(tokio::sync::Semaphore::new(READ_RECORDS_AT_ONCE)),
        }
    }
}

impl ReadLog {
    /// Whether a read of `read` (a connection or session id) by `key_id` for `workflow`
    /// at `now` (the broker's clock) should be recorded.
    pub fn due(&self, read: &str, key_id: &str, workflow: &str, now: DateTime<Utc>) -> bool {
        let mut seen = self.seen.lock().expect("read log lock");
        let fresh = |began: &DateTime<Utc>| now - *began < READ_EVENT_INTERVAL;
        if seen.len() > 50_000 {
            seen.retain(|_, (began, _)| fresh(began));
        }
        let entry = seen
            .entry((read.to_owned(), key_id.to_owned()))
            .or_insert_with(|| (now, Vec::new()));
        if !fresh(&entry.0) {
            *entry = (now, Vec::new());
        }
        let (_, workflows) = entry;
        if workflows.len() >= WORKFLOWS_PER_INTERVAL || workflows.iter().any(|w| w == workflow) {
            return false;
        }
        workflows.push(workflow.to_owned());
        true
    }
}

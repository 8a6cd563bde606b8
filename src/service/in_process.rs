//! What one process keeps in memory between service calls: the refresher's run in
//! progress, the on-behalf-of caches, the log of recorded credentials reads, and what a
//! connection refresh in flight answers. The `Broker` holds one of each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

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

/// `credentials_read` events are recorded at most this often per connection and workflow,
/// so a busy workflow does not turn every read into a write.
const READ_EVENT_INTERVAL: StdDuration = StdDuration::from_secs(60);
/// Reads recorded at once, at most: the rest wait their turn off the request path, so
/// that a burst of first reads (one write each) cannot take every pooled connection from
/// the reads themselves (measured: p99 1.2 s at 16 connections before this bound).
const READ_RECORDS_AT_ONCE: usize = 2;

/// Last recorded read (dependency touch and `credentials_read` event) per (connection,
/// workflow), and the writes recording them.
pub struct ReadLog {
    seen: Mutex<HashMap<(String, String), Instant>>,
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
    /// Whether a read of this connection by this workflow should be recorded now.
    pub fn due(&self, connection_id: &str, workflow: &str) -> bool {
        let mut seen = self.seen.lock().expect("read log lock");
        if seen.len() > 50_000 {
            seen.retain(|_, at| at.elapsed() < READ_EVENT_INTERVAL);
        }
        let key = (connection_id.to_owned(), workflow.to_owned());
        match seen.get(&key) {
            Some(at) if at.elapsed() < READ_EVENT_INTERVAL => false,
            _ => {
                seen.insert(key, Instant::now());
                true
            }
        }
    }
}

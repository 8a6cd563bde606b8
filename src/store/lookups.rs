//! This process's memory of recent credentials lookups, so that a workflow calling for
//! the same token many times a second costs one database read per second, not one per
//! call.
//!
//! What it may serve, and for how long:
//! - an answer (a connection, or "none here nor in GLOBAL") read from the database less
//!   than the TTL ago (`OAUTH_BROKER_CREDENTIALS_CACHE_MS`, default 30 s; 0 turns it off);
//! - never after this process wrote any connection of that name (in any org: a GLOBAL
//!   connection answers for every org), including a write that raced the read;
//! - never a connection the caller's `usable` check refuses (the service asks for a
//!   token valid for `min_valid_for` more seconds; anything else goes to the database).
//!
//! Whether a workflow is disabled (`X-Workflow-Id` reads) is remembered the same way,
//! and forgotten when this process disables or enables any workflow.
//!
//! A write made by another process is seen after at most the TTL, or at once where the
//! database carries announcements (PostgreSQL's NOTIFY: see `ANNOUNCEMENTS`); when the
//! announcements may have been missed (the listening connection was lost), everything
//! is forgotten. Sealed values are cached as stored; nothing in here is plaintext.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::domain::Connection;

/// Lookups remembered at most (a bound on memory whatever names callers make up).
const MAX_ENTRIES: u64 = 100_000;

type Key = (String, String);

/// Whether a remembered connection may be served as is.
pub type Usable = dyn Fn(&Connection) -> bool + Send + Sync;

/// Each answer lives between three quarters of the TTL and the whole TTL, at random.
/// With one lifetime for all, answers read together (a busy start, a cache forgotten by
/// a lost announcement) expire together, and every caller of every connection goes to
/// the database in the same instant: on PostgreSQL, thousands of reads queued behind a
/// pool of 16 connections, seen as a p99 of 200-500 ms while the p50 stayed under 1 ms.
/// Spread over a quarter of the TTL, the same reads arrive a few hundred a second.
struct Jittered(Duration);

impl<K, V> moka::Expiry<K, V> for Jittered {
    fn expire_after_create(
        &self,
        _key: &K,
        _value: &V,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.0.mul_f64(0.75 + 0.25 * rand::random::<f64>()))
    }
}

#[derive(Clone)]
struct Entry {
    connection: Option<Arc<Connection>>,
    /// `writes` when the database read began.
    read_at: u64,
}

pub struct Lookups {
    /// `None` when off.
    entries: Option<Cache<Key, Entry>>,
    /// For each connection name, the counter value of this process's latest write to it.
    written: Option<Cache<String, u64>>,
    /// Whether a workflow (org, workflow id) is disabled, and `writes` when read.
    disabled: Option<Cache<Key, (bool, u64)>>,
    /// The counter value of this process's latest change to disabled workflows.
    disabled_written: AtomicU64,
    /// The counter value when everything was last forgotten.
    all_written: Arc<AtomicU64>,
    /// Counts this process's writes.
    writes: Arc<AtomicU64>,
}

/// The PostgreSQL channel on which every replica announces its writes.
pub const ANNOUNCEMENTS: &str = "oauth_broker_writes";
/// The announcement of a write to connections named `name`.
pub fn connection_written(name: &str) -> String {
    format!("connection:{name}")
}
/// The announcement of a change to disabled workflows.
pub const WORKFLOWS_WRITTEN: &str = "workflows";

/// A database read about to begin, for `Lookups::remember`.
pub struct ReadTicket(u64);

impl Lookups {
    pub fn new(ttl: Duration) -> Self {
        Self::bounded(ttl, MAX_ENTRIES)
    }

    fn bounded(ttl: Duration, max_entries: u64) -> Self {
        let on = !ttl.is_zero();
        let all_written = Arc::new(AtomicU64::new(0));
        let writes = Arc::new(AtomicU64::new(0));
        let entries: Option<Cache<Key, Entry>> = on.then(|| {
            Cache::builder()
                .max_capacity(max_entries)
                .expire_after(Jittered(ttl))
                .build()
        });
        // A write only matters while entries read before it can live: one TTL. Should
        // more names be written within one TTL than it holds, a record pushed out early
        // would let an answer read before that write be served again: everything read
        // so far is forgotten instead.
        let written = on.then(|| {
            let (all_written, writes) = (all_written.clone(), writes.clone());
            Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .eviction_listener(move |_, _, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        let at = writes.fetch_add(1, Ordering::SeqCst) + 1;
                        all_written.fetch_max(at, Ordering::SeqCst);
                    }
                })
                .build()
        });
        Self {
            entries,
            written,
            disabled: on.then(|| {
                Cache::builder()
                    .max_capacity(max_entries)
                    .expire_after(Jittered(ttl))
                    .build()
            }),
            disabled_written: AtomicU64::new(0),
            all_written,
            writes,
        }
    }

    pub fn off() -> Self {
        Self::new(Duration::ZERO)
    }

    /// The remembered answer for `name` in `org`, if there is one it may serve.
    pub fn get(&self, org: &str, name: &str, usable: &Usable) -> Option<Option<Arc<Connection>>> {
        let entries = self.entries.as_ref()?;
        let entry = entries.get(&(org.to_owned(), name.to_owned()))?;
        if self.written_since(name, entry.read_at) {
            return None;
        }
        match entry.connection {
            Some(ref conn) if !usable(conn) => None,
            connection => Some(connection),
        }
    }

    /// Call before reading the database; pass the ticket to `remember`.
    pub fn ticket(&self) -> ReadTicket {
        ReadTicket(self.writes.load(Ordering::SeqCst))
    }

    /// Remembers what the database said, unless this process wrote a connection of
    /// that name since the read began (the answer may predate the write).
    pub fn remember(
        &self,
        ticket: ReadTicket,
        org: &str,
        name: &str,
        connection: Option<Arc<Connection>>,
    ) {
        let Some(entries) = &self.entries else { return };
        if self.written_since(name, ticket.0) {
            return;
        }
        entries.insert(
            (org.to_owned(), name.to_owned()),
            Entry {
                connection,
                read_at: ticket.0,
            },
        );
    }

    /// Forgets every answer about connections named `name`: call after writing one.
    pub fn wrote(&self, name: &str) {
        let at = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(written) = &self.written {
            written.insert(name.to_owned(), at);
        }
    }

    /// Whether workflow `workflow` of `org` is disabled, if known.
    pub fn disabled(&self, org: &str, workflow: &str) -> Option<bool> {
        let (disabled, read_at) = self
            .disabled
            .as_ref()?
            .get(&(org.to_owned(), workflow.to_owned()))?;
        (read_at >= self.disabled_written.load(Ordering::SeqCst)).then_some(disabled)
    }

    /// Remembers whether a workflow is disabled, unless this process changed disabled
    /// workflows since the read began.
    pub fn remember_disabled(&self, ticket: ReadTicket, org: &str, workflow: &str, disabled: bool) {
        let Some(cache) = &self.disabled else { return };
        if self.disabled_written.load(Ordering::SeqCst) > ticket.0 {
            return;
        }
        cache.insert((org.to_owned(), workflow.to_owned()), (disabled, ticket.0));
    }

    /// Forgets which workflows are disabled: call after disabling or enabling any.
    pub fn wrote_workflows(&self) {
        let at = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        self.disabled_written.fetch_max(at, Ordering::SeqCst);
    }

    /// Whether the lookups are on (a TTL above zero).
    pub fn is_on(&self) -> bool {
        self.entries.is_some()
    }

    /// Acts on another replica's announcement.
    pub fn heard(&self, announcement: &str) {
        match announcement.strip_prefix("connection:") {
            Some(name) => self.wrote(name),
            None if announcement == WORKFLOWS_WRITTEN => self.wrote_workflows(),
            None => self.forget_everything(),
        }
    }

    /// Forgets every answer, and any read in flight: announcements may have been missed.
    pub fn forget_everything(&self) {
        let at = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        self.all_written.fetch_max(at, Ordering::SeqCst);
        self.disabled_written.fetch_max(at, Ordering::SeqCst);
    }

    fn written_since(&self, name: &str, read_at: u64) -> bool {
        self.all_written.load(Ordering::SeqCst) > read_at
            || self
                .written
                .as_ref()
                .and_then(|w| w.get(name))
                .is_some_and(|at| at > read_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_together_expire_spread_over_the_last_quarter_of_the_ttl() {
        use moka::Expiry;
        let ttl = Duration::from_secs(30);
        let lifetimes: Vec<Duration> = (0..1000)
            .map(|_| {
                Jittered(ttl)
                    .expire_after_create(&(), &(), std::time::Instant::now())
                    .unwrap()
            })
            .collect();
        let (min, max) = (
            lifetimes.iter().min().unwrap(),
            lifetimes.iter().max().unwrap(),
        );
        assert!(
            *min >= ttl.mul_f64(0.75),
            "none shorter than 3/4 of the TTL: {min:?}"
        );
        assert!(*max <= ttl, "none longer than the TTL: {max:?}");
        assert!(
            *max - *min > ttl / 5,
            "spread, not one instant: {min:?}..{max:?}"
        );
    }

    fn accept(_: &Connection) -> bool {
        true
    }

    #[test]
    fn an_answer_is_served_until_a_write_to_its_name() {
        let lookups = Lookups::new(Duration::from_secs(60));
        let ticket = lookups.ticket();
        lookups.remember(ticket, "acme", "github", None);
        assert!(matches!(lookups.get("acme", "github", &accept), Some(None)));
        assert!(lookups.get("other", "github", &accept).is_none());

        lookups.wrote("slack");
        assert!(matches!(lookups.get("acme", "github", &accept), Some(None)));
        lookups.wrote("github");
        assert!(lookups.get("acme", "github", &accept).is_none());
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_remembered() {
        let lookups = Lookups::new(Duration::from_secs(60));
        let ticket = lookups.ticket();
        lookups.wrote("github");
        lookups.remember(ticket, "acme", "github", None);
        assert!(lookups.get("acme", "github", &accept).is_none());

        let ticket = lookups.ticket();
        lookups.remember(ticket, "acme", "github", None);
        assert!(matches!(lookups.get("acme", "github", &accept), Some(None)));
    }

    #[test]
    fn disabled_workflows_are_forgotten_on_any_change_to_them() {
        let lookups = Lookups::new(Duration::from_secs(60));
        lookups.remember_disabled(lookups.ticket(), "acme", "nightly", false);
        assert_eq!(lookups.disabled("acme", "nightly"), Some(false));
        assert_eq!(lookups.disabled("other", "nightly"), None);

        lookups.wrote("github");
        assert_eq!(
            lookups.disabled("acme", "nightly"),
            Some(false),
            "a connection write"
        );
        let raced = lookups.ticket();
        lookups.wrote_workflows();
        assert_eq!(lookups.disabled("acme", "nightly"), None);
        lookups.remember_disabled(raced, "acme", "nightly", false);
        assert_eq!(
            lookups.disabled("acme", "nightly"),
            None,
            "a read that raced the change"
        );
        lookups.remember_disabled(lookups.ticket(), "acme", "nightly", true);
        assert_eq!(lookups.disabled("acme", "nightly"), Some(true));
    }

    #[test]
    fn announcements_forget_what_they_name_and_anything_else_forgets_everything() {
        let lookups = Lookups::new(Duration::from_secs(60));
        let remember_all = |l: &Lookups| {
            l.remember(l.ticket(), "acme", "github", None);
            l.remember(l.ticket(), "acme", "slack", None);
            l.remember_disabled(l.ticket(), "acme", "nightly", true);
        };
        remember_all(&lookups);
        lookups.heard(&connection_written("github"));
        assert!(lookups.get("acme", "github", &accept).is_none());
        assert!(lookups.get("acme", "slack", &accept).is_some());
        lookups.heard(WORKFLOWS_WRITTEN);
        assert_eq!(lookups.disabled("acme", "nightly"), None);
        assert!(lookups.get("acme", "slack", &accept).is_some());

        remember_all(&lookups);
        let raced = lookups.ticket();
        lookups.heard("something this version does not know");
        assert!(lookups.get("acme", "github", &accept).is_none());
        assert!(lookups.get("acme", "slack", &accept).is_none());
        assert_eq!(lookups.disabled("acme", "nightly"), None);
        lookups.remember(raced, "acme", "slack", None);
        assert!(
            lookups.get("acme", "slack", &accept).is_none(),
            "a read that raced it"
        );
    }

    #[test]
    fn more_names_written_than_remembered_forgets_everything() {
        let lookups = Lookups::bounded(Duration::from_secs(60), 10);
        lookups.remember(lookups.ticket(), "acme", "github", None);
        for i in 0..100 {
            lookups.wrote(&format!("other-{i}"));
        }
        // Evictions are noticed by the cache's housekeeping.
        if let Some(written) = &lookups.written {
            written.run_pending_tasks();
        }
        assert!(lookups.get("acme", "github", &accept).is_none());
    }

    #[test]
    fn answers_expire_and_zero_turns_the_cache_off() {
        let lookups = Lookups::new(Duration::from_millis(50));
        lookups.remember(lookups.ticket(), "acme", "github", None);
        assert!(lookups.get("acme", "github", &accept).is_some());
        std::thread::sleep(Duration::from_millis(120));
        assert!(lookups.get("acme", "github", &accept).is_none());

        let off = Lookups::off();
        off.remember(off.ticket(), "acme", "github", None);
        assert!(off.get("acme", "github", &accept).is_none());
    }
}

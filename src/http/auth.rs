//! Who is calling: API keys (`Authorization: Bearer obk_...`), their role and org scope,
//! and the organization a request acts in (`X-Organization-Id`, default `GLOBAL`).
//!
//! Keys are 256-bit random strings stored only as SHA-256 hashes. A fast hash is right
//! here (unlike for passwords): a key has full entropy, so nothing can be guessed from a
//! hash, and a lookup by hash compares no secret byte by byte.
//!
//! Refused authentications are not logged one by one (a scanner would flood the log):
//! they are counted per source address, and a burst is logged once per window
//! (`FailedAuths`). Nobody is locked out: a valid key keeps working during a burst.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use secrecy::{ExposeSecret, SecretString};

use super::error::ApiError;
use crate::domain::{Caller, OrgId};
use crate::service::Broker;
use crate::service::keys::{self, hash_key};

/// How long a key lookup is reused. Revocation reaches every replica within this
/// (the contract promises 5 seconds).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
const KEY_CACHE_MAX: usize = 10_000;
pub const ORG_HEADER: &str = "x-organization-id";

/// What API-key authentication keeps between requests, one per process: recent key
/// lookups, refused authentications (to log bursts), and the per-key rate limit.
pub struct Authenticator {
    pub keys: KeyCache,
    failed: FailedAuths,
    rate_limit: RateLimit,
}

impl Authenticator {
    pub fn new(rate_limit_per_minute: u32) -> Self {
        Self {
            keys: KeyCache::default(),
            failed: FailedAuths::default(),
            rate_limit: RateLimit::per_minute(rate_limit_per_minute),
        }
    }
}

/// Recent key lookups, positive and negative, for `KEY_CACHE_TTL`.
#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, (Option<Caller>, Instant)>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<Option<Caller>> {
        let entries = self.entries.read().expect("key cache lock");
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(caller, _)| caller.clone())
    }

    fn put(&self, hash: String, caller: Option<Caller>) {
        let mut entries = self.entries.write().expect("key cache lock");
        if entries.len() >= KEY_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(hash, (caller, Instant::now()));
    }

    /// Forget everything (after a revocation on this replica).
    pub fn clear(&self) {
        self.entries.write().expect("key cache lock").clear();
    }
}

/// More refused authentications than this from one source within `FAILED_AUTH_WINDOW`
/// is a burst, logged once.
pub const FAILED_AUTH_BURST: u32 = 20;
/// More refused authentications than this within `FAILED_AUTH_WINDOW` from sources that
/// each stayed under `FAILED_AUTH_BURST` (guessing spread over many addresses) is a
/// burst too, logged once.
pub const FAILED_AUTH_SPREAD_BURST: u32 = 100;
/// The counting window, fixed from a source's first failure in it (a minute, the unit of
/// the per-key rate limit). Read from the service's clock, so tests can move it.
pub const FAILED_AUTH_WINDOW: chrono::Duration = chrono::Duration::seconds(60);
/// Sources tracked at once; beyond this (after dropping ended windows) new sources are
/// only counted in the spread, so memory stays bounded whatever the traffic.
const FAILED_AUTH_MAX_SOURCES: usize = 10_000;

/// Where refused requests come from: the TCP peer's address (not `Forwarded` or
/// `X-Forwarded-For`, which the caller writes and could vary to stay under the
/// threshold), IPv4-mapped IPv6 as IPv4, other IPv6 addresses by their /64 (what one
/// host is usually given). Behind a proxy every client is the proxy: bursts are then
/// counted for all of them together, which still logs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(Option<IpAddr>);

impl Source {
    pub fn of(peer: Option<IpAddr>) -> Self {
        Self(peer.map(|ip| match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
        }))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("unknown"),
            Some(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Some(IpAddr::V6(ip)) => write!(f, "{ip}/64"),
        }
    }
}

/// A burst to log: `failures` refused authentications within the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Burst {
    /// From one source.
    FromSource { source: Source, failures: u32 },
    /// From sources that each stayed under the per-source threshold.
    Spread { failures: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: DateTime<Utc>,
    failures: u32,
    logged: bool,
}

impl Window {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            started: now,
            failures: 0,
            logged: false,
        }
    }

    fn ended(&self, now: DateTime<Utc>) -> bool {
        now - self.started >= FAILED_AUTH_WINDOW
    }

    /// Counts one failure; true when this one crosses `threshold` (once per window).
    fn count(&mut self, now: DateTime<Utc>, threshold: u32) -> bool {
        if self.ended(now) {
            *self = Window::new(now);
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures > threshold && !self.logged {
            self.logged = true;
            return true;
        }
        false
    }
}

/// Refused authentications in fixed windows, per source and spread over sources.
/// Counting only: nothing here refuses a request.
#[derive(Debug, Default)]
pub struct FailedAuths {
    windows: Mutex<FailedAuthWindows>,
}

#[derive(Debug, Default)]
struct FailedAuthWindows {
    per_source: HashMap<Source, Window>,
    spread: Option<Window>,
}

impl FailedAuths {
    /// Counts a refused authentication from `source` at `now`; `Some` exactly once per
    /// window when a threshold is crossed.
    pub fn record(&self, source: Source, now: DateTime<Utc>) -> Option<Burst> {
        let mut windows = self.windows.lock().expect("failed authentications lock");
        let windows = &mut *windows;
        if !windows.per_source.contains_key(&source)
            && windows.per_source.len() >= FAILED_AUTH_MAX_SOURCES
        {
            windows.per_source.retain(|_, w| !w.ended(now));
        }
        let tracked = windows.per_source.len() < FAILED_AUTH_MAX_SOURCES
            || windows.per_source.contains_key(&source);
        if tracked {
            let window = windows
                .per_source
                .entry(source)
                .or_insert_with(|| Window::new(now));
            if window.count(now, FAILED_AUTH_BURST) {
                return Some(Burst::FromSource {
                    source,
                    failures: window.failures,
                });
            }
            if window.failures > FAILED_AUTH_BURST {
                // Already logged as this source's burst: not counted twice.
                return None;
            }
        }
        let spread = windows.spread.get_or_insert_with(|| Window::new(now));
        spread
            .count(now, FAILED_AUTH_SPREAD_BURST)
            .then_some(Burst::Spread {
                failures: spread.failures,
            })
    }
}

/// Counts a refused authentication and logs a burst once per window. Neither the
/// presented key nor any part of it is logged.
fn note_refused(broker: &Broker, auth: &Authenticator, source: Source, reason: &str) {
    tracing::debug!(%source, reason, "refused an API request's authentication");
    let window_seconds = FAILED_AUTH_WINDOW.num_seconds();
    match auth.failed.record(source, broker.clock.now()) {
        None => {}
        Some(Burst::FromSource { source, failures }) => tracing::warn!(
            replica = %broker.replica_id,
            %source,
            failures,
            window_seconds,
            "burst of refused API key authentications from one source (logged once per \
             window; requests are not blocked)"
        ),
        Some(Burst::Spread { failures }) => tracing::warn!(
            replica = %broker.replica_id,
            failures,
            window_seconds,
            "burst of refused API key authentications spread over many sources (logged \
             once per window; requests are not blocked)"
        ),
    }
}

fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <api key>".into()))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("Authorization must be `Bearer <api key>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "Authorization must be `Bearer <api key>`".into(),
        ));
    }
    Ok(token.trim())
}

/// Requests per minute per API key (`OAUTH_BROKER_RATE_LIMIT_PER_MINUTE`; 0 = off).
pub struct RateLimit {
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl RateLimit {
    pub fn per_minute(n: u32) -> Self {
        Self {
            limiter: std::num::NonZeroU32::new(n)
                .map(|n| governor::RateLimiter::keyed(governor::Quota::per_minute(n))),
        }
    }

    /// `Err(RateLimited)` with the seconds until the next request is allowed.
    pub fn check(&self, key_id: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() > 100_000 {
            limiter.retain_recent();
        }
        limiter.check_key(&key_id.to_owned()).map_err(|not_until| {
            use governor::clock::{Clock, DefaultClock};
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_seconds: wait.as_secs().max(1),
            }
        })
    }
}

pub async fn authenticate(
    broker: &Broker,
    auth: &Authenticator,
    key: &str,
) -> Result<Caller, ApiError> {
    let hash = hash_key(key);
    let caller = match auth.keys.get(&hash) {
        Some(cached) => cached,
        None => {
            let found = keys::find(broker, &hash).await?.map(|k| Caller {
                key_id: k.id,
                name: k.name,
                role: k.role,
                org_scope: k.org_scope,
            });
            auth.keys.put(hash, found.clone());
            found
        }
    };
    // Not logged here: `note_refused` counts refusals and logs bursts.
    caller.ok_or_else(|| ApiError::Unauthorized("unknown or revoked API key".into()))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let broker = req.app_data::<web::Data<Broker>>().cloned();
        let auth = req.app_data::<web::Data<Authenticator>>().cloned();
        let key = bearer(req).map(|k| SecretString::from(k.to_owned()));
        let source = Source::of(req.peer_addr().map(|a| a.ip()));
        Box::pin(async move {
            let (Some(broker), Some(auth)) = (broker, auth) else {
                return Err(ApiError::internal(anyhow::anyhow!("no app data")));
            };
            let caller = match key {
                Ok(key) => authenticate(&broker, &auth, key.expose_secret()).await,
                Err(e) => Err(e),
            };
            let caller = caller.inspect_err(|e| {
                if let ApiError::Unauthorized(reason) = e {
                    note_refused(&broker, &auth, source, reason);
                }
            })?;
            auth.rate_limit.check(&caller.key_id)?;
            Ok(caller)
        })
    }
}

/// The organization a request acts in.
#[derive(Debug, Clone)]
pub struct Org(pub OrgId);

impl FromRequest for Org {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.headers().get(ORG_HEADER) {
            None => Ok(Org(OrgId::global())),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| OrgId::parse(v).ok())
                .map(Org)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "X-Organization-Id must match ^[A-Za-z0-9_.-]{1,64}$".into(),
                    )
                }),
        };
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(1_800_000_000 + seconds)
    }

    fn source(ip: &str) -> Source {
        Source::of(Some(ip.parse().unwrap()))
    }

    #[test]
    fn a_burst_from_one_source_is_reported_once_per_window() {
        let failures = FailedAuths::default();
        let attacker = source("203.0.113.7");
        for n in 1..=FAILED_AUTH_BURST {
            assert_eq!(
                failures.record(attacker, at(0)),
                None,
                "failure {n} is under the threshold"
            );
        }
        assert_eq!(
            failures.record(attacker, at(59)),
            Some(Burst::FromSource {
                source: attacker,
                failures: FAILED_AUTH_BURST + 1
            }),
            "the first failure over the threshold within the window is reported"
        );
        for _ in 0..500 {
            assert_eq!(
                failures.record(attacker, at(59)),
                None,
                "once per window, not per request"
            );
        }
        // A new window starts at the first failure after the last one ended.
        for n in 1..=FAILED_AUTH_BURST {
            assert_eq!(
                failures.record(attacker, at(60)),
                None,
                "failure {n} of the next window"
            );
        }
        assert!(
            failures.record(attacker, at(61)).is_some(),
            "the next window's burst is reported"
        );
    }

    #[test]
    fn failures_spread_over_a_window_boundary_are_not_a_burst() {
        let failures = FailedAuths::default();
        let client = source("198.51.100.1");
        for _ in 0..FAILED_AUTH_BURST {
            assert_eq!(failures.record(client, at(0)), None);
        }
        for _ in 0..FAILED_AUTH_BURST {
            assert_eq!(
                failures.record(client, at(60)),
                None,
                "a new window counts from zero"
            );
        }
    }

    #[test]
    fn sources_are_counted_apart_and_ipv6_by_its_slash_64() {
        let failures = FailedAuths::default();
        for _ in 0..FAILED_AUTH_BURST {
            assert_eq!(failures.record(source("192.0.2.1"), at(0)), None);
            assert_eq!(failures.record(source("192.0.2.2"), at(0)), None);
        }
        assert_eq!(
            source("2001:db8:1:2::1"),
            source("2001:db8:1:2:ffff::9"),
            "one /64 is one source"
        );
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_eq!(
            source("::ffff:192.0.2.1"),
            source("192.0.2.1"),
            "IPv4-mapped is IPv4"
        );
        assert_eq!(source("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(Source::of(None).to_string(), "unknown");
    }

    #[test]
    fn guessing_spread_over_many_sources_is_reported_once() {
        let failures = FailedAuths::default();
        let reports: Vec<Burst> = (0..=FAILED_AUTH_SPREAD_BURST * 3)
            .filter_map(|n| {
                let ip = format!("10.0.{}.{}", n / 250, n % 250);
                failures.record(source(&ip), at(1))
            })
            .collect();
        assert_eq!(
            reports,
            [Burst::Spread {
                failures: FAILED_AUTH_SPREAD_BURST + 1
            }]
        );
    }

    #[test]
    fn a_source_already_reported_does_not_also_count_as_spread() {
        let failures = FailedAuths::default();
        let reports: Vec<Burst> = (0..FAILED_AUTH_SPREAD_BURST * 3)
            .filter_map(|_| failures.record(source("192.0.2.9"), at(0)))
            .collect();
        assert_eq!(reports.len(), 1, "one line for one burst: {reports:?}");
    }

    #[test]
    fn the_number_of_tracked_sources_is_bounded() {
        let failures = FailedAuths::default();
        for n in 0..(FAILED_AUTH_MAX_SOURCES as u32 + 50) {
            failures.record(Source::of(Some(IpAddr::V4(n.into()))), at(0));
        }
        let windows = failures.windows.lock().unwrap();
        assert_eq!(windows.per_source.len(), FAILED_AUTH_MAX_SOURCES);
        drop(windows);
        // Once their windows ended, old sources make room for new ones.
        failures.record(source("192.0.2.200"), at(61));
        assert_eq!(failures.windows.lock().unwrap().per_source.len(), 1);
    }
}

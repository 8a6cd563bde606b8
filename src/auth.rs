//! Who is calling: API keys (`Authorization: Bearer obk_...`), their role and org scope,
//! and the organization a request acts in (`X-Organization-Id`, default `GLOBAL`).
//!
//! Keys are 256-bit random strings stored only as SHA-256 hashes. A fast hash is right
//! here (unlike for passwords): a key has full entropy, so nothing can be guessed from a
//! hash, and a lookup by hash compares no secret byte by byte.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::domain::{OrgId, OrgScope, Role};
use crate::error::ApiError;
use crate::state::AppState;

pub const KEY_PREFIX: &str = "obk_";
/// How long a key lookup is reused. Revocation reaches every replica within this
/// (the contract promises 5 seconds).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
const KEY_CACHE_MAX: usize = 10_000;
pub const ORG_HEADER: &str = "x-organization-id";

/// A new API key with its hash and display prefix.
pub fn generate_key() -> (SecretString, String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_key(&key);
    let prefix = display_prefix(&key);
    (SecretString::from(key), hash, prefix)
}

pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Enough of a key to recognise it in a list, far too little to use it.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 4).collect()
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub key_id: String,
    pub name: String,
    pub role: Role,
    pub org_scope: OrgScope,
}

impl Caller {
    /// Admin rights in `org`.
    pub fn require_admin(&self, org: &OrgId) -> Result<(), ApiError> {
        if self.role != Role::Admin {
            return Err(ApiError::Forbidden("this route needs an admin key".into()));
        }
        self.require_org(org)
    }

    /// Admin rights over every org (keys, refresher).
    pub fn require_global_admin(&self) -> Result<(), ApiError> {
        if self.role != Role::Admin || self.org_scope != OrgScope::All {
            return Err(ApiError::Forbidden(
                "this route needs an admin key for every org (`*`)".into(),
            ));
        }
        Ok(())
    }

    /// Any role, acting in `org`.
    pub fn require_org(&self, org: &OrgId) -> Result<(), ApiError> {
        if !self.org_scope.covers(org) {
            return Err(ApiError::Forbidden(format!(
                "this key may not act in org `{org}`"
            )));
        }
        Ok(())
    }

    pub fn sees_every_org(&self) -> bool {
        self.org_scope == OrgScope::All
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

pub async fn authenticate(state: &AppState, key: &str) -> Result<Caller, ApiError> {
    let hash = hash_key(key);
    let caller = match state.keys.get(&hash) {
        Some(cached) => cached,
        None => {
            let found = state.store.find_api_key(&hash).await?.map(|k| Caller {
                key_id: k.id,
                name: k.name,
                role: k.role,
                org_scope: k.org_scope,
            });
            state.keys.put(hash, found.clone());
            found
        }
    };
    caller.ok_or_else(|| {
        tracing::warn!("request with an unknown or revoked API key");
        ApiError::Unauthorized("unknown or revoked API key".into())
    })
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let key = bearer(req).map(|k| SecretString::from(k.to_owned()));
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            let key = key?;
            let caller = authenticate(&state, key.expose_secret()).await?;
            state.rate_limit.check(&caller.key_id)?;
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

    #[test]
    fn generated_keys_are_long_random_and_hash_stably() {
        let (a, hash_a, prefix) = generate_key();
        let (b, _, _) = generate_key();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().len() >= 40);
        assert_eq!(hash_a, hash_key(a.expose_secret()));
        assert_eq!(hash_a.len(), 64);
        assert!(a.expose_secret().starts_with(&prefix));
    }
}

//! Local validation of a user's token before an on-behalf-of exchange: signature against
//! the issuer's JWKS (cached per URL, fetched once at a time per URL, refetched on an
//! unknown `kid` at most every 30 s, a failed fetch remembered for 15 s), then the
//! claims against our clock with 60 s of skew, `iss`, `aud`, `tid`, and refusal of a
//! token already issued for the downstream resource (a chained token).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::error::sanitize;
use super::outbound::Outbound;
use crate::domain::AssertionRules;

pub const SKEW_SECONDS: i64 = 60;
const JWKS_TTL: Duration = Duration::from_secs(3600);
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// A JWKS that could not be read is not asked for again this soon: an issuer that is
/// down or hangs costs each caller one answer from memory, not one timeout each.
const JWKS_FAILURE_TTL: Duration = Duration::from_secs(15);

/// Why an assertion was refused; the message names the claim.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JwtError {
    #[error("the assertion is not a signed JWT")]
    Malformed,
    #[error("the assertion's algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("the assertion has no `kid` header")]
    NoKeyId,
    /// The kid as `sanitize` shows it: printable and bounded, since anyone can send one.
    #[error("no key `{0}` in the issuer's JWKS")]
    UnknownKey(String),
    #[error("the assertion's signature does not verify")]
    BadSignature,
    #[error("`exp`: the assertion expired")]
    Expired,
    #[error("`exp`: the assertion has no expiry")]
    NoExpiry,
    #[error("`nbf`: the assertion is not valid yet")]
    NotYetValid,
    #[error("`iss`: the assertion was issued by another issuer")]
    WrongIssuer,
    #[error("`aud`: the assertion is not for this service")]
    WrongAudience,
    #[error("`tid`: the assertion is from another tenant")]
    WrongTenant,
    #[error("`aud`: the assertion is already for the downstream resource (a chained token)")]
    Chained,
    #[error("the issuer's JWKS could not be read: {0}")]
    Jwks(String),
}

#[derive(Default)]
struct Cached {
    set: Option<Arc<JwkSet>>,
    fetched: Option<Instant>,
    /// The last fetch failed, when, and why.
    failed: Option<(Instant, String)>,
    /// One fetch of this URL at a time: concurrent cold or unknown-kid requests for it
    /// share one; other URLs do not wait for it.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

/// JWKS by URL.
pub struct JwksCache {
    outbound: Arc<Outbound>,
    sets: Mutex<HashMap<String, Cached>>,
}

fn audiences(claims: &serde_json::Value) -> Vec<String> {
    match claims.get("aud") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The resources the connection's scopes are for: `https://graph.microsoft.com/.default`
/// is for `https://graph.microsoft.com`.
pub fn downstream_resources(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .filter(|s| s.contains("://"))
        .filter_map(|s| s.rsplit_once('/').map(|(resource, _)| resource.to_owned()))
        .filter(|r| !r.ends_with(':') && !r.ends_with('/'))
        .collect()
}

/// The `aud` of a token if it is a JWT, without checking anything else. Used only to
/// refuse chained tokens when no validation is configured.
pub fn unverified_audiences(token: &str) -> Vec<String> {
    // Only the payload is read (base64url JSON); nothing here is trusted beyond refusing.
    let Some(payload) = token.split('.').nth(1) else {
        return Vec::new();
    };
    URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .map(|claims| audiences(&claims))
        .unwrap_or_default()
}

impl JwksCache {
    pub fn new(outbound: Arc<Outbound>) -> Self {
        Self {
            outbound,
            sets: Mutex::new(HashMap::new()),
        }
    }

    async fn fetch(&self, url: &str) -> Result<Arc<JwkSet>, JwtError> {
        let fetched = match self.outbound.get_json(url).await {
            Ok(value) => {
                serde_json::from_value::<JwkSet>(value).map_err(|_| "not a JWK set".to_owned())
            }
            Err(e) => Err(e.to_string()),
        };
        let mut sets = self.sets.lock().expect("jwks lock");
        let entry = sets.entry(url.to_owned()).or_default();
        match fetched {
            Ok(set) => {
                let set = Arc::new(set);
                entry.set = Some(set.clone());
                entry.fetched = Some(Instant::now());
                entry.failed = None;
                Ok(set)
            }
            Err(reason) => {
                entry.failed = Some((Instant::now(), reason.clone()));
                Err(JwtError::Jwks(reason))
            }
        }
    }

    fn cached(&self, url: &str) -> (Option<Arc<JwkSet>>, Option<Instant>) {
        let sets = self.sets.lock().expect("jwks lock");
        sets.get(url)
            .map(|c| (c.set.clone(), c.fetched))
            .unwrap_or((None, None))
    }

    /// Why this URL's last fetch failed, if it failed within `JWKS_FAILURE_TTL`.
    fn recent_failure(&self, url: &str) -> Option<String> {
        let sets = self.sets.lock().expect("jwks lock");
        sets.get(url)
            .and_then(|c| c.failed.as_ref())
            .filter(|(at, _)| at.elapsed() < JWKS_FAILURE_TTL)
            .map(|(_, reason)| reason.clone())
    }

    fn fetch_lock(&self, url: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut sets = self.sets.lock().expect("jwks lock");
        sets.entry(url.to_owned()).or_default().fetching.clone()
    }

    fn usable(jwk: &jsonwebtoken::jwk::Jwk, kid: &str) -> Result<DecodingKey, JwtError> {
        let unusable = || JwtError::Jwks(format!("key `{kid}` is not usable"));
        // jsonwebtoken 11's Ed25519 verifier slices the key to 32 bytes unchecked: a
        // JWKS with a shorter `x` (RFC 8037 2) would panic on the first token it checks.
        if let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm
            && URL_SAFE_NO_PAD
                .decode(&okp.x)
                .map_or(true, |x| x.len() != 32)
        {
            return Err(unusable());
        }
        DecodingKey::from_jwk(jwk).map_err(|_| unusable())
    }

    async fn key(&self, url: &str, kid: &str) -> Result<DecodingKey, JwtError> {
        let (set, fetched) = self.cached(url);
        let fresh = fetched.is_some_and(|at| at.elapsed() <= JWKS_TTL);
        if let (Some(set), true) = (&set, fresh)
            && let Some(jwk) = set.find(kid)
        {
            return Self::usable(jwk, kid);
        }
        // A cold cache, an aged one, or an unknown kid (perhaps a rotation). One fetch of
        // this URL at a time; whoever waited re-checks what the fetch before it brought.
        if let Some(reason) = self.recent_failure(url) {
            return Err(JwtError::Jwks(reason));
        }
        let lock = self.fetch_lock(url);
        let _fetching = lock.lock().await;
        if let Some(reason) = self.recent_failure(url) {
            return Err(JwtError::Jwks(reason));
        }
        let (set, fetched) = self.cached(url);
        let fresh = fetched.is_some_and(|at| at.elapsed() <= JWKS_TTL);
        if let (Some(set), true) = (&set, fresh) {
            if let Some(jwk) = set.find(kid) {
                return Self::usable(jwk, kid);
            }
            // Refetch for an unknown kid at most every 30 s, so random kids cannot make
            // us hammer the issuer.
            if fetched.is_some_and(|at| at.elapsed() < JWKS_MIN_REFETCH) {
                return Err(JwtError::UnknownKey(sanitize(kid)));
            }
        }
        let set = self.fetch(url).await?;
        let jwk = set
            .find(kid)
            .ok_or_else(|| JwtError::UnknownKey(sanitize(kid)))?;
        Self::usable(jwk, kid)
    }

    /// Validates `token` against `rules` at `now`; returns its claims.
    pub async fn validate(
        &self,
        token: &str,
        rules: &AssertionRules,
        now: DateTime<Utc>,
        downstream: &[String],
    ) -> Result<serde_json::Value, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        if !allowed.contains(&header.alg) {
            return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(JwtError::NoKeyId)?;
        let key = self.key(&rules.jwks_url, &kid).await?;
        let mut validation = Validation::new(header.alg);
        // Times are checked below against our clock; claims by name, to say which failed.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtError::BadSignature,
                _ => JwtError::Malformed,
            },
        )?;
        let claims = data.claims;
        let now = now.timestamp();
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_i64())
            .ok_or(JwtError::NoExpiry)?;
        // Saturating: the numbers are the token's, and any i64 parses.
        if exp.saturating_add(SKEW_SECONDS) < now {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = claims.get("nbf").and_then(|v| v.as_i64())
            && nbf.saturating_sub(SKEW_SECONDS) > now
        {
            return Err(JwtError::NotYetValid);
        }
        if claims.get("iss").and_then(|v| v.as_str()) != Some(rules.issuer.as_str()) {
            return Err(JwtError::WrongIssuer);
        }
        let aud = audiences(&claims);
        if aud.iter().any(|a| downstream.contains(a)) {
            return Err(JwtError::Chained);
        }
        if !aud.iter().any(|a| rules.audiences.contains(a)) {
            return Err(JwtError::WrongAudience);
        }
        if let Some(tenant) = &rules.tenant_id
            && claims.get("tid").and_then(|v| v.as_str()) != Some(tenant.as_str())
        {
            return Err(JwtError::WrongTenant);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downstream_resources_come_from_url_scopes() {
        let scopes = vec![
            "https://graph.microsoft.com/.default".to_owned(),
            "api://backend/read".to_owned(),
            "offline_access".to_owned(),
        ];
        assert_eq!(
            downstream_resources(&scopes),
            ["https://graph.microsoft.com", "api://backend"]
        );
    }
}

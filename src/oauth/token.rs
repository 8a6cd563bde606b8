//! Token responses, read leniently: some providers send `expires_in` as a string or
//! omit `token_type`, and a 201 is still a success (see `shared/CRATES.md`).

use std::time::Duration;

use oauth2::basic::BasicErrorResponse;
use oauth2::{AccessToken, RefreshToken, RequestTokenError, Scope, TokenResponse};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};

use super::error::ProviderError;
use super::outbound::{Call, TransportError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LenientTokenType(String);

impl oauth2::TokenType for LenientTokenType {}

/// The longest lifetime believed: ten years. Callers add `expires_in` to a `DateTime`,
/// which panics past year 262143, and a provider may send any number.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(10 * 365 * 86_400);

fn bearer() -> LenientTokenType {
    LenientTokenType("Bearer".into())
}

fn lenient_seconds<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Number(f64),
        Text(String),
    }
    Ok(match Option::<Seconds>::deserialize(de)? {
        Some(Seconds::Number(n)) if n.is_finite() && n >= 0.0 => Some(n as u64),
        Some(Seconds::Text(t)) => t.trim().parse::<u64>().ok(),
        _ => None,
    })
}

fn scope_list<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<Scope>>, D::Error> {
    Ok(Option::<String>::deserialize(de)?.map(|s| {
        s.split_whitespace()
            .map(|p| Scope::new(p.to_owned()))
            .collect()
    }))
}

/// RFC 6749 5.1, tolerant of common deviations.
#[derive(Debug, Serialize, Deserialize)]
pub struct LenientTokenResponse {
    access_token: AccessToken,
    #[serde(default = "bearer")]
    token_type: LenientTokenType,
    #[serde(default, deserialize_with = "lenient_seconds")]
    expires_in: Option<u64>,
    refresh_token: Option<RefreshToken>,
    #[serde(default, deserialize_with = "scope_list", skip_serializing)]
    scope: Option<Vec<Scope>>,
}

impl TokenResponse for LenientTokenResponse {
    type TokenType = LenientTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &LenientTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scope.as_ref()
    }
}

/// What a successful token request gave us.
pub struct TokenSet {
    pub access_token: SecretString,
    /// `Bearer` normalised to its canonical case.
    pub token_type: String,
    /// `None`: the provider did not say (RFC 6749 5.1 makes it optional). At most
    /// `MAX_EXPIRES_IN`.
    pub expires_in: Option<Duration>,
    /// `None`: keep the refresh token we have (RFC 6749 6).
    pub refresh_token: Option<SecretString>,
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    /// How long the access token lives: `expires_in`, else `default_seconds` (the
    /// provider did not say); at most `MAX_EXPIRES_IN` either way, so adding it to a
    /// date cannot overflow.
    pub fn lifetime(&self, default_seconds: u64) -> Duration {
        self.expires_in
            .unwrap_or(Duration::from_secs(default_seconds))
            .min(MAX_EXPIRES_IN)
    }

    pub(super) fn from_result(
        result: Result<LenientTokenResponse, RequestTokenError<TransportError, BasicErrorResponse>>,
        call: &Call,
    ) -> Result<Self, ProviderError> {
        Self::from_reply(result, call.last_status(), call.retry_after())
    }

    /// `from_result` without the call: the status and `Retry-After` it saw. Public for
    /// the parser fuzz tests only (`tests/fuzz_parsers.rs`).
    #[doc(hidden)]
    pub fn from_reply(
        result: Result<LenientTokenResponse, RequestTokenError<TransportError, BasicErrorResponse>>,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Result<Self, ProviderError> {
        let response = result.map_err(|e| ProviderError::classify(e, status, retry_after))?;
        Self::from_response(response)
    }

    pub(super) fn from_response(response: LenientTokenResponse) -> Result<Self, ProviderError> {
        if response.access_token.secret().is_empty() {
            return Err(ProviderError::Transient {
                reason: "the token response has an empty access_token".into(),
                retry_after: None,
            });
        }
        let token_type = if response.token_type.0.eq_ignore_ascii_case("bearer") {
            "Bearer".to_owned()
        } else {
            response.token_type.0.clone()
        };
        Ok(TokenSet {
            access_token: SecretString::from(response.access_token.secret().clone()),
            token_type,
            expires_in: response.expires_in().map(|d| d.min(MAX_EXPIRES_IN)),
            refresh_token: response
                .refresh_token
                .as_ref()
                .filter(|t| !t.secret().is_empty())
                .map(|t| SecretString::from(t.secret().clone())),
            scopes: response
                .scope
                .as_ref()
                .map(|s| s.iter().map(|s| s.to_string()).collect()),
        })
    }
}

//! A connection: its configuration, its state, and its secrets as sealed at rest.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::{
    AssertionRules, ConnectionName, ConnectionStatus, FlowType, OboGrant, OrgId, TokenAuthMethod,
};
use crate::crypto::{Aad, Keyring, OpenError};

/// Column names of the sealed fields of a connection; also their associated data.
pub mod fields {
    pub const CLIENT_SECRET: &str = "client_secret";
    pub const ACCESS_TOKEN: &str = "access_token";
    pub const REFRESH_TOKEN: &str = "refresh_token";
    pub const PKCE_VERIFIER: &str = "pkce_verifier";
}

/// A sealed value that does not open with the configured keys.
#[derive(Debug, thiserror::Error)]
#[error("the stored {field} of {row} does not open")]
pub struct SealedError {
    pub row: String,
    pub field: &'static str,
    #[source]
    pub source: OpenError,
}

/// Opens `sealed` (if any), bound to its org, row and field; `row` names the record in
/// the error.
pub fn open_sealed(
    keyring: &Keyring,
    sealed: Option<&str>,
    (org_id, row_id): (&str, &str),
    field: &'static str,
    row: impl FnOnce() -> String,
) -> Result<Option<SecretString>, SealedError> {
    let aad = Aad {
        org_id,
        row_id,
        field,
    };
    sealed
        .map(|s| {
            keyring.open(s, aad).map_err(|source| SealedError {
                row: row(),
                field,
                source,
            })
        })
        .transpose()
}

/// The non-secret configuration of a connection, as given on create or patch.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionConfig {
    pub flow_type: FlowType,
    pub client_id: String,
    pub authorization_url: Option<String>,
    pub token_url: String,
    pub scopes: Vec<String>,
    pub token_auth_method: TokenAuthMethod,
    pub extra_authorization_params: BTreeMap<String, String>,
    pub extra_token_params: BTreeMap<String, String>,
    pub test_url: Option<String>,
    /// How an on-behalf-of connection exchanges (required for that flow).
    pub obo_grant: Option<OboGrant>,
    /// How an on-behalf-of assertion is checked before the exchange.
    pub assertion_validation: Option<AssertionRules>,
}

/// A connection to insert.
pub struct NewConnection {
    pub org_id: OrgId,
    pub name: ConnectionName,
    pub config: ConnectionConfig,
    pub client_secret: Option<SecretString>,
    pub refresh_token: Option<SecretString>,
    pub created_by: String,
    pub now: DateTime<Utc>,
}

/// What happens to one sealed column on save.
#[derive(Default, Clone)]
pub enum SecretWrite {
    #[default]
    Keep,
    Set(SecretString),
    Clear,
}

/// Secret writes of one save; `Keep` for every field by default.
#[derive(Default, Clone)]
pub struct SecretWrites {
    pub client_secret: SecretWrite,
    pub access_token: SecretWrite,
    pub refresh_token: SecretWrite,
}

impl SecretWrites {
    /// Forget the tokens (a credential-changing edit: "needs reconnection").
    pub fn clear_tokens() -> Self {
        Self {
            access_token: SecretWrite::Clear,
            refresh_token: SecretWrite::Clear,
            ..Self::default()
        }
    }
}

/// The opened secrets of a connection.
#[derive(Default)]
pub struct ConnectionSecrets {
    pub client_secret: Option<SecretString>,
    pub access_token: Option<SecretString>,
    pub refresh_token: Option<SecretString>,
}

impl fmt::Debug for ConnectionSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |s: &Option<SecretString>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("ConnectionSecrets")
            .field("client_secret", &shown(&self.client_secret))
            .field("access_token", &shown(&self.access_token))
            .field("refresh_token", &shown(&self.refresh_token))
            .finish()
    }
}

/// The sealed columns as stored; opened only through the keyring.
#[derive(Clone, Default, PartialEq)]
pub struct Sealed {
    pub client_secret: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed { .. }")
    }
}

/// A stored connection. Carries sealed columns but never plaintext secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub id: String,
    pub org_id: OrgId,
    pub name: ConnectionName,
    pub config: ConnectionConfig,
    pub status: ConnectionStatus,
    pub status_message: Option<String>,
    pub token_type: Option<String>,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub token_scopes: Option<Vec<String>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    pub last_test_at: Option<DateTime<Utc>>,
    pub refresh_failures: i64,
    pub next_refresh_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub sealed: Sealed,
}

impl Connection {
    pub fn has_refresh_token(&self) -> bool {
        self.sealed.refresh_token.is_some()
    }

    pub fn has_access_token(&self) -> bool {
        self.sealed.access_token.is_some()
    }

    pub fn has_client_secret(&self) -> bool {
        self.sealed.client_secret.is_some()
    }

    /// Whether this connection's grant can be renewed without a person.
    pub fn renewable(&self) -> bool {
        match self.config.flow_type {
            FlowType::ClientCredentials => true,
            FlowType::AuthorizationCode | FlowType::RefreshToken => self.has_refresh_token(),
            FlowType::OnBehalfOf => false,
        }
    }

    /// Whether the stored access token is usable for at least `margin` more.
    pub fn has_fresh_token(&self, now: DateTime<Utc>, margin: chrono::Duration) -> bool {
        self.has_access_token() && self.token_expires_at.is_some_and(|at| at > now + margin)
    }

    pub fn aad<'a>(&'a self, field: &'a str) -> Aad<'a> {
        Aad {
            org_id: self.org_id.as_str(),
            row_id: &self.id,
            field,
        }
    }

    fn open(
        &self,
        keyring: &Keyring,
        sealed: &Option<String>,
        field: &'static str,
    ) -> Result<Option<SecretString>, SealedError> {
        let row = (self.org_id.as_str(), self.id.as_str());
        open_sealed(keyring, sealed.as_deref(), row, field, || {
            format!("connection {}/{}", self.org_id, self.name)
        })
    }

    /// Opens only the access token (the credentials hot path needs nothing else).
    pub fn open_access_token(
        &self,
        keyring: &Keyring,
    ) -> Result<Option<SecretString>, SealedError> {
        self.open(keyring, &self.sealed.access_token, fields::ACCESS_TOKEN)
    }

    pub fn open_secrets(&self, keyring: &Keyring) -> Result<ConnectionSecrets, SealedError> {
        Ok(ConnectionSecrets {
            client_secret: self.open(keyring, &self.sealed.client_secret, fields::CLIENT_SECRET)?,
            access_token: self.open(keyring, &self.sealed.access_token, fields::ACCESS_TOKEN)?,
            refresh_token: self.open(keyring, &self.sealed.refresh_token, fields::REFRESH_TOKEN)?,
        })
    }
}

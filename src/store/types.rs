//! The records the store reads and writes.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use secrecy::SecretString;

use super::{StoreError, StoreResult};
use crate::crypto::{Aad, Keyring};
use crate::domain::{
    ConnectionName, ConnectionStatus, EventKind, FlowType, OrgId, OrgScope, Role, TokenAuthMethod,
};

pub fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Column names of the sealed fields of a connection; also their associated data.
pub mod fields {
    pub const CLIENT_SECRET: &str = "client_secret";
    pub const ACCESS_TOKEN: &str = "access_token";
    pub const REFRESH_TOKEN: &str = "refresh_token";
    pub const PKCE_VERIFIER: &str = "pkce_verifier";
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
    pub obo_config: Option<serde_json::Value>,
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
        f.debug_struct("ConnectionSecrets")
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
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

    pub fn aad<'a>(&'a self, field: &'a str) -> Aad<'a> {
        Aad {
            org_id: self.org_id.as_str(),
            row_id: &self.id,
            field,
        }
    }

    /// Opens only the access token (the credentials hot path needs nothing else).
    pub fn open_access_token(&self, keyring: &Keyring) -> StoreResult<Option<SecretString>> {
        self.sealed
            .access_token
            .as_deref()
            .map(|s| {
                keyring
                    .open(s, self.aad(fields::ACCESS_TOKEN))
                    .map_err(|source| StoreError::Crypto {
                        row: format!("connection {}/{}", self.org_id, self.name),
                        field: fields::ACCESS_TOKEN,
                        source,
                    })
            })
            .transpose()
    }

    pub fn open_secrets(&self, keyring: &Keyring) -> StoreResult<ConnectionSecrets> {
        let open = |sealed: &Option<String>, field: &'static str| {
            sealed
                .as_deref()
                .map(|s| {
                    keyring
                        .open(s, self.aad(field))
                        .map_err(|source| StoreError::Crypto {
                            row: format!("connection {}/{}", self.org_id, self.name),
                            field,
                            source,
                        })
                })
                .transpose()
        };
        Ok(ConnectionSecrets {
            client_secret: open(&self.sealed.client_secret, fields::CLIENT_SECRET)?,
            access_token: open(&self.sealed.access_token, fields::ACCESS_TOKEN)?,
            refresh_token: open(&self.sealed.refresh_token, fields::REFRESH_TOKEN)?,
        })
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub org_id: OrgId,
    pub connection_id: String,
    pub connection_name: ConnectionName,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub actor: String,
    /// Never a secret.
    pub detail: Option<String>,
}

impl NewEvent {
    pub fn for_connection(
        conn: &Connection,
        kind: EventKind,
        actor: &str,
        at: DateTime<Utc>,
        detail: Option<String>,
    ) -> Self {
        Self {
            org_id: conn.org_id.clone(),
            connection_id: conn.id.clone(),
            connection_name: conn.name.clone(),
            at,
            kind,
            actor: actor.to_owned(),
            detail,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub actor: String,
    pub detail: Option<String>,
}

pub struct NewApiKey {
    pub name: String,
    pub role: Role,
    pub org_scope: OrgScope,
    pub key_hash: String,
    pub key_prefix: String,
    pub created_by: String,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub org_scope: OrgScope,
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What `rotate-keys` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// Ciphertexts re-sealed under the active key.
    pub resealed: u64,
    /// Ciphertexts already under the active key.
    pub current: u64,
}

/// An authorization waiting for its callback (RFC 6749 4.1.1, RFC 7636).
pub struct NewPending {
    /// SHA-256 of the state; the state itself is never stored.
    pub state_hash: String,
    pub org_id: OrgId,
    pub connection_id: String,
    pub pkce_verifier: SecretString,
    pub redirect_uri: String,
    pub return_to: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A consumed pending authorization, its verifier opened.
pub struct PendingAuthorization {
    pub state_hash: String,
    pub org_id: OrgId,
    pub connection_id: String,
    pub pkce_verifier: SecretString,
    pub redirect_uri: String,
    pub return_to: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// One error of a refresher run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RunError {
    pub org_id: String,
    pub connection_name: String,
    pub message: String,
}

/// A refresher run, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshRun {
    pub id: String,
    pub trigger: String,
    /// The replica that ran it.
    pub owner: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub considered: i64,
    pub refreshed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub errors: Vec<RunError>,
}

/// A workflow's declared use of a connection; `org_id` is the workflow's org (the
/// connection may be served from GLOBAL).
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    pub workflow_id: String,
    pub org_id: OrgId,
    pub connection_name: ConnectionName,
    pub workflow_name: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub last_accessed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DisabledWorkflow {
    pub workflow_id: String,
    pub org_id: OrgId,
    pub disabled_reason: String,
    pub disabled_at: DateTime<Utc>,
    pub related_oauth_connection: Option<String>,
}

/// A long-running on-behalf-of session.
#[derive(Debug, Clone, PartialEq)]
pub struct OboSession {
    pub id: String,
    pub org_id: OrgId,
    pub connection_id: String,
    pub connection_name: ConnectionName,
    pub label: Option<String>,
    pub created_by: String,
    pub created_by_key_id: String,
    pub scopes: Vec<String>,
    pub token_type: Option<String>,
    pub token_expires_at: Option<DateTime<Utc>>,
    /// `active` or `failed`.
    pub status: String,
    pub status_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub sealed: Sealed,
}

impl OboSession {
    pub fn aad<'a>(&'a self, field: &'a str) -> Aad<'a> {
        Aad {
            org_id: self.org_id.as_str(),
            row_id: &self.id,
            field,
        }
    }

    pub fn open_tokens(&self, keyring: &Keyring) -> StoreResult<ConnectionSecrets> {
        let open = |sealed: &Option<String>, field: &'static str| {
            sealed
                .as_deref()
                .map(|s| {
                    keyring
                        .open(s, self.aad(field))
                        .map_err(|source| StoreError::Crypto {
                            row: format!("obo session {}", self.id),
                            field,
                            source,
                        })
                })
                .transpose()
        };
        Ok(ConnectionSecrets {
            client_secret: None,
            access_token: open(&self.sealed.access_token, fields::ACCESS_TOKEN)?,
            refresh_token: open(&self.sealed.refresh_token, fields::REFRESH_TOKEN)?,
        })
    }
}

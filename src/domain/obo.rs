//! On-behalf-of: how an assertion is checked, and a long-running session's record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::names::{ConnectionName, OrgId};
use super::sealed::{ConnectionSecrets, Sealed, SealedError, SealedRow, fields};
use crate::crypto::Keyring;

/// What a user's assertion must satisfy before an exchange (the connection's
/// `assertion_validation`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AssertionRules {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub tenant_id: Option<String>,
    pub jwks_url: String,
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
    pub fn open_tokens(&self, keyring: &Keyring) -> Result<ConnectionSecrets, SealedError> {
        Ok(ConnectionSecrets {
            client_secret: None,
            access_token: self.open(keyring, &self.sealed.access_token, fields::ACCESS_TOKEN)?,
            refresh_token: self.open(keyring, &self.sealed.refresh_token, fields::REFRESH_TOKEN)?,
        })
    }
}

impl SealedRow for OboSession {
    fn org_id(&self) -> &str {
        self.org_id.as_str()
    }

    fn row_id(&self) -> &str {
        &self.id
    }

    fn describe(&self) -> String {
        format!("obo session {}", self.id)
    }
}

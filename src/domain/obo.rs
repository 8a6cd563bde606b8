//! On-behalf-of: how an assertion is checked, and a long-running session's record.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::names::{ConnectionName, OrgId};
use super::sealed::{ConnectionSecrets, Sealed, SealedError, fields, open_sealed};
use crate::crypto::{Aad, Keyring};

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
            format!("obo session {}", self.id)
        })
    }

    pub fn open_tokens(&self, keyring: &Keyring) -> Result<ConnectionSecrets, SealedError> {
        Ok(ConnectionSecrets {
            client_secret: None,
            access_token: self.open(keyring, &self.sealed.access_token, fields::ACCESS_TOKEN)?,
            refresh_token: self.open(keyring, &self.sealed.refresh_token, fields::REFRESH_TOKEN)?,
        })
    }
}

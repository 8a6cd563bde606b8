//! A connection: its configuration, its state, and its sealed secrets.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::enums::{ConnectionStatus, FlowType, OboGrant, TokenAuthMethod};
use super::names::{ConnectionName, OrgId};
use super::obo::AssertionRules;
use super::sealed::{ConnectionSecrets, Sealed, SealedError, SealedRow, fields};
use crate::crypto::Keyring;

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

impl ConnectionConfig {
    /// The URLs the broker sends this connection's secrets to (the client secret, refresh
    /// tokens, users' assertions), by field name. Changing one must come with the secret
    /// again, or a write-only secret could be read back by pointing it elsewhere.
    pub fn secret_destinations(&self) -> Vec<(&'static str, Option<&str>)> {
        vec![("token_url", Some(self.token_url.as_str()))]
    }

    /// Whether both configure the same grant: the fields whose change discards the
    /// stored tokens ("needs reconnection"). The client secret is compared apart, sealed.
    pub fn same_grant_as(&self, other: &ConnectionConfig) -> bool {
        self.flow_type == other.flow_type
            && self.client_id == other.client_id
            && self.authorization_url == other.authorization_url
            && self.token_url == other.token_url
            && self.scopes == other.scopes
            && self.obo_grant == other.obo_grant
            && self.assertion_validation == other.assertion_validation
    }
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

impl SealedRow for Connection {
    fn org_id(&self) -> &str {
        self.org_id.as_str()
    }

    fn row_id(&self) -> &str {
        &self.id
    }

    fn describe(&self) -> String {
        format!("connection {}/{}", self.org_id, self.name)
    }
}

/// Which connections a list shows: those of `orgs` (one or two: the caller's and
/// GLOBAL), optionally of one status and with names starting with `name_prefix`.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    pub orgs: Vec<OrgId>,
    pub status: Option<ConnectionStatus>,
    pub name_prefix: Option<String>,
}

impl ConnectionFilter {
    /// The half-open range of names `[low, high)` the prefix selects, so the list reads a
    /// range of the `(org_id, name)` index rather than matching a pattern. Names are
    /// ASCII (`[A-Za-z0-9_-]`), so the bound after a prefix is its last byte plus one.
    pub fn name_range(&self) -> Option<(String, String)> {
        let prefix = self.name_prefix.as_deref().filter(|p| !p.is_empty())?;
        let mut high = prefix.as_bytes().to_vec();
        let last = high.last_mut().expect("a non-empty prefix");
        *last = last.saturating_add(1);
        Some((
            prefix.to_owned(),
            String::from_utf8_lossy(&high).into_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_prefix_selects_the_names_that_start_with_it() {
        let filter = ConnectionFilter {
            name_prefix: Some("git".into()),
            ..Default::default()
        };
        let (low, high) = filter.name_range().unwrap();
        for name in ["git", "github", "gitlab", "git_z", "git-1"] {
            assert!(low.as_str() <= name && name < high.as_str(), "{name} is in");
        }
        for name in ["gis", "giu", "gh", "gi"] {
            assert!(
                !(low.as_str() <= name && name < high.as_str()),
                "{name} is out"
            );
        }
        assert_eq!(ConnectionFilter::default().name_range(), None);
    }
}

//! Authorizations waiting for their callback (RFC 6749 4.1.1, RFC 7636).

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::names::OrgId;

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

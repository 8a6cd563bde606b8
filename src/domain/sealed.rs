//! Secrets at rest: the sealed columns of a row, how they open, and what a save does
//! to each. Plaintext only ever appears as `SecretString`, which never prints.

use std::fmt;

use secrecy::SecretString;

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

/// A record whose secrets are sealed bound to its org, its id and the field.
pub trait SealedRow {
    fn org_id(&self) -> &str;
    fn row_id(&self) -> &str;
    /// Names the record in an error (never a secret).
    fn describe(&self) -> String;

    /// What a field of this record is bound to.
    fn aad<'a>(&'a self, field: &'a str) -> Aad<'a> {
        Aad {
            org_id: self.org_id(),
            row_id: self.row_id(),
            field,
        }
    }

    /// Opens a sealed field of this record, if it holds one.
    fn open(
        &self,
        keyring: &Keyring,
        sealed: &Option<String>,
        field: &'static str,
    ) -> Result<Option<SecretString>, SealedError> {
        sealed
            .as_deref()
            .map(|s| {
                keyring
                    .open(s, self.aad(field))
                    .map_err(|source| SealedError {
                        row: self.describe(),
                        field,
                        source,
                    })
            })
            .transpose()
    }
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

//! What can go wrong in a service call, named for what happened. `http` turns each into
//! its problem+json answer; the command line prints them.

use crate::domain::{ConnectionName, ConnectionStatus, FieldErrors};
use crate::oauth::OboError;
use crate::store::StoreError;

/// Why no token could be given for a connection.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoToken {
    /// The connection cannot give a token now.
    #[error("the connection cannot give a token ({status})")]
    Status {
        status: ConnectionStatus,
        message: Option<String>,
    },
    /// The provider failed the refresh; `status` is the connection's status after it
    /// (`failed` when the failure is permanent).
    #[error("the provider failed the refresh: {message}")]
    ProviderFailed {
        status: ConnectionStatus,
        message: String,
    },
    /// Another replica holds the refresh and did not finish in time.
    #[error("another replica is refreshing the connection")]
    Busy,
    /// A database failure (logged where it happened).
    #[error("the refresh failed inside the service: {0}")]
    Internal(String),
}

/// An on-behalf-of exchange of `connection` that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OboFailure {
    /// The assertion failed local validation; `reason` names the claim.
    #[error("the assertion for `{connection}` is not valid: {reason}")]
    AssertionInvalid {
        connection: ConnectionName,
        reason: String,
    },
    /// The provider refused or could not be reached.
    #[error("the exchange for `{connection}` failed: {error}")]
    Exchange {
        connection: ConnectionName,
        error: OboError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid input: {0:?}")]
    Invalid(FieldErrors),
    /// The action does not apply to this resource (e.g. a browser authorization of a
    /// client-credentials connection).
    #[error("not applicable: {0}")]
    NotApplicable(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// Workflows depend on the connection; deleting it needs their disabling confirmed.
    #[error("workflows depend on it: {0:?}")]
    DependentsExist(Vec<String>),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A session that expired or was revoked.
    #[error("gone: {0}")]
    Gone(String),
    #[error(transparent)]
    NoToken(#[from] NoToken),
    /// The provider refused or failed a request made on the caller's behalf.
    #[error("provider error: {0}")]
    Provider(String),
    #[error(transparent)]
    Obo(#[from] OboFailure),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::domain::Forbidden> for Error {
    fn from(e: crate::domain::Forbidden) -> Self {
        Error::Forbidden(e.0)
    }
}

impl From<FieldErrors> for Error {
    fn from(errors: FieldErrors) -> Self {
        Error::Invalid(errors)
    }
}

impl From<crate::domain::SealedError> for Error {
    fn from(e: crate::domain::SealedError) -> Self {
        Error::Store(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Domain types that parse on construction: a value of one of these types is valid.
//!
//! Handlers turn request fields into these types (collecting every failure under the
//! field's name); the store and the OAuth client accept nothing else.

mod enums;
mod names;
mod provider_url;
mod scopes;

pub use enums::{ConnectionStatus, EventKind, FlowType, OboGrant, Role, TokenAuthMethod};
pub use names::{ConnectionName, OrgId, OrgScope, WorkflowId};
pub use provider_url::ProviderUrl;
pub use scopes::Scopes;

/// Why a value did not parse; shown to the caller under the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

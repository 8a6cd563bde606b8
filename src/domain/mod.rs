//! The values and records every layer shares.
//!
//! Values parse on construction (a `ConnectionName` cannot hold an invalid name):
//! handlers turn request fields into them, collecting every failure under the field's
//! name in `FieldErrors`; the store and the OAuth client accept nothing else. Records
//! (a connection, an OBO session, an event, a key, a run) are what services, the store
//! and the provider client pass between them.

mod caller;
mod connection;
mod enums;
mod errors;
mod event;
mod key;
mod names;
mod obo;
mod page;
mod pending;
mod provider_url;
mod run;
mod scopes;
mod sealed;
mod workflow;

pub use caller::{Caller, Forbidden};
pub use connection::{Connection, ConnectionConfig, ConnectionFilter, NewConnection};
pub use enums::{ConnectionStatus, EventKind, FlowType, OboGrant, Role, TokenAuthMethod};
pub use errors::{FieldErrors, ParseError};
pub use event::{Event, NewEvent};
pub use key::{ApiKey, NewApiKey};
pub use names::{ConnectionName, OrgId, OrgScope, WorkflowId};
pub use obo::{AssertionRules, OboSession};
pub use page::{Page, PageRequest};
pub use pending::{NewPending, PendingAuthorization};
pub use provider_url::ProviderUrl;
pub use run::{RefreshRun, RunError};
pub use scopes::Scopes;
pub use sealed::{
    ConnectionSecrets, Sealed, SealedError, SealedRow, SecretWrite, SecretWrites, fields,
};
pub use workflow::{Dependency, DisabledWorkflow};

//! Workflows: which connections they depend on, and which were disabled.

use chrono::{DateTime, Utc};

use super::names::{ConnectionName, OrgId};

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

//! API keys as stored: never the key itself, only its hash and a display prefix.

use chrono::{DateTime, Utc};

use super::enums::Role;
use super::names::OrgScope;

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

//! A connection's history: what happened, when, and who did it.

use chrono::{DateTime, Utc};

use super::connection::Connection;
use super::enums::EventKind;
use super::names::{ConnectionName, OrgId};

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub org_id: OrgId,
    pub connection_id: String,
    pub connection_name: ConnectionName,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub actor: String,
    /// Never a secret.
    pub detail: Option<String>,
}

impl NewEvent {
    pub fn for_connection(
        conn: &Connection,
        kind: EventKind,
        actor: &str,
        at: DateTime<Utc>,
        detail: Option<String>,
    ) -> Self {
        Self {
            org_id: conn.org_id.clone(),
            connection_id: conn.id.clone(),
            connection_name: conn.name.clone(),
            at,
            kind,
            actor: actor.to_owned(),
            detail,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub actor: String,
    pub detail: Option<String>,
}

//! Who is calling, and what they may do: an API key's role and org scope.
//!
//! The rules (routes of the contract's "API keys" section): an `admin` key manages, a
//! `workflow` key reads credentials; a key bound to one org acts only there, a key for
//! every org (`*`) acts everywhere, GLOBAL included.

use super::enums::Role;
use super::names::{OrgId, OrgScope};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub key_id: String,
    pub name: String,
    pub role: Role,
    pub org_scope: OrgScope,
}

/// The caller lacks a right; the message says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

impl Caller {
    /// Admin rights in `org`.
    pub fn require_admin(&self, org: &OrgId) -> Result<(), Forbidden> {
        if self.role != Role::Admin {
            return Err(Forbidden("this route needs an admin key".into()));
        }
        self.require_org(org)
    }

    /// Admin rights over every org (keys, refresher).
    pub fn require_global_admin(&self) -> Result<(), Forbidden> {
        if self.role != Role::Admin || self.org_scope != OrgScope::All {
            return Err(Forbidden(
                "this route needs an admin key for every org (`*`)".into(),
            ));
        }
        Ok(())
    }

    /// Any role, acting in `org`.
    pub fn require_org(&self, org: &OrgId) -> Result<(), Forbidden> {
        if !self.org_scope.covers(org) {
            return Err(Forbidden(format!("this key may not act in org `{org}`")));
        }
        Ok(())
    }

    pub fn sees_every_org(&self) -> bool {
        self.org_scope == OrgScope::All
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

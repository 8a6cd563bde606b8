//! Identifiers: organization ids, connection names, workflow ids, key org scopes.

use std::fmt;

use serde::Serialize;

use super::errors::ParseError;

fn check(
    value: &str,
    max: usize,
    allowed: impl Fn(u8) -> bool,
    what: &str,
    pattern: &str,
) -> Result<(), ParseError> {
    if value.is_empty() {
        return Err(ParseError::new(format!("{what} must not be empty")));
    }
    if value.len() > max {
        return Err(ParseError::new(format!(
            "{what} must be at most {max} characters"
        )));
    }
    if !value.bytes().all(allowed) {
        return Err(ParseError::new(format!("{what} must match {pattern}")));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// `^[A-Za-z0-9_.-]{1,64}$`; `GLOBAL` is the shared organization.
    OrgId
);
string_newtype!(
    /// `^[A-Za-z0-9_-]{1,100}$`, unique per organization.
    ConnectionName
);
string_newtype!(
    /// An opaque workflow id from the caller's orchestrator: `^[A-Za-z0-9_.:-]{1,128}$`.
    WorkflowId
);

impl OrgId {
    pub const GLOBAL: &'static str = "GLOBAL";

    pub fn parse(value: &str) -> Result<Self, ParseError> {
        check(
            value,
            64,
            |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'),
            "organization id",
            "^[A-Za-z0-9_.-]{1,64}$",
        )?;
        // `.` and `..` alone would read as paths in logs and URLs; refuse them.
        if value.bytes().all(|b| b == b'.') {
            return Err(ParseError::new("organization id must not be only dots"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn global() -> Self {
        Self(Self::GLOBAL.to_owned())
    }

    pub fn is_global(&self) -> bool {
        self.0 == Self::GLOBAL
    }
}

impl ConnectionName {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        check(
            value,
            100,
            |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'),
            "connection name",
            "^[A-Za-z0-9_-]{1,100}$",
        )?;
        Ok(Self(value.to_owned()))
    }
}

impl WorkflowId {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        check(
            value,
            128,
            |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'),
            "workflow id",
            "^[A-Za-z0-9_.:-]{1,128}$",
        )?;
        if value.bytes().all(|b| b == b'.') {
            return Err(ParseError::new("workflow id must not be only dots"));
        }
        Ok(Self(value.to_owned()))
    }
}

/// The organizations an API key may act in: one org, or `*` for all (GLOBAL included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgScope {
    All,
    One(OrgId),
}

impl OrgScope {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        if value == "*" {
            Ok(Self::All)
        } else {
            OrgId::parse(value).map(Self::One)
        }
    }

    pub fn covers(&self, org: &OrgId) -> bool {
        match self {
            Self::All => true,
            Self::One(own) => own == org,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::All => "*",
            Self::One(org) => org.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_refuse_paths_spaces_unicode_and_sql() {
        for bad in [
            "",
            "a/b",
            "..",
            "a b",
            "café",
            "x'; drop table connections; --",
            "a.b",
            &"n".repeat(101),
        ] {
            assert!(
                ConnectionName::parse(bad).is_err(),
                "{bad:?} must be refused"
            );
        }
        for good in ["graph", "Graph_2-prod", &"n".repeat(100)] {
            assert!(ConnectionName::parse(good).is_ok(), "{good:?} must parse");
        }
    }

    #[test]
    fn org_ids_follow_the_contract_pattern() {
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"o".repeat(65)] {
            assert!(OrgId::parse(bad).is_err(), "{bad:?} must be refused");
        }
        for good in ["GLOBAL", "acme", "acme.eu-1_x"] {
            assert!(OrgId::parse(good).is_ok(), "{good:?} must parse");
        }
    }

    #[test]
    fn an_org_scope_covers_its_org_only_unless_it_is_all() {
        let acme = OrgId::parse("acme").unwrap();
        let other = OrgId::parse("other").unwrap();
        assert!(OrgScope::All.covers(&OrgId::global()));
        let scope = OrgScope::parse("acme").unwrap();
        assert!(scope.covers(&acme));
        assert!(!scope.covers(&other));
        assert!(!scope.covers(&OrgId::global()));
    }
}

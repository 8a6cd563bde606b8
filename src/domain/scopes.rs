//! OAuth scopes: RFC 6749 section 3.3 scope tokens, sent joined by single spaces.

use serde::Serialize;

use super::errors::ParseError;

pub const MAX_SCOPES: usize = 100;
pub const MAX_SCOPE_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Scopes(Vec<String>);

impl Scopes {
    /// Each scope is `1*( %x21 / %x23-5B / %x5D-7E )` (RFC 6749 3.3); duplicates are dropped.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, ParseError> {
        if values.len() > MAX_SCOPES {
            return Err(ParseError::new(format!(
                "at most {MAX_SCOPES} scopes are allowed"
            )));
        }
        let mut out: Vec<String> = Vec::with_capacity(values.len());
        for value in values {
            let value = value.as_ref();
            if value.is_empty() || value.len() > MAX_SCOPE_LEN {
                return Err(ParseError::new(format!(
                    "each scope must be 1 to {MAX_SCOPE_LEN} characters"
                )));
            }
            if !value
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
            {
                return Err(ParseError::new(format!(
                    "scope `{}` has a character RFC 6749 3.3 does not allow (spaces, quotes, backslashes, non-ASCII)",
                    value.escape_default()
                )));
            }
            if !out.iter().any(|s| s == value) {
                out.push(value.to_owned());
            }
        }
        Ok(Self(out))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `scope` parameter value.
    pub fn joined(&self) -> String {
        self.0.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_join_with_spaces_and_drop_duplicates() {
        let s = Scopes::parse(&["User.Read", "offline_access", "User.Read"]).unwrap();
        assert_eq!(s.joined(), "User.Read offline_access");
    }

    #[test]
    fn scopes_with_spaces_quotes_or_unicode_are_refused() {
        for bad in ["a b", "\"q\"", "back\\slash", "é", ""] {
            assert!(Scopes::parse(&[bad]).is_err(), "{bad:?} must be refused");
        }
    }
}

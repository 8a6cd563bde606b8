//! Why input was refused: one value that did not parse, and failures collected by
//! field so a caller sees all of them at once.

use std::collections::BTreeMap;

/// Why a value did not parse; shown to the caller under the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Validation failures by field name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    /// Records a parse failure under `field` and returns the parsed value, if any.
    pub fn take<T>(&mut self, field: &str, parsed: Result<T, ParseError>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.0);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Err(self)` when anything was recorded.
    pub fn finish(self) -> Result<(), FieldErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// One failure of one field.
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> FieldErrors {
        let mut e = Self::default();
        e.add(field, message);
        e
    }

    /// The messages by field name.
    pub fn into_map(self) -> BTreeMap<String, Vec<String>> {
        self.0
    }
}

//! What the store reads and writes besides the domain's records.

use chrono::{DateTime, TimeZone, Utc};

pub fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// What `rotate-keys` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// Ciphertexts re-sealed under the active key.
    pub resealed: u64,
    /// Ciphertexts already under the active key.
    pub current: u64,
}

/// Rows that carry a refresh lease (`lease_owner`, `lease_until`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leased {
    Connection,
    OboSession,
}

/// Which database backs the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

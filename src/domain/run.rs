//! Refresher runs, as recorded.

use chrono::{DateTime, Utc};

/// One error of a refresher run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RunError {
    pub org_id: String,
    pub connection_name: String,
    pub message: String,
}

/// A refresher run, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshRun {
    pub id: String,
    pub trigger: String,
    /// The replica that ran it.
    pub owner: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub considered: i64,
    pub refreshed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub errors: Vec<RunError>,
}

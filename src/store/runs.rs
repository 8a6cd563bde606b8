//! Refresher runs: one row per pass of the refresher, with a heartbeat so a run whose
//! process died can be told from one still going.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::error::StoreResult;
use super::sql::{SqlStore, on_db, to_json};
use super::types::{from_ms, to_ms};
use crate::domain::{RefreshRun, RunError};

/// The refresher's runs.
#[async_trait]
pub trait RunStore {
    async fn insert_refresh_run(&self, run: &RefreshRun) -> StoreResult<()>;
    async fn finish_refresh_run(&self, run: &RefreshRun) -> StoreResult<()>;
    /// Records that run `id` is still going (its process is alive) at `at`.
    async fn beat_refresh_run(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Finishes, with `error` as their only error, the unfinished runs with no sign of
    /// life (heartbeat, or start) after `silent_since`: their process died. Each ends at
    /// its last sign of life. Returns how many.
    async fn finish_silent_refresh_runs(
        &self,
        silent_since: DateTime<Utc>,
        error: &RunError,
    ) -> StoreResult<u64>;
    /// The newest finished run, and the newest unfinished run started after `since`.
    async fn latest_refresh_runs(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<(Option<RefreshRun>, Option<RefreshRun>)>;
}

#[async_trait]
impl RunStore for SqlStore {
    async fn insert_refresh_run(&self, run: &RefreshRun) -> StoreResult<()> {
        on_db!(self, |pool| {
            sqlx::query(
                "insert into refresh_runs (id, trigger, owner, started_at) values ($1, $2, $3, $4)",
            )
            .bind(&run.id)
            .bind(&run.trigger)
            .bind(&run.owner)
            .bind(to_ms(run.started_at))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    async fn finish_refresh_run(&self, run: &RefreshRun) -> StoreResult<()> {
        on_db!(self, |pool| {
            sqlx::query(
                "update refresh_runs set finished_at = $2, considered = $3, refreshed = $4, \
                 failed = $5, skipped = $6, errors = $7 where id = $1",
            )
            .bind(&run.id)
            .bind(run.finished_at.map(to_ms))
            .bind(run.considered)
            .bind(run.refreshed)
            .bind(run.failed)
            .bind(run.skipped)
            .bind(to_json(&run.errors))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    async fn beat_refresh_run(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        on_db!(self, |pool| {
            sqlx::query(
                "update refresh_runs set heartbeat_at = $2 where id = $1 and finished_at is null",
            )
            .bind(id)
            .bind(to_ms(at))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    async fn finish_silent_refresh_runs(
        &self,
        silent_since: DateTime<Utc>,
        error: &RunError,
    ) -> StoreResult<u64> {
        let finished = on_db!(self, |pool| {
            sqlx::query(
                "update refresh_runs set finished_at = coalesce(heartbeat_at, started_at), \
                 errors = $2 where finished_at is null \
                 and coalesce(heartbeat_at, started_at) <= $1",
            )
            .bind(to_ms(silent_since))
            .bind(to_json(&[error]))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(finished)
    }

    async fn latest_refresh_runs(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<(Option<RefreshRun>, Option<RefreshRun>)> {
        let last: Option<RunRow> = on_db!(self, |pool| {
            sqlx::query_as(
            "select id, trigger, owner, started_at, finished_at, considered, refreshed, failed, \
             skipped, errors from refresh_runs where finished_at is not null \
             order by started_at desc limit 1",
        )
        .fetch_optional(pool)
        .await
        })?;
        let running: Option<RunRow> = on_db!(self, |pool| {
            sqlx::query_as(
            "select id, trigger, owner, started_at, finished_at, considered, refreshed, failed, \
             skipped, errors from refresh_runs where finished_at is null and started_at > $1 \
             order by started_at desc limit 1",
        )
        .bind(to_ms(since))
        .fetch_optional(pool)
        .await
        })?;
        Ok((last.map(RefreshRun::from), running.map(RefreshRun::from)))
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    trigger: String,
    owner: String,
    started_at: i64,
    finished_at: Option<i64>,
    considered: i64,
    refreshed: i64,
    failed: i64,
    skipped: i64,
    errors: String,
}

impl From<RunRow> for RefreshRun {
    fn from(r: RunRow) -> Self {
        RefreshRun {
            id: r.id,
            trigger: r.trigger,
            owner: r.owner,
            started_at: from_ms(r.started_at),
            finished_at: r.finished_at.map(from_ms),
            considered: r.considered,
            refreshed: r.refreshed,
            failed: r.failed,
            skipped: r.skipped,
            errors: serde_json::from_str(&r.errors).unwrap_or_default(),
        }
    }
}

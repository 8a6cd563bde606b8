//! History has a lifetime: events, finished refresher runs, and ended on-behalf-of
//! sessions are deleted once older than their retention, a small batch per statement so
//! that no delete holds a long lock (PostgreSQL) or the writer (SQLite) for long.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::error::StoreResult;
use super::sql::{SqlStore, on_db};
use super::types::to_ms;

/// What history is purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// Connection events older than the cut-off.
    Events,
    /// Refresher runs that finished before the cut-off.
    RefreshRuns,
    /// On-behalf-of sessions that expired or were revoked before the cut-off.
    EndedSessions,
}

#[async_trait]
pub trait RetentionStore {
    /// Deletes at most `limit` rows of `what` from before `before`; returns how many.
    async fn purge(&self, what: History, before: DateTime<Utc>, limit: i64) -> StoreResult<u64>;
}

#[async_trait]
impl RetentionStore for SqlStore {
    async fn purge(&self, what: History, before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
        let sql = match what {
            History::Events => {
                "delete from events where id in \
                 (select id from events where at < $1 order by at limit $2)"
            }
            History::RefreshRuns => {
                "delete from refresh_runs where id in (select id from refresh_runs \
                 where finished_at is not null and finished_at < $1 limit $2)"
            }
            History::EndedSessions => {
                "delete from obo_sessions where id in (select id from obo_sessions \
                 where expires_at < $1 or revoked_at < $1 limit $2)"
            }
        };
        let purged = on_db!(self, |pool| {
            sqlx::query(sql)
                .bind(to_ms(before))
                .bind(limit)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(purged)
    }
}

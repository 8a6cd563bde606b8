//! Purging history past its retention (`OAUTH_BROKER_HISTORY_RETENTION_DAYS`, default
//! 30 days, for events and refresher runs; ended on-behalf-of sessions a day after they
//! ended, so their owners see 410 rather than 404 for a while). Each replica runs it
//! after each refresher run, a small batch at a time.

use chrono::Duration;

use super::Broker;
use crate::store::History;

/// Rows deleted by one statement.
const BATCH: i64 = 1_000;
/// Ended sessions are kept this long after they ended.
const ENDED_SESSIONS_KEPT_DAYS: i64 = 1;

/// What a purge deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    pub refresh_runs: u64,
    pub ended_sessions: u64,
}

/// Deletes history older than its retention, in batches of `BATCH` rows with a pause
/// between them (others' writes go first).
pub async fn purge_history(broker: &Broker) -> Purged {
    let now = broker.clock.now();
    let retention = Duration::days(broker.settings.history_retention_days as i64);
    Purged {
        events: purge(broker, History::Events, now - retention).await,
        refresh_runs: purge(broker, History::RefreshRuns, now - retention).await,
        ended_sessions: purge(
            broker,
            History::EndedSessions,
            now - Duration::days(ENDED_SESSIONS_KEPT_DAYS),
        )
        .await,
    }
}

async fn purge(broker: &Broker, what: History, before: chrono::DateTime<chrono::Utc>) -> u64 {
    let mut purged = 0;
    loop {
        match broker.store.purge(what, before, BATCH).await {
            Ok(n) => {
                purged += n;
                if n < BATCH as u64 {
                    return purged;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, what = ?what, "could not purge history; the next run tries again");
                return purged;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

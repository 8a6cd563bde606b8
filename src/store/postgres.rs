//! PostgreSQL: for several replicas sharing one database.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;

use super::error::StoreResult;
use super::lookups::{ANNOUNCEMENTS, Lookups};

pub async fn open(url: &str, max_connections: u32) -> StoreResult<sqlx::PgPool> {
    let pool = super::connect::pool_options::<sqlx::Postgres>(max_connections)
        .connect(url)
        .await?;
    // The migrator takes an advisory lock, so replicas starting together apply each
    // migration once.
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
}

/// Follows the other replicas' announced writes (LISTEN) into `lookups`, for as long as
/// the pool is open. Whenever announcements may have been missed (not yet listening, the
/// connection lost), everything remembered is forgotten first.
pub async fn follow_announcements(pool: sqlx::PgPool, lookups: Arc<Lookups>) {
    let mut failures = 0u32;
    while !pool.is_closed() {
        lookups.forget_everything();
        match listen(&pool, &lookups).await {
            Ok(()) => failures = 0,
            Err(e) if pool.is_closed() => {
                tracing::debug!(error = %e, "stopped following other replicas' writes");
                return;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %e, "lost the announcements of other replicas' writes; retrying (until then, nothing is answered from memory for long)");
                }
                // Until listening again, lookups are forgotten every second.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Listens until the connection is lost (`Ok`) or cannot be made (`Err`).
async fn listen(pool: &sqlx::PgPool, lookups: &Lookups) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(ANNOUNCEMENTS).await?;
    // Reads that began before LISTEN took effect may predate a write it never heard of.
    lookups.forget_everything();
    while let Some(announcement) = listener.try_recv().await? {
        lookups.heard(announcement.payload());
    }
    Ok(())
}

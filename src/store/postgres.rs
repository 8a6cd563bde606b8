//! PostgreSQL: for several replicas sharing one database.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use super::StoreResult;

pub async fn open(url: &str, max_connections: u32) -> StoreResult<sqlx::PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(10))
        // No ping on every checkout (a round trip on the credentials hot path: +21%
        // measured); a dead connection shows as an error and the pool replaces it.
        .test_before_acquire(false)
        // A connection whose transaction the database ended by itself (SQLite rolls
        // back on SQLITE_FULL, and sqlx's own ROLLBACK then fails) must not be handed
        // out again mid-transaction: the pool closes it instead. One atomic read.
        .before_acquire(|conn, _| {
            Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
        })
        .connect(url)
        .await?;
    // The migrator takes an advisory lock, so replicas starting together apply each
    // migration once.
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
}

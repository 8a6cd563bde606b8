//! PostgreSQL: for several replicas sharing one database.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use super::StoreResult;

pub async fn open(url: &str, max_connections: u32) -> StoreResult<sqlx::PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?;
    // The migrator takes an advisory lock, so replicas starting together apply each
    // migration once.
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
}

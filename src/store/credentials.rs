//! Reading connections to hand out their tokens (the hot path, remembered by `lookups`),
//! and the refresh leases and due pages that keep those tokens fresh.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::connections::{ConnectionRow, connection_columns};
use super::error::StoreResult;
use super::lookups::Usable;
use super::sql::{AnyPool, SqlStore, on_db};
use super::types::{Leased, to_ms};
use crate::domain::{Connection, ConnectionName, OrgId};

/// Credentials lookups and refreshing.
#[async_trait]
pub trait CredentialStore {
    /// The connection `name` of `org`, else of GLOBAL: one query.
    async fn find_for_credentials(
        &self,
        org: &OrgId,
        name: &ConnectionName,
    ) -> StoreResult<Option<Connection>>;
    /// `find_for_credentials`, answered from this process's memory when it read the same
    /// lookup moments ago and `usable` accepts the connection it remembers (see
    /// `lookups.rs` for exactly when).
    async fn find_for_credentials_cached(
        &self,
        org: &OrgId,
        name: &ConnectionName,
        usable: &Usable,
    ) -> StoreResult<Option<Arc<Connection>>>;
    /// Takes the refresh lease of a connection if nobody holds a live one. The lease
    /// makes one replica the only one calling the provider for this grant.
    async fn try_lease(
        &self,
        what: Leased,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn release_lease(&self, what: Leased, id: &str, owner: &str) -> StoreResult<()>;
    /// Leases to `claim.owner` up to `claim.limit` connections due for a refresh, after
    /// `claim.after` in the claim order (`ClaimPosition`), and returns them in that
    /// order: completed, renewable, expiring before `due_before` (or of unknown expiry),
    /// not cooling down, not refreshed since `not_refreshed_since`, not leased by
    /// anyone. Replicas claiming at once get different connections (PostgreSQL skips
    /// rows another claim is locking; SQLite has one writer).
    async fn claim_due_connections(&self, claim: &Claim<'_>) -> StoreResult<Vec<Connection>>;
    /// Releases every lease `owner` holds; returns how many.
    async fn release_claims(&self, owner: &str) -> StoreResult<u64>;
}

/// What a claim's owner starts with: a lease only reserving the row (see `lease_sql!`).
pub const CLAIM_PREFIX: &str = "claim:";

/// A refresher batch's claim.
pub struct Claim<'a> {
    /// `CLAIM_PREFIX` and the replica's id.
    pub owner: &'a str,
    pub now: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub due_before: DateTime<Utc>,
    pub not_refreshed_since: DateTime<Utc>,
    /// Where the previous batch ended.
    pub after: &'a ClaimPosition,
    pub limit: i64,
}

/// A run's position in the order it claims due connections: those of unknown expiry
/// first, by id; then by expiry, then id. Both orders are the claim index's
/// `(status, token_expires_at, id)`, so a claim reads one range of it however many
/// connections there are (ordering a million due rows by id alone sorted them all for
/// every batch: 0.5 s a claim at 100,000 rows on SQLite, against 6 ms now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPosition {
    Start,
    UnknownExpiry { after_id: String },
    Expiring { after_expiry: i64, after_id: String },
}

impl ClaimPosition {
    /// The position just after `conn`.
    pub fn after(conn: &Connection) -> Self {
        match conn.token_expires_at {
            None => Self::UnknownExpiry {
                after_id: conn.id.clone(),
            },
            Some(at) => Self::Expiring {
                after_expiry: to_ms(at),
                after_id: conn.id.clone(),
            },
        }
    }
}

/// Conditions every claimed row meets besides its place in the order.
macro_rules! claimable {
    () => {
        "status = 'completed' \
         and flow_type in ('client_credentials', 'refresh_token', 'authorization_code') \
         and (next_refresh_attempt_at is null or next_refresh_attempt_at <= $3) \
         and (last_refresh_at is null or last_refresh_at < $4) \
         and (lease_until is null or lease_until < $3)"
    };
}

/// The claim's statements: `$locking` is PostgreSQL's `for update skip locked`.
/// `$1` owner, `$2` until, `$3` now, `$4` not refreshed since, `$5` limit, `$6` the
/// position's id; for expiring rows also `$7` due before and `$8` the position's expiry.
macro_rules! claim_sql {
    (unknown_expiry, $locking:literal) => {
        concat!(
            "update connections set lease_owner = $1, lease_until = $2 where id in \
             (select id from connections where ",
            claimable!(),
            " and token_expires_at is null and id > $6 order by id limit $5",
            $locking,
            ") returning ",
            connection_columns!()
        )
    };
    (expiring, $locking:literal) => {
        concat!(
            "update connections set lease_owner = $1, lease_until = $2 where id in \
             (select id from connections where ",
            claimable!(),
            " and token_expires_at is not null and token_expires_at < $7 \
             and (token_expires_at, id) > ($8, $6) order by token_expires_at, id limit $5",
            $locking,
            ") returning ",
            connection_columns!()
        )
    };
}

/// Lease statements for a table: take one that is free, expired, already ours, or only
/// claimed by a refresher run (`CLAIM_PREFIX`): a claim reserves a row for a run's
/// batch, and whoever needs the row first takes it (the run's own turn then takes the
/// lease like any caller, and re-reads the row under it); release ours.
macro_rules! lease_sql {
    (take, $table:literal) => {
        concat!(
            "update ",
            $table,
            " set lease_owner = $2, lease_until = $4 \
             where id = $1 and (lease_until is null or lease_until < $3 or lease_owner = $2 \
             or lease_owner like 'claim:%')"
        )
    };
    (release, $table:literal) => {
        concat!(
            "update ",
            $table,
            " set lease_owner = null, lease_until = null where id = $1 and lease_owner = $2"
        )
    };
}

#[async_trait]
impl CredentialStore for SqlStore {
    async fn find_for_credentials(
        &self,
        org: &OrgId,
        name: &ConnectionName,
    ) -> StoreResult<Option<Connection>> {
        // One round trip: the org's own connection sorts before GLOBAL's.
        let row: Option<ConnectionRow> = on_db!(self, |pool| {
            sqlx::query_as(concat!(
                "select ",
                connection_columns!(),
                " from connections where name = $1 and (org_id = $2 or org_id = 'GLOBAL') \
                 order by case when org_id = $2 then 0 else 1 end limit 1"
            ))
            .bind(name.as_str())
            .bind(org.as_str())
            .fetch_optional(pool)
            .await
        })?;
        row.map(Connection::try_from).transpose()
    }

    async fn find_for_credentials_cached(
        &self,
        org: &OrgId,
        name: &ConnectionName,
        usable: &Usable,
    ) -> StoreResult<Option<Arc<Connection>>> {
        if let Some(known) = self.lookups.get(org.as_str(), name.as_str(), usable) {
            return Ok(known);
        }
        let ticket = self.lookups.ticket();
        let found = self.find_for_credentials(org, name).await?.map(Arc::new);
        self.lookups
            .remember(ticket, org.as_str(), name.as_str(), found.clone());
        Ok(found)
    }

    async fn try_lease(
        &self,
        what: Leased,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let sql = match what {
            Leased::Connection => lease_sql!(take, "connections"),
            Leased::OboSession => lease_sql!(take, "obo_sessions"),
        };
        let taken = on_db!(self, |pool| {
            sqlx::query(sql)
                .bind(id)
                .bind(owner)
                .bind(to_ms(now))
                .bind(to_ms(until))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(taken == 1)
    }

    async fn release_lease(&self, what: Leased, id: &str, owner: &str) -> StoreResult<()> {
        let sql = match what {
            Leased::Connection => lease_sql!(release, "connections"),
            Leased::OboSession => lease_sql!(release, "obo_sessions"),
        };
        on_db!(self, |pool| {
            sqlx::query(sql).bind(id).bind(owner).execute(pool).await?;
        });
        Ok(())
    }

    async fn claim_due_connections(&self, claim: &Claim<'_>) -> StoreResult<Vec<Connection>> {
        let postgres = matches!(self.db, AnyPool::Postgres(_));
        let (unknown_after, expiring_after) = match claim.after {
            ClaimPosition::Start => (Some(""), (i64::MIN, "")),
            ClaimPosition::UnknownExpiry { after_id } => (Some(after_id.as_str()), (i64::MIN, "")),
            ClaimPosition::Expiring {
                after_expiry,
                after_id,
            } => (None, (*after_expiry, after_id.as_str())),
        };
        let mut rows = Vec::new();
        if let Some(after_id) = unknown_after {
            let sql = if postgres {
                claim_sql!(unknown_expiry, " for update skip locked")
            } else {
                claim_sql!(unknown_expiry, "")
            };
            let mut batch = self
                .claim_range(sql, claim, claim.limit, after_id, None)
                .await?;
            // `returning` gives no order: put the batch in the claim's.
            batch.sort_by(|a, b| a.id.cmp(&b.id));
            rows.extend(batch);
        }
        let left = claim.limit - rows.len() as i64;
        if left > 0 {
            let sql = if postgres {
                claim_sql!(expiring, " for update skip locked")
            } else {
                claim_sql!(expiring, "")
            };
            let (after_expiry, after_id) = expiring_after;
            let expiring = Some((to_ms(claim.due_before), after_expiry));
            let mut batch = self
                .claim_range(sql, claim, left, after_id, expiring)
                .await?;
            batch.sort_by(|a, b| (a.token_expires_at, &a.id).cmp(&(b.token_expires_at, &b.id)));
            rows.extend(batch);
        }
        rows.into_iter().map(Connection::try_from).collect()
    }

    async fn release_claims(&self, owner: &str) -> StoreResult<u64> {
        let released = on_db!(self, |pool| {
            sqlx::query(
                "update connections set lease_owner = null, lease_until = null \
                 where lease_owner = $1",
            )
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(released)
    }
}

impl SqlStore {
    /// Runs one claim statement of `claim_sql!`: `limit` rows after `after_id`, and for
    /// expiring rows `(due_before, after_expiry)`.
    async fn claim_range(
        &self,
        sql: &'static str,
        claim: &Claim<'_>,
        limit: i64,
        after_id: &str,
        expiring: Option<(i64, i64)>,
    ) -> StoreResult<Vec<ConnectionRow>> {
        let rows = on_db!(self, |pool| {
            let query = sqlx::query_as(sql)
                .bind(claim.owner)
                .bind(to_ms(claim.until))
                .bind(to_ms(claim.now))
                .bind(to_ms(claim.not_refreshed_since))
                .bind(limit)
                .bind(after_id);
            let query = match expiring {
                Some((due_before, after_expiry)) => query.bind(due_before).bind(after_expiry),
                None => query,
            };
            query.fetch_all(pool).await
        })?;
        Ok(rows)
    }
}

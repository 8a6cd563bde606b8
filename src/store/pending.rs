//! Pending authorizations: the single-use, time-limited state of an authorization code
//! flow between the redirect to the provider and its callback, PKCE verifier sealed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use super::error::{StoreError, StoreResult};
use super::events::insert_event;
use super::sql::{SqlStore, commit_write, in_write_tx, on_db, sealed_error};
use super::types::{from_ms, to_ms};
use crate::crypto::Aad;
use crate::domain::{ConnectionName, NewEvent, NewPending, OrgId, PendingAuthorization, fields};

/// A started authorization's writes, one transaction.
pub struct StartAuthorization<'a> {
    pub pending: NewPending,
    /// The connection's name (for the lookups its write invalidates).
    pub connection_name: &'a ConnectionName,
    /// Of the connection's pending authorizations, the newest this many are kept.
    pub keep: usize,
    /// Always recorded (`authorize_started`).
    pub started: NewEvent,
    /// Recorded when this start moved the connection to `waiting_callback`.
    pub status_changed: NewEvent,
}

/// The states of authorization code flows under way.
#[async_trait]
pub trait PendingStore {
    /// Records a started authorization: the new state, the connection's oldest states
    /// beyond `keep` dropped, the connection marked `waiting_callback` whatever its
    /// version (concurrent starts, a double click, all succeed with their own state),
    /// and the events, in one transaction.
    async fn start_authorization(&self, start: StartAuthorization<'_>) -> StoreResult<()>;
    /// Drops the connection's pending authorizations (a newer one completed: an older
    /// link must not swap the connected account later); returns how many.
    async fn drop_pending_of(&self, connection_id: &str) -> StoreResult<u64>;
    /// Deletes and returns the pending authorization in one statement, so a state is
    /// used at most once however many callbacks race for it.
    async fn take_pending(&self, state_hash: &str) -> StoreResult<Option<PendingAuthorization>>;
    /// Removes pending authorizations that expired before `now`; returns how many.
    async fn purge_expired_pending(&self, now: DateTime<Utc>) -> StoreResult<u64>;
}

/// A pending authorization's row as `take_pending` returns it.
type PendingRow = (String, String, String, String, String, Option<String>, i64);

#[async_trait]
impl PendingStore for SqlStore {
    async fn start_authorization(&self, start: StartAuthorization<'_>) -> StoreResult<()> {
        let pending = &start.pending;
        let sealed = self.keyring.seal(
            pending.pkce_verifier.expose_secret(),
            verifier_aad(pending.org_id.as_str(), &pending.state_hash),
        );
        in_write_tx!(self, |tx| {
            // The connection's row first: concurrent starts for one connection queue here
            // (PostgreSQL's row lock; SQLite's write lock is the whole database), so each
            // one's cap below sees the others' links.
            sqlx::query("update connections set updated_at = $2 where id = $1")
                .bind(&pending.connection_id)
                .bind(to_ms(pending.created_at))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "insert into pending_authorizations (state_hash, org_id, connection_id, \
                 pkce_verifier_sealed, redirect_uri, return_to, created_at, expires_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&pending.state_hash)
            .bind(pending.org_id.as_str())
            .bind(&pending.connection_id)
            .bind(&sealed)
            .bind(&pending.redirect_uri)
            .bind(&pending.return_to)
            .bind(to_ms(pending.created_at))
            .bind(to_ms(pending.expires_at))
            .execute(&mut *tx)
            .await?;
            // The oldest go: an unbounded number of live links per connection would be
            // an unbounded number of ways to swap its account.
            sqlx::query(
                "delete from pending_authorizations where connection_id = $1 and state_hash not in \
                 (select state_hash from pending_authorizations where connection_id = $1 \
                 order by created_at desc, state_hash desc limit $2)",
            )
            .bind(&pending.connection_id)
            .bind(start.keep as i64)
            .execute(&mut *tx)
            .await?;
            let moved = sqlx::query(
                "update connections set status = 'waiting_callback', updated_at = $2, \
                 version = version + 1 where id = $1 and status <> 'waiting_callback'",
            )
            .bind(&pending.connection_id)
            .bind(to_ms(pending.created_at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            insert_event!(&mut *tx, &start.started);
            if moved > 0 {
                insert_event!(&mut *tx, &start.status_changed);
            }
            commit_write!(self, tx, start.connection_name.as_str(), false);
        });
        Ok(())
    }

    async fn drop_pending_of(&self, connection_id: &str) -> StoreResult<u64> {
        let dropped = on_db!(self, |pool| {
            sqlx::query("delete from pending_authorizations where connection_id = $1")
                .bind(connection_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(dropped)
    }

    async fn take_pending(&self, state_hash: &str) -> StoreResult<Option<PendingAuthorization>> {
        // DELETE ... RETURNING: whoever deletes the row owns the state.
        let row: Option<PendingRow> = on_db!(self, |pool| {
            sqlx::query_as(
                "delete from pending_authorizations where state_hash = $1 returning \
                 state_hash, org_id, connection_id, pkce_verifier_sealed, redirect_uri, \
                 return_to, expires_at",
            )
            .bind(state_hash)
            .fetch_optional(pool)
            .await
        })?;
        let Some((state_hash, org_id, connection_id, sealed, redirect_uri, return_to, expires_at)) =
            row
        else {
            return Ok(None);
        };
        let verifier = self
            .keyring
            .open(&sealed, verifier_aad(&org_id, &state_hash))
            .map_err(sealed_error(|| PENDING.into(), fields::PKCE_VERIFIER))?;
        Ok(Some(PendingAuthorization {
            org_id: OrgId::parse(&org_id)
                .map_err(|_| StoreError::Corrupt("pending authorization: bad org".into()))?,
            state_hash,
            connection_id,
            pkce_verifier: verifier,
            redirect_uri,
            return_to,
            expires_at: from_ms(expires_at),
        }))
    }

    async fn purge_expired_pending(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let purged = on_db!(self, |pool| {
            sqlx::query("delete from pending_authorizations where expires_at < $1")
                .bind(to_ms(now))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(purged)
    }
}

/// How a pending authorization is named in errors.
pub(super) const PENDING: &str = "a pending authorization";

/// The associated data of a pending authorization's PKCE verifier.
pub(super) fn verifier_aad<'a>(org_id: &'a str, state_hash: &'a str) -> Aad<'a> {
    Aad {
        org_id,
        row_id: state_hash,
        field: fields::PKCE_VERIFIER,
    }
}

//! Pending authorizations: the single-use, time-limited state of an authorization code
//! flow between the redirect to the provider and its callback, PKCE verifier sealed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use super::error::{StoreError, StoreResult};
use super::sql::{SqlStore, on_db, sealed_error};
use super::types::{from_ms, to_ms};
use crate::crypto::Aad;
use crate::domain::{NewPending, OrgId, PendingAuthorization, fields};

/// The states of authorization code flows under way.
#[async_trait]
pub trait PendingStore {
    async fn insert_pending(&self, pending: NewPending) -> StoreResult<()>;
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
    async fn insert_pending(&self, pending: NewPending) -> StoreResult<()> {
        let sealed = self.keyring.seal(
            pending.pkce_verifier.expose_secret(),
            verifier_aad(pending.org_id.as_str(), &pending.state_hash),
        );
        on_db!(self, |pool| {
            sqlx::query(
                "insert into pending_authorizations (state_hash, org_id, connection_id, \
                 pkce_verifier_sealed, redirect_uri, return_to, created_at, expires_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&pending.state_hash)
            .bind(pending.org_id.as_str())
            .bind(&pending.connection_id)
            .bind(sealed)
            .bind(&pending.redirect_uri)
            .bind(&pending.return_to)
            .bind(to_ms(pending.created_at))
            .bind(to_ms(pending.expires_at))
            .execute(pool)
            .await?;
        });
        Ok(())
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

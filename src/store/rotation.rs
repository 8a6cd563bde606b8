//! Key rotation: re-sealing every ciphertext (connections, OBO sessions, pending
//! authorizations) under the keyring's active key, while the service keeps running.

use async_trait::async_trait;

use super::pending::{PENDING, verifier_aad};
use super::sql::{SqlStore, on_db, sealed_error};
use super::{ConnectionStore, RotationReport, SessionStore, StoreResult};
use crate::domain::fields;

/// Maintenance of what is sealed.
#[async_trait]
pub trait RotationStore {
    /// Re-seals every ciphertext under the keyring's active key.
    async fn rotate_keys(&self) -> StoreResult<RotationReport>;
}

#[async_trait]
impl RotationStore for SqlStore {
    async fn rotate_keys(&self) -> StoreResult<RotationReport> {
        let mut report = RotationReport::default();
        // Connections: one short transaction per row so a running service keeps
        // serving; the version check keeps a concurrent token write from being lost
        // (the row is simply read again).
        let ids: Vec<(String,)> = on_db!(self, |pool| {
            sqlx::query_as("select id from connections order by id")
                .fetch_all(pool)
                .await
        })?;
        for (id,) in ids {
            loop {
                let Some(conn) = self.get_connection_by_id(&id).await? else {
                    break;
                };
                let mut sealed = conn.sealed.clone();
                let mut row_report = RotationReport::default();
                for (slot, field) in [
                    (&mut sealed.client_secret, fields::CLIENT_SECRET),
                    (&mut sealed.access_token, fields::ACCESS_TOKEN),
                    (&mut sealed.refresh_token, fields::REFRESH_TOKEN),
                ] {
                    let Some(current) = slot.as_deref() else {
                        continue;
                    };
                    let row = || format!("connection {}/{}", conn.org_id, conn.name);
                    match self
                        .keyring
                        .reseal(current, conn.aad(field))
                        .map_err(sealed_error(row, field))?
                    {
                        Some(new) => {
                            *slot = Some(new);
                            row_report.resealed += 1;
                        }
                        None => row_report.current += 1,
                    }
                }
                if row_report.resealed == 0 {
                    report.current += row_report.current;
                    break;
                }
                let updated = on_db!(self, |pool| {
                    sqlx::query(
                        "update connections set client_secret_sealed = $3, \
                         access_token_sealed = $4, refresh_token_sealed = $5, \
                         version = version + 1 where id = $1 and version = $2",
                    )
                    .bind(&conn.id)
                    .bind(conn.version)
                    .bind(&sealed.client_secret)
                    .bind(&sealed.access_token)
                    .bind(&sealed.refresh_token)
                    .execute(pool)
                    .await?
                    .rows_affected()
                });
                if updated == 1 {
                    report.resealed += row_report.resealed;
                    report.current += row_report.current;
                    break;
                }
                // Written meanwhile (a refresh): read the fresh row and go again.
            }
        }
        // Sessions: same per-row scheme as connections.
        let session_ids: Vec<(String,)> = on_db!(self, |pool| {
            sqlx::query_as("select id from obo_sessions order by id")
                .fetch_all(pool)
                .await
        })?;
        for (id,) in session_ids {
            loop {
                let Some(session) = self.get_obo_session(&id).await? else {
                    break;
                };
                let mut sealed = session.sealed.clone();
                let mut row_report = RotationReport::default();
                for (slot, field) in [
                    (&mut sealed.access_token, fields::ACCESS_TOKEN),
                    (&mut sealed.refresh_token, fields::REFRESH_TOKEN),
                ] {
                    let Some(current) = slot.as_deref() else {
                        continue;
                    };
                    let row = || format!("obo session {}", session.id);
                    match self
                        .keyring
                        .reseal(current, session.aad(field))
                        .map_err(sealed_error(row, field))?
                    {
                        Some(new) => {
                            *slot = Some(new);
                            row_report.resealed += 1;
                        }
                        None => row_report.current += 1,
                    }
                }
                if row_report.resealed == 0 {
                    report.current += row_report.current;
                    break;
                }
                let updated = on_db!(self, |pool| {
                    sqlx::query(
                        "update obo_sessions set access_token_sealed = $3, \
                         refresh_token_sealed = $4, version = version + 1 \
                         where id = $1 and version = $2",
                    )
                    .bind(&session.id)
                    .bind(session.version)
                    .bind(&sealed.access_token)
                    .bind(&sealed.refresh_token)
                    .execute(pool)
                    .await?
                    .rows_affected()
                });
                if updated == 1 {
                    report.resealed += row_report.resealed;
                    report.current += row_report.current;
                    break;
                }
            }
        }
        let pending: Vec<(String, String, String)> = on_db!(self, |pool| {
            sqlx::query_as(
                "select state_hash, org_id, pkce_verifier_sealed from pending_authorizations",
            )
            .fetch_all(pool)
            .await
        })?;
        for (state_hash, org_id, sealed) in pending {
            let resealed = self
                .keyring
                .reseal(&sealed, verifier_aad(&org_id, &state_hash))
                .map_err(sealed_error(|| PENDING.into(), fields::PKCE_VERIFIER))?;
            match resealed {
                Some(new) => {
                    on_db!(self, |pool| {
                        sqlx::query(
                            "update pending_authorizations set pkce_verifier_sealed = $2 \
                             where state_hash = $1",
                        )
                        .bind(&state_hash)
                        .bind(new)
                        .execute(pool)
                        .await?;
                    });
                    report.resealed += 1;
                }
                None => report.current += 1,
            }
        }
        Ok(report)
    }
}

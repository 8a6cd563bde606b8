//! Key rotation: re-sealing every ciphertext (connections, OBO sessions, pending
//! authorizations) under the keyring's active key, while the service keeps running.

use async_trait::async_trait;

use super::connections::ConnectionStore;
use super::error::StoreResult;
use super::pending::{PENDING, verifier_aad};
use super::sessions::SessionStore;
use super::sql::{SqlStore, on_db, sealed_error};
use super::types::RotationReport;
use crate::crypto::{Aad, Keyring};
use crate::domain::{Connection, OboSession, Sealed, SealedRow, fields};

/// Maintenance of what is sealed.
#[async_trait]
pub trait RotationStore {
    /// Re-seals every ciphertext under the keyring's active key.
    async fn rotate_keys(&self) -> StoreResult<RotationReport>;
}

#[async_trait]
impl RotationStore for SqlStore {
    async fn rotate_keys(&self) -> StoreResult<RotationReport> {
        let mut report = self
            .rotate_rows(
                "select id from connections order by id",
                |id| self.reseal_connection(id),
                |conn, sealed| self.write_connection(conn, sealed),
            )
            .await?;
        report.add(
            self.rotate_rows(
                "select id from obo_sessions order by id",
                |id| self.reseal_session(id),
                |session, sealed| self.write_session(session, sealed),
            )
            .await?,
        );
        report.add(self.rotate_pending().await?);
        Ok(report)
    }
}

impl SqlStore {
    /// Re-seals the rows whose ids `ids_sql` selects, one short transaction each, so a
    /// running service keeps serving: `read` reads a row and re-seals its values, `write`
    /// stores them unless the row's version changed meanwhile. That check keeps a
    /// concurrent token write from being lost: the row is simply read again.
    async fn rotate_rows<R, Read, Write>(
        &self,
        ids_sql: &'static str,
        read: impl Fn(String) -> Read,
        write: impl Fn(R, Sealed) -> Write,
    ) -> StoreResult<RotationReport>
    where
        Read: Future<Output = StoreResult<Resealed<R>>>,
        Write: Future<Output = StoreResult<bool>>,
    {
        let ids: Vec<(String,)> =
            on_db!(self, |pool| sqlx::query_as(ids_sql).fetch_all(pool).await)?;
        let mut report = RotationReport::default();
        for (id,) in ids {
            while let Some((row, sealed, row_report)) = read(id.clone()).await? {
                if row_report.resealed == 0 || write(row, sealed).await? {
                    report.add(row_report);
                    break;
                }
                // Written meanwhile (a refresh): read the fresh row and go again.
            }
        }
        Ok(report)
    }

    /// Connection `id` (if still there) with its values re-sealed.
    async fn reseal_connection(&self, id: String) -> StoreResult<Resealed<Connection>> {
        let Some(conn) = self.get_connection_by_id(&id).await? else {
            return Ok(None);
        };
        let (sealed, report) = reseal(
            &self.keyring,
            &conn.sealed,
            |field| conn.aad(field),
            || format!("connection {}/{}", conn.org_id, conn.name),
        )?;
        Ok(Some((conn, sealed, report)))
    }

    /// Stores `sealed` as `conn`'s values unless it was written since it was read.
    async fn write_connection(&self, conn: Connection, sealed: Sealed) -> StoreResult<bool> {
        let updated = on_db!(self, |pool| {
            sqlx::query(
                "update connections set client_secret_sealed = $3, access_token_sealed = $4, \
                 refresh_token_sealed = $5, version = version + 1 \
                 where id = $1 and version = $2",
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
        Ok(updated == 1)
    }

    /// Session `id` (if still there) with its tokens re-sealed.
    async fn reseal_session(&self, id: String) -> StoreResult<Resealed<OboSession>> {
        let Some(session) = self.get_obo_session(&id).await? else {
            return Ok(None);
        };
        let (sealed, report) = reseal(
            &self.keyring,
            &session.sealed,
            |field| session.aad(field),
            || format!("obo session {}", session.id),
        )?;
        Ok(Some((session, sealed, report)))
    }

    /// Stores `sealed` as `session`'s tokens unless it was written since it was read.
    async fn write_session(&self, session: OboSession, sealed: Sealed) -> StoreResult<bool> {
        let updated = on_db!(self, |pool| {
            sqlx::query(
                "update obo_sessions set access_token_sealed = $3, refresh_token_sealed = $4, \
                 version = version + 1 where id = $1 and version = $2",
            )
            .bind(&session.id)
            .bind(session.version)
            .bind(&sealed.access_token)
            .bind(&sealed.refresh_token)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Pending authorizations live minutes and nothing else writes them: each is
    /// re-sealed in place.
    async fn rotate_pending(&self) -> StoreResult<RotationReport> {
        let mut report = RotationReport::default();
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

/// A row read for rotation, its values re-sealed, and what that did; `None` when the
/// row is gone.
type Resealed<R> = Option<(R, Sealed, RotationReport)>;

/// `sealed` with each value not under the active key yet re-sealed, and how many were;
/// `aad` binds a field to its row, `row` names the row in errors.
fn reseal<'a>(
    keyring: &Keyring,
    sealed: &Sealed,
    aad: impl Fn(&'static str) -> Aad<'a>,
    row: impl Fn() -> String,
) -> StoreResult<(Sealed, RotationReport)> {
    let mut sealed = sealed.clone();
    let mut report = RotationReport::default();
    for (slot, field) in [
        (&mut sealed.client_secret, fields::CLIENT_SECRET),
        (&mut sealed.access_token, fields::ACCESS_TOKEN),
        (&mut sealed.refresh_token, fields::REFRESH_TOKEN),
    ] {
        let Some(current) = slot.as_deref() else {
            continue;
        };
        match keyring
            .reseal(current, aad(field))
            .map_err(sealed_error(&row, field))?
        {
            Some(new) => {
                *slot = Some(new);
                report.resealed += 1;
            }
            None => report.current += 1,
        }
    }
    Ok((sealed, report))
}

impl RotationReport {
    fn add(&mut self, other: RotationReport) {
        self.resealed += other.resealed;
        self.current += other.current;
    }
}

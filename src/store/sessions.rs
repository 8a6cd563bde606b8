//! On-behalf-of sessions: a user's delegated grant held for a workflow, tokens sealed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::error::{StoreError, StoreResult};
use super::sql::{SqlStore, apply_writes, on_db, to_json};
use super::types::{from_ms, to_ms};
use crate::domain::{
    ConnectionName, OboSession, OrgId, Page, PageRequest, Sealed, SealedRow, SecretWrites, fields,
};

/// On-behalf-of sessions and their tokens.
#[async_trait]
pub trait SessionStore {
    /// Inserts a session; `session.sealed` is ignored, the tokens are sealed here.
    async fn insert_obo_session(
        &self,
        session: &OboSession,
        access_token: &SecretString,
        refresh_token: &SecretString,
    ) -> StoreResult<()>;
    async fn get_obo_session(&self, id: &str) -> StoreResult<Option<OboSession>>;
    /// A page of the org's sessions (of one connection, when named; made by one key,
    /// when `created_by_key_id`), by id; the page key is the id.
    async fn list_obo_sessions(
        &self,
        org: &OrgId,
        connection_name: Option<&ConnectionName>,
        created_by_key_id: Option<&str>,
        page: &PageRequest<String>,
    ) -> StoreResult<Page<OboSession>>;
    /// Writes status, tokens and times if the version is current (`Stale` otherwise).
    async fn save_obo_session(
        &self,
        session: &OboSession,
        secrets: SecretWrites,
    ) -> StoreResult<OboSession>;

    /// Active, unexpired sessions whose token expires before `due_before`, by id after `after_id`.
    async fn due_obo_sessions(
        &self,
        due_before: DateTime<Utc>,
        now: DateTime<Utc>,
        after_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<OboSession>>;
    /// Revokes every live session of a connection and discards their tokens (its grant
    /// changed); returns how many.
    async fn revoke_obo_sessions_of(
        &self,
        connection_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
}

/// The columns of `SessionRow`, in a `select` or a `returning`.
macro_rules! session_columns {
    () => {
        "id, org_id, connection_id, connection_name, label, created_by, created_by_key_id, scopes, \
         refresh_token_sealed, access_token_sealed, token_type, token_expires_at, status, \
         status_message, created_at, expires_at, revoked_at, last_used_at, version"
    };
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn insert_obo_session(
        &self,
        session: &OboSession,
        access_token: &SecretString,
        refresh_token: &SecretString,
    ) -> StoreResult<()> {
        let seal = |token: &SecretString, field| {
            self.keyring.seal(token.expose_secret(), session.aad(field))
        };
        let access = seal(access_token, fields::ACCESS_TOKEN);
        let refresh = seal(refresh_token, fields::REFRESH_TOKEN);
        on_db!(self, |pool| {
            sqlx::query(
                "insert into obo_sessions \
                 (id, org_id, connection_id, connection_name, label, created_by, \
                 created_by_key_id, scopes, refresh_token_sealed, access_token_sealed, token_type, \
                 token_expires_at, status, status_message, created_at, expires_at, version) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 1)",
            )
            .bind(&session.id)
            .bind(session.org_id.as_str())
            .bind(&session.connection_id)
            .bind(session.connection_name.as_str())
            .bind(&session.label)
            .bind(&session.created_by)
            .bind(&session.created_by_key_id)
            .bind(to_json(&session.scopes))
            .bind(refresh)
            .bind(access)
            .bind(&session.token_type)
            .bind(session.token_expires_at.map(to_ms))
            .bind(&session.status)
            .bind(&session.status_message)
            .bind(to_ms(session.created_at))
            .bind(to_ms(session.expires_at))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    async fn get_obo_session(&self, id: &str) -> StoreResult<Option<OboSession>> {
        let row: Option<SessionRow> = on_db!(self, |pool| {
            sqlx::query_as(concat!(
                "select ",
                session_columns!(),
                " from obo_sessions where id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        row.map(OboSession::try_from).transpose()
    }

    async fn list_obo_sessions(
        &self,
        org: &OrgId,
        connection_name: Option<&ConnectionName>,
        created_by_key_id: Option<&str>,
        page: &PageRequest<String>,
    ) -> StoreResult<Page<OboSession>> {
        let rows: Vec<SessionRow> = on_db!(self, |pool| {
            sqlx::query_as(concat!(
                "select ",
                session_columns!(),
                " from obo_sessions where org_id = $1 and id > $2 \
                 and ($3 = '' or connection_name = $3) and ($4 = '' or created_by_key_id = $4) \
                 order by id limit $5"
            ))
            .bind(org.as_str())
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(connection_name.map(|n| n.as_str()).unwrap_or(""))
            .bind(created_by_key_id.unwrap_or(""))
            .bind(page.fetch() as i64)
            .fetch_all(pool)
            .await
        })?;
        let rows = rows
            .into_iter()
            .map(OboSession::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page))
    }

    async fn save_obo_session(
        &self,
        session: &OboSession,
        secrets: SecretWrites,
    ) -> StoreResult<OboSession> {
        // A session has no client secret: only the tokens below are stored.
        let sealed = apply_writes(&self.keyring, &session.sealed, &secrets, |field| {
            session.aad(field)
        });
        let row: Option<SessionRow> = on_db!(self, |pool| {
            sqlx::query_as(concat!(
                "update obo_sessions set refresh_token_sealed = $3, access_token_sealed = $4, \
                 token_type = $5, token_expires_at = $6, status = $7, status_message = $8, \
                 revoked_at = $9, last_used_at = $10, version = version + 1 \
                 where id = $1 and version = $2 returning ",
                session_columns!()
            ))
            .bind(&session.id)
            .bind(session.version)
            .bind(&sealed.refresh_token)
            .bind(&sealed.access_token)
            .bind(&session.token_type)
            .bind(session.token_expires_at.map(to_ms))
            .bind(&session.status)
            .bind(&session.status_message)
            .bind(session.revoked_at.map(to_ms))
            .bind(session.last_used_at.map(to_ms))
            .fetch_optional(pool)
            .await
        })?;
        row.ok_or(StoreError::Stale)?.try_into()
    }

    async fn due_obo_sessions(
        &self,
        due_before: DateTime<Utc>,
        now: DateTime<Utc>,
        after_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<OboSession>> {
        let rows: Vec<SessionRow> = on_db!(self, |pool| {
            sqlx::query_as(concat!(
            "select ",
            session_columns!(),
            " from obo_sessions where status = 'active' and revoked_at is null and expires_at > $2 \
             and (token_expires_at is null or token_expires_at < $1) and id > $3 \
             order by id limit $4"
        ))
        .bind(to_ms(due_before))
        .bind(to_ms(now))
        .bind(after_id)
        .bind(limit)
        .fetch_all(pool)
        .await
        })?;
        rows.into_iter().map(OboSession::try_from).collect()
    }

    async fn revoke_obo_sessions_of(
        &self,
        connection_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let revoked = on_db!(self, |pool| {
            sqlx::query(
                "update obo_sessions set revoked_at = $2, token_expires_at = null, \
                 access_token_sealed = null, refresh_token_sealed = null, version = version + 1 \
                 where connection_id = $1 and revoked_at is null",
            )
            .bind(connection_id)
            .bind(to_ms(now))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(revoked)
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    org_id: String,
    connection_id: String,
    connection_name: String,
    label: Option<String>,
    created_by: String,
    created_by_key_id: String,
    scopes: String,
    refresh_token_sealed: Option<String>,
    access_token_sealed: Option<String>,
    token_type: Option<String>,
    token_expires_at: Option<i64>,
    status: String,
    status_message: Option<String>,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    version: i64,
}

impl TryFrom<SessionRow> for OboSession {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> StoreResult<Self> {
        let bad = |what: &str| StoreError::Corrupt(format!("obo session {}: bad {what}", r.id));
        Ok(OboSession {
            org_id: OrgId::parse(&r.org_id).map_err(|_| bad("org_id"))?,
            connection_name: ConnectionName::parse(&r.connection_name)
                .map_err(|_| bad("connection_name"))?,
            scopes: serde_json::from_str(&r.scopes).map_err(|_| bad("scopes"))?,
            connection_id: r.connection_id,
            label: r.label,
            created_by: r.created_by,
            created_by_key_id: r.created_by_key_id,
            token_type: r.token_type,
            token_expires_at: r.token_expires_at.map(from_ms),
            status: r.status,
            status_message: r.status_message,
            created_at: from_ms(r.created_at),
            expires_at: from_ms(r.expires_at),
            revoked_at: r.revoked_at.map(from_ms),
            last_used_at: r.last_used_at.map(from_ms),
            version: r.version,
            sealed: Sealed {
                client_secret: None,
                access_token: r.access_token_sealed,
                refresh_token: r.refresh_token_sealed,
            },
            id: r.id,
        })
    }
}

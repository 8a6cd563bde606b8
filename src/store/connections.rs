//! Connections: creating, reading, saving and deleting them, with their audit events in
//! the same transaction. Every write is announced and forgotten by `commit_write!`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::error::{StoreError, StoreResult};
use super::events::insert_event;
use super::sql::{
    SqlStore, apply_writes, commit_write, in_write_tx, on_db, to_json, unique_to_conflict,
};
use super::types::{from_ms, to_ms};
use super::workflows::resolves_to;
use crate::crypto::Aad;
use crate::domain::{
    AssertionRules, Connection, ConnectionConfig, ConnectionFilter, ConnectionName,
    ConnectionSecrets, ConnectionStatus, FlowType, NewConnection, NewEvent, OboGrant, OrgId, Page,
    PageRequest, Sealed, SealedRow, SecretWrites, TokenAuthMethod, fields,
};

/// Connections and their secrets.
#[async_trait]
pub trait ConnectionStore {
    /// Inserts the connection and its `created` event in one transaction.
    async fn insert_connection(
        &self,
        new: NewConnection,
        event: NewEvent,
    ) -> StoreResult<Connection>;
    async fn get_connection(
        &self,
        org: &OrgId,
        name: &ConnectionName,
    ) -> StoreResult<Option<Connection>>;
    /// A page of the connections `filter` selects, ordered by org then name; the
    /// page key is `(org_id, name)`.
    async fn list_connections(
        &self,
        filter: &ConnectionFilter,
        page: &PageRequest<(String, String)>,
    ) -> StoreResult<Page<Connection>>;
    /// Writes every mutable column of `conn` if its version is still current, applies
    /// the secret writes and appends the events, all in one transaction. Returns the
    /// row as stored (version incremented). `StoreError::Stale` if someone else wrote.
    async fn save_connection(
        &self,
        conn: &Connection,
        secrets: SecretWrites,
        events: Vec<NewEvent>,
    ) -> StoreResult<Connection>;
    /// Deletes the connection, its pending authorizations and dependencies; when
    /// `disable_workflows`, records each dependent workflow as disabled; appends the
    /// `deleted` event. One transaction.
    async fn delete_connection(
        &self,
        conn: &Connection,
        disable_workflows: bool,
        event: NewEvent,
    ) -> StoreResult<()>;
    async fn get_connection_by_id(&self, id: &str) -> StoreResult<Option<Connection>>;

    /// Opens the connection's secrets.
    fn open_secrets(&self, conn: &Connection) -> StoreResult<ConnectionSecrets>;
}

/// A connection row about to be inserted: its id and its secrets sealed under it.
/// Without a token it starts `not_connected`; with one (an import) `completed`.
pub(super) struct NewRow<'a> {
    pub(super) id: String,
    pub(super) client_secret: Option<String>,
    pub(super) refresh_token: Option<String>,
    pub(super) access_token: Option<String>,
    pub(super) token: Option<&'a IssuedToken>,
}

/// A token a connection arrives with (`ImportStore`).
pub struct IssuedToken {
    pub access_token: SecretString,
    pub token_type: String,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
}

impl<'a> NewRow<'a> {
    pub(super) fn seal(
        store: &SqlStore,
        new: &NewConnection,
        token: Option<&'a IssuedToken>,
    ) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        let seal = |secret: Option<&SecretString>, field| {
            let aad = Aad {
                org_id: new.org_id.as_str(),
                row_id: &id,
                field,
            };
            secret.map(|s| store.keyring.seal(s.expose_secret(), aad))
        };
        Self {
            client_secret: seal(new.client_secret.as_ref(), fields::CLIENT_SECRET),
            refresh_token: seal(new.refresh_token.as_ref(), fields::REFRESH_TOKEN),
            access_token: seal(token.map(|t| &t.access_token), fields::ACCESS_TOKEN),
            token,
            id,
        }
    }

    pub(super) fn status(&self) -> ConnectionStatus {
        match self.token {
            Some(_) => ConnectionStatus::Completed,
            None => ConnectionStatus::NotConnected,
        }
    }
}

/// Inserts `$row` (a `NewRow`) of `$new` (its `NewConnection`) on `$executor`; returns
/// the stored row (`Result<ConnectionRow, sqlx::Error>`).
macro_rules! insert_new_row {
    ($executor:expr, $row:expr, $new:expr) => {{
        let (row, new): (
            &$crate::store::connections::NewRow<'_>,
            &$crate::domain::NewConnection,
        ) = ($row, $new);
        let c = &new.config;
        let token = row.token;
        sqlx::query_as::<_, $crate::store::connections::ConnectionRow>(concat!(
            "insert into connections (id, org_id, name, flow_type, client_id, \
             client_secret_sealed, authorization_url, token_url, scopes, token_auth_method, \
             extra_authorization_params, extra_token_params, test_url, obo_config, status, \
             refresh_token_sealed, access_token_sealed, token_type, token_expires_at, \
             last_refresh_at, created_at, created_by, updated_at, version) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22, $21, 1) returning ",
            $crate::store::connections::connection_columns!()
        ))
        .bind(&row.id)
        .bind(new.org_id.as_str())
        .bind(new.name.as_str())
        .bind(c.flow_type.as_str())
        .bind(&c.client_id)
        .bind(&row.client_secret)
        .bind(&c.authorization_url)
        .bind(&c.token_url)
        .bind($crate::store::sql::to_json(&c.scopes))
        .bind(c.token_auth_method.as_str())
        .bind($crate::store::sql::to_json(&c.extra_authorization_params))
        .bind($crate::store::sql::to_json(&c.extra_token_params))
        .bind(&c.test_url)
        .bind($crate::store::connections::OboColumn::of(c))
        .bind(row.status().as_str())
        .bind(&row.refresh_token)
        .bind(&row.access_token)
        .bind(token.map(|t| t.token_type.as_str()))
        .bind(
            token
                .and_then(|t| t.token_expires_at)
                .map($crate::store::types::to_ms),
        )
        .bind(
            token
                .and_then(|t| t.last_refresh_at)
                .map($crate::store::types::to_ms),
        )
        .bind($crate::store::types::to_ms(new.now))
        .bind(&new.created_by)
        .fetch_one($executor)
        .await
    }};
}
pub(super) use insert_new_row;

/// The columns of `ConnectionRow`, in a `select` or a `returning`.
macro_rules! connection_columns {
    () => {
        "id, org_id, name, flow_type, client_id, client_secret_sealed, authorization_url, \
         token_url, scopes, token_auth_method, extra_authorization_params, extra_token_params, \
         test_url, obo_config, status, status_message, access_token_sealed, refresh_token_sealed, \
         token_type, token_expires_at, token_scopes, last_refresh_at, last_test_at, \
         refresh_failures, next_refresh_attempt_at, created_at, created_by, updated_at, version"
    };
}
pub(super) use connection_columns;

#[async_trait]
impl ConnectionStore for SqlStore {
    async fn insert_connection(
        &self,
        new: NewConnection,
        event: NewEvent,
    ) -> StoreResult<Connection> {
        let row = NewRow::seal(self, &new, None);
        let row: ConnectionRow = in_write_tx!(self, |tx| {
            let stored = insert_new_row!(&mut *tx, &row, &new).map_err(|e| {
                unique_to_conflict(e, || {
                    format!(
                        "a connection named `{}` already exists in org `{}`",
                        new.name, new.org_id
                    )
                })
            })?;
            let id = row.id.clone();
            let event = NewEvent {
                connection_id: id.clone(),
                ..event
            };
            insert_event!(&mut *tx, &event);
            commit_write!(self, tx, new.name.as_str(), false);
            stored
        });
        row.try_into()
    }

    async fn get_connection(
        &self,
        org: &OrgId,
        name: &ConnectionName,
    ) -> StoreResult<Option<Connection>> {
        let row: Option<ConnectionRow> = on_db!(self, |pool| {
            sqlx::query_as(concat!(
                "select ",
                connection_columns!(),
                " from connections where org_id = $1 and name = $2"
            ))
            .bind(org.as_str())
            .bind(name.as_str())
            .fetch_optional(pool)
            .await
        })?;
        row.map(Connection::try_from).transpose()
    }

    async fn get_connection_by_id(&self, id: &str) -> StoreResult<Option<Connection>> {
        let row: Option<ConnectionRow> = on_db!(self, |pool| {
            sqlx::query_as(concat!(
                "select ",
                connection_columns!(),
                " from connections where id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        row.map(Connection::try_from).transpose()
    }

    async fn list_connections(
        &self,
        filter: &ConnectionFilter,
        page: &PageRequest<(String, String)>,
    ) -> StoreResult<Page<Connection>> {
        if filter.orgs.len() > 2 {
            return Err(StoreError::Corrupt(
                "list_connections takes at most two orgs".into(),
            ));
        }
        let mut orgs: Vec<&str> = filter.orgs.iter().map(|o| o.as_str()).collect();
        orgs.sort_unstable();
        orgs.dedup();
        // Names are `[A-Za-z0-9_-]`: every one sorts before "~". The order of orgs is
        // decided here (byte order), not by the database's collation.
        let (low, high) = filter
            .name_range()
            .unwrap_or_else(|| (String::new(), "~".into()));
        // Keyset, one org at a time in (org_id, name) order: each statement reads one
        // range of an index ((org_id, name), or (org_id, status, name) with a status),
        // so a page deep in an org of a million rows costs what the first does.
        let mut rows: Vec<ConnectionRow> = Vec::new();
        for org in orgs {
            let after_name = match &page.after {
                Some((after_org, _)) if after_org.as_str() > org => continue,
                Some((after_org, name)) if after_org == org => name.as_str(),
                _ => "",
            };
            let left = page.fetch() as i64 - rows.len() as i64;
            if left <= 0 {
                break;
            }
            let sql = match filter.status {
                Some(_) => concat!(
                    "select ",
                    connection_columns!(),
                    " from connections where org_id = $1 and status = $6 and name > $2 \
                     and name >= $3 and name < $4 order by name limit $5"
                ),
                None => concat!(
                    "select ",
                    connection_columns!(),
                    " from connections where org_id = $1 and name > $2 \
                     and name >= $3 and name < $4 order by name limit $5"
                ),
            };
            let status = filter.status.map(|s| s.as_str());
            let found: Vec<ConnectionRow> = on_db!(self, |pool| {
                let query = sqlx::query_as(sql)
                    .bind(org)
                    .bind(after_name)
                    .bind(low.as_str())
                    .bind(high.as_str())
                    .bind(left);
                match status {
                    Some(status) => query.bind(status),
                    None => query,
                }
                .fetch_all(pool)
                .await
            })?;
            rows.extend(found);
        }
        // The range is the prefix in byte order; a database whose collation orders text
        // otherwise (en_US ignores case and punctuation at first) may add names to it.
        if let Some(prefix) = filter.name_prefix.as_deref() {
            rows.retain(|r| r.name.starts_with(prefix));
        }
        let rows = rows
            .into_iter()
            .map(Connection::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page))
    }

    async fn save_connection(
        &self,
        conn: &Connection,
        secrets: SecretWrites,
        events: Vec<NewEvent>,
    ) -> StoreResult<Connection> {
        let sealed = apply_writes(&self.keyring, &conn.sealed, &secrets, |field| {
            conn.aad(field)
        });
        let c = &conn.config;
        let row: ConnectionRow = in_write_tx!(self, |tx| {
            let row: Option<ConnectionRow> = sqlx::query_as(concat!(
                "update connections set flow_type = $3, client_id = $4, \
                 client_secret_sealed = $5, authorization_url = $6, token_url = $7, \
                 scopes = $8, token_auth_method = $9, extra_authorization_params = $10, \
                 extra_token_params = $11, test_url = $12, obo_config = $13, status = $14, \
                 status_message = $15, access_token_sealed = $16, refresh_token_sealed = $17, \
                 token_type = $18, token_expires_at = $19, token_scopes = $20, \
                 last_refresh_at = $21, last_test_at = $22, refresh_failures = $23, \
                 next_refresh_attempt_at = $24, updated_at = $25, version = version + 1 \
                 where id = $1 and version = $2 returning ",
                connection_columns!()
            ))
            .bind(&conn.id)
            .bind(conn.version)
            .bind(c.flow_type.as_str())
            .bind(&c.client_id)
            .bind(&sealed.client_secret)
            .bind(&c.authorization_url)
            .bind(&c.token_url)
            .bind(to_json(&c.scopes))
            .bind(c.token_auth_method.as_str())
            .bind(to_json(&c.extra_authorization_params))
            .bind(to_json(&c.extra_token_params))
            .bind(&c.test_url)
            .bind(OboColumn::of(c))
            .bind(conn.status.as_str())
            .bind(&conn.status_message)
            .bind(&sealed.access_token)
            .bind(&sealed.refresh_token)
            .bind(&conn.token_type)
            .bind(conn.token_expires_at.map(to_ms))
            .bind(conn.token_scopes.as_ref().map(to_json))
            .bind(conn.last_refresh_at.map(to_ms))
            .bind(conn.last_test_at.map(to_ms))
            .bind(conn.refresh_failures)
            .bind(conn.next_refresh_attempt_at.map(to_ms))
            .bind(to_ms(conn.updated_at))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(StoreError::Stale);
            };
            for event in &events {
                insert_event!(&mut *tx, event);
            }
            commit_write!(self, tx, conn.name.as_str(), false);
            row
        });
        row.try_into()
    }

    async fn delete_connection(
        &self,
        conn: &Connection,
        disable_workflows: bool,
        event: NewEvent,
    ) -> StoreResult<()> {
        let now = event.at;
        in_write_tx!(self, |tx| {
            if disable_workflows {
                // One row per dependent workflow; an already disabled one keeps its
                // first reason.
                sqlx::query(concat!(
                    "insert into disabled_workflows \
                     (workflow_id, org_id, disabled_reason, disabled_at, related_oauth_connection) \
                     select workflow_id, org_id, $3, $4, connection_name \
                     from workflow_dependencies d where ",
                    resolves_to!(),
                    " on conflict (workflow_id, org_id) do nothing"
                ))
                .bind(conn.org_id.as_str())
                .bind(conn.name.as_str())
                .bind(format!("OAuth connection `{}` was deleted", conn.name))
                .bind(to_ms(now))
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(concat!(
                "delete from workflow_dependencies as d where ",
                resolves_to!()
            ))
            .bind(conn.org_id.as_str())
            .bind(conn.name.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query("delete from pending_authorizations where connection_id = $1")
                .bind(&conn.id)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query("delete from connections where id = $1")
                .bind(&conn.id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Stale);
            }
            // The audit trail outlives the connection.
            insert_event!(&mut *tx, &event);
            commit_write!(self, tx, conn.name.as_str(), disable_workflows);
        });
        Ok(())
    }

    fn open_secrets(&self, conn: &Connection) -> StoreResult<ConnectionSecrets> {
        Ok(conn.open_secrets(&self.keyring)?)
    }
}

/// The `obo_config` column: a connection's on-behalf-of settings as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct OboColumn {
    obo_grant: Option<OboGrant>,
    assertion_validation: Option<AssertionRules>,
}

impl OboColumn {
    pub(super) fn of(c: &ConnectionConfig) -> Option<String> {
        if c.obo_grant.is_none() && c.assertion_validation.is_none() {
            return None;
        }
        Some(to_json(&OboColumn {
            obo_grant: c.obo_grant,
            assertion_validation: c.assertion_validation.clone(),
        }))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ConnectionRow {
    pub(super) id: String,
    org_id: String,
    name: String,
    flow_type: String,
    client_id: String,
    client_secret_sealed: Option<String>,
    authorization_url: Option<String>,
    token_url: String,
    scopes: String,
    token_auth_method: String,
    extra_authorization_params: String,
    extra_token_params: String,
    test_url: Option<String>,
    obo_config: Option<String>,
    status: String,
    status_message: Option<String>,
    access_token_sealed: Option<String>,
    refresh_token_sealed: Option<String>,
    token_type: Option<String>,
    pub(super) token_expires_at: Option<i64>,
    token_scopes: Option<String>,
    last_refresh_at: Option<i64>,
    last_test_at: Option<i64>,
    refresh_failures: i64,
    next_refresh_attempt_at: Option<i64>,
    created_at: i64,
    created_by: String,
    updated_at: i64,
    version: i64,
}

fn corrupt(what: &str, id: &str) -> StoreError {
    StoreError::Corrupt(format!("connection {id}: bad {what}"))
}

impl TryFrom<ConnectionRow> for Connection {
    type Error = StoreError;

    fn try_from(r: ConnectionRow) -> StoreResult<Self> {
        let id = r.id;
        let obo = r
            .obo_config
            .as_deref()
            .map(|t| serde_json::from_str::<OboColumn>(t).map_err(|_| corrupt("obo_config", &id)))
            .transpose()?;
        let string_map = |text: &str, what: &str| {
            serde_json::from_str::<BTreeMap<String, String>>(text).map_err(|_| corrupt(what, &id))
        };
        let string_list = |text: &str, what: &str| {
            serde_json::from_str::<Vec<String>>(text).map_err(|_| corrupt(what, &id))
        };
        Ok(Connection {
            org_id: OrgId::parse(&r.org_id).map_err(|_| corrupt("org_id", &id))?,
            name: ConnectionName::parse(&r.name).map_err(|_| corrupt("name", &id))?,
            config: ConnectionConfig {
                flow_type: FlowType::parse(&r.flow_type)
                    .ok_or_else(|| corrupt("flow_type", &id))?,
                client_id: r.client_id,
                authorization_url: r.authorization_url,
                token_url: r.token_url,
                scopes: string_list(&r.scopes, "scopes")?,
                token_auth_method: TokenAuthMethod::parse(&r.token_auth_method)
                    .ok_or_else(|| corrupt("token_auth_method", &id))?,
                extra_authorization_params: string_map(
                    &r.extra_authorization_params,
                    "extra_authorization_params",
                )?,
                extra_token_params: string_map(&r.extra_token_params, "extra_token_params")?,
                test_url: r.test_url,
                obo_grant: obo.as_ref().and_then(|o| o.obo_grant),
                assertion_validation: obo.and_then(|o| o.assertion_validation),
            },
            status: ConnectionStatus::parse(&r.status).ok_or_else(|| corrupt("status", &id))?,
            status_message: r.status_message,
            token_type: r.token_type,
            token_expires_at: r.token_expires_at.map(from_ms),
            token_scopes: r
                .token_scopes
                .as_deref()
                .map(|t| string_list(t, "token_scopes"))
                .transpose()?,
            last_refresh_at: r.last_refresh_at.map(from_ms),
            last_test_at: r.last_test_at.map(from_ms),
            refresh_failures: r.refresh_failures,
            next_refresh_attempt_at: r.next_refresh_attempt_at.map(from_ms),
            created_at: from_ms(r.created_at),
            created_by: r.created_by,
            updated_at: from_ms(r.updated_at),
            version: r.version,
            sealed: Sealed {
                client_secret: r.client_secret_sealed,
                access_token: r.access_token_sealed,
                refresh_token: r.refresh_token_sealed,
            },
            id,
        })
    }
}

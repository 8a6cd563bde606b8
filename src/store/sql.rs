//! The SQL shared by both backends. sqlx's SQLite driver accepts PostgreSQL-style `$n`
//! placeholders, so one query text serves both; `impl_store!` expands the same method
//! bodies once per backend (sqlx's `Any` driver cannot carry our types, see
//! `shared/CRATES.md`). Where the dialects differ, `Dialect` says how.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use super::lookups::{ANNOUNCEMENTS, Lookups, Usable, WORKFLOWS_WRITTEN, connection_written};
use super::types::*;
use super::{Backend, Leased, Store, StoreError, StoreResult};
use crate::crypto::{Aad, Keyring};
use crate::domain::{
    ApiKey, AssertionRules, Connection, ConnectionConfig, ConnectionName, ConnectionStatus,
    Dependency, DisabledWorkflow, Event, EventKind, FlowType, NewApiKey, NewConnection, NewEvent,
    NewPending, OboGrant, OboSession, OrgId, OrgScope, PendingAuthorization, RefreshRun, Role,
    RunError, Sealed, SealedError, SecretWrite, SecretWrites, TokenAuthMethod, fields,
};

/// The `obo_config` column: a connection's on-behalf-of settings as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct OboColumn {
    obo_grant: Option<OboGrant>,
    assertion_validation: Option<AssertionRules>,
}

impl OboColumn {
    fn of(c: &ConnectionConfig) -> Option<String> {
        if c.obo_grant.is_none() && c.assertion_validation.is_none() {
            return None;
        }
        Some(to_json(&OboColumn {
            obo_grant: c.obo_grant,
            assertion_validation: c.assertion_validation.clone(),
        }))
    }
}

/// A pool and the keyring that seals what goes into it.
pub struct SqlStore<DB: sqlx::Database> {
    pub(super) pool: sqlx::Pool<DB>,
    keyring: Arc<Keyring>,
    lookups: Arc<Lookups>,
}

impl<DB: Dialect> SqlStore<DB> {
    /// A store; when `lookups` are on, it also follows other replicas' announced writes
    /// where the database carries them (a background task, for as long as the pool).
    pub fn new(pool: sqlx::Pool<DB>, keyring: Arc<Keyring>, lookups: Arc<Lookups>) -> Self {
        if lookups.is_on() {
            DB::follow_announcements(&pool, lookups.clone());
        }
        Self {
            pool,
            keyring,
            lookups,
        }
    }
}

/// What differs between the two SQL dialects.
pub trait Dialect: sqlx::Database {
    const BACKEND: Backend;
    /// Starts a transaction that will write. SQLite takes the write lock up front so a
    /// read-then-write transaction cannot fail with SQLITE_BUSY halfway.
    const BEGIN_WRITE: &'static str;
    /// Announces a write to the other replicas (`$1`: the channel, `ANNOUNCEMENTS`; `$2`:
    /// the announcement), delivered when the transaction commits; `None` where the
    /// database cannot.
    const ANNOUNCE: Option<&'static str>;
    /// Follows the other replicas' announcements into `lookups`.
    fn follow_announcements(pool: &sqlx::Pool<Self>, lookups: Arc<Lookups>);
}

impl Dialect for sqlx::Sqlite {
    const BACKEND: Backend = Backend::Sqlite;
    const BEGIN_WRITE: &'static str = "begin immediate";
    // One process per database file: its own writes are all it needs to know of.
    const ANNOUNCE: Option<&'static str> = None;
    fn follow_announcements(_: &sqlx::Pool<Self>, _: Arc<Lookups>) {}
}

impl Dialect for sqlx::Postgres {
    const BACKEND: Backend = Backend::Postgres;
    const BEGIN_WRITE: &'static str = "begin";
    const ANNOUNCE: Option<&'static str> = Some("select pg_notify($1, $2)");
    fn follow_announcements(pool: &sqlx::Pool<Self>, lookups: Arc<Lookups>) {
        tokio::spawn(super::postgres::follow_announcements(pool.clone(), lookups));
    }
}

/// Announces a write (`Dialect::ANNOUNCE`) on `$executor`, inside its transaction.
macro_rules! announce {
    ($db:ty, $executor:expr, $announcement:expr) => {
        if let Some(sql) = <$db as Dialect>::ANNOUNCE {
            sqlx::query(sql)
                .bind(ANNOUNCEMENTS)
                .bind($announcement)
                .execute($executor)
                .await?;
        }
    };
}

/// Commits `$tx`, a write to the connections named `$name` (and, when `$workflows`, to
/// disabled workflows): announced to the other replicas with the commit, and forgotten
/// by this process's lookups whatever the commit's outcome (it may have happened).
macro_rules! commit_write {
    ($db:ty, $store:expr, $tx:expr, $name:expr, $workflows:expr) => {{
        announce!($db, &mut *$tx, connection_written($name));
        if $workflows {
            announce!($db, &mut *$tx, WORKFLOWS_WRITTEN);
        }
        let committed = $tx.commit().await;
        $store.lookups.wrote($name);
        if $workflows {
            $store.lookups.wrote_workflows();
        }
        committed?;
    }};
}

/// Dependencies (`d`) that resolve to the connection `$2` of org `$1`: the workflow's own
/// org, or GLOBAL when the workflow's org has no connection of that name.
macro_rules! resolves_to {
    () => {
        "d.connection_name = $2 and (d.org_id = $1 or ($1 = 'GLOBAL' and not exists \
         (select 1 from connections c where c.org_id = d.org_id and c.name = d.connection_name)))"
    };
}

/// Lease statements for a table: take one that is free, expired or already ours; release
/// ours.
macro_rules! lease_sql {
    (take, $table:literal) => {
        concat!(
            "update ",
            $table,
            " set lease_owner = $2, lease_until = $4 \
             where id = $1 and (lease_until is null or lease_until < $3 or lease_owner = $2)"
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

macro_rules! connection_columns {
    () => {
        "id, org_id, name, flow_type, client_id, client_secret_sealed, authorization_url, \
         token_url, scopes, token_auth_method, extra_authorization_params, extra_token_params, \
         test_url, obo_config, status, status_message, access_token_sealed, refresh_token_sealed, \
         token_type, token_expires_at, token_scopes, last_refresh_at, last_test_at, \
         refresh_failures, next_refresh_attempt_at, created_at, created_by, updated_at, version"
    };
}

#[derive(sqlx::FromRow)]
pub(super) struct ConnectionRow {
    id: String,
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
    token_expires_at: Option<i64>,
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

#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    id: i64,
    at: i64,
    kind: String,
    actor: String,
    detail: Option<String>,
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;
    fn try_from(r: EventRow) -> StoreResult<Self> {
        Ok(Event {
            id: r.id,
            at: from_ms(r.at),
            kind: EventKind::parse(&r.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("event {}: bad kind", r.id)))?,
            actor: r.actor,
            detail: r.detail,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ApiKeyRow {
    id: String,
    name: String,
    role: String,
    org_scope: String,
    key_prefix: String,
    created_at: i64,
    created_by: String,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;
    fn try_from(r: ApiKeyRow) -> StoreResult<Self> {
        let bad = |what: &str| StoreError::Corrupt(format!("api key {}: bad {what}", r.id));
        Ok(ApiKey {
            role: Role::parse(&r.role).ok_or_else(|| bad("role"))?,
            org_scope: OrgScope::parse(&r.org_scope).map_err(|_| bad("org_scope"))?,
            id: r.id,
            name: r.name,
            key_prefix: r.key_prefix,
            created_at: from_ms(r.created_at),
            created_by: r.created_by,
            revoked_at: r.revoked_at.map(from_ms),
        })
    }
}

macro_rules! session_columns {
    () => {
        "id, org_id, connection_id, connection_name, label, created_by, created_by_key_id, scopes, \
         refresh_token_sealed, access_token_sealed, token_type, token_expires_at, status, \
         status_message, created_at, expires_at, revoked_at, last_used_at, version"
    };
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
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

#[derive(sqlx::FromRow)]
pub(super) struct RunRow {
    id: String,
    trigger: String,
    owner: String,
    started_at: i64,
    finished_at: Option<i64>,
    considered: i64,
    refreshed: i64,
    failed: i64,
    skipped: i64,
    errors: String,
}

impl From<RunRow> for RefreshRun {
    fn from(r: RunRow) -> Self {
        RefreshRun {
            id: r.id,
            trigger: r.trigger,
            owner: r.owner,
            started_at: from_ms(r.started_at),
            finished_at: r.finished_at.map(from_ms),
            considered: r.considered,
            refreshed: r.refreshed,
            failed: r.failed,
            skipped: r.skipped,
            errors: serde_json::from_str(&r.errors).unwrap_or_default(),
        }
    }
}

fn unique_to_conflict(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
        _ => StoreError::Database(e),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("maps and lists of strings always serialize")
}

/// Seals a write for one column, given what is stored now.
fn apply_write(
    keyring: &Keyring,
    current: &Option<String>,
    write: &SecretWrite,
    aad: Aad<'_>,
) -> Option<String> {
    match write {
        SecretWrite::Keep => current.clone(),
        SecretWrite::Clear => None,
        SecretWrite::Set(secret) => Some(keyring.seal(secret.expose_secret(), aad)),
    }
}

/// Appends one event inside the caller's transaction.
macro_rules! insert_event {
    ($executor:expr, $event:expr) => {{
        let event: &NewEvent = $event;
        sqlx::query(
            "insert into events (org_id, connection_id, connection_name, at, kind, actor, detail) \
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(event.org_id.as_str())
        .bind(&event.connection_id)
        .bind(event.connection_name.as_str())
        .bind(to_ms(event.at))
        .bind(event.kind.as_str())
        .bind(&event.actor)
        .bind(&event.detail)
        .execute($executor)
        .await?;
    }};
}

macro_rules! impl_store {
    ($db:ty) => {
        #[async_trait]
        impl Store for SqlStore<$db> {
            fn backend(&self) -> Backend {
                <$db as Dialect>::BACKEND
            }

            fn keyring(&self) -> &Keyring {
                &self.keyring
            }

            async fn ping(&self) -> StoreResult<()> {
                // Reads the migrations table: reachable *and* migrated.
                sqlx::query("select count(*) from _sqlx_migrations")
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
                let value: Option<(String,)> =
                    sqlx::query_as("select value from meta where key = $1")
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(value.map(|(v,)| v))
            }

            async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()> {
                sqlx::query(
                    "insert into meta (key, value) values ($1, $2) \
                     on conflict (key) do update set value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn count_sealed_rows(&self) -> StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as(
                    "select (select count(*) from connections) \
                          + (select count(*) from pending_authorizations) \
                          + (select count(*) from obo_sessions)",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(n)
            }

            async fn insert_connection(
                &self,
                new: NewConnection,
                event: NewEvent,
            ) -> StoreResult<Connection> {
                let id = uuid::Uuid::new_v4().to_string();
                let aad = |field| Aad {
                    org_id: new.org_id.as_str(),
                    row_id: &id,
                    field,
                };
                let client_secret = new
                    .client_secret
                    .as_ref()
                    .map(|s| self.keyring.seal(s.expose_secret(), aad(fields::CLIENT_SECRET)));
                let refresh_token = new
                    .refresh_token
                    .as_ref()
                    .map(|s| self.keyring.seal(s.expose_secret(), aad(fields::REFRESH_TOKEN)));
                let now = to_ms(new.now);
                let c = &new.config;
                let mut tx = self.pool.begin_with(<$db as Dialect>::BEGIN_WRITE).await?;
                let row: ConnectionRow = sqlx::query_as(concat!(
                    "insert into connections (id, org_id, name, flow_type, client_id, \
                     client_secret_sealed, authorization_url, token_url, scopes, token_auth_method, \
                     extra_authorization_params, extra_token_params, test_url, obo_config, status, \
                     refresh_token_sealed, created_at, created_by, updated_at, version) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                     $17, $18, $17, 1) returning ",
                    connection_columns!()
                ))
                .bind(&id)
                .bind(new.org_id.as_str())
                .bind(new.name.as_str())
                .bind(c.flow_type.as_str())
                .bind(&c.client_id)
                .bind(client_secret)
                .bind(&c.authorization_url)
                .bind(&c.token_url)
                .bind(to_json(&c.scopes))
                .bind(c.token_auth_method.as_str())
                .bind(to_json(&c.extra_authorization_params))
                .bind(to_json(&c.extra_token_params))
                .bind(&c.test_url)
                .bind(OboColumn::of(c))
                .bind(ConnectionStatus::NotConnected.as_str())
                .bind(refresh_token)
                .bind(now)
                .bind(&new.created_by)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| {
                    unique_to_conflict(e, || {
                        format!(
                            "a connection named `{}` already exists in org `{}`",
                            new.name, new.org_id
                        )
                    })
                })?;
                let event = NewEvent {
                    connection_id: id.clone(),
                    ..event
                };
                insert_event!(&mut *tx, &event);
                commit_write!($db, self, tx, new.name.as_str(), false);
                row.try_into()
            }

            async fn get_connection(
                &self,
                org: &OrgId,
                name: &ConnectionName,
            ) -> StoreResult<Option<Connection>> {
                let row: Option<ConnectionRow> = sqlx::query_as(concat!(
                    "select ",
                    connection_columns!(),
                    " from connections where org_id = $1 and name = $2"
                ))
                .bind(org.as_str())
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await?;
                row.map(Connection::try_from).transpose()
            }

            async fn get_connection_by_id(&self, id: &str) -> StoreResult<Option<Connection>> {
                let row: Option<ConnectionRow> = sqlx::query_as(concat!(
                    "select ",
                    connection_columns!(),
                    " from connections where id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(Connection::try_from).transpose()
            }

            async fn insert_pending(&self, pending: NewPending) -> StoreResult<()> {
                let sealed = self.keyring.seal(
                    pending.pkce_verifier.expose_secret(),
                    Aad {
                        org_id: pending.org_id.as_str(),
                        row_id: &pending.state_hash,
                        field: fields::PKCE_VERIFIER,
                    },
                );
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
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn take_pending(&self, state_hash: &str) -> StoreResult<Option<PendingAuthorization>> {
                // DELETE ... RETURNING: whoever deletes the row owns the state.
                let row: Option<(String, String, String, String, String, Option<String>, i64)> =
                    sqlx::query_as(
                        "delete from pending_authorizations where state_hash = $1 returning \
                         state_hash, org_id, connection_id, pkce_verifier_sealed, redirect_uri, \
                         return_to, expires_at",
                    )
                    .bind(state_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some((state_hash, org_id, connection_id, sealed, redirect_uri, return_to, expires_at)) = row
                else {
                    return Ok(None);
                };
                let verifier = self
                    .keyring
                    .open(
                        &sealed,
                        Aad {
                            org_id: &org_id,
                            row_id: &state_hash,
                            field: fields::PKCE_VERIFIER,
                        },
                    )
                    .map_err(|source| StoreError::Crypto(SealedError {
                        row: "a pending authorization".into(),
                        field: fields::PKCE_VERIFIER,
                        source,
                    }))?;
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
                let done = sqlx::query("delete from pending_authorizations where expires_at < $1")
                    .bind(to_ms(now))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn list_connections(&self, orgs: &[OrgId]) -> StoreResult<Vec<Connection>> {
                let (first, second) = match orgs {
                    [] => return Ok(Vec::new()),
                    [one] => (one, one),
                    [one, two] => (one, two),
                    _ => {
                        return Err(StoreError::Corrupt(
                            "list_connections takes at most two orgs".into(),
                        ))
                    }
                };
                let rows: Vec<ConnectionRow> = sqlx::query_as(concat!(
                    "select ",
                    connection_columns!(),
                    " from connections where org_id = $1 or org_id = $2 order by org_id, name"
                ))
                .bind(first.as_str())
                .bind(second.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(Connection::try_from).collect()
            }

            async fn save_connection(
                &self,
                conn: &Connection,
                secrets: SecretWrites,
                events: Vec<NewEvent>,
            ) -> StoreResult<Connection> {
                let client_secret = apply_write(
                    &self.keyring,
                    &conn.sealed.client_secret,
                    &secrets.client_secret,
                    conn.aad(fields::CLIENT_SECRET),
                );
                let access_token = apply_write(
                    &self.keyring,
                    &conn.sealed.access_token,
                    &secrets.access_token,
                    conn.aad(fields::ACCESS_TOKEN),
                );
                let refresh_token = apply_write(
                    &self.keyring,
                    &conn.sealed.refresh_token,
                    &secrets.refresh_token,
                    conn.aad(fields::REFRESH_TOKEN),
                );
                let c = &conn.config;
                let mut tx = self.pool.begin_with(<$db as Dialect>::BEGIN_WRITE).await?;
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
                .bind(client_secret)
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
                .bind(access_token)
                .bind(refresh_token)
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
                commit_write!($db, self, tx, conn.name.as_str(), false);
                row.try_into()
            }

            async fn delete_connection(
                &self,
                conn: &Connection,
                disable_workflows: bool,
                event: NewEvent,
            ) -> StoreResult<()> {
                let now = event.at;
                let mut tx = self.pool.begin_with(<$db as Dialect>::BEGIN_WRITE).await?;
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
                    ),
                    )
                    .bind(conn.org_id.as_str())
                    .bind(conn.name.as_str())
                    .bind(format!("OAuth connection `{}` was deleted", conn.name))
                    .bind(to_ms(now))
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(concat!("delete from workflow_dependencies as d where ", resolves_to!()))
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
                commit_write!($db, self, tx, conn.name.as_str(), disable_workflows);
                Ok(())
            }

            async fn insert_events(&self, events: Vec<NewEvent>) -> StoreResult<()> {
                let mut tx = self.pool.begin_with(<$db as Dialect>::BEGIN_WRITE).await?;
                for event in &events {
                    insert_event!(&mut *tx, event);
                }
                tx.commit().await?;
                Ok(())
            }

            async fn list_events(&self, connection_id: &str, limit: i64) -> StoreResult<Vec<Event>> {
                let rows: Vec<EventRow> = sqlx::query_as(
                    "select id, at, kind, actor, detail from events \
                     where connection_id = $1 order by id desc limit $2",
                )
                .bind(connection_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(Event::try_from).collect()
            }

            async fn dependent_workflows(
                &self,
                org: &OrgId,
                name: &ConnectionName,
            ) -> StoreResult<Vec<String>> {
                let rows: Vec<(String,)> = sqlx::query_as(concat!(
                    "select distinct workflow_id from workflow_dependencies d where ",
                    resolves_to!(),
                    " order by workflow_id"
                ))
                .bind(org.as_str())
                .bind(name.as_str())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(w,)| w).collect())
            }

            async fn find_for_credentials(
                &self,
                org: &OrgId,
                name: &ConnectionName,
            ) -> StoreResult<Option<Connection>> {
                // One round trip: the org's own connection sorts before GLOBAL's.
                let row: Option<ConnectionRow> = sqlx::query_as(concat!(
                    "select ",
                    connection_columns!(),
                    " from connections where name = $1 and (org_id = $2 or org_id = 'GLOBAL') \
                     order by case when org_id = $2 then 0 else 1 end limit 1"
                ))
                .bind(name.as_str())
                .bind(org.as_str())
                .fetch_optional(&self.pool)
                .await?;
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
                let done = sqlx::query(sql)
                    .bind(id)
                    .bind(owner)
                    .bind(to_ms(now))
                    .bind(to_ms(until))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_lease(&self, what: Leased, id: &str, owner: &str) -> StoreResult<()> {
                let sql = match what {
                    Leased::Connection => lease_sql!(release, "connections"),
                    Leased::OboSession => lease_sql!(release, "obo_sessions"),
                };
                sqlx::query(sql).bind(id).bind(owner).execute(&self.pool).await?;
                Ok(())
            }

            async fn due_connections(
                &self,
                due_before: DateTime<Utc>,
                now: DateTime<Utc>,
                after_id: &str,
                limit: i64,
            ) -> StoreResult<Vec<Connection>> {
                let rows: Vec<ConnectionRow> = sqlx::query_as(concat!(
                    "select ",
                    connection_columns!(),
                    " from connections where status = 'completed' \
                     and flow_type in ('client_credentials', 'refresh_token', 'authorization_code') \
                     and (token_expires_at is null or token_expires_at < $1) \
                     and (next_refresh_attempt_at is null or next_refresh_attempt_at <= $2) \
                     and id > $3 order by id limit $4"
                ))
                .bind(to_ms(due_before))
                .bind(to_ms(now))
                .bind(after_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(Connection::try_from).collect()
            }

            async fn insert_refresh_run(&self, run: &RefreshRun) -> StoreResult<()> {
                sqlx::query(
                    "insert into refresh_runs (id, trigger, owner, started_at) values ($1, $2, $3, $4)",
                )
                .bind(&run.id)
                .bind(&run.trigger)
                .bind(&run.owner)
                .bind(to_ms(run.started_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn finish_refresh_run(&self, run: &RefreshRun) -> StoreResult<()> {
                sqlx::query(
                    "update refresh_runs set finished_at = $2, considered = $3, refreshed = $4, \
                     failed = $5, skipped = $6, errors = $7 where id = $1",
                )
                .bind(&run.id)
                .bind(run.finished_at.map(to_ms))
                .bind(run.considered)
                .bind(run.refreshed)
                .bind(run.failed)
                .bind(run.skipped)
                .bind(to_json(&run.errors))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn beat_refresh_run(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
                sqlx::query(
                    "update refresh_runs set heartbeat_at = $2 where id = $1 and finished_at is null",
                )
                .bind(id)
                .bind(to_ms(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn finish_silent_refresh_runs(
                &self,
                silent_since: DateTime<Utc>,
                error: &RunError,
            ) -> StoreResult<u64> {
                let done = sqlx::query(
                    "update refresh_runs set finished_at = coalesce(heartbeat_at, started_at), \
                     errors = $2 where finished_at is null \
                     and coalesce(heartbeat_at, started_at) <= $1",
                )
                .bind(to_ms(silent_since))
                .bind(to_json(&[error]))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn latest_refresh_runs(
                &self,
                since: DateTime<Utc>,
            ) -> StoreResult<(Option<RefreshRun>, Option<RefreshRun>)> {
                let last: Option<RunRow> = sqlx::query_as(
                    "select id, trigger, owner, started_at, finished_at, considered, refreshed, failed, \
                     skipped, errors from refresh_runs where finished_at is not null \
                     order by started_at desc limit 1",
                )
                .fetch_optional(&self.pool)
                .await?;
                let running: Option<RunRow> = sqlx::query_as(
                    "select id, trigger, owner, started_at, finished_at, considered, refreshed, failed, \
                     skipped, errors from refresh_runs where finished_at is null and started_at > $1 \
                     order by started_at desc limit 1",
                )
                .bind(to_ms(since))
                .fetch_optional(&self.pool)
                .await?;
                Ok((last.map(RefreshRun::from), running.map(RefreshRun::from)))
            }

            async fn upsert_dependency(&self, dep: &Dependency) -> StoreResult<()> {
                sqlx::query(
                    "insert into workflow_dependencies (workflow_id, org_id, connection_name, workflow_name, registered_at) \
                     values ($1, $2, $3, $4, $5) on conflict (workflow_id, org_id, connection_name) \
                     do update set workflow_name = excluded.workflow_name",
                )
                .bind(&dep.workflow_id)
                .bind(dep.org_id.as_str())
                .bind(dep.connection_name.as_str())
                .bind(&dep.workflow_name)
                .bind(to_ms(dep.registered_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_dependencies(&self, workflow_id: &str, org: &OrgId) -> StoreResult<Vec<Dependency>> {
                let rows: Vec<(String, String, String, Option<String>, i64, Option<i64>)> = sqlx::query_as(
                    "select workflow_id, org_id, connection_name, workflow_name, registered_at, last_accessed_at \
                     from workflow_dependencies where workflow_id = $1 and org_id = $2 order by connection_name",
                )
                .bind(workflow_id)
                .bind(org.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(workflow_id, org_id, name, workflow_name, registered_at, last_accessed_at)| {
                        Ok(Dependency {
                            workflow_id,
                            org_id: OrgId::parse(&org_id).map_err(|_| StoreError::Corrupt("dependency org".into()))?,
                            connection_name: ConnectionName::parse(&name)
                                .map_err(|_| StoreError::Corrupt("dependency name".into()))?,
                            workflow_name,
                            registered_at: from_ms(registered_at),
                            last_accessed_at: last_accessed_at.map(from_ms),
                        })
                    })
                    .collect()
            }

            async fn delete_dependency(&self, workflow_id: &str, org: &OrgId, name: &ConnectionName) -> StoreResult<bool> {
                let done = sqlx::query(
                    "delete from workflow_dependencies where workflow_id = $1 and org_id = $2 and connection_name = $3",
                )
                .bind(workflow_id)
                .bind(org.as_str())
                .bind(name.as_str())
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn touch_dependency(
                &self,
                workflow_id: &str,
                org: &OrgId,
                name: &ConnectionName,
                now: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query(
                    "update workflow_dependencies set last_accessed_at = $4 \
                     where workflow_id = $1 and org_id = $2 and connection_name = $3",
                )
                .bind(workflow_id)
                .bind(org.as_str())
                .bind(name.as_str())
                .bind(to_ms(now))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn is_workflow_disabled(&self, workflow_id: &str, org: &OrgId) -> StoreResult<bool> {
                if let Some(disabled) = self.lookups.disabled(org.as_str(), workflow_id) {
                    return Ok(disabled);
                }
                let ticket = self.lookups.ticket();
                // count(*) is a bigint on both backends (a bare `1` is int4 on PostgreSQL).
                let (n,): (i64,) = sqlx::query_as(
                    "select count(*) from disabled_workflows where workflow_id = $1 and org_id = $2",
                )
                .bind(workflow_id)
                .bind(org.as_str())
                .fetch_one(&self.pool)
                .await?;
                self.lookups
                    .remember_disabled(ticket, org.as_str(), workflow_id, n > 0);
                Ok(n > 0)
            }

            async fn list_disabled_workflows(&self, org: &OrgId) -> StoreResult<Vec<DisabledWorkflow>> {
                let rows: Vec<(String, String, String, i64, Option<String>)> = sqlx::query_as(
                    "select workflow_id, org_id, disabled_reason, disabled_at, related_oauth_connection \
                     from disabled_workflows where org_id = $1 order by disabled_at, workflow_id",
                )
                .bind(org.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(workflow_id, org_id, disabled_reason, disabled_at, related_oauth_connection)| {
                        Ok(DisabledWorkflow {
                            workflow_id,
                            org_id: OrgId::parse(&org_id).map_err(|_| StoreError::Corrupt("disabled org".into()))?,
                            disabled_reason,
                            disabled_at: from_ms(disabled_at),
                            related_oauth_connection,
                        })
                    })
                    .collect()
            }

            async fn enable_workflow(&self, workflow_id: &str, org: &OrgId) -> StoreResult<bool> {
                let done = sqlx::query("delete from disabled_workflows where workflow_id = $1 and org_id = $2")
                    .bind(workflow_id)
                    .bind(org.as_str())
                    .execute(&self.pool)
                    .await;
                self.lookups.wrote_workflows();
                let enabled = done?.rows_affected() == 1;
                if enabled {
                    announce!($db, &self.pool, WORKFLOWS_WRITTEN);
                }
                Ok(enabled)
            }

            async fn insert_obo_session(
                &self,
                session: &OboSession,
                access_token: &secrecy::SecretString,
                refresh_token: &secrecy::SecretString,
            ) -> StoreResult<()> {
                let access = self.keyring.seal(access_token.expose_secret(), session.aad(fields::ACCESS_TOKEN));
                let refresh = self.keyring.seal(refresh_token.expose_secret(), session.aad(fields::REFRESH_TOKEN));
                sqlx::query(
                    "insert into obo_sessions (id, org_id, connection_id, connection_name, label, created_by, \
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
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_obo_session(&self, id: &str) -> StoreResult<Option<OboSession>> {
                let row: Option<SessionRow> = sqlx::query_as(concat!(
                    "select ", session_columns!(), " from obo_sessions where id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(OboSession::try_from).transpose()
            }

            async fn list_obo_sessions(
                &self,
                org: &OrgId,
                connection_name: Option<&ConnectionName>,
            ) -> StoreResult<Vec<OboSession>> {
                let rows: Vec<SessionRow> = sqlx::query_as(concat!(
                    "select ", session_columns!(),
                    " from obo_sessions where org_id = $1 and ($2 = '' or connection_name = $2) \
                     order by created_at, id"
                ))
                .bind(org.as_str())
                .bind(connection_name.map(|n| n.as_str()).unwrap_or(""))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(OboSession::try_from).collect()
            }

            async fn save_obo_session(&self, session: &OboSession, secrets: SecretWrites) -> StoreResult<OboSession> {
                let access = apply_write(&self.keyring, &session.sealed.access_token, &secrets.access_token, session.aad(fields::ACCESS_TOKEN));
                let refresh = apply_write(&self.keyring, &session.sealed.refresh_token, &secrets.refresh_token, session.aad(fields::REFRESH_TOKEN));
                let row: Option<SessionRow> = sqlx::query_as(concat!(
                    "update obo_sessions set refresh_token_sealed = $3, access_token_sealed = $4, token_type = $5, \
                     token_expires_at = $6, status = $7, status_message = $8, revoked_at = $9, last_used_at = $10, \
                     version = version + 1 where id = $1 and version = $2 returning ",
                    session_columns!()
                ))
                .bind(&session.id)
                .bind(session.version)
                .bind(refresh)
                .bind(access)
                .bind(&session.token_type)
                .bind(session.token_expires_at.map(to_ms))
                .bind(&session.status)
                .bind(&session.status_message)
                .bind(session.revoked_at.map(to_ms))
                .bind(session.last_used_at.map(to_ms))
                .fetch_optional(&self.pool)
                .await?;
                row.ok_or(StoreError::Stale)?.try_into()
            }

            async fn due_obo_sessions(
                &self,
                due_before: DateTime<Utc>,
                now: DateTime<Utc>,
                after_id: &str,
                limit: i64,
            ) -> StoreResult<Vec<OboSession>> {
                let rows: Vec<SessionRow> = sqlx::query_as(concat!(
                    "select ", session_columns!(),
                    " from obo_sessions where status = 'active' and revoked_at is null and expires_at > $2 \
                     and (token_expires_at is null or token_expires_at < $1) and id > $3 order by id limit $4"
                ))
                .bind(to_ms(due_before))
                .bind(to_ms(now))
                .bind(after_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(OboSession::try_from).collect()
            }

            async fn purge_obo_sessions(&self, before: DateTime<Utc>) -> StoreResult<u64> {
                let done = sqlx::query("delete from obo_sessions where expires_at < $1 or revoked_at < $1")
                    .bind(to_ms(before))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn insert_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey> {
                let row: ApiKeyRow = sqlx::query_as(
                    "insert into api_keys (id, name, role, org_scope, key_hash, key_prefix, created_at, created_by) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8) \
                     returning id, name, role, org_scope, key_prefix, created_at, created_by, revoked_at",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(&key.name)
                .bind(key.role.as_str())
                .bind(key.org_scope.as_str())
                .bind(&key.key_hash)
                .bind(&key.key_prefix)
                .bind(to_ms(key.now))
                .bind(&key.created_by)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| unique_to_conflict(e, || format!("an API key named `{}` already exists", key.name)))?;
                row.try_into()
            }

            async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
                let row: Option<ApiKeyRow> = sqlx::query_as(
                    "select id, name, role, org_scope, key_prefix, created_at, created_by, revoked_at \
                     from api_keys where key_hash = $1 and revoked_at is null",
                )
                .bind(key_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(ApiKey::try_from).transpose()
            }

            async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
                let rows: Vec<ApiKeyRow> = sqlx::query_as(
                    "select id, name, role, org_scope, key_prefix, created_at, created_by, revoked_at \
                     from api_keys order by created_at, name",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(ApiKey::try_from).collect()
            }

            async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query(
                    "update api_keys set revoked_at = $2 where id = $1 and revoked_at is null",
                )
                .bind(id)
                .bind(to_ms(now))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn count_active_api_keys(&self) -> StoreResult<i64> {
                let (n,): (i64,) =
                    sqlx::query_as("select count(*) from api_keys where revoked_at is null")
                        .fetch_one(&self.pool)
                        .await?;
                Ok(n)
            }

            async fn rotate_keys(&self) -> StoreResult<RotationReport> {
                let mut report = RotationReport::default();
                // Connections: one short transaction per row so a running service keeps
                // serving; the version check keeps a concurrent token write from being lost
                // (the row is simply read again).
                let ids: Vec<(String,)> = sqlx::query_as("select id from connections order by id")
                    .fetch_all(&self.pool)
                    .await?;
                for (id,) in ids {
                    loop {
                        let row: Option<ConnectionRow> = sqlx::query_as(concat!(
                            "select ",
                            connection_columns!(),
                            " from connections where id = $1"
                        ))
                        .bind(&id)
                        .fetch_optional(&self.pool)
                        .await?;
                        let Some(row) = row else { break };
                        let conn = Connection::try_from(row)?;
                        let mut sealed = conn.sealed.clone();
                        let mut row_report = RotationReport::default();
                        for (slot, field) in [
                            (&mut sealed.client_secret, fields::CLIENT_SECRET),
                            (&mut sealed.access_token, fields::ACCESS_TOKEN),
                            (&mut sealed.refresh_token, fields::REFRESH_TOKEN),
                        ] {
                            let Some(current) = slot.as_deref() else { continue };
                            match self.keyring.reseal(current, conn.aad(field)).map_err(|source| {
                                StoreError::Crypto(SealedError {
                                    row: format!("connection {}/{}", conn.org_id, conn.name),
                                    field,
                                    source,
                                })
                            })? {
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
                        let done = sqlx::query(
                            "update connections set client_secret_sealed = $3, access_token_sealed = $4, \
                             refresh_token_sealed = $5, version = version + 1 where id = $1 and version = $2",
                        )
                        .bind(&conn.id)
                        .bind(conn.version)
                        .bind(&sealed.client_secret)
                        .bind(&sealed.access_token)
                        .bind(&sealed.refresh_token)
                        .execute(&self.pool)
                        .await?;
                        if done.rows_affected() == 1 {
                            report.resealed += row_report.resealed;
                            report.current += row_report.current;
                            break;
                        }
                        // Written meanwhile (a refresh): read the fresh row and go again.
                    }
                }
                // Sessions: same per-row scheme as connections.
                let session_ids: Vec<(String,)> = sqlx::query_as("select id from obo_sessions order by id")
                    .fetch_all(&self.pool)
                    .await?;
                for (id,) in session_ids {
                    loop {
                        let row: Option<SessionRow> = sqlx::query_as(concat!(
                            "select ", session_columns!(), " from obo_sessions where id = $1"
                        ))
                        .bind(&id)
                        .fetch_optional(&self.pool)
                        .await?;
                        let Some(row) = row else { break };
                        let session = OboSession::try_from(row)?;
                        let mut sealed = session.sealed.clone();
                        let mut row_report = RotationReport::default();
                        for (slot, field) in [
                            (&mut sealed.access_token, fields::ACCESS_TOKEN),
                            (&mut sealed.refresh_token, fields::REFRESH_TOKEN),
                        ] {
                            let Some(current) = slot.as_deref() else { continue };
                            match self.keyring.reseal(current, session.aad(field)).map_err(|source| StoreError::Crypto(SealedError {
                                row: format!("obo session {}", session.id),
                                field,
                                source,
                            }))? {
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
                        let done = sqlx::query(
                            "update obo_sessions set access_token_sealed = $3, refresh_token_sealed = $4, \
                             version = version + 1 where id = $1 and version = $2",
                        )
                        .bind(&session.id)
                        .bind(session.version)
                        .bind(&sealed.access_token)
                        .bind(&sealed.refresh_token)
                        .execute(&self.pool)
                        .await?;
                        if done.rows_affected() == 1 {
                            report.resealed += row_report.resealed;
                            report.current += row_report.current;
                            break;
                        }
                    }
                }
                let pending: Vec<(String, String, String)> = sqlx::query_as(
                    "select state_hash, org_id, pkce_verifier_sealed from pending_authorizations",
                )
                .fetch_all(&self.pool)
                .await?;
                for (state_hash, org_id, sealed) in pending {
                    let aad = Aad {
                        org_id: &org_id,
                        row_id: &state_hash,
                        field: fields::PKCE_VERIFIER,
                    };
                    match self.keyring.reseal(&sealed, aad).map_err(|source| StoreError::Crypto(SealedError {
                        row: "a pending authorization".into(),
                        field: fields::PKCE_VERIFIER,
                        source,
                    }))? {
                        Some(new) => {
                            sqlx::query(
                                "update pending_authorizations set pkce_verifier_sealed = $2 where state_hash = $1",
                            )
                            .bind(&state_hash)
                            .bind(new)
                            .execute(&self.pool)
                            .await?;
                            report.resealed += 1;
                        }
                        None => report.current += 1,
                    }
                }
                Ok(report)
            }
        }
    };
}

impl_store!(sqlx::Sqlite);
impl_store!(sqlx::Postgres);

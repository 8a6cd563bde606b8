//! Importing connections in bulk: many completed connections, their tokens and their
//! `created` events written in one transaction, with statements prepared once. It is
//! how the scale benchmark seeds a million rows in minutes rather than hours, and what a
//! bulk import from another broker would sit on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::connections::OboColumn;
use super::error::StoreResult;
use super::events::insert_event;
use super::sql::{SqlStore, announce, in_write_tx, to_json};
use super::types::to_ms;
use crate::crypto::Aad;
use crate::domain::{ConnectionStatus, NewConnection, NewEvent, fields};

/// A connection arriving with a token already issued.
pub struct ImportedConnection {
    pub new: NewConnection,
    pub access_token: SecretString,
    pub token_type: String,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// Its `created` event (the connection id is filled in).
    pub event: NewEvent,
}

#[async_trait]
pub trait ImportStore {
    /// Inserts every connection `completed`, with its secrets sealed and its event, in
    /// one transaction: all or none. A name taken in its org fails the whole batch.
    async fn import_connections(&self, batch: Vec<ImportedConnection>) -> StoreResult<u64>;
}

#[async_trait]
impl ImportStore for SqlStore {
    async fn import_connections(&self, batch: Vec<ImportedConnection>) -> StoreResult<u64> {
        let rows: Vec<_> = batch
            .into_iter()
            .map(|item| {
                let id = uuid::Uuid::new_v4().to_string();
                let seal = |secret: &SecretString, field| {
                    let aad = Aad {
                        org_id: item.new.org_id.as_str(),
                        row_id: &id,
                        field,
                    };
                    self.keyring.seal(secret.expose_secret(), aad)
                };
                let client_secret = item
                    .new
                    .client_secret
                    .as_ref()
                    .map(|s| seal(s, fields::CLIENT_SECRET));
                let refresh_token = item
                    .new
                    .refresh_token
                    .as_ref()
                    .map(|s| seal(s, fields::REFRESH_TOKEN));
                let access_token = seal(&item.access_token, fields::ACCESS_TOKEN);
                (id, client_secret, refresh_token, access_token, item)
            })
            .collect();
        let count = rows.len() as u64;
        in_write_tx!(self, |tx| {
            for (id, client_secret, refresh_token, access_token, item) in &rows {
                let (new, c) = (&item.new, &item.new.config);
                let now = to_ms(new.now);
                sqlx::query(
                    "insert into connections (id, org_id, name, flow_type, client_id, \
                     client_secret_sealed, authorization_url, token_url, scopes, token_auth_method, \
                     extra_authorization_params, extra_token_params, test_url, obo_config, status, \
                     refresh_token_sealed, access_token_sealed, token_type, token_expires_at, \
                     last_refresh_at, created_at, created_by, updated_at, version) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                     $16, $17, $18, $19, $20, $21, $22, $21, 1)",
                )
                .bind(id)
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
                .bind(ConnectionStatus::Completed.as_str())
                .bind(refresh_token)
                .bind(access_token)
                .bind(&item.token_type)
                .bind(item.token_expires_at.map(to_ms))
                .bind(item.last_refresh_at.map(to_ms))
                .bind(now)
                .bind(&new.created_by)
                .execute(&mut *tx)
                .await?;
                let event = NewEvent {
                    connection_id: id.clone(),
                    ..item.event.clone()
                };
                insert_event!(&mut *tx, &event);
            }
            // Many names at once: every replica forgets what it remembers.
            announce!(self, &mut *tx, "import");
            let committed = tx.commit().await;
            self.lookups.forget_everything();
            committed?;
        });
        Ok(count)
    }
}

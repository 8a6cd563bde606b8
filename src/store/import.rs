//! Importing connections in bulk: many completed connections, their tokens and their
//! `created` events written in one transaction. It is how the scale benchmark seeds a
//! million rows in minutes rather than hours, and what a bulk import from another
//! broker would sit on.

use async_trait::async_trait;

use super::connections::{IssuedToken, NewRow, insert_new_row};
use super::error::StoreResult;
use super::events::insert_event;
use super::sql::{SqlStore, announce, in_write_tx};
use crate::domain::{NewConnection, NewEvent};

/// A connection arriving with a token already issued.
pub struct ImportedConnection {
    pub new: NewConnection,
    pub token: IssuedToken,
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
        // Sealing is CPU work: done before the write transaction, not while holding it.
        let rows: Vec<NewRow<'_>> = batch
            .iter()
            .map(|item| NewRow::seal(self, &item.new, Some(&item.token)))
            .collect();
        in_write_tx!(self, |tx| {
            for (row, item) in rows.iter().zip(&batch) {
                insert_new_row!(&mut *tx, row, &item.new)?;
                let event = NewEvent {
                    connection_id: row.id.clone(),
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
        Ok(rows.len() as u64)
    }
}

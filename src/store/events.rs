//! Events: the audit trail of each connection, which outlives it.

use async_trait::async_trait;

use super::error::{StoreError, StoreResult};
use super::sql::{SqlStore, in_write_tx, on_db};
use super::types::from_ms;
use crate::domain::{Event, EventKind, NewEvent, Page, PageRequest};

/// The audit trail.
#[async_trait]
pub trait EventStore {
    async fn insert_events(&self, events: Vec<NewEvent>) -> StoreResult<()>;
    /// A page of a connection's events, newest first; the page key is the event id.
    async fn list_events(
        &self,
        connection_id: &str,
        page: &PageRequest<i64>,
    ) -> StoreResult<Page<Event>>;
}

/// Appends one event inside the caller's transaction.
macro_rules! insert_event {
    ($executor:expr, $event:expr) => {{
        let event: &$crate::domain::NewEvent = $event;
        sqlx::query(
            "insert into events (org_id, connection_id, connection_name, at, kind, actor, detail) \
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(event.org_id.as_str())
        .bind(&event.connection_id)
        .bind(event.connection_name.as_str())
        .bind($crate::store::types::to_ms(event.at))
        .bind(event.kind.as_str())
        .bind(&event.actor)
        .bind(&event.detail)
        .execute($executor)
        .await?;
    }};
}
pub(super) use insert_event;

#[async_trait]
impl EventStore for SqlStore {
    async fn insert_events(&self, events: Vec<NewEvent>) -> StoreResult<()> {
        in_write_tx!(self, |tx| {
            for event in &events {
                insert_event!(&mut *tx, event);
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn list_events(
        &self,
        connection_id: &str,
        page: &PageRequest<i64>,
    ) -> StoreResult<Page<Event>> {
        // Ids grow with time: newest first is id descending, on (connection_id, id).
        let rows: Vec<EventRow> = on_db!(self, |pool| {
            sqlx::query_as(
                "select id, at, kind, actor, detail from events \
                 where connection_id = $1 and id < $2 order by id desc limit $3",
            )
            .bind(connection_id)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(page.fetch() as i64)
            .fetch_all(pool)
            .await
        })?;
        let rows = rows
            .into_iter()
            .map(Event::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page))
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
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

//! The credentials read: a valid access token for workflow code, from the caller's org
//! or else GLOBAL, refreshed first when it would not last; and the record of which
//! workflow read it (throttled, off the request's path).

use std::sync::Arc;

use chrono::Duration;
use secrecy::SecretString;

use super::refresh::ensure_fresh;
use super::{Broker, Error, NoToken, Result};
use crate::domain::{
    Caller, Connection, ConnectionName, ConnectionStatus, EventKind, NewEvent, OrgId, WorkflowId,
};

/// A token served: the connection it came from (the caller's org's, or GLOBAL's) and
/// the access token itself.
pub struct Served {
    pub connection: Arc<Connection>,
    pub access_token: SecretString,
}

/// A token of connection `name` (in `org`, else GLOBAL) valid for at least `min_valid`.
/// With a `workflow`, a disabled workflow is refused and the read is recorded.
pub async fn read(
    broker: &Arc<Broker>,
    org: &OrgId,
    name: &ConnectionName,
    min_valid: Duration,
    workflow: Option<WorkflowId>,
    caller: &Caller,
) -> Result<Served> {
    if let Some(w) = &workflow
        && broker.store.is_workflow_disabled(w.as_str(), org).await?
    {
        return Err(Error::Forbidden(format!(
            "workflow `{w}` is disabled (a connection it depends on was deleted); enable it with POST /api/oauth/workflows/{w}/enable"
        )));
    }
    let now = broker.clock.now();
    // A remembered connection only when it can be served as is; anything that may need
    // a refresh or a status answer is read from the database.
    let servable = move |conn: &Connection| {
        conn.status == ConnectionStatus::Completed && conn.has_fresh_token(now, min_valid)
    };
    let conn = broker
        .store
        .find_for_credentials_cached(org, name, &servable)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!("no connection `{name}` in org `{org}` or GLOBAL"))
        })?;
    let conn = ensure_fresh(broker, conn, min_valid, "credentials").await?;
    let access_token = conn
        .open_access_token(broker.store.keyring())?
        .ok_or_else(|| NoToken::Status {
            status: conn.status,
            message: Some("no access token is stored".into()),
        })?;
    if let Some(w) = workflow {
        record_read(broker, &conn, org, w, caller);
    }
    Ok(Served {
        connection: conn,
        access_token,
    })
}

/// Records the read on the workflow's registered dependency and, when there is one, as
/// a `credentials_read` event: off the request's path, and throttled (see `ReadLog`), so
/// that a busy workflow, or a key inventing workflow ids, cannot turn reads into writes.
/// A workflow that registered no dependency on the connection is not recorded at all.
fn record_read(
    broker: &Arc<Broker>,
    conn: &Connection,
    org: &OrgId,
    workflow: WorkflowId,
    caller: &Caller,
) {
    if !broker.reads.due(
        &conn.id,
        &caller.key_id,
        workflow.as_str(),
        broker.clock.now(),
    ) {
        return;
    }
    let event = NewEvent::for_connection(
        conn,
        EventKind::CredentialsRead,
        &caller.name,
        broker.clock.now(),
        Some(format!("workflow {workflow}")),
    );
    let broker = broker.clone();
    let org = org.clone();
    let name = conn.name.clone();
    let writers = broker.reads.writers.clone();
    tokio::spawn(async move {
        let Ok(_turn) = writers.acquire_owned().await else {
            return;
        };
        let now = broker.clock.now();
        match broker
            .store
            .touch_dependency(workflow.as_str(), &org, &name, now)
            .await
        {
            Ok(true) => {
                if let Err(e) = broker.store.insert_events(vec![event]).await {
                    tracing::warn!(error = %e, "could not record a credentials_read event");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not record a credentials read"),
        }
    });
}

//! Connections seeded through the library's store, without a provider call: what a
//! refresher run finds due, in the numbers a test of it needs.

use chrono::{DateTime, Utc};
use oauth_broker::domain::{ConnectionConfig, NewConnection, NewEvent, SecretWrite, SecretWrites};
use oauth_broker::domain::{
    ConnectionName, ConnectionStatus, EventKind, FlowType, OrgId, TokenAuthMethod,
};
use oauth_broker::store::{DynStore, ImportedConnection, IssuedToken};
use secrecy::SecretString;

/// A connection to seed as due, and the secrets it holds (sealed by the store).
pub struct Due<'a> {
    pub org: &'a str,
    pub name: &'a str,
    pub token_url: &'a str,
    pub client_secret: &'a str,
    pub access_token: &'a str,
}

/// Inserts a completed client-credentials connection through `store`, its token expiring
/// one hour after `now` (inside the refresher's 4-hour threshold) and last refreshed an
/// hour before it: what a refresher run renews.
pub async fn insert_due(store: &DynStore, due: &Due<'_>, now: DateTime<Utc>) {
    let (new, event) = new_due(due, now);
    let created = store.insert_connection(new, event).await.unwrap();
    let mut completed = created.clone();
    completed.status = ConnectionStatus::Completed;
    completed.token_type = Some("Bearer".into());
    completed.token_expires_at = Some(now + chrono::Duration::hours(1));
    completed.last_refresh_at = Some(now - chrono::Duration::hours(1));
    store
        .save_connection(
            &completed,
            SecretWrites {
                access_token: SecretWrite::Set(SecretString::from(due.access_token)),
                ..SecretWrites::default()
            },
            Vec::new(),
        )
        .await
        .unwrap();
}

/// The same connection as `insert_due` makes, for `ImportStore::import_connections`.
pub fn imported_due(due: &Due<'_>, now: DateTime<Utc>) -> ImportedConnection {
    let (new, event) = new_due(due, now);
    ImportedConnection {
        new,
        token: IssuedToken {
            access_token: SecretString::from(due.access_token),
            token_type: "Bearer".into(),
            token_expires_at: Some(now + chrono::Duration::hours(1)),
            last_refresh_at: Some(now - chrono::Duration::hours(1)),
        },
        event,
    }
}

fn new_due(due: &Due<'_>, now: DateTime<Utc>) -> (NewConnection, NewEvent) {
    let org = OrgId::parse(due.org).unwrap();
    let name = ConnectionName::parse(due.name).unwrap();
    let config = ConnectionConfig {
        flow_type: FlowType::ClientCredentials,
        client_id: "client-1".into(),
        authorization_url: None,
        token_url: due.token_url.to_owned(),
        scopes: vec!["read".into()],
        token_auth_method: TokenAuthMethod::ClientSecretBasic,
        extra_authorization_params: Default::default(),
        extra_token_params: Default::default(),
        test_url: None,
        obo_grant: None,
        assertion_validation: None,
    };
    (
        NewConnection {
            org_id: org.clone(),
            name: name.clone(),
            config,
            client_secret: Some(SecretString::from(due.client_secret)),
            refresh_token: None,
            created_by: "test".into(),
            now,
        },
        NewEvent {
            org_id: org,
            connection_id: String::new(),
            connection_name: name,
            at: now,
            kind: EventKind::Created,
            actor: "test".into(),
            detail: None,
        },
    )
}

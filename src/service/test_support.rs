//! What the service layer's own tests share: a `Broker` on a fresh SQLite file with a
//! movable clock and no HTTP, and a token endpoint on loopback.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use secrecy::SecretString;

use super::Broker;
use super::connections::{CreateInput, create};
use crate::clock::ManualClock;
use crate::config::Settings;
use crate::crypto::Keyring;
use crate::domain::{
    Connection, ConnectionConfig, ConnectionName, FlowType, OrgId, TokenAuthMethod,
};
use crate::store::{Lookups, open_pool};

pub struct TestBroker {
    pub broker: Arc<Broker>,
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

/// A broker on a fresh SQLite database, its clock at 2026-01-15 09:00 UTC.
pub async fn test_broker() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/broker.db", dir.path().display());
    let settings = Settings {
        database_url: SecretString::from(url.clone()),
        allow_private_provider_addresses: true,
        provider_timeout_ms: 2_000,
        provider_retry_base_ms: 10,
        ..Settings::default()
    };
    let pool = open_pool(&settings.database_url, 4).await.unwrap();
    let store = pool.store(
        Arc::new(Keyring::generate("test").0),
        Arc::new(Lookups::off()),
    );
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 1, 15, 9, 0, 0).unwrap(),
    ));
    let broker = Broker::new(store, clock.clone(), settings, "http://broker.test".into());
    TestBroker {
        broker,
        clock,
        _dir: dir,
    }
}

/// A client-credentials connection on `token_url` in GLOBAL (creating it fetches a token).
pub async fn client_credentials(broker: &Arc<Broker>, name: &str, token_url: &str) -> Connection {
    create(
        broker,
        &OrgId::global(),
        CreateInput {
            name: ConnectionName::parse(name).unwrap(),
            config: ConnectionConfig {
                flow_type: FlowType::ClientCredentials,
                client_id: "client-1".into(),
                authorization_url: None,
                token_url: token_url.into(),
                scopes: vec![],
                token_auth_method: TokenAuthMethod::ClientSecretPost,
                extra_authorization_params: Default::default(),
                extra_token_params: Default::default(),
                test_url: None,
                obo_grant: None,
                assertion_validation: None,
            },
            client_secret: Some(SecretString::from("secret-1")),
            refresh_token: None,
        },
        "test",
    )
    .await
    .unwrap()
}

/// A token endpoint answering `<prefix>-1`, `<prefix>-2`, ... valid for `expires_in`.
pub async fn numbered_tokens(prefix: &'static str, expires_in: u64) -> wiremock::MockServer {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = wiremock::MockServer::start().await;
    let issued = AtomicUsize::new(0);
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(move |_: &wiremock::Request| {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": format!("{prefix}-{n}"),
                "token_type": "Bearer",
                "expires_in": expires_in,
            }))
        })
        .mount(&server)
        .await;
    server
}

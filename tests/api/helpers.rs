//! The test story shared by every API test: a real server on a free port, its own
//! database (a fresh SQLite file, or a fresh PostgreSQL database; see
//! `tests/support/db.rs`), a movable clock, an admin key, and log capture.
#![allow(dead_code)] // each test file uses a different part of the shared story

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{TimeZone, Utc};
use oauth_broker::clock::ManualClock;
use oauth_broker::config::Settings;
use oauth_broker::crypto::Keyring;
use oauth_broker::startup::Application;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

pub use crate::support::db::{Backend, DEFAULT_PG, TestDb};
pub use crate::support::tokens::{NumberedTokens, calls_to, mount_numbered};

/// Every log line the service wrote during this test binary's run, at trace level.
pub fn captured_logs() -> String {
    let buf = log_buffer().lock().unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static BUF: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    BUF.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;
impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub admin_key: String,
    pub clock: Arc<ManualClock>,
    pub broker: Arc<oauth_broker::service::Broker>,
    pub settings: Settings,
    pub db: TestDb,
    pub backend: Backend,
}

/// The time every test starts at.
pub fn start_time() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 9, 0, 0).unwrap()
}

/// Settings for a test server on `db`: a free port, fresh keys, one worker.
pub fn test_settings(db: &TestDb) -> Settings {
    let (_, keys) = Keyring::generate("test1");
    Settings {
        listen: "127.0.0.1:0".into(),
        database_url: SecretString::from(db.url().to_owned()),
        encryption_keys: Some(keys),
        bootstrap_admin_key: Some(SecretString::from(format!(
            "obk_test_admin_{}",
            uuid::Uuid::new_v4().simple()
        ))),
        http_workers: Some(1),
        database_max_connections: 5,
        allow_private_provider_addresses: true,
        // Scripted hangs and retries stay fast.
        provider_timeout_ms: 700,
        provider_retry_base_ms: 10,
        // Tests run the refresher themselves, on the movable clock.
        refresher_enabled: false,
        ..Settings::default()
    }
}

/// A running service on a fresh database of `backend`; `None` when it is unavailable.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    let db = TestDb::create(backend).await?;
    let settings = test_settings(&db);
    Some(spawn_app_with(backend, db, settings).await)
}

pub async fn spawn_app_with(backend: Backend, db: TestDb, settings: Settings) -> TestApp {
    init_logs();
    let clock = Arc::new(ManualClock::new(start_time()));
    let app = Application::build_with_clock(settings.clone(), clock.clone())
        .await
        .expect("the service starts");
    let port = app.port();
    let broker = app.broker();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        admin_key: settings
            .bootstrap_admin_key
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned(),
        clock,
        broker,
        settings,
        db,
        backend,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request with the admin key, acting in `org` (None: no header, i.e. GLOBAL).
    pub fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        org: Option<&str>,
    ) -> reqwest::RequestBuilder {
        self.with_key(&self.admin_key, method, path, org)
    }

    pub fn with_key(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        org: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(key);
        if let Some(org) = org {
            req = req.header("X-Organization-Id", org);
        }
        req
    }

    /// Creates an API key and returns the key itself.
    pub async fn create_key(&self, name: &str, role: &str, org: &str) -> String {
        let res = self
            .admin(reqwest::Method::POST, "/api/oauth/keys", None)
            .json(&json!({"name": name, "role": role, "org_id": org}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "creating key {name}");
        res.json::<Value>().await.unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a connection in `org` from a JSON body, asserting 201.
    pub async fn create_connection(&self, org: Option<&str>, body: &Value) -> Value {
        let res = self
            .admin(reqwest::Method::POST, "/api/oauth/connections", org)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(status, 201, "create connection: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

/// A valid authorization-code connection body: creating it calls no provider, so it
/// suits tests of connection management itself.
pub fn auth_code_connection_body(name: &str) -> Value {
    json!({
        "connection_name": name,
        "oauth_flow_type": "authorization_code",
        "client_id": "client-1",
        "client_secret": "secret-1",
        "authorization_url": "https://login.example.com/authorize",
        "token_url": "https://login.example.com/token",
        "scopes": ["read", "write"],
    })
}

/// A valid client-credentials connection body pointing at `token_url` (creating it
/// fetches a token from there at once).
pub fn client_credentials_body(name: &str, token_url: &str) -> Value {
    json!({
        "connection_name": name,
        "oauth_flow_type": "client_credentials",
        "client_id": "client-1",
        "client_secret": "secret-1",
        "token_url": token_url,
        "scopes": ["read", "write"],
    })
}

/// Runs one scenario against SQLite and PostgreSQL, as `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn scenario($app: $crate::helpers::TestApp) $body

                #[tokio::test]
                async fn sqlite() {
                    if let Some(app) = $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await {
                        scenario(app).await;
                    }
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(app) = $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await {
                        scenario(app).await;
                    }
                }
            }
        )*
    };
}

/// Sends `request` and asserts the contract's refusal: the status, an
/// `application/problem+json` body whose `status` and `code` match, the field named in
/// `errors` when one is given, and a database exactly as it was before. `reason` says
/// what the case is about and appears in every failure message. Returns the problem.
pub async fn assert_refused(
    app: &TestApp,
    reason: &str,
    request: reqwest::RequestBuilder,
    status: u16,
    code: &str,
    field: Option<&str>,
) -> Value {
    let before = app.db.snapshot().await;
    let res = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{reason}: the request failed: {e}"));
    let got = res.status().as_u16();
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<not ascii>").to_owned());
    let text = res.text().await.unwrap();
    assert_eq!(
        got, status,
        "{reason}: expected HTTP {status}, body: {text}"
    );
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{reason}: the content type of an error is application/problem+json"
    );
    let problem: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{reason}: the problem is not JSON ({e}): {text}"));
    assert_eq!(problem["code"], code, "{reason}: {problem}");
    assert_eq!(problem["status"], status, "{reason}: {problem}");
    if let Some(field) = field {
        let messages = problem["errors"][field].as_array();
        assert!(
            messages.is_some_and(|m| !m.is_empty()),
            "{reason}: `errors` must name `{field}`: {problem}"
        );
    }
    assert_eq!(
        app.db.snapshot().await,
        before,
        "{reason}: a refused request must not change the database"
    );
    problem
}

impl TestApp {
    /// A second service on this test's database with the same settings (keys,
    /// bootstrap admin key, database URL), its clock set to this one's time: a
    /// replica. Its `db` is a `TestDb::Shared` view; this app owns the database.
    pub async fn replica(&self) -> TestApp {
        use oauth_broker::clock::Clock;
        let db = self.db.view();
        let replica = spawn_app_with(self.backend, db, self.settings.clone()).await;
        replica.clock.set(self.clock.now());
        replica
    }
}

/// Like `spawn_app`, with the test settings adjusted by `tune` first.
pub async fn spawn_app_tuned(
    backend: Backend,
    tune: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let db = TestDb::create(backend).await?;
    let mut settings = test_settings(&db);
    tune(&mut settings);
    Some(spawn_app_with(backend, db, settings).await)
}

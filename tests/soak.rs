//! The token lifecycle under stress, on SQLite and on PostgreSQL: two brokers on one
//! database, the real oidc-provider issuing 20-second access tokens and rotating
//! refresh tokens (it revokes the whole grant when a used refresh token comes back),
//! callers asking random `min_valid_for`, forced refreshes and manual runs on both
//! replicas, and each replica's refresher every 4 seconds. It fails on a connection that
//! ends `failed`, a refresh token presented twice at the provider, an answer that lasts
//! less than its caller asked for, and any 5xx.
//!
//! `OAUTH_BROKER_SOAK_SECONDS` (default 60) sets how long each database is soaked.

#[path = "e2e/provider.rs"]
mod provider;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use oauth_broker::config::Settings;
use oauth_broker::crypto::Keyring;
use oauth_broker::startup::Application;
use rand::Rng;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use provider::{AuthMethod, ClientConfig, Provider, ProviderConfig, authorize_in_browser};
use support::db::{Backend, TestDb};

const CONNECTIONS: usize = 4;
const CALLERS: usize = 8;
const TOKEN_TTL_SECS: u64 = 20;
/// Callers ask up to this much validity, within one token's life.
const MAX_MIN_VALID_SECS: i64 = 14;
const CLIENT: &str = "soak-web";
const SECRET: &str = "soak-web-secret";
const ADMIN_KEY: &str = "obk_soak_admin_key_0123456789abcdef";

fn soak_duration() -> Duration {
    let seconds = std::env::var("OAUTH_BROKER_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(seconds)
}

/// One broker of the pair.
struct Replica {
    base: String,
}

/// What the soak saw, for the failure message and the closing summary.
#[derive(Default)]
struct Tally {
    reads: AtomicUsize,
    forced: AtomicUsize,
    manual_runs: AtomicUsize,
    problems: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn problem(&self, what: String) {
        let mut problems = self.problems.lock().unwrap();
        if problems.len() < 50 {
            problems.push(what);
        }
    }
}

fn settings(db: &TestDb, port: u16, public: &str, keys: &SecretString) -> Settings {
    Settings {
        listen: format!("127.0.0.1:{port}"),
        public_url: Some(public.to_owned()),
        database_url: SecretString::from(db.url().to_owned()),
        encryption_keys: Some(keys.clone()),
        bootstrap_admin_key: Some(SecretString::from(ADMIN_KEY)),
        allow_private_provider_addresses: true,
        http_workers: Some(2),
        database_max_connections: 8,
        refresher_enabled: true,
        refresh_cron: "*/4 * * * * *".into(),
        refresh_threshold_seconds: 12,
        refresh_startup_delay_seconds: 1,
        ..Settings::default()
    }
}

async fn start_replica(settings: Settings) -> Replica {
    let app = Application::build(settings)
        .await
        .expect("the broker starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    Replica { base }
}

async fn soak(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // Arrange: two brokers on one database; providers send browsers back to the first.
    let (a_port, b_port) = (support::free_port(), support::free_port());
    let public = format!("http://127.0.0.1:{a_port}");
    let names: Vec<String> = (1..=CONNECTIONS).map(|i| format!("soak-{i}")).collect();
    let Some(op) = Provider::start(ProviderConfig {
        clients: vec![ClientConfig::authorization_code(
            CLIENT,
            SECRET,
            AuthMethod::ClientSecretBasic,
            names
                .iter()
                .map(|n| format!("{public}/api/oauth/callback/{n}")),
        )],
        access_token_ttl_secs: TOKEN_TTL_SECS,
        rotate_refresh_tokens: true,
        ..ProviderConfig::default()
    })
    .await
    else {
        return;
    };
    let (_, keys) = Keyring::generate("soak");
    let a = start_replica(settings(&db, a_port, &public, &keys)).await;
    let b = start_replica(settings(&db, b_port, &public, &keys)).await;
    let replicas = Arc::new([a, b]);
    let client = reqwest::Client::new();
    for name in &names {
        connect(&client, &replicas[0], &op, name).await;
    }

    // Act: callers, forced refreshes and manual runs on both replicas, for a while.
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + soak_duration();
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        tasks.push(tokio::spawn(caller(
            client.clone(),
            replicas.clone(),
            names.clone(),
            tally.clone(),
            deadline,
        )));
    }
    tasks.push(tokio::spawn(forcer(
        client.clone(),
        replicas.clone(),
        names.clone(),
        tally.clone(),
        deadline,
    )));
    tasks.push(tokio::spawn(runner(
        client.clone(),
        replicas.clone(),
        tally.clone(),
        deadline,
    )));
    for task in tasks {
        task.await.expect("a soak task panicked");
    }

    // Assert
    let stats = op.stats().await;
    for name in &names {
        for replica in replicas.iter() {
            let conn = admin(
                &client,
                replica,
                Method::GET,
                &format!("/api/oauth/connections/{name}"),
            )
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
            if conn["status"] != "completed" {
                tally.problem(format!(
                    "{name} ended {}: {}",
                    conn["status"], conn["status_message"]
                ));
            }
        }
    }
    let runs = db
        .number("select count(*) from refresh_runs where finished_at is not null")
        .await;
    let refreshes = stats["token_requests"]["refresh_token"]
        .as_i64()
        .unwrap_or(0);
    println!(
        "soak on {backend:?} for {} s: {} credentials reads, {} forced refreshes, {} manual runs started, \
         {runs} refresher runs finished, provider: {} token requests ({refreshes} refreshes), \
         {} refresh tokens reused, {} grants revoked",
        soak_duration().as_secs(),
        tally.reads.load(Ordering::SeqCst),
        tally.forced.load(Ordering::SeqCst),
        tally.manual_runs.load(Ordering::SeqCst),
        stats["token_requests"],
        stats["refresh_token_reuse"],
        stats["grants_revoked"],
    );
    let problems = tally.problems.lock().unwrap().clone();
    assert_eq!(
        problems,
        Vec::<String>::new(),
        "what went wrong on {backend:?}"
    );
    assert_eq!(
        stats["refresh_token_reuse"], 0,
        "a used refresh token was presented: {stats}"
    );
    assert_eq!(
        stats["grants_revoked"], 0,
        "the provider revoked a grant: {stats}"
    );
    assert!(refreshes > 0, "the soak refreshed nothing: {stats}");
    assert!(
        tally.reads.load(Ordering::SeqCst) > 0,
        "no credentials were read"
    );
}

fn admin(
    client: &reqwest::Client,
    replica: &Replica,
    method: Method,
    path: &str,
) -> reqwest::RequestBuilder {
    client
        .request(method, format!("{}{path}", replica.base))
        .bearer_auth(ADMIN_KEY)
}

/// Creates the connection `name` for the provider's web client and authorizes it in the
/// provider's own login and consent pages.
async fn connect(client: &reqwest::Client, replica: &Replica, op: &Provider, name: &str) {
    let res = admin(client, replica, Method::POST, "/api/oauth/connections")
        .json(&json!({
            "connection_name": name,
            "oauth_flow_type": "authorization_code",
            "client_id": CLIENT,
            "client_secret": SECRET,
            "authorization_url": op.authorization_endpoint().await,
            "token_url": op.token_endpoint().await,
            "scopes": ["openid", "offline_access"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        201,
        "creating {name}: {}",
        res.text().await.unwrap()
    );
    let started: Value = admin(
        client,
        replica,
        Method::POST,
        &format!("/api/oauth/connections/{name}/authorize"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let callback = authorize_in_browser(
        started["authorization_url"].as_str().unwrap(),
        "soak-user",
        true,
    )
    .await;
    let page = client.get(&callback).send().await.unwrap();
    assert_eq!(
        page.status(),
        200,
        "the callback of {name}: {}",
        page.text().await.unwrap()
    );
}

async fn pause(min_ms: u64, max_ms: u64) {
    let ms = rand::rng().random_range(min_ms..=max_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn pick<T>(items: &[T]) -> &T {
    &items[rand::rng().random_range(0..items.len())]
}

/// Reads credentials with a random `min_valid_for` and checks what it got.
async fn caller(
    client: reqwest::Client,
    replicas: Arc<[Replica; 2]>,
    names: Vec<String>,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    while Instant::now() < deadline {
        let replica = pick(&replicas[..]);
        let name = pick(&names);
        let min_valid = rand::rng().random_range(0..=MAX_MIN_VALID_SECS);
        let asked_at = Utc::now();
        let res = admin(
            &client,
            replica,
            Method::GET,
            &format!("/api/oauth/credentials/{name}?min_valid_for={min_valid}"),
        )
        .send()
        .await;
        tally.reads.fetch_add(1, Ordering::SeqCst);
        match res {
            Err(e) => tally.problem(format!("reading {name}: {e}")),
            Ok(res) => {
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                if status != 200 {
                    tally.problem(format!(
                        "reading {name} (min_valid_for {min_valid}): {status} {body}"
                    ));
                } else {
                    let expires: DateTime<Utc> =
                        body["expires_at"].as_str().unwrap().parse().unwrap();
                    let left = expires - asked_at;
                    if left < chrono::Duration::seconds(min_valid) {
                        tally.problem(format!(
                            "reading {name}: asked {min_valid} s, got a token with {} ms left",
                            left.num_milliseconds()
                        ));
                    }
                }
            }
        }
        pause(20, 200).await;
    }
}

/// Forces a refresh of a random connection on a random replica every couple of seconds.
async fn forcer(
    client: reqwest::Client,
    replicas: Arc<[Replica; 2]>,
    names: Vec<String>,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    while Instant::now() < deadline {
        pause(1_000, 3_000).await;
        // Sometimes two at once, on both replicas, on one connection.
        let name = pick(&names).clone();
        let both = rand::rng().random_bool(0.3);
        let targets: Vec<&Replica> = if both {
            replicas.iter().collect()
        } else {
            vec![pick(&replicas[..])]
        };
        let answers = futures::future::join_all(targets.into_iter().map(|replica| {
            admin(
                &client,
                replica,
                Method::POST,
                &format!("/api/oauth/connections/{name}/refresh"),
            )
            .send()
        }))
        .await;
        for answer in answers {
            tally.forced.fetch_add(1, Ordering::SeqCst);
            match answer {
                Err(e) => tally.problem(format!("forcing {name}: {e}")),
                Ok(res) if res.status() != 200 => {
                    let status = res.status();
                    tally.problem(format!(
                        "forcing {name}: {status} {}",
                        res.text().await.unwrap_or_default()
                    ));
                }
                Ok(_) => {}
            }
        }
    }
}

/// Starts a refresher run by hand on a random replica every few seconds.
async fn runner(
    client: reqwest::Client,
    replicas: Arc<[Replica; 2]>,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    while Instant::now() < deadline {
        pause(3_000, 6_000).await;
        let replica = pick(&replicas[..]);
        match admin(&client, replica, Method::POST, "/api/oauth/refresh/run")
            .send()
            .await
        {
            Err(e) => tally.problem(format!("starting a run: {e}")),
            // 409: a run is in progress on that replica (a scheduled one); fine.
            Ok(res) if res.status() == 202 || res.status() == 409 => {
                if res.status() == 202 {
                    tally.manual_runs.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(res) => {
                let status = res.status();
                tally.problem(format!(
                    "starting a run: {status} {}",
                    res.text().await.unwrap_or_default()
                ));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_rotating_grants_alive_under_load_on_sqlite() {
    soak(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_rotating_grants_alive_under_load_on_postgres() {
    soak(Backend::Postgres).await;
}

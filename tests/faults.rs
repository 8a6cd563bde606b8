//! Faults an operator meets, against the real binary, a real database and a fake
//! provider (wiremock): the process killed in the middle of a refresher run, the disk
//! under SQLite filling up, and the encryption key rotated while workflows read
//! credentials. Each test asserts what an operator would check afterwards: the database
//! (leases, rows, `PRAGMA integrity_check`), the API's answers and the service's log.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use oauth_broker::crypto::Keyring;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use wiremock::MockServer;

mod support;

use support::db::{Backend, TestDb};
use support::process::{Broker, COMMAND_TIMEOUT, Server};
use support::seed::{self, Due};
use support::tokens::{NumberedTokens, mount_tokens};
use support::{poll, skip};

/// A schedule that does not fire while a test runs (midnight on January 1st): runs start
/// when the test asks for one.
const NEVER: &str = "0 0 0 1 1 *";

/// How these tests start the binary on `db`: `keys` is `OAUTH_BROKER_ENCRYPTION_KEYS`, or
/// `None` for the key file beside SQLite; debug logs, a bootstrap admin key, a provider
/// on loopback allowed, no scheduled refresher run, two HTTP workers; `settings` last.
fn broker_on(db: &TestDb, keys: Option<&str>, settings: &[(&str, &str)]) -> Broker {
    let admin = format!("obk_faults_admin_{}", uuid::Uuid::new_v4().simple());
    let mut broker = Broker::new(db.view())
        .env("RUST_LOG", "info,oauth_broker=debug")
        .bootstrap_admin_key(&admin)
        // The fake provider listens on loopback.
        .env("OAUTH_BROKER_ALLOW_PRIVATE_PROVIDER_ADDRESSES", "true")
        .env("OAUTH_BROKER_REFRESH_CRON", NEVER)
        .env("OAUTH_BROKER_REFRESH_STARTUP_DELAY_SECONDS", "3600")
        .env("OAUTH_BROKER_HTTP_WORKERS", "2");
    if let Some(keys) = keys {
        broker = broker.env("OAUTH_BROKER_ENCRYPTION_KEYS", keys);
    }
    for (name, value) in settings {
        broker = broker.env(name, value);
    }
    broker
}

/// What these tests ask of the service's refresher.
impl Server {
    async fn refresh_status(&self) -> Value {
        let res = self
            .admin(Method::GET, "/api/oauth/refresh/status")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "GET /api/oauth/refresh/status");
        res.json().await.unwrap()
    }
}

/// A timestamp of the API in milliseconds (a run in progress shows finer ones than its
/// record does).
fn millis(at: &Value) -> i64 {
    let text = at.as_str().unwrap_or_else(|| panic!("a timestamp: {at}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("a timestamp ({e}): {text}"))
        .timestamp_millis()
}

/// Random letters and digits: a secret nobody else could print by chance.
fn random_text(len: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

// --- 1. killed in the middle of a refresher run ----------------------------------------

/// Due connections seeded for the killed run: more than one batch of provider calls.
const DUE: i64 = 200;
/// Provider calls in flight per run (`OAUTH_BROKER_REFRESH_CONCURRENCY`).
const CONCURRENCY: usize = 32;
const SEEDED_CLIENT_SECRET: &str = "seeded-client-secret-6c1f0b";
const SEEDED_ACCESS_TOKEN: &str = "seeded-access-token-93ad27";

/// Inserts `count` completed client-credentials connections through the library's store,
/// each token expiring in one hour (inside the 4-hour threshold) and last refreshed an
/// hour ago: what a refresher run renews, seeded without `count` provider calls.
/// Returns the time of the seeding in milliseconds.
async fn seed_due_connections(db: &TestDb, keys: &SecretString, token_url: &str) -> i64 {
    let settings = oauth_broker::config::Settings {
        database_url: SecretString::from(db.url().to_owned()),
        encryption_keys: Some(keys.clone()),
        ..oauth_broker::config::Settings::default()
    };
    let store = oauth_broker::startup::open_store(&settings)
        .await
        .expect("the test opens and migrates the database");
    let now = Utc::now();
    let insert = async |i: i64| {
        let due = Due {
            org: &format!("org-{}", i % 4),
            name: &format!("due-{i:03}"),
            token_url,
            client_secret: SEEDED_CLIENT_SECRET,
            access_token: SEEDED_ACCESS_TOKEN,
        };
        seed::insert_due(&store, &due, now).await;
    };
    futures::stream::iter(0..DUE)
        .map(insert)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    now.timestamp_millis()
}

/// The scenario of `a_process_killed_during_a_refresher_run_strands_nothing`, on `db`.
async fn kill_during_a_run_then_restart(db: TestDb) {
    // Arrange: 200 due connections and a provider that takes 2 s to answer.
    let provider = MockServer::start().await;
    let slow = NumberedTokens::new("slow-token", 3600).delayed(Duration::from_secs(2));
    let token_url = mount_tokens(&provider, "token", slow).await;
    let (_, keys) = Keyring::generate("k1");
    let seeded_at = seed_due_connections(&db, &keys, &token_url).await;
    let concurrency = CONCURRENCY.to_string();
    let broker = broker_on(
        &db,
        Some(keys.expose_secret()),
        &[
            ("OAUTH_BROKER_REFRESH_CONCURRENCY", &concurrency),
            // One provider host here: let it have every slot.
            ("OAUTH_BROKER_REFRESH_CONCURRENCY_PER_HOST", &concurrency),
        ],
    );
    let server = broker.serve(&[]).await;

    // Act: start a run, and SIGKILL the process once every provider call slot is taken
    // (a slow provider: none has answered yet).
    let res = server
        .admin(Method::POST, "/api/oauth/refresh/run")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "a run starts");
    let killed_run = poll("the status shows the run", COMMAND_TIMEOUT, async || {
        let status = server.refresh_status().await;
        match &status["running"] {
            Value::Null => Err(status.to_string()),
            run => Ok(run.clone()),
        }
    })
    .await;
    poll(
        "every provider call slot is in flight",
        COMMAND_TIMEOUT,
        async || {
            let received = provider.received_requests().await.unwrap_or_default().len();
            if received >= CONCURRENCY {
                Ok(())
            } else {
                Err(format!("{received} provider calls"))
            }
        },
    )
    .await;
    server.kill().await;
    let killed_at = Utc::now().timestamp_millis();

    // Assert: the dead process's leases lapse by themselves within LEASE_SECONDS.
    let lease_ms = oauth_broker::service::refresh::LEASE_SECONDS * 1000;
    let leases = db
        .query_texts("select name, lease_until from connections where lease_until is not null")
        .await;
    assert!(
        !leases.is_empty(),
        "the kill was meant to hit while refreshes held leases; none is held"
    );
    for lease in &leases {
        let until: i64 = lease[1].parse().unwrap();
        assert!(
            until - killed_at <= lease_ms,
            "the lease of {} runs {} ms past the kill, longer than LEASE_SECONDS",
            lease[0],
            until - killed_at
        );
    }
    let unhealthy = "select count(*) from connections where status <> 'completed' \
                     or refresh_failures <> 0 or next_refresh_attempt_at is not null";
    assert_eq!(
        db.number(unhealthy).await,
        0,
        "the kill leaves every connection completed, with no failure recorded"
    );
    // A provider may still have answered one just before the kill (not expected with a
    // 2 s answer, but not wrong either): such a connection is not refreshed again.
    let done_before_kill = db
        .number(&format!(
            "select count(*) from connections where last_refresh_at > {seeded_at}"
        ))
        .await;

    // Arrange the restart: a minute later, as far as the leases go (they were just shown
    // to lapse by then; the test moves them rather than wait), and a fast provider.
    db.execute(&format!(
        "update connections set lease_until = {} where lease_until is not null",
        killed_at - 1
    ))
    .await;
    provider.reset().await;
    mount_tokens(&provider, "token", NumberedTokens::new("fresh-token", 3600)).await;
    let restarted_at = Utc::now().timestamp_millis();
    let server = broker.serve(&[]).await;

    // Assert: the killed run is reported as interrupted, not as running.
    let status = poll(
        "the restarted service stops reporting the killed run as running",
        COMMAND_TIMEOUT,
        async || {
            let status = server.refresh_status().await;
            if status["running"].is_null() {
                Ok(status)
            } else {
                Err(status.to_string())
            }
        },
    )
    .await;
    let last = &status["last_run"];
    assert_eq!(
        millis(&last["started_at"]),
        millis(&killed_run["started_at"]),
        "the last run is the killed one: {status}"
    );
    assert!(last["finished_at"].is_string(), "{status}");
    let errors = last["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("interrupted"))),
        "the killed run says it was interrupted: {status}"
    );

    // Act: the next run.
    let res = server
        .admin(Method::POST, "/api/oauth/refresh/run")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "the next run starts");
    let killed_started_at = millis(&killed_run["started_at"]);
    let status = poll("the next run finishes", COMMAND_TIMEOUT, async || {
        let status = server.refresh_status().await;
        let last = &status["last_run"]["started_at"];
        if last.is_string() && millis(last) > killed_started_at && status["running"].is_null() {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    })
    .await;

    // Assert: it refreshed every connection; none is stuck, none failed.
    let run = &status["last_run"];
    assert_eq!(
        (
            &run["considered"],
            &run["refreshed"],
            &run["skipped"],
            &run["failed"]
        ),
        (
            &json!(DUE),
            &json!(DUE - done_before_kill),
            &json!(done_before_kill),
            &json!(0)
        ),
        "the next run: {run}"
    );
    assert_eq!(run["errors"], json!([]), "{run}");
    let renewed = format!(
        "select count(*) from connections where status = 'completed' and refresh_failures = 0 \
         and lease_owner is null and lease_until is null and last_refresh_at >= {restarted_at}"
    );
    assert_eq!(
        db.number(&renewed).await,
        DUE - done_before_kill,
        "every connection the killed run did not finish is renewed, and holds no lease"
    );
    let leased = "select count(*) from connections \
                  where lease_owner is not null or lease_until is not null";
    assert_eq!(db.number(leased).await, 0, "no lease is left behind");
    let calls = provider.received_requests().await.unwrap_or_default().len() as i64;
    assert_eq!(calls, DUE - done_before_kill, "one provider call each");
    server.stop_cleanly().await;
    db.assert_integrity().await;
    broker.assert_output_holds_none_of(&[
        ("the client secret", SEEDED_CLIENT_SECRET),
        ("the seeded access token", SEEDED_ACCESS_TOKEN),
        ("an access token from before the kill", "slow-token-"),
        ("an access token from after the restart", "fresh-token-"),
    ]);
}

mod a_process_killed_during_a_refresher_run_strands_nothing {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        kill_during_a_run_then_restart(TestDb::sqlite_in(dir.path())).await;
    }

    #[tokio::test]
    async fn postgres() {
        if let Some(db) = TestDb::create(Backend::Postgres).await {
            kill_during_a_run_then_restart(db).await;
        }
    }
}

// --- 2. the disk under SQLite fills up ---------------------------------------------------

/// A tmpfs mounted on a temporary folder for one test; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Grows or shrinks the file system in place: files stay, processes keep them open.
    fn resize(&self, bytes: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount to {bytes} bytes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Bytes its files take (tmpfs allocates whole pages).
    fn used(&self) -> u64 {
        std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len().div_ceil(4096) * 4096)
            .sum()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily, in case a process still holds a file open: it detaches now, goes later.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A connection whose creation calls no provider, carrying an 8 KiB secret: a write of
/// several pages.
fn bulky_connection(name: &str, secret: &str) -> Value {
    json!({
        "connection_name": name,
        "oauth_flow_type": "authorization_code",
        "client_id": "client-1",
        "client_secret": secret,
        "authorization_url": "https://login.example.com/authorize",
        "token_url": "https://login.example.com/token",
        "scopes": ["read"],
    })
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_keeps_serving_reads_and_recovers_without_a_restart() {
    // Arrange: the database and its key file on a tmpfs (declared first, so unmounted
    // last: after the server is gone); a connection with a token.
    let tmpfs = match Tmpfs::mount(16 << 20) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => return skip(&format!("cannot mount a tmpfs: {reason}")),
    };
    let db = TestDb::sqlite_in(tmpfs.path());
    let broker = broker_on(&db, None, &[("OAUTH_BROKER_REFRESHER_ENABLED", "false")]);
    let mut server = broker.serve(&[]).await;
    assert!(
        tmpfs.path().join("broker.key").exists(),
        "the key file is on the tmpfs too"
    );
    let provider = MockServer::start().await;
    let token_url = mount_tokens(&provider, "token", NumberedTokens::new("cc-token", 86_400)).await;
    let cc_secret = random_text(32);
    let res = server
        .admin(Method::POST, "/api/oauth/connections")
        .json(&json!({
            "connection_name": "graph",
            "oauth_flow_type": "client_credentials",
            "client_id": "client-1",
            "client_secret": cc_secret,
            "token_url": token_url,
            "scopes": ["read"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        201,
        "a client-credentials connection is created"
    );
    // Leave room for a few writes only.
    tmpfs.resize(tmpfs.used() + (256 << 10));

    // Act: create connections until the disk is full.
    let mut created = Vec::new();
    let (failed_name, failed_body, res) = loop {
        assert!(
            created.len() < 1000,
            "1000 writes of 8 KiB went into 256 KiB of room: the disk never filled"
        );
        let name = format!("fill-{:04}", created.len());
        let body = bulky_connection(&name, &random_text(8192));
        let res = server
            .admin(Method::POST, "/api/oauth/connections")
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating {name} got no answer (a hang?): {e}"));
        if res.status() != 201 {
            break (name, body, res);
        }
        created.push(name);
    };

    // Assert: a clear refusal, and the service is still there.
    let status = res.status();
    let retry_after = res.headers().get("retry-after").cloned();
    let content_type = res.headers().get("content-type").cloned();
    let problem: Value = res.json().await.unwrap();
    assert!(
        !created.is_empty(),
        "some writes fit before the disk filled"
    );
    assert_eq!(status, 503, "a full disk answers 503: {problem}");
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{problem}"
    );
    assert_eq!(problem["code"], "unavailable", "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("storage is full"),
        "the detail says the database's storage is full: {problem}"
    );
    assert!(retry_after.is_some(), "a Retry-After header: {problem}");
    assert!(
        server.is_running(),
        "the service survives a full disk; stderr:\n{}",
        server.stderr()
    );
    assert!(
        server.stderr().contains("storage is full"),
        "the log says why writes fail"
    );

    // Reads keep working, and nothing of the failed write is there.
    let res = server
        .admin(Method::GET, "/api/oauth/connections")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "listing connections while the disk is full"
    );
    let list: Value = res.json().await.unwrap();
    let names: Vec<&str> = list["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("a list of connections: {list}"))
        .iter()
        .filter_map(|c| c["connection_name"].as_str())
        .collect();
    assert!(
        !names.contains(&failed_name.as_str()),
        "the refused connection {failed_name} is not half-written: {names:?}"
    );
    assert_eq!(
        names.len(),
        created.len() + 1,
        "every created connection is listed: {names:?}"
    );
    let res = server
        .admin(
            Method::GET,
            &format!("/api/oauth/connections/{failed_name}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "the refused connection does not exist");
    // A workflow's read also records the read (a write, which fails quietly).
    let res = server
        .admin(Method::GET, "/api/oauth/credentials/graph")
        .header("X-Workflow-Id", "nightly")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "credentials are served while the disk is full"
    );
    let creds: Value = res.json().await.unwrap();
    assert!(
        creds["access_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("cc-token-")),
        "the stored token is served"
    );

    // Act: free space.
    tmpfs.resize(64 << 20);

    // Assert: writes succeed again, without a restart: the refused one, and then enough
    // for every pooled database connection to take its turn (the pool hands them out in
    // turn; one the failure left broken would show).
    let res = server
        .admin(Method::POST, "/api/oauth/connections")
        .json(&failed_body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    assert_eq!(
        status,
        201,
        "the refused write succeeds once there is room: {}\nlogged errors:\n{}",
        res.text().await.unwrap(),
        server.logged_errors()
    );
    for i in 0..12 {
        let name = format!("after-{i:02}");
        let res = server
            .admin(Method::POST, "/api/oauth/connections")
            .json(&bulky_connection(&name, &random_text(64)))
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert_eq!(
            status,
            201,
            "write {i} after the disk has room again succeeds: {}\nlogged errors:\n{}",
            res.text().await.unwrap(),
            server.logged_errors()
        );
    }
    let res = server
        .admin(
            Method::GET,
            &format!("/api/oauth/connections/{failed_name}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "and is there");
    server.stop_cleanly().await;
    db.assert_integrity().await;
    broker.assert_output_holds_none_of(&[
        ("the client secret", &cc_secret),
        (
            "the refused client secret",
            failed_body["client_secret"].as_str().unwrap(),
        ),
        ("an access token", "cc-token-"),
    ]);
}

// --- 3. the key rotated while workflows read credentials --------------------------------

/// Connections whose secrets were sealed under the old key.
const ROTATED: &[&str] = &["cc-a", "cc-b", "cc-c", "cc-d", "cc-e", "imported"];

#[tokio::test]
async fn keys_rotate_while_workflows_read_credentials_and_then_the_new_key_alone_serves() {
    // Arrange: data sealed under k1 (client secrets, access tokens, an imported refresh
    // token), each connection with a token endpoint of its own.
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite_in(dir.path());
    let (_, k1) = Keyring::generate("k1");
    let (_, k2) = Keyring::generate("k2");
    let (k1, k2) = (k1.expose_secret().to_owned(), k2.expose_secret().to_owned());
    let both = format!("{k2},{k1}");
    let broker = broker_on(&db, None, &[("OAUTH_BROKER_REFRESHER_ENABLED", "false")]);
    let provider = MockServer::start().await;
    let client_secret = random_text(32);
    let refresh_token = random_text(32);
    let server = broker.serve(&[("OAUTH_BROKER_ENCRYPTION_KEYS", &k1)]).await;
    for name in ROTATED {
        let token_url = mount_tokens(
            &provider,
            name,
            NumberedTokens::new(&token_prefix(name), 3600),
        )
        .await;
        let mut body = json!({
            "connection_name": name,
            "oauth_flow_type": "client_credentials",
            "client_id": "client-1",
            "client_secret": client_secret,
            "token_url": token_url,
            "scopes": ["read"],
        });
        if *name == "imported" {
            body["oauth_flow_type"] = json!("refresh_token");
            body["refresh_token"] = json!(refresh_token);
        }
        let res = server
            .admin(Method::POST, "/api/oauth/connections")
            .json(&body)
            .send()
            .await
            .unwrap();
        let text = res.text().await.unwrap();
        let created: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(created["status"], "completed", "{name} has a token: {text}");
    }
    server.stop_cleanly().await;
    let sealed_under_k1 = db
        .number(
            "select count(*) from connections where client_secret_sealed like 'v1:k1:%' \
             and access_token_sealed like 'v1:k1:%'",
        )
        .await;
    assert_eq!(
        sealed_under_k1,
        ROTATED.len() as i64,
        "everything starts under k1"
    );

    // k2 first, k1 after it. Readers in a loop: two read every connection; one per
    // connection asks for a token valid longer than any issued, so each of its reads
    // refreshes, and with a provider that takes a second to answer, a refresh of every
    // row is in flight (row read, tokens not yet saved) while rotate-keys re-seals it.
    provider.reset().await;
    for name in ROTATED {
        let tokens = NumberedTokens::new(&token_prefix(name), 3600).delayed(Duration::from_secs(1));
        mount_tokens(&provider, name, tokens).await;
    }
    let server = broker
        .serve(&[("OAUTH_BROKER_ENCRYPTION_KEYS", &both)])
        .await;
    let traffic = Traffic::default();
    let mut readers = vec![
        traffic.read(&server, ROTATED, 0),
        traffic.read(&server, ROTATED, 0),
    ];
    for name in ROTATED {
        readers.push(traffic.read(&server, std::slice::from_ref(name), 86_400));
    }
    poll(
        "a refresh of every connection is under way",
        COMMAND_TIMEOUT,
        async || {
            let calls = provider.received_requests().await.unwrap_or_default().len();
            if calls >= ROTATED.len() {
                Ok(())
            } else {
                Err(format!("{calls} provider calls"))
            }
        },
    )
    .await;
    let before = traffic.after_reads(20).await;

    // Act
    let rotated = broker
        .run(&["rotate-keys"], &[("OAUTH_BROKER_ENCRYPTION_KEYS", &both)])
        .await;
    let during = traffic.reads() - before;
    traffic.after_reads(before + during + 20).await;
    traffic.stop.store(true, Ordering::SeqCst);
    let mut wrong = Vec::new();
    for reader in readers {
        wrong.extend(reader.await.unwrap());
    }

    // Assert: every read was right throughout, and the rotation reported success.
    assert!(
        rotated.status.success(),
        "rotate-keys exits 0: {}",
        rotated.stderr
    );
    assert!(
        rotated.stderr.contains("re-encrypted"),
        "rotate-keys reports what it re-encrypted: {}",
        rotated.stderr
    );
    assert!(during > 0, "reads went on while rotate-keys ran");
    assert_eq!(
        wrong,
        Vec::<String>::new(),
        "every credentials read answers 200 with its own connection's token \
         ({} reads); logged errors:\n{}",
        traffic.reads(),
        server.logged_errors()
    );
    server.stop_cleanly().await;
    let left_under_k1 = db
        .number(
            "select count(*) from connections where client_secret_sealed like 'v1:k1:%' \
             or access_token_sealed like 'v1:k1:%' or refresh_token_sealed like 'v1:k1:%'",
        )
        .await;
    assert_eq!(left_under_k1, 0, "no secret is left sealed under k1");

    // And k2 alone serves every connection: its access token and, by a forced refresh,
    // its client secret and refresh token all open.
    provider.reset().await;
    for name in ROTATED {
        mount_tokens(
            &provider,
            name,
            NumberedTokens::new(&token_prefix(name), 3600),
        )
        .await;
    }
    let server = broker.serve(&[("OAUTH_BROKER_ENCRYPTION_KEYS", &k2)]).await;
    for name in ROTATED {
        let res = server
            .admin(Method::GET, &format!("/api/oauth/credentials/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "credentials of {name} with k2 alone");
        let body: Value = res.json().await.unwrap();
        assert!(
            body["access_token"]
                .as_str()
                .is_some_and(|t| t.starts_with(&token_prefix(name))),
            "{name} serves its own token with k2 alone"
        );
        let res = server
            .admin(
                Method::POST,
                &format!("/api/oauth/connections/{name}/refresh"),
            )
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert_eq!(
            status,
            200,
            "{name} refreshes with k2 alone: {}",
            res.text().await.unwrap()
        );
    }
    server.stop_cleanly().await;
    db.assert_integrity().await;
    broker.assert_output_holds_none_of(&[
        ("the client secret", &client_secret),
        ("the imported refresh token", &refresh_token),
        ("the old key", k1.split_once(':').unwrap().1),
        ("the new key", k2.split_once(':').unwrap().1),
        ("an access token", "-token-"),
    ]);
}

/// Workflows reading credentials in a loop until stopped.
#[derive(Default)]
struct Traffic {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
}

impl Traffic {
    /// A task reading `names` in turn with `min_valid_for`; it returns what was wrong:
    /// an answer other than 200, or another connection's token (never the token itself).
    fn read(
        &self,
        server: &Server,
        names: &'static [&'static str],
        min_valid_for: u32,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        let (client, base, admin) = (
            server.client.clone(),
            server.base.clone(),
            server.admin_key().to_owned(),
        );
        let (stop, reads) = (self.stop.clone(), self.reads.clone());
        tokio::spawn(async move {
            let mut wrong = Vec::new();
            for name in names.iter().cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let res = client
                    .get(format!("{base}/api/oauth/credentials/{name}"))
                    .query(&[("min_valid_for", min_valid_for)])
                    .bearer_auth(&admin)
                    .header("X-Workflow-Id", "nightly")
                    .send()
                    .await;
                reads.fetch_add(1, Ordering::SeqCst);
                match res {
                    Ok(res) if res.status() == 200 => {
                        let body: Value = res.json().await.unwrap_or_default();
                        let token = body["access_token"].as_str().unwrap_or_default();
                        if !token.starts_with(&token_prefix(name)) {
                            wrong.push(format!("{name}: not its own token"));
                        }
                    }
                    Ok(res) => {
                        let status = res.status();
                        let text = res.text().await.unwrap_or_default();
                        wrong.push(format!(
                            "{name} (min_valid_for={min_valid_for}): HTTP {status}: {text}"
                        ));
                    }
                    Err(e) => wrong.push(format!("{name}: no answer: {e}")),
                }
            }
            wrong
        })
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Waits until `n` reads were answered in all; returns how many there were.
    async fn after_reads(&self, n: usize) -> usize {
        poll("workflows read credentials", COMMAND_TIMEOUT, async || {
            let seen = self.reads();
            if seen >= n {
                Ok(seen)
            } else {
                Err(format!("{seen} reads"))
            }
        })
        .await
    }
}

/// What every access token of connection `name` starts with.
fn token_prefix(name: &str) -> String {
    format!("{name}-token")
}

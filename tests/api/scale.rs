//! Scale (issue 20): a refresher run bounds its provider calls overall and per provider
//! server, so one slow provider cannot take every slot; history past its retention is
//! purged.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::on_both_backends;
use crate::support::seed::{self, Due};

/// Requests being answered: now, the most at any moment, and in all.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
    total: AtomicUsize,
}

impl InFlight {
    /// Counts a request in; returns its number.
    fn enter(&self) -> usize {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst)
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

/// A token endpoint that answers every request after `delay`, counting the requests
/// it answers (`own`) and those of every provider sharing `everywhere`.
struct CountingProvider {
    url: String,
    own: Arc<InFlight>,
}

impl CountingProvider {
    async fn start(delay: Duration, everywhere: &Arc<InFlight>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let own = Arc::new(InFlight::default());
        let (own_c, everywhere) = (own.clone(), everywhere.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (own, everywhere) = (own_c.clone(), everywhere.clone());
                tokio::spawn(async move {
                    // Read the request head and its form body.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf);
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let n = own.enter();
                    everywhere.enter();
                    tokio::time::sleep(delay).await;
                    let body = format!(
                        r#"{{"access_token":"counted-{n}","token_type":"Bearer","expires_in":36000}}"#
                    );
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    own.leave();
                    everywhere.leave();
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { url, own }
    }
}

async fn insert_due(app: &TestApp, name: &str, token_url: &str) {
    let due = Due {
        org: "acme",
        name,
        token_url,
        client_secret: "secret-1",
        access_token: "at-0",
    };
    seed::insert_due(&app.broker.store, &due, app.broker.clock.now()).await;
}

/// Starts a manual run and waits for it to finish; returns the run.
async fn run_once(app: &TestApp) -> Value {
    let before = app
        .admin(Method::GET, "/api/oauth/refresh/status", None)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let res = app
        .admin(Method::POST, "/api/oauth/refresh/run", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "a run starts");
    for _ in 0..600 {
        let status: Value = app
            .admin(Method::GET, "/api/oauth/refresh/status", None)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["running"].is_null()
            && status["last_run"]["started_at"] != before["last_run"]["started_at"]
        {
            return status["last_run"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the run did not finish in 30 s");
}

/// The scenario: two providers, 8 due connections each, each answer taking 300 ms.
async fn limits_hold(backend: Backend, overall: usize, per_host: usize) {
    let Some(app) = spawn_app_tuned(backend, |s| {
        s.refresh_concurrency = overall;
        s.refresh_concurrency_per_host = per_host;
    })
    .await
    else {
        return;
    };
    let everywhere = Arc::new(InFlight::default());
    let slow_a = CountingProvider::start(Duration::from_millis(300), &everywhere).await;
    let slow_b = CountingProvider::start(Duration::from_millis(300), &everywhere).await;
    for i in 0..8 {
        insert_due(&app, &format!("a-{i}"), &slow_a.url).await;
        insert_due(&app, &format!("b-{i}"), &slow_b.url).await;
    }

    let run = run_once(&app).await;

    assert_eq!(
        run["refreshed"], 16,
        "every due connection is refreshed: {run}"
    );
    assert_eq!(slow_a.own.total() + slow_b.own.total(), 16, "one call each");
    let (a, b) = (slow_a.own.most(), slow_b.own.most());
    let everywhere = everywhere.most();
    let expected_per_host = per_host.min(overall);
    assert!(
        a <= expected_per_host && b <= expected_per_host,
        "at most {expected_per_host} calls at once to one server: a {a}, b {b}"
    );
    assert!(
        everywhere <= overall,
        "at most {overall} calls at once in all: {everywhere}"
    );
    // The limits are used, not just respected: with 8 waiting per server and 300 ms
    // answers, each server sees its full share at once, and both are served together.
    if overall >= 2 * per_host {
        assert_eq!(
            a.max(b),
            per_host,
            "a server's slots are all used: a {a}, b {b}"
        );
        assert_eq!(
            everywhere,
            2 * per_host,
            "a busy server leaves the other its slots: {everywhere}"
        );
    } else {
        assert_eq!(
            everywhere, overall,
            "the run's slots are all used: {everywhere}"
        );
    }
}

#[tokio::test]
async fn a_run_calls_each_provider_server_at_most_per_host_times_at_once_sqlite() {
    limits_hold(Backend::Sqlite, 64, 2).await;
}

#[tokio::test]
async fn a_run_calls_each_provider_server_at_most_per_host_times_at_once_postgres() {
    limits_hold(Backend::Postgres, 64, 2).await;
}

#[tokio::test]
async fn a_run_calls_providers_at_most_concurrency_times_at_once_sqlite() {
    limits_hold(Backend::Sqlite, 3, 8).await;
}

#[tokio::test]
async fn a_run_calls_providers_at_most_concurrency_times_at_once_postgres() {
    limits_hold(Backend::Postgres, 3, 8).await;
}

on_both_backends! {
    async fn history_older_than_its_retention_is_purged_by_a_run_and_newer_history_kept(app) {
        // Arrange: a connection created (event) and a run, 31 days ago...
        let provider = wiremock::MockServer::start().await;
        let url = mount_numbered(&provider, "t", 3600).await;
        app.create_connection(Some("acme"), &client_credentials_body("old", &url)).await;
        let first_run = run_once(&app).await;
        app.clock.advance(chrono::Duration::days(31));
        // ... and one created now.
        app.create_connection(Some("acme"), &client_credentials_body("new", &url)).await;

        // Act: a run (it purges after refreshing).
        let run = run_once(&app).await;

        // Assert: the old connection's 31-day-old events are gone, what this run wrote
        // about it is kept; the new connection keeps its history; the old run is gone.
        let events = async |name: &str| -> Vec<String> {
            let body: Value = app.admin(Method::GET, &format!("/api/oauth/connections/{name}/events?limit=1000"), Some("acme")).send().await.unwrap().json().await.unwrap();
            body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
        };
        let old = events("old").await;
        assert!(!old.contains(&"created".to_owned()), "the 31-day-old creation event is purged: {old:?}");
        assert!(!old.is_empty(), "this run's refresh of it is kept: {old:?}");
        assert!(events("new").await.contains(&"created".to_owned()), "a new connection keeps its history");
        let cutoff = app.broker.clock.now() - chrono::Duration::days(30);
        let runs = app.db.number(&format!(
            "select count(*) from refresh_runs where started_at < {}", cutoff.timestamp_millis()
        )).await;
        assert_eq!(runs, 0, "the run of 31 days ago ({}) is purged", first_run["started_at"]);
        assert_eq!(app.db.number("select count(*) from refresh_runs").await, 1, "this run is kept: {run}");
    }
}

on_both_backends! {
    async fn a_bulk_import_is_all_or_nothing_and_its_tokens_are_served(app) {
        use crate::support::seed::imported_due;
        let now = app.broker.clock.now();
        let due = |name: &'static str, token: &'static str| Due {
            org: "acme", name, token_url: "https://provider.example/token",
            client_secret: "secret-1", access_token: token,
        };
        let batch = vec![imported_due(&due("one", "imported-1"), now), imported_due(&due("two", "imported-2"), now)];
        assert_eq!(app.broker.store.import_connections(batch).await.unwrap(), 2);

        // The imported tokens are served (sealed with each row's own associated data).
        for (name, token) in [("one", "imported-1"), ("two", "imported-2")] {
            let res = app.admin(Method::GET, &format!("/api/oauth/credentials/{name}?min_valid_for=60"), Some("acme")).send().await.unwrap();
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["access_token"], token, "{body}");
        }

        // A batch with a taken name writes nothing.
        let before = app.db.snapshot().await;
        let batch = vec![imported_due(&due("three", "imported-3"), now), imported_due(&due("one", "again"), now)];
        assert!(app.broker.store.import_connections(batch).await.is_err(), "a taken name fails the batch");
        assert_eq!(app.db.snapshot().await, before, "a failed batch changes nothing");
    }
}

on_both_backends! {
    async fn two_replicas_running_at_once_refresh_each_due_connection_once(app) {
        // Arrange: 60 due connections, a provider answering after 200 ms, a second replica.
        let provider = CountingProvider::start(Duration::from_millis(200), &Arc::default()).await;
        for i in 0..60 {
            insert_due(&app, &format!("due-{i:02}"), &provider.url).await;
        }
        let replica = app.replica().await;

        // Act: both start a manual run at the same instant.
        let (one, two) = tokio::join!(run_once(&app), run_once(&replica));

        // Assert: one provider call per connection in all; the runs' counts add up.
        assert_eq!(provider.own.total(), 60, "each due connection refreshed once: {one} {two}");
        // (The status shows the latest run of either replica: count them in the table.)
        assert_eq!(app.db.number("select count(*) from refresh_runs").await, 2, "two runs");
        let refreshed = app.db.number("select cast(sum(refreshed) as bigint) from refresh_runs").await;
        assert_eq!(refreshed, 60, "the two runs' refreshes add up to the due connections: {one} {two}");
        assert_eq!(app.db.number("select count(*) from connections where lease_owner is not null").await, 0, "no claim is left");
    }
}

/// The scenario of `a_connection_refreshed_while_it_waits_in_a_runs_batch_is_not_refreshed_again`.
async fn refreshed_while_claimed(backend: Backend) {
    // Arrange: four due connections on one slow server, one call at a time: the run
    // claims all four and works through them 400 ms apart.
    let Some(run_app) = spawn_app_tuned(backend, |s| s.refresh_concurrency_per_host = 1).await
    else {
        return;
    };
    let provider = CountingProvider::start(Duration::from_millis(400), &Arc::default()).await;
    for i in 0..4 {
        insert_due(&run_app, &format!("due-{i}"), &provider.url).await;
    }
    let last = run_app
        .db
        .query_texts("select name from connections order by id desc limit 1")
        .await[0][0]
        .clone();

    // Act: a run starts; while the last of its batch waits its turn, a forced
    // refresh of it on the same replica.
    let res = run_app
        .admin(Method::POST, "/api/oauth/refresh/run", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let forced = run_app
        .admin(
            Method::POST,
            &format!("/api/oauth/connections/{last}/refresh"),
            Some("acme"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        forced.status(),
        200,
        "a claim does not hold a caller back: {}",
        forced.text().await.unwrap()
    );
    let run = loop {
        let status: Value = run_app
            .admin(Method::GET, "/api/oauth/refresh/status", None)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["running"].is_null() && !status["last_run"].is_null() {
            break status["last_run"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Assert: four calls in all: the run's turn re-read the row, found it refreshed
    // in this cycle, and did not call again (from its claim-time copy it would have:
    // with a rotating provider, a used refresh token sent twice).
    assert_eq!(provider.own.total(), 4, "one call per connection: {run}");
    assert_eq!(
        (&run["refreshed"], &run["skipped"]),
        (&json!(3), &json!(1)),
        "{run}"
    );
    assert_eq!(
        run_app
            .db
            .number("select count(*) from connections where lease_owner is not null")
            .await,
        0,
        "no claim is left"
    );
}

#[tokio::test]
async fn a_connection_refreshed_while_it_waits_in_a_runs_batch_is_not_refreshed_again_sqlite() {
    refreshed_while_claimed(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_connection_refreshed_while_it_waits_in_a_runs_batch_is_not_refreshed_again_postgres() {
    refreshed_while_claimed(Backend::Postgres).await;
}

//! The security review's attacks on the real binary (issue 13): invented HTTP methods
//! that grew memory and `/metrics` without bound, proxy variables that switched off the
//! private-address guard, a revoked bootstrap key that broke the next start, and the
//! SQLite files' permissions.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::db::TestDb;
use support::process::Broker;

fn sqlite_broker(dir: &tempfile::TempDir) -> Broker {
    Broker::new(TestDb::sqlite_in(dir.path()))
        .bootstrap_admin_key(&format!(
            "obk_abuse_admin_{}",
            uuid::Uuid::new_v4().simple()
        ))
        .env("OAUTH_BROKER_REFRESHER_ENABLED", "false")
}

/// Sends one request whose method is `method` (any token) and reads the answer.
fn raw_request(base: &str, method: &str, path: &str) {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
}

#[tokio::test]
async fn invented_methods_neither_grow_memory_nor_the_metrics_page() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sqlite_broker(&dir);
    let server = broker.serve(&[]).await;
    // Warm up: the first requests allocate what any later one reuses.
    for i in 0..50 {
        raw_request(&server.base, &format!("WARM{i}"), "/healthz");
    }
    let before = server.rss_kib();

    // 1,000 requests, each with its own 60 KB method (the review's attack).
    let base = server.base.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..1000 {
            let method = format!("M{i:04}{}", "X".repeat(60 * 1024));
            raw_request(&base, &method, "/healthz");
        }
    })
    .await
    .unwrap();

    let after = server.rss_kib();
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.len() < 64 * 1024,
        "/metrics grew to {} bytes",
        metrics.len()
    );
    assert!(
        !metrics.contains("XXXX"),
        "an invented method became a label"
    );
    // Before the fix: +120 MB. Allocator noise is a few MB.
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 30,
        "memory grew by {grown_mib} MiB ({before} KiB -> {after} KiB)"
    );
    server.stop_cleanly().await;
}

#[tokio::test]
async fn proxy_variables_do_not_lead_provider_calls_around_the_private_address_rule() {
    // Arrange: a "proxy" that records whether anything reached it, and a broker whose
    // environment names it for every scheme, with the private-address rule on.
    let proxy = support::hostile::Hostile::hanging().await;
    let dir = tempfile::tempdir().unwrap();
    let broker = sqlite_broker(&dir)
        .env("HTTP_PROXY", &proxy.url)
        .env("HTTPS_PROXY", &proxy.url)
        .env("ALL_PROXY", &proxy.url)
        .env("http_proxy", &proxy.url)
        .env("https_proxy", &proxy.url)
        .env("OAUTH_BROKER_PROVIDER_TIMEOUT_MS", "2000");
    let server = broker.serve(&[]).await;

    // Act: a connection whose token endpoint is a name that resolves to loopback.
    let res = server
        .admin(Method::POST, "/api/oauth/connections")
        .json(&json!({
            "connection_name": "inside",
            "oauth_flow_type": "client_credentials",
            "client_id": "c",
            "client_secret": "s",
            "token_url": "http://localhost:9/token",
        }))
        .send()
        .await
        .unwrap();

    // Assert: refused by the guard, and the proxy never saw a connection.
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["status_message"]
            .as_str()
            .unwrap_or_default()
            .contains("public address"),
        "{body}"
    );
    assert_eq!(
        proxy.connections(),
        0,
        "the provider call went through the proxy"
    );
    server.stop_cleanly().await;
}

#[tokio::test]
async fn a_revoked_bootstrap_key_stops_the_start_saying_what_happened_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sqlite_broker(&dir);
    let server = broker.serve(&[]).await;
    let keys: Value = server
        .admin(Method::GET, "/api/oauth/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = keys["keys"][0]["id"].as_str().unwrap().to_owned();
    let res = server
        .admin(Method::DELETE, &format!("/api/oauth/keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "the bootstrap key revokes itself");
    server.stop_cleanly().await;

    let finished = broker.run(&["serve"], &[]).await;

    assert!(!finished.status.success(), "the start is refused");
    let said = finished.stderr;
    assert!(said.contains("was revoked"), "{said}");
    assert!(said.contains("OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY"), "{said}");
    assert!(
        !said.contains("already exists"),
        "the misleading message is gone: {said}"
    );
    assert!(
        !said.contains("backtrace") && !said.contains("panicked"),
        "{said}"
    );
}

#[tokio::test]
async fn the_sqlite_files_are_readable_by_their_owner_alone() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sqlite_broker(&dir);
    let server = broker.serve(&[]).await;
    // A write, so the write-ahead log exists.
    let res = server
        .admin(Method::POST, "/api/oauth/keys")
        .json(&json!({"name": "wal", "role": "workflow", "org_id": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let db = broker.db().url().trim_start_matches("sqlite://").to_owned();
    for file in [db.clone(), format!("{db}-wal"), format!("{db}-shm")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} has mode {mode:o}");
    }
    server.stop_cleanly().await;
}

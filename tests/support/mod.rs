//! What the integration-test binaries share: skipping a test whose dependency is absent,
//! free ports and waiting, and by concern in the files below: the test database
//! (`db`), the real `oauth-broker` process (`process`), a fake token endpoint
//! (`tokens`) and connections seeded through the library's store (`seed`).
//! Each binary uses part of it.
#![allow(dead_code)]

pub mod db;
pub mod hostile;
pub mod process;
pub mod seed;
pub mod tokens;

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Set by `.ci/run`: every test must run, none may skip.
pub const REQUIRE_ALL: &str = "OAUTH_BROKER_REQUIRE_ALL_TESTS";

/// Prints `skipped: <reason>` and returns, or fails when every test must run.
pub fn skip(reason: &str) {
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("{REQUIRE_ALL}=1 but a test would be skipped: {reason}");
    }
    println!("skipped: {reason}");
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The child's exit status, or `None` if it still runs after `timeout`.
pub async fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM, then up to 10 s for the process to exit (a graceful stop does by then).
pub async fn terminate(child: &mut Child) -> Option<ExitStatus> {
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success(), "kill -TERM {pid}");
    wait_for_exit(child, Duration::from_secs(10)).await
}

/// Asks `probe` until it answers `Ok`, failing with `what` and its last answer after
/// `timeout`.
pub async fn poll<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not so after {timeout:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A file's text, empty if it cannot be read (yet).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

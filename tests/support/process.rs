//! Driving the real `oauth-broker` binary: commands that finish on their own, `serve`
//! started with the test's settings and awaited until it is ready, stopped gracefully
//! (SIGTERM) or killed (SIGKILL), what its processes printed, and the first admin key.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::db::TestDb;
use super::{free_port, read, terminate, wait_for_exit};

pub const BIN: &str = env!("CARGO_BIN_EXE_oauth-broker");
/// How long a command that should finish at once may take (a debug build on a busy box).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How a test starts the binary: on its database, with the settings every start shares,
/// and a folder for what the processes print (files: no pipe can fill up).
pub struct Broker {
    db: TestDb,
    env: Vec<(String, String)>,
    admin: Option<String>,
    /// The route whose 200 says `serve` is up.
    ready: &'static str,
    /// Where the processes run; the outputs folder unless set.
    working_dir: Option<PathBuf>,
    outputs: tempfile::TempDir,
    runs: AtomicU32,
}

/// What a finished command printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Broker {
    /// The binary on `db` with no other setting, its default logging (`RUST_LOG` is not
    /// passed on), ready once `/readyz` answers 200.
    pub fn new(db: TestDb) -> Self {
        Self {
            db,
            env: Vec::new(),
            admin: None,
            ready: "/readyz",
            working_dir: None,
            outputs: tempfile::tempdir().unwrap(),
            runs: AtomicU32::new(0),
        }
    }

    /// A setting (an environment variable) for every process; a later one wins.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `key` as `OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY`, and as the key of `Server::admin`.
    pub fn bootstrap_admin_key(mut self, key: &str) -> Self {
        self.admin = Some(key.to_owned());
        self.env("OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY", key)
    }

    /// `serve` counts as started once `path` answers 200.
    pub fn ready_at(mut self, path: &'static str) -> Self {
        self.ready = path;
        self
    }

    /// The processes run in `dir`.
    pub fn working_dir(mut self, dir: &Path) -> Self {
        self.working_dir = Some(dir.to_owned());
        self
    }

    /// The database the processes use.
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// The binary with this broker's settings (`env` last, so it wins) and nothing
    /// inherited from the test's own `OAUTH_BROKER_*` environment or `RUST_LOG`.
    /// Returns the files its stdout and stderr go to.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> (Command, PathBuf, PathBuf) {
        let mut cmd = Command::new(BIN);
        for (name, _) in std::env::vars() {
            if name.starts_with("OAUTH_BROKER_") {
                cmd.env_remove(name);
            }
        }
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let stdout = self.outputs.path().join(format!("{run}.stdout"));
        let stderr = self.outputs.path().join(format!("{run}.stderr"));
        let working_dir = self.working_dir.as_deref().unwrap_or(self.outputs.path());
        cmd.env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("OAUTH_BROKER_DATABASE_URL", self.db.url())
            .env("OAUTH_BROKER_LISTEN", format!("127.0.0.1:{}", free_port()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .args(args)
            .current_dir(working_dir)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        (cmd, stdout, stderr)
    }

    /// Runs a command that must finish on its own.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Finished {
        let (mut cmd, stdout, stderr) = self.command(args, env);
        let mut child = cmd.spawn().unwrap();
        let status = wait_for_exit(&mut child, COMMAND_TIMEOUT).await;
        let stderr = read(&stderr);
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`oauth-broker {}` did not finish; stderr:\n{stderr}",
                args.join(" ")
            );
        };
        Finished {
            status,
            stdout: read(&stdout),
            stderr,
        }
    }

    /// Starts `serve` and waits until its ready route answers 200.
    pub async fn serve(&self, env: &[(&str, &str)]) -> Server {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut env = env.to_vec();
        env.push(("OAUTH_BROKER_LISTEN", &listen));
        let (mut cmd, _, stderr) = self.command(&["serve"], &env);
        let mut server = Server {
            child: cmd.spawn().unwrap(),
            base: format!("http://{listen}"),
            stderr,
            admin: self.admin.clone(),
            // A bound on every request: a hang fails the test instead of stalling it.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        let ready = self.ready;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "serve exited with {status} before {ready} answered; stderr:\n{}",
                    server.stderr()
                );
            }
            let answer = server.client.get(server.url(ready)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not answer {ready}; stderr:\n{}",
                server.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the service on a fresh database, gets the first admin key it prints, and
    /// stops it.
    pub async fn first_start(&self) -> String {
        let server = self.serve(&[]).await;
        let (status, stderr) = server.stop().await;
        assert!(status.success(), "the first start stops cleanly: {stderr}");
        let keys = printed_keys(&stderr);
        assert_eq!(keys.len(), 1, "one first admin key is printed: {stderr}");
        keys[0].clone()
    }

    /// Everything every process of this broker printed.
    pub fn all_output(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.outputs.path()).unwrap() {
            all.push_str(&read(&entry.unwrap().path()));
        }
        all
    }

    /// Fails (without printing the secret) when any output holds one of `secrets`.
    pub fn assert_output_holds_none_of(&self, secrets: &[(&str, &str)]) {
        let output = self.all_output();
        for (what, secret) in secrets {
            assert!(
                !output.contains(secret),
                "{what} appears in the service's output"
            );
        }
    }
}

/// A running `serve`; killed if a test fails before stopping it.
pub struct Server {
    child: Child,
    pub base: String,
    stderr: PathBuf,
    admin: Option<String>,
    pub client: reqwest::Client,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What it printed on stderr so far (its log).
    pub fn stderr(&self) -> String {
        read(&self.stderr)
    }

    /// The service's error lines (they name causes; secrets never reach the log).
    pub fn logged_errors(&self) -> String {
        let stderr = self.stderr();
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
        errors.join("\n")
    }

    /// A request with `key`, in GLOBAL.
    pub fn request(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    /// The bootstrap admin key the broker was given.
    pub fn admin_key(&self) -> &str {
        self.admin
            .as_deref()
            .expect("the broker was given a bootstrap admin key")
    }

    /// A request with the bootstrap admin key, in GLOBAL.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request(self.admin_key(), method, path)
    }

    /// Its resident memory now, in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let status = read(Path::new(&format!("/proc/{}/status", self.child.id())));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL: no shutdown code runs, as when the machine or the OOM killer stops it.
    pub async fn kill(mut self) {
        self.child.kill().unwrap();
        wait_for_exit(&mut self.child, COMMAND_TIMEOUT)
            .await
            .expect("a SIGKILLed process exits");
    }

    /// SIGTERM, then waits up to 10 s (a graceful stop exits 0 by then); returns the exit
    /// status and the whole stderr.
    pub async fn stop(mut self) -> (ExitStatus, String) {
        let status = terminate(&mut self.child).await;
        let stderr = self.stderr();
        let status = status.unwrap_or_else(|| {
            panic!("serve did not stop within 10 s of SIGTERM; stderr:\n{stderr}")
        });
        (status, stderr)
    }

    /// `stop`, asserting the graceful stop's exit 0.
    pub async fn stop_cleanly(self) {
        let (status, stderr) = self.stop().await;
        assert!(
            status.success(),
            "SIGTERM stops serve with exit 0, got {status}; stderr:\n{stderr}"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The API keys (`obk_...`) in a text.
pub fn printed_keys(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '`' || c == '"')
        .filter(|w| w.starts_with("obk_") && w.len() > 20)
        .map(str::to_owned)
        .collect()
}

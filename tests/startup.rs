//! The real binary, as an operator runs it: the first start (key file, first admin key),
//! the commands (`migrate`, `keys create`, `rotate-keys`), the refusals to start with a
//! missing or wrong encryption key, and a graceful stop on SIGTERM.

use std::path::{Path, PathBuf};

use oauth_broker::crypto::{Aad, Keyring};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

mod support;

use support::db::TestDb;
use support::process::{Broker, printed_keys};
use support::read;

/// The binary as an operator first runs it: on `x.db` in a data folder of its own, which
/// is its working directory and where the key file `x.key` appears beside the database;
/// no other setting, default logs, and started once `/healthz` answers (so that a test
/// can ask `/readyz` itself).
fn fresh_broker() -> Broker {
    let db = TestDb::sqlite_named("x.db");
    let folder = db.sqlite_dir().unwrap().to_owned();
    Broker::new(db).working_dir(&folder).ready_at("/healthz")
}

/// The data folder of a broker from `fresh_broker`.
impl Broker {
    fn data_folder(&self) -> &Path {
        self.db().sqlite_dir().expect("a SQLite data folder")
    }

    fn key_path(&self) -> PathBuf {
        self.data_folder().join("x.key")
    }

    /// The key spec in the key file (`kid:base64`).
    fn key_file_spec(&self) -> String {
        read(&self.key_path())
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .expect("the key file holds a key")
            .to_owned()
    }

    /// The first start, then a connection holding the client secret `s3cret-value`
    /// stored (sealed with the generated key), and stopped again; returns the first
    /// admin key.
    async fn first_start_then_store_a_secret(&self) -> String {
        let admin = self.first_start().await;
        let server = self.serve(&[]).await;
        let res = server
            .request(&admin, reqwest::Method::POST, "/api/oauth/connections")
            .json(&connection_with_secret("s3cret-value"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "a connection with a secret is stored");
        let (status, _) = server.stop().await;
        assert!(status.success());
        admin
    }

    /// The rows of a query on the SQLite file, every column as text.
    async fn query(&self, sql: &str) -> Vec<Vec<String>> {
        self.db().query_texts(sql).await
    }
}

/// A connection that is created without calling the provider, holding a client secret.
fn connection_with_secret(secret: &str) -> Value {
    json!({
        "connection_name": "graph",
        "oauth_flow_type": "authorization_code",
        "client_id": "client-1",
        "client_secret": secret,
        "authorization_url": "https://login.example.com/authorize",
        "token_url": "https://login.example.com/token",
        "scopes": ["User.Read"],
    })
}

#[tokio::test]
async fn the_first_start_creates_a_private_key_file_and_prints_one_admin_key() {
    let broker = fresh_broker();

    let server = broker.serve(&[]).await;
    let res = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "ready once started");
    let (status, stderr) = server.stop().await;

    assert!(
        status.success(),
        "SIGTERM stops the service with exit 0, got {status}: {stderr}"
    );
    let keys = printed_keys(&stderr);
    assert_eq!(
        keys.len(),
        1,
        "exactly one admin key is printed on the first start: {stderr}"
    );
    let key_file = broker.key_path();
    assert!(
        key_file.exists(),
        "the key file {} is created",
        key_file.display()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "the key file is readable by its owner only, got {mode:o}"
        );
    }
    assert!(
        !stderr.contains(&broker.key_file_spec()),
        "the encryption key is not printed"
    );

    // The second start prints no key, and the printed key is an admin key for every org.
    let server = broker.serve(&[]).await;
    let res = server
        .request(&keys[0], reqwest::Method::GET, "/api/oauth/keys")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the printed key administers keys");
    let (status, stderr) = server.stop().await;
    assert!(status.success(), "second stop: {stderr}");
    assert_eq!(
        printed_keys(&stderr),
        Vec::<String>::new(),
        "no key is printed on a second start: {stderr}"
    );
}

#[tokio::test]
async fn migrate_applies_the_migrations_and_exits() {
    let broker = fresh_broker();

    let done = broker.run(&["migrate"], &[]).await;

    assert!(done.status.success(), "migrate exits 0: {}", done.stderr);
    let applied = broker
        .query("select cast(count(*) as text) from _sqlx_migrations where success")
        .await;
    assert_ne!(applied[0][0], "0", "migrations are recorded as applied");
    let tables = broker
        .query("select name from sqlite_master where type = 'table' and name = 'connections'")
        .await;
    assert_eq!(tables.len(), 1, "the connections table exists");
    let again = broker.run(&["migrate"], &[]).await;
    assert!(
        again.status.success(),
        "migrate is idempotent: {}",
        again.stderr
    );
}

#[tokio::test]
async fn keys_create_prints_a_working_key_on_stdout() {
    let broker = fresh_broker();
    let admin = broker.first_start().await;

    let done = broker
        .run(
            &[
                "keys", "create", "--name", "n", "--role", "workflow", "--org", "acme",
            ],
            &[],
        )
        .await;

    assert!(
        done.status.success(),
        "keys create exits 0: {}",
        done.stderr
    );
    let key = done.stdout.trim();
    assert!(
        key.starts_with("obk_") && !key.contains('\n'),
        "stdout is the key alone: {:?}",
        done.stdout
    );
    assert!(
        !done.stderr.contains(key),
        "the key is printed once, on stdout: {}",
        done.stderr
    );

    let server = broker.serve(&[]).await;
    let res = server
        .request(&admin, reqwest::Method::GET, "/api/oauth/keys")
        .send()
        .await
        .unwrap();
    let list: Value = res.json().await.unwrap();
    let entry = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "n")
        .cloned();
    let entry = entry.unwrap_or_else(|| panic!("the key is listed: {list}"));
    assert_eq!(entry["role"], "workflow");
    assert_eq!(entry["org_id"], "acme");
    // A workflow key is known (403 for an admin route, not 401).
    let res = server
        .request(key, reqwest::Method::GET, "/api/oauth/connections")
        .header("X-Organization-Id", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        403,
        "the created key authenticates as a workflow key"
    );
    let (status, stderr) = server.stop().await;
    assert!(status.success(), "{stderr}");

    let bad = broker
        .run(
            &[
                "keys", "create", "--name", "m", "--role", "root", "--org", "acme",
            ],
            &[],
        )
        .await;
    assert!(!bad.status.success(), "an unknown role is refused");
    assert!(
        bad.stdout.trim().is_empty(),
        "no key is printed for a refused role: {}",
        bad.stdout
    );
}

#[tokio::test]
async fn a_first_key_made_with_keys_create_still_leaves_an_admin_key() {
    // A fresh database, and a workflow key as the very first key.
    let broker = fresh_broker();
    let done = broker
        .run(
            &[
                "keys", "create", "--name", "ci", "--role", "workflow", "--org", "acme",
            ],
            &[],
        )
        .await;
    assert!(
        done.status.success(),
        "keys create exits 0: {}",
        done.stderr
    );
    let workflow_key = done.stdout.trim().to_owned();
    let admins = printed_keys(&done.stderr);
    assert_eq!(
        admins.len(),
        1,
        "a first admin key is printed on stderr: {}",
        done.stderr
    );
    assert!(
        !admins.contains(&workflow_key),
        "and it is not the workflow key"
    );

    // The service starts without printing another, and the printed one administers
    // every org.
    let server = broker.serve(&[]).await;
    let res = server
        .request(&admins[0], reqwest::Method::GET, "/api/oauth/keys")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "the printed key is an admin key for every org"
    );
    let list: Value = res.json().await.unwrap();
    let names: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "the admin key and `ci`: {list}");
    assert!(names.contains(&"ci"), "{list}");
    let (status, stderr) = server.stop().await;
    assert!(status.success(), "{stderr}");
    assert!(
        printed_keys(&stderr).is_empty(),
        "serve prints no second admin key: {stderr}"
    );
}

#[tokio::test]
async fn serve_refuses_to_start_when_the_key_file_of_existing_data_is_missing() {
    let broker = fresh_broker();
    broker.first_start_then_store_a_secret().await;

    std::fs::remove_file(broker.key_path()).unwrap();
    let done = broker.run(&["serve"], &[]).await;

    assert!(
        !done.status.success(),
        "serve must refuse to start: {}",
        done.stderr
    );
    assert!(
        done.stderr
            .contains(&broker.key_path().display().to_string())
            && done.stderr.contains("missing"),
        "the refusal names the missing key file: {}",
        done.stderr
    );
    assert!(
        !broker.key_path().exists(),
        "no new key file replaces the lost one"
    );
}

#[tokio::test]
async fn serve_refuses_a_different_key_under_the_same_key_id() {
    let broker = fresh_broker();
    broker.first_start().await;
    let (_, impostor) = Keyring::generate("k1");

    let done = broker
        .run(
            &["serve"],
            &[("OAUTH_BROKER_ENCRYPTION_KEYS", impostor.expose_secret())],
        )
        .await;

    assert!(
        !done.status.success(),
        "serve must refuse to start: {}",
        done.stderr
    );
    assert!(
        done.stderr.contains("key bytes differ"),
        "the refusal says the key bytes differ: {}",
        done.stderr
    );
    assert!(
        !done.stderr.contains(impostor.expose_secret()),
        "the key is not printed"
    );
}

#[tokio::test]
async fn rotate_keys_reseals_everything_under_the_new_key() {
    // Arrange: data sealed with the generated key `k1`.
    let broker = fresh_broker();
    let admin = broker.first_start_then_store_a_secret().await;
    let old = broker.key_file_spec();
    assert!(
        old.starts_with("k1:"),
        "the generated key is k1: the key file starts `k1:`"
    );
    let (_, new) = Keyring::generate("k2");
    let new = new.expose_secret().to_owned();

    // Act
    let both = format!("{new},{old}");
    let done = broker
        .run(&["rotate-keys"], &[("OAUTH_BROKER_ENCRYPTION_KEYS", &both)])
        .await;

    // Assert: reported, resealed in the database, and `k2` alone is enough.
    assert!(
        done.status.success(),
        "rotate-keys exits 0: {}",
        done.stderr
    );
    assert!(
        done.stderr.contains("1 secret(s) re-encrypted"),
        "rotate-keys reports the one re-encrypted client secret: {}",
        done.stderr
    );
    let rows = broker
        .query("select id, org_id, client_secret_sealed from connections")
        .await;
    assert_eq!(rows.len(), 1);
    let (id, org, sealed) = (&rows[0][0], &rows[0][1], &rows[0][2]);
    assert!(
        sealed.starts_with("v1:k2:"),
        "the client secret is sealed with k2: {sealed}"
    );
    let check = broker
        .query("select value from meta where key = 'key_check'")
        .await;
    assert!(
        check[0][0].starts_with("v1:k2:"),
        "the key check is sealed with k2: {}",
        check[0][0]
    );
    let k2_only = Keyring::parse(&new.clone().into()).unwrap();
    let opened = k2_only
        .open(
            sealed,
            Aad {
                org_id: org,
                row_id: id,
                field: "client_secret",
            },
        )
        .expect("k2 alone opens the resealed secret");
    assert_eq!(opened.expose_secret(), "s3cret-value");

    let server = broker
        .serve(&[("OAUTH_BROKER_ENCRYPTION_KEYS", &new)])
        .await;
    let res = server
        .request(&admin, reqwest::Method::GET, "/api/oauth/connections/graph")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the service serves with only k2");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["has_client_secret"], true, "{body}");
    let (status, stderr) = server.stop().await;
    assert!(status.success(), "{stderr}");

    // The old key alone (the key file) no longer opens the data, and says which id is missing.
    let done = broker.run(&["serve"], &[]).await;
    assert!(
        !done.status.success(),
        "k1 alone must not start: {}",
        done.stderr
    );
    assert!(
        done.stderr.contains("`k2`"),
        "the refusal names k2: {}",
        done.stderr
    );
}

#[tokio::test]
async fn settings_come_from_a_config_file_and_json_logs_are_one_object_per_line() {
    let broker = fresh_broker();
    let config = broker.data_folder().join("broker.toml");
    std::fs::write(
        &config,
        "log_format = \"json\"\nbootstrap_admin_key = \"obk_from_the_config_file_0123456789\"\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let server = broker.serve(&[("OAUTH_BROKER_CONFIG", &config)]).await;
    let res = server
        .request(
            "obk_from_the_config_file_0123456789",
            reqwest::Method::GET,
            "/api/oauth/keys",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the bootstrap key came from the file");
    let (status, stderr) = server.stop().await;
    assert!(status.success());
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON log line: {line}");
    }
    assert!(
        !stderr.contains("obk_from_the_config_file"),
        "the key is not logged"
    );
}

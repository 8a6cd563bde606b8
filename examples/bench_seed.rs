//! Seeds data for the benchmark (`bench/run.sh`). Two modes:
//!
//! `bench_seed api URL ADMIN_KEY TOKEN_URL TARGETS_FILE [--orgs 100] [--per-org 50]
//!  [--global 5000] [--concurrency 32]`
//!   Through the HTTP API of a running service: one workflow key per org
//!   (`POST /api/oauth/keys`), `--global` client-credentials connections in GLOBAL named
//!   `g<k>`, and `--per-org` in each org `org<i>` named `o<j>` (every create fetches a
//!   token from TOKEN_URL at once and must end `completed`). Writes TARGETS_FILE, one
//!   line per connection: `<workflow key> <org> <name>`; GLOBAL connections are listed
//!   under an org that lacks that name, so half the reads are served by the fallback.
//!
//! `bench_seed direct DATABASE_URL TOKEN_URL COUNT [--orgs 100] [--expires-in 1800]
//!  [--concurrency 1] [--batch 1000] [--hosts 1]`
//!   Straight through the library (`store::open_pool` + `ImportStore::import_connections`,
//!   `--batch` connections per transaction, `--concurrency` transactions at once), with `OAUTH_BROKER_ENCRYPTION_KEYS` from the environment (the
//!   service's keys): COUNT completed connections (half client_credentials, half
//!   refresh_token with an imported refresh token) whose tokens expire in `--expires-in`
//!   seconds (within the refresher's threshold) and were last refreshed hours ago, so a
//!   refresher run renews every one of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use secrecy::SecretString;

use oauth_broker::crypto::Keyring;
use oauth_broker::domain::{ConnectionConfig, NewConnection, NewEvent};
use oauth_broker::domain::{ConnectionName, EventKind, FlowType, OrgId, TokenAuthMethod};
use oauth_broker::store::{ImportedConnection, IssuedToken, open_pool};

fn flag(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("api") if args.len() >= 5 => seed_api(&args).await,
        Some("direct") if args.len() >= 4 => seed_direct(&args).await,
        _ => bail!(
            "usage: bench_seed api URL ADMIN_KEY TOKEN_URL TARGETS_FILE [--orgs N] [--per-org N] [--global N] [--concurrency N]\n       \
             bench_seed direct DATABASE_URL TOKEN_URL COUNT [--orgs N] [--expires-in S] [--concurrency N] [--batch N] [--hosts N]"
        ),
    }
}

async fn seed_api(args: &[String]) -> anyhow::Result<()> {
    let base = args[1].trim_end_matches('/').to_owned();
    let admin = args[2].clone();
    let token_url = args[3].clone();
    let targets_file = args[4].clone();
    let orgs = flag(args, "--orgs", 100);
    let per_org = flag(args, "--per-org", 50);
    let global = flag(args, "--global", 5000);
    let concurrency = flag(args, "--concurrency", 32);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let started = Instant::now();

    // One workflow key per org.
    let mut keys = Vec::with_capacity(orgs);
    for i in 0..orgs {
        let response = client
            .post(format!("{base}/api/oauth/keys"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({
                "name": format!("bench-workflow-org{i}"),
                "role": "workflow",
                "org_id": format!("org{i}"),
            }))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        if status.as_u16() != 201 {
            bail!("creating a workflow key: HTTP {status}: {body}");
        }
        keys.push(
            body["key"]
                .as_str()
                .context("no key in the response")?
                .to_owned(),
        );
    }

    // (org header, name) of every connection to create.
    let mut creates: Vec<(String, String)> = Vec::with_capacity(global + orgs * per_org);
    for k in 0..global {
        creates.push(("GLOBAL".into(), format!("g{k}")));
    }
    for i in 0..orgs {
        for j in 0..per_org {
            creates.push((format!("org{i}"), format!("o{j}")));
        }
    }
    let total = creates.len();
    let client = &client;
    let base = &base;
    let admin = &admin;
    let token_url = &token_url;
    let mut results = futures::stream::iter(creates)
        .map(|(org, name)| async move {
            let response = client
                .post(format!("{base}/api/oauth/connections"))
                .bearer_auth(admin)
                .header("X-Organization-Id", &org)
                .json(&serde_json::json!({
                    "connection_name": name,
                    "oauth_flow_type": "client_credentials",
                    "client_id": format!("bench-{org}-{name}"),
                    "client_secret": "bench-client-secret",
                    "token_url": token_url,
                    "scopes": ["read"],
                }))
                .send()
                .await;
            let outcome = match response {
                Err(e) => Err(format!("{e}")),
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    if status == 201 && body["status"] == "completed" {
                        Ok(())
                    } else {
                        Err(format!("HTTP {status}: {body}"))
                    }
                }
            };
            (org, name, outcome)
        })
        .buffer_unordered(concurrency.max(1));
    let mut failed = 0usize;
    while let Some((org, name, outcome)) = results.next().await {
        if let Err(e) = outcome {
            failed += 1;
            if failed <= 5 {
                eprintln!("creating {org}/{name} failed: {e}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {total} connections could not be created");
    }

    let mut lines = String::new();
    for (i, key) in keys.iter().enumerate() {
        for j in 0..per_org {
            lines.push_str(&format!("{key} org{i} o{j}\n"));
        }
    }
    for k in 0..global {
        // The org's own connections are named o<j>, so g<k> is always served by GLOBAL.
        let i = k % orgs.max(1);
        lines.push_str(&format!("{} org{i} g{k}\n", keys[i]));
    }
    std::fs::write(&targets_file, lines)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {total} connections ({global} GLOBAL, {per_org} in each of {orgs} orgs) and {orgs} workflow keys through the API in {secs:.1} s ({:.0}/s)",
        total as f64 / secs
    );
    Ok(())
}

async fn seed_direct(args: &[String]) -> anyhow::Result<()> {
    let database_url = SecretString::from(args[1].clone());
    let token_url = args[2].clone();
    let count: usize = args[3].parse().context("COUNT")?;
    let orgs = flag(args, "--orgs", 100).max(1);
    let expires_in = flag(args, "--expires-in", 1800) as i64;
    let concurrency = flag(args, "--concurrency", 1).max(1);
    let hosts = flag(args, "--hosts", 1).max(1);
    let batch_size = flag(args, "--batch", 1000).max(1);
    let keys = std::env::var("OAUTH_BROKER_ENCRYPTION_KEYS")
        .context("set OAUTH_BROKER_ENCRYPTION_KEYS to the service's keys")?;
    let keyring = Arc::new(Keyring::parse(&SecretString::from(keys))?);
    let pool = open_pool(&database_url, concurrency as u32 + 1).await?;
    let store = pool.store(
        keyring,
        std::sync::Arc::new(oauth_broker::store::Lookups::off()),
    );
    let started = Instant::now();
    let now = chrono::Utc::now();
    let store = &store;
    // With `--hosts N`, connection n calls 127.0.0.<1 + n % N> (every loopback address
    // reaches a server bound to 0.0.0.0): N provider servers as far as the refresher's
    // per-host limit goes.
    let url_of = |n: usize| {
        if hosts == 1 {
            token_url.clone()
        } else {
            token_url.replacen("127.0.0.1", &format!("127.0.0.{}", 1 + n % hosts), 1)
        }
    };
    let item = |n: usize| {
        let org = OrgId::parse(&format!("org{}", n % orgs)).expect("valid org id");
        let name = ConnectionName::parse(&format!("r{n}")).expect("valid name");
        let refresh_flow = n % 2 == 1;
        ImportedConnection {
            new: NewConnection {
                org_id: org.clone(),
                name: name.clone(),
                config: ConnectionConfig {
                    flow_type: if refresh_flow {
                        FlowType::RefreshToken
                    } else {
                        FlowType::ClientCredentials
                    },
                    client_id: format!("refresher-{n}"),
                    authorization_url: None,
                    token_url: url_of(n),
                    scopes: vec!["read".into()],
                    token_auth_method: TokenAuthMethod::ClientSecretBasic,
                    extra_authorization_params: BTreeMap::new(),
                    extra_token_params: BTreeMap::new(),
                    test_url: None,
                    obo_grant: None,
                    assertion_validation: None,
                },
                client_secret: Some(SecretString::from("bench-client-secret")),
                refresh_token: refresh_flow
                    .then(|| SecretString::from(format!("bench-refresh-token-{n}"))),
                created_by: "bench".into(),
                now,
            },
            token: IssuedToken {
                access_token: SecretString::from(format!("bench-access-token-{n}")),
                token_type: "Bearer".into(),
                token_expires_at: Some(now + chrono::Duration::seconds(expires_in)),
                last_refresh_at: Some(now - chrono::Duration::hours(3)),
            },
            event: NewEvent {
                org_id: org,
                connection_id: String::new(),
                connection_name: name,
                at: now,
                kind: EventKind::Created,
                actor: "bench".into(),
                detail: None,
            },
        }
    };
    let batches = (0..count).step_by(batch_size).map(|first| {
        let batch: Vec<_> = (first..(first + batch_size).min(count)).map(item).collect();
        async move { store.import_connections(batch).await }
    });
    let mut results = futures::stream::iter(batches).buffer_unordered(concurrency);
    let mut done = 0u64;
    while let Some(result) = results.next().await {
        done += result?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {done} due connections directly in {secs:.1} s ({:.0}/s)",
        done as f64 / secs
    );
    Ok(())
}

//! The benchmark's refresh stampede (`bench/run.sh`): N concurrent callers, released at
//! once, each on its own connection, GET one credentials URL; prints one JSON line with
//! the statuses, the number of distinct access tokens served, latency percentiles, the
//! time until the last caller was served and, with `--calls-url`, how many calls the
//! provider received meanwhile (read from the fake token endpoint's `/calls`).
//!
//! `bench_stampede URL API_KEY ORG [--callers 1000] [--calls-url URL]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

async fn provider_calls(client: &reqwest::Client, url: &Option<String>) -> anyhow::Result<i64> {
    let Some(url) = url else { return Ok(-1) };
    let body: serde_json::Value = client.get(url).send().await?.json().await?;
    body.get("client")
        .or_else(|| body.get("total"))
        .and_then(|v| v.as_i64())
        .context("no call count in /calls")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        anyhow::bail!("usage: bench_stampede URL API_KEY ORG [--callers N] [--calls-url URL]");
    }
    let (url, key, org) = (args[0].clone(), args[1].clone(), args[2].clone());
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let callers: usize = value("--callers")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let calls_url = value("--calls-url");

    // One client per caller: 1,000 TCP connections, opened after the start signal.
    let control = reqwest::Client::new();
    let before = provider_calls(&control, &calls_url).await?;
    let barrier = Arc::new(tokio::sync::Barrier::new(callers + 1));
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers {
        let barrier = barrier.clone();
        let (url, key, org) = (url.clone(), key.clone(), org.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client");
            barrier.wait().await;
            let sent = Instant::now();
            let response = client
                .get(&url)
                .bearer_auth(&key)
                .header("X-Organization-Id", &org)
                .send()
                .await;
            let (status, token) = match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    (
                        status,
                        body["access_token"].as_str().unwrap_or("").to_owned(),
                    )
                }
                Err(_) => (0, String::new()),
            };
            (status, token, sent.elapsed(), Instant::now())
        }));
    }
    // Let every task reach the barrier, then release them together.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    barrier.wait().await;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut tokens = std::collections::HashSet::new();
    let mut latencies = Vec::with_capacity(callers);
    let mut last = started;
    for task in tasks {
        let (status, token, latency, finished) = task.await?;
        *statuses.entry(status).or_default() += 1;
        if status == 200 {
            tokens.insert(token);
        }
        latencies.push(latency);
        last = last.max(finished);
    }
    let after = provider_calls(&control, &calls_url).await?;
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let ok = statuses.get(&200).copied().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "callers": callers,
            "ok": ok,
            "statuses": statuses.iter().map(|(s, n)| (s.to_string(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
            "distinct_tokens": tokens.len(),
            "provider_calls": if calls_url.is_some() { after - before } else { -1 },
            "all_served_ms": (last - started).as_secs_f64() * 1000.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
        })
    );
    Ok(())
}

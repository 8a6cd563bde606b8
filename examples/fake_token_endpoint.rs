//! A fast fake OAuth token endpoint for the benchmark (`bench/run.sh`), on loopback.
//!
//! `cargo run --release --example fake_token_endpoint -- [ADDR] [--workers N] [--delay-ms MS]`
//! (ADDR defaults to 127.0.0.1:0; the bound address is printed as `listening on ADDR`).
//!
//! - `POST /token` (form body) answers `grant_type=client_credentials` and
//!   `grant_type=refresh_token` with `{"access_token", "token_type": "Bearer", "expires_in"}`.
//!   Query parameters of the token URL tune it per connection:
//!   `expires_in=S` (default 3600), `first_expires_in=S` (lifetime of the first token
//!   issued to a client_id: a short first token makes the next call refresh),
//!   `delay_ms=MS` (per-request delay; default from `--delay-ms`).
//!   Any other grant type gets 400 `unsupported_grant_type`.
//! - `GET /calls` -> `{"total", "client_credentials", "refresh_token"}`;
//!   `GET /calls?client_id=X` adds `"client": <calls by X>`.
//! - `POST /reset` zeroes the counters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;

#[derive(Default)]
struct Counters {
    total: AtomicU64,
    client_credentials: AtomicU64,
    refresh_token: AtomicU64,
    issued: AtomicU64,
    per_client: Mutex<HashMap<String, u64>>,
}

struct Config {
    delay_ms: u64,
}

fn client_id(req: &HttpRequest, form: &HashMap<String, String>) -> String {
    if let Some(id) = form.get("client_id") {
        return id.clone();
    }
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split(':').next().map(str::to_owned))
        .map(|id| {
            // client_secret_basic form-urlencodes the id before base64 (RFC 6749 2.3.1).
            form_urlencoded::parse(format!("x={id}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or(id)
        })
        .unwrap_or_default()
}

async fn token(
    req: HttpRequest,
    body: web::Bytes,
    counters: web::Data<Counters>,
    config: web::Data<Config>,
) -> HttpResponse {
    let query: HashMap<String, String> = form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let delay = query
        .get("delay_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(config.delay_ms);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            counters.client_credentials.fetch_add(1, Ordering::Relaxed);
        }
        Some("refresh_token") => {
            counters.refresh_token.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            return HttpResponse::BadRequest()
                .json(serde_json::json!({"error": "unsupported_grant_type"}));
        }
    }
    counters.total.fetch_add(1, Ordering::Relaxed);
    let client = client_id(&req, &form);
    let nth = {
        let mut per_client = counters.per_client.lock().expect("counters lock");
        let n = per_client.entry(client).or_insert(0);
        *n += 1;
        *n
    };
    let expires_in: u64 = match (nth, query.get("first_expires_in")) {
        (1, Some(first)) => first.parse().unwrap_or(3600),
        _ => query
            .get("expires_in")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3600),
    };
    let serial = counters.issued.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "access_token": format!("fake-access-token-{serial:012}-0123456789abcdef0123456789abcdef"),
            "token_type": "Bearer",
            "expires_in": expires_in,
        }))
}

async fn calls(req: HttpRequest, counters: web::Data<Counters>) -> HttpResponse {
    let query: HashMap<String, String> = form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let mut body = serde_json::json!({
        "total": counters.total.load(Ordering::Relaxed),
        "client_credentials": counters.client_credentials.load(Ordering::Relaxed),
        "refresh_token": counters.refresh_token.load(Ordering::Relaxed),
    });
    if let Some(id) = query.get("client_id") {
        let n = counters
            .per_client
            .lock()
            .expect("counters lock")
            .get(id)
            .copied()
            .unwrap_or(0);
        body["client"] = n.into();
    }
    HttpResponse::Ok().json(body)
}

async fn reset(counters: web::Data<Counters>) -> HttpResponse {
    counters.total.store(0, Ordering::Relaxed);
    counters.client_credentials.store(0, Ordering::Relaxed);
    counters.refresh_token.store(0, Ordering::Relaxed);
    counters.per_client.lock().expect("counters lock").clear();
    HttpResponse::NoContent().finish()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:0".to_owned();
    let mut workers = 1usize;
    let mut delay_ms = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workers" => workers = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--delay-ms" => delay_ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            other => addr = other.to_owned(),
        }
    }
    let listener = std::net::TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    let counters = web::Data::new(Counters::default());
    let config = web::Data::new(Config { delay_ms });
    HttpServer::new(move || {
        App::new()
            .app_data(counters.clone())
            .app_data(config.clone())
            .route("/token", web::post().to(token))
            .route("/calls", web::get().to(calls))
            .route("/reset", web::post().to(reset))
    })
    .workers(workers.max(1))
    .listen(listener)?
    .run()
    .await
}

//! The benchmark's handler baseline (`bench/run.sh`): an actix-web server with the same
//! number of workers as the service, answering `GET /api/oauth/credentials/{name}` with a
//! fixed JSON body (a real credentials response captured by the script, so the same
//! size) and the same `Cache-Control`/`nosniff` headers. No API-key check, no database,
//! no crypto: what actix-web and the loopback network cost on this machine.
//!
//! `cargo run --release --example baseline_server -- ADDR BODY_FILE [WORKERS]`
//! (prints `listening on ADDR`; WORKERS defaults to the number of cores, like the service).

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let body_file = args
        .next()
        .expect("usage: baseline_server ADDR BODY_FILE [WORKERS]");
    let workers = args
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let body = web::Bytes::from(std::fs::read(&body_file)?);
    // The service's own listen queue, so both accept bursts alike.
    let listener = oauth_broker::startup::bind(&addr)?;
    println!(
        "listening on {} ({} byte body, {workers} workers)",
        listener.local_addr()?,
        body.len()
    );
    HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            "/api/oauth/credentials/{name}",
            web::get().to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .insert_header(("Cache-Control", "no-store"))
                        .insert_header(("X-Content-Type-Options", "nosniff"))
                        .body(body)
                }
            }),
        )
    })
    .workers(workers.max(1))
    .listen(listener)?
    .run()
    .await
}

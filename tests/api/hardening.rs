//! Abuse, limits and faults: rate limits per key, outbound address checks (SSRF), the
//! database going away and coming back.

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

async fn app_with(
    backend: Backend,
    change: impl FnOnce(&mut oauth_broker::config::Settings),
) -> Option<TestApp> {
    let db = TestDb::create(backend).await?;
    let mut settings = test_settings(&db);
    change(&mut settings);
    Some(spawn_app_with(backend, db, settings).await)
}

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after_and_other_keys_do_not() {
    let Some(app) = app_with(Backend::Sqlite, |s| s.rate_limit_per_minute = 3).await else {
        return;
    };
    let workflow = app.create_key("busy-bee", "workflow", "*").await; // 1 admin request
    for i in 0..3 {
        let res = app
            .with_key(&workflow, Method::GET, "/api/oauth/credentials/none", None)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "request {i} is within the limit");
    }
    let res = app
        .with_key(&workflow, Method::GET, "/api/oauth/credentials/none", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    let res = app
        .admin(Method::GET, "/api/oauth/keys", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the limit is per key");
}

#[tokio::test]
async fn provider_urls_that_reach_loopback_private_or_metadata_addresses_are_refused() {
    let Some(app) = app_with(Backend::Sqlite, |s| {
        s.allow_private_provider_addresses = false
    })
    .await
    else {
        return;
    };
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "x", "token_type": "Bearer"})),
        )
        .mount(&server)
        .await;
    let port = server.address().port();
    for (name, url, why) in [
        (
            "literal",
            format!("http://127.0.0.1:{port}/token"),
            "not a public address",
        ),
        (
            "by-name",
            format!("http://localhost:{port}/token"),
            "does not resolve to a public address",
        ),
        (
            "metadata",
            "https://169.254.169.254/latest/meta-data/".to_owned(),
            "not a public address",
        ),
    ] {
        let created = app
            .create_connection(None, &client_credentials_body(name, &url))
            .await;
        assert_eq!(created["status"], "failed", "{name}: {created}");
        let message = created["status_message"].as_str().unwrap();
        assert!(message.contains(why), "{name}: {message}");
    }
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "no request left the service"
    );
}

#[tokio::test]
async fn the_service_answers_503_while_postgres_refuses_connections_and_recovers_by_itself() {
    let Some(app) = app_with(Backend::Postgres, |s| s.database_max_connections = 2).await else {
        return;
    };
    let url = app.db.url().to_owned();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let admin_url =
        std::env::var("OAUTH_BROKER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned());
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    app.create_connection(None, &auth_code_connection_body("kept"))
        .await;
    let before = app.db.snapshot().await;

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "alter database {name} allow_connections false"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}'"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let res = app
        .admin(Method::POST, "/api/oauth/connections", None)
        .json(&auth_code_connection_body("during"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        503,
        "a write while the database is away is 503, not 500"
    );
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "unavailable");
    assert!(
        !problem["detail"].as_str().unwrap().contains("postgres"),
        "no internals: {problem}"
    );

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "alter database {name} allow_connections true"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let mut ready = false;
    for _ in 0..50 {
        if app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(ready, "ready again without a restart");
    let res = app
        .admin(Method::GET, "/api/oauth/connections/kept", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.db.snapshot().await, before, "nothing half-written");
}

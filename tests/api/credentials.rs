//! `GET /api/oauth/credentials/{name}`: every answer it gives, the GLOBAL fallback and
//! org isolation, refresh on demand, single flight within a process and across
//! replicas, a failing provider, and reads recorded on workflow dependencies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::*;
use crate::on_both_backends;

/// Reads the credentials of `name` with `key` in `org`; returns the status and the body.
async fn read(
    app: &TestApp,
    key: &str,
    org: Option<&str>,
    name: &str,
    query: &str,
) -> (u16, Value) {
    let res = app
        .with_key(
            key,
            Method::GET,
            &format!("/api/oauth/credentials/{name}{query}"),
            org,
        )
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Reads and asserts 200; returns the access token.
async fn token(app: &TestApp, key: &str, org: Option<&str>, name: &str, query: &str) -> String {
    let (status, body) = read(app, key, org, name, query).await;
    assert_eq!(status, 200, "reading {name} in {org:?}{query}: {body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A connection as the admin API shows it.
async fn connection(app: &TestApp, org: Option<&str>, name: &str) -> Value {
    let res = app
        .admin(Method::GET, &format!("/api/oauth/connections/{name}"), org)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "reading connection {name}");
    res.json().await.unwrap()
}

fn form_value(req: &Request, key: &str) -> Option<String> {
    url::form_urlencoded::parse(&req.body)
        .into_owned()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// What the rotating provider has seen.
#[derive(Default)]
struct Rotation {
    /// The only refresh token it accepts now.
    current: String,
    /// Grants redeemed (each one issued `at-n` and `rt-n`).
    issued: usize,
    /// Used or unknown refresh tokens it answered `invalid_grant` to.
    rejected: Vec<String>,
}

/// A provider with refresh-token rotation (RFC 9700 4.14.2): each refresh token works
/// once; redeeming it returns a new access token and a new refresh token.
/// Each answer can be delayed, so that requests overlap.
#[derive(Clone)]
struct RotatingProvider(Arc<Mutex<Rotation>>, Duration);

impl RotatingProvider {
    fn new(initial: &str) -> Self {
        Self(
            Arc::new(Mutex::new(Rotation {
                current: initial.to_owned(),
                ..Rotation::default()
            })),
            Duration::ZERO,
        )
    }

    /// Every answer waits `delay` (after the token was rotated, as a provider would).
    fn delayed(self, delay: Duration) -> Self {
        Self(self.0, delay)
    }
}

impl Respond for RotatingProvider {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let presented = form_value(request, "refresh_token").unwrap_or_default();
        let mut seen = self.0.lock().unwrap();
        if form_value(request, "grant_type").as_deref() != Some("refresh_token")
            || presented != seen.current
        {
            seen.rejected.push(presented);
            return ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_grant",
                "error_description": "the refresh token was already used",
            }));
        }
        seen.issued += 1;
        let n = seen.issued;
        seen.current = format!("rt-{n}");
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": format!("at-{n}"),
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": seen.current,
            }))
            .set_delay(self.1)
    }
}

on_both_backends! {
    async fn every_status_code_of_the_credentials_endpoint(app) {
        // Arrange: a GLOBAL client-credentials connection, one never authorized, keys.
        let server = MockServer::start().await;
        let url = mount_numbered(&server, "graph", 3600).await;
        app.create_connection(None, &client_credentials_body("graph", &url)).await;
        app.create_connection(None, &auth_code_connection_body("never")).await;
        let acme = app.create_key("acme-workflows", "workflow", "acme").await;

        // 200: the whole shape, not cacheable.
        let res = app
            .with_key(&acme, Method::GET, "/api/oauth/credentials/graph", Some("acme"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers().get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "a response carrying a token must not be cached"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body,
            json!({
                "connection_name": "graph",
                "org_id": "GLOBAL",
                "access_token": "graph-1",
                "token_type": "Bearer",
                "authorization_header": "Bearer graph-1",
                "expires_at": "2026-01-15T10:00:00Z",
                "scopes": ["read", "write"],
            })
        );

        // The refusals.
        let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str, Option<&str>)> = vec![
            (
                "neither acme nor GLOBAL has `nowhere`",
                app.with_key(&acme, Method::GET, "/api/oauth/credentials/nowhere", Some("acme")),
                404, "not_found", None,
            ),
            (
                "no API key",
                app.client.get(app.url("/api/oauth/credentials/graph")).header("X-Organization-Id", "acme"),
                401, "unauthorized", None,
            ),
            (
                "an acme key acting in beta",
                app.with_key(&acme, Method::GET, "/api/oauth/credentials/graph", Some("beta")),
                403, "forbidden", None,
            ),
            (
                "a malformed X-Organization-Id",
                app.with_key(&acme, Method::GET, "/api/oauth/credentials/graph", Some("no spaces!")),
                400, "bad_request", None,
            ),
            (
                "min_valid_for below 0",
                app.with_key(&acme, Method::GET, "/api/oauth/credentials/graph?min_valid_for=-1", Some("acme")),
                422, "validation_failed", Some("min_valid_for"),
            ),
            (
                "min_valid_for that is not a number",
                app.with_key(&acme, Method::GET, "/api/oauth/credentials/graph?min_valid_for=abc", Some("acme")),
                422, "validation_failed", Some("min_valid_for"),
            ),
        ];
        for (reason, request, status, code, field) in cases {
            let problem = assert_refused(&app, reason, request, status, code, field).await;
            assert!(
                !problem.to_string().contains("graph-"),
                "{reason}: a refusal never carries a token: {problem}"
            );
        }

        // 503: the connection exists but was never authorized.
        let problem = assert_refused(
            &app,
            "an authorization_code connection never authorized",
            app.with_key(&acme, Method::GET, "/api/oauth/credentials/never", Some("acme")),
            503,
            "connection_unavailable",
            None,
        )
        .await;
        assert_eq!(problem["connection_status"], "not_connected", "{problem}");
        assert!(problem["status_message"].is_string(), "says why: {problem}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "only the creation asked for a token");
    }

    async fn global_connections_are_a_fallback_and_orgs_never_see_each_other(app) {
        // Arrange: `graph` in GLOBAL and in `other`; acme has none (yet).
        let server = MockServer::start().await;
        let global_url = mount_numbered(&server, "global", 3600).await;
        let acme_url = mount_numbered(&server, "acme", 3600).await;
        let other_url = mount_numbered(&server, "other", 3600).await;
        app.create_connection(None, &client_credentials_body("graph", &global_url)).await;
        app.create_connection(Some("other"), &client_credentials_body("graph", &other_url)).await;
        let acme = app.create_key("acme-workflows", "workflow", "acme").await;
        let beta = app.create_key("beta-workflows", "workflow", "beta").await;

        // acme has no `graph`: GLOBAL's serves, and says so.
        let (status, body) = read(&app, &acme, Some("acme"), "graph", "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["org_id"], "GLOBAL");
        assert_eq!(body["access_token"], "global-1");

        // acme gets its own: acme's serves from now on.
        app.create_connection(Some("acme"), &client_credentials_body("graph", &acme_url)).await;
        let (status, body) = read(&app, &acme, Some("acme"), "graph", "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["org_id"], "acme");
        assert_eq!(body["access_token"], "acme-1");

        // An acme key may not read as `other`, and sees nothing of its token.
        let problem = assert_refused(
            &app,
            "an acme workflow key asking as org `other`",
            app.with_key(&acme, Method::GET, "/api/oauth/credentials/graph", Some("other")),
            403,
            "forbidden",
            None,
        )
        .await;
        assert!(!problem.to_string().contains("other-1"), "{problem}");

        // beta has none of its own: GLOBAL's, never acme's.
        let (status, body) = read(&app, &beta, Some("beta"), "graph", "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["org_id"], "GLOBAL");
        assert_eq!(body["access_token"], "global-1");
    }

    async fn a_token_is_refreshed_on_demand_only_when_it_expires_within_min_valid_for(app) {
        let server = MockServer::start().await;
        let url = mount_numbered(&server, "cc", 600).await;
        app.create_connection(None, &client_credentials_body("cc", &url)).await;
        assert_eq!(calls_to(&server, "/cc").await, 1, "creating fetches the first token");

        // Valid for 600 s, 300 s asked by default: served as is.
        assert_eq!(token(&app, &app.admin_key, None, "cc", "").await, "cc-1");
        assert_eq!(calls_to(&server, "/cc").await, 1, "a fresh enough token needs no provider call");

        // 200 s left, 300 s asked: refreshed before answering.
        app.clock.advance(chrono::Duration::seconds(400));
        let (status, body) = read(&app, &app.admin_key, None, "cc", "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["access_token"], "cc-2");
        assert_eq!(body["expires_at"], "2026-01-15T09:16:40Z", "now (09:06:40) + 600 s");
        assert_eq!(calls_to(&server, "/cc").await, 2, "exactly one refresh");
    }

    async fn a_forced_refresh_racing_another_replica_s_refresh_never_sends_a_used_refresh_token(app) {
        // Arrange: a provider that rotates refresh tokens and takes 300 ms to answer (so
        // the two requests overlap), a second service on the same database, and a
        // connection 200 s from expiry (inside the 300 s a read asks for by default).
        let server = MockServer::start().await;
        let provider = RotatingProvider::new("rt-0").delayed(Duration::from_millis(300));
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(provider.clone())
            .mount(&server).await;
        let replica = app.replica().await;
        app.create_connection(None, &json!({
            "connection_name": "rotating",
            "oauth_flow_type": "refresh_token",
            "client_id": "client-1",
            "client_secret": "secret-1",
            "token_url": format!("{}/token", server.uri()),
            "refresh_token": "rt-0",
        })).await;
        for service in [&app, &replica] {
            service.clock.advance(chrono::Duration::seconds(3400));
        }

        let mut requests = 1; // the creation redeemed rt-0
        for round in ["forced and on-demand", "forced and forced"] {
            requests += 2;
            // Act: a forced refresh on one replica while the other refreshes too.
            let forced = app
                .admin(Method::POST, "/api/oauth/connections/rotating/refresh", None)
                .send();
            let other = async {
                if round == "forced and forced" {
                    let res = replica
                        .admin(Method::POST, "/api/oauth/connections/rotating/refresh", None)
                        .send()
                        .await
                        .unwrap();
                    (res.status().as_u16(), res.json::<Value>().await.unwrap())
                } else {
                    read(&replica, &replica.admin_key, None, "rotating", "").await
                }
            };
            let (forced, (other_status, other_body)) = futures::future::join(forced, other).await;
            let forced = forced.unwrap();

            // Assert: both answered, one provider call between them, no token sent twice.
            assert_eq!(forced.status(), 200, "{round}: the forced refresh: {}", forced.text().await.unwrap());
            assert_eq!(other_status, 200, "{round}: the other replica: {other_body}");
            let rejected = provider.0.lock().unwrap().rejected.clone();
            assert_eq!(rejected, Vec::<String>::new(), "{round}: a used refresh token was presented");
            let issued = provider.0.lock().unwrap().issued;
            assert!(issued <= requests, "{round}: at most one provider call per request, {issued} in all");
            let conn = connection(&app, None, "rotating").await;
            assert_eq!(conn["status"], "completed", "{round}: {conn}");
            for service in [&app, &replica] {
                service.clock.advance(chrono::Duration::seconds(1));
            }
        }
    }

    async fn two_replicas_refresh_a_rotating_grant_once_per_expiry(app) {
        // Arrange: a provider that rotates refresh tokens, a second service on the same
        // database, and an imported refresh token.
        let server = MockServer::start().await;
        let provider = RotatingProvider::new("rt-0");
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(provider.clone())
            .mount(&server).await;
        let replica = app.replica().await;
        let key = app.create_key("acme-workflows", "workflow", "acme").await;
        let created = app.create_connection(Some("acme"), &json!({
            "connection_name": "rotating",
            "oauth_flow_type": "refresh_token",
            "client_id": "client-1",
            "client_secret": "secret-1",
            "token_url": format!("{}/token", server.uri()),
            "refresh_token": "rt-0",
        })).await;
        assert_eq!(created["status"], "completed", "{created}");

        for k in 1..=3usize {
            // Both clocks: 200 s before expiry (inside the default 300 s).
            for service in [&app, &replica] {
                service.clock.advance(chrono::Duration::seconds(3400));
            }

            // Act: 50 reads on each replica while both replicas' scheduled runs of one
            // cycle go.
            let reads = futures::future::join_all(
                (0..100).map(|i| read(if i % 2 == 0 { &app } else { &replica }, &key, Some("acme"), "rotating", "")),
            );
            let runs = futures::future::join(
                oauth_broker::service::refresher::run(app.broker.clone(), "schedule"),
                oauth_broker::service::refresher::run(replica.broker.clone(), "schedule"),
            );
            let (answers, (run_a, run_b)) = futures::future::join(reads, runs).await;

            // Assert
            {
                let seen = provider.0.lock().unwrap();
                assert_eq!(seen.rejected, Vec::<String>::new(), "expiry {k}: a used refresh token was presented");
                assert_eq!(seen.issued, k + 1, "expiry {k}: exactly one provider call per expiry");
            }
            let expected = format!("at-{}", k + 1);
            for (i, (status, body)) in answers.iter().enumerate() {
                assert_eq!(*status, 200, "expiry {k}, read {i}: {body}");
                assert_eq!(body["access_token"], expected.as_str(), "expiry {k}, read {i}");
            }
            for run in [run_a, run_b] {
                let run = run.expect("no other run was in progress");
                assert_eq!(run.failed, 0, "expiry {k}: {run:?}");
            }
            for service in [&app, &replica] {
                let conn = connection(service, Some("acme"), "rotating").await;
                assert_eq!(conn["status"], "completed", "expiry {k}: {conn}");
                assert_eq!(conn["refresh_failures"], 0, "expiry {k}: {conn}");
            }
        }
    }

    async fn a_provider_down_for_a_whole_cycle_leaves_the_valid_token_in_service(app) {
        // Arrange: a token valid for 1 h; then the provider answers 503 to everything.
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(NumberedTokens::new("at", 3600))
            .up_to_n_times(1)
            .mount(&server).await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(ResponseTemplate::new(503).set_body_string("down for maintenance"))
            .mount(&server).await;
        app.create_connection(Some("acme"), &client_credentials_body("graph", &format!("{}/token", server.uri()))).await;
        // Past the refresher's "just refreshed" window (5 min); 50 min left.
        app.clock.advance(chrono::Duration::minutes(10));

        // A refresher run fails on it, and says which.
        let run = oauth_broker::service::refresher::run(app.broker.clone(), "manual")
            .await
            .expect("no run was in progress");
        assert_eq!((run.considered, run.refreshed, run.failed), (1, 0, 1), "{run:?}");
        assert_eq!(run.errors.len(), 1, "{run:?}");
        assert_eq!((run.errors[0].org_id.as_str(), run.errors[0].connection_name.as_str()), ("acme", "graph"));
        let conn = connection(&app, Some("acme"), "graph").await;
        assert_eq!(conn["status"], "completed", "a transient failure is not a failed connection: {conn}");
        let after_run = server.received_requests().await.unwrap().len();
        assert!(after_run > 1, "the run asked the provider");

        // After the cooldown a read asks again, fails, and serves the still-valid token.
        app.clock.advance(chrono::Duration::seconds(61));
        assert_eq!(token(&app, &app.admin_key, Some("acme"), "graph", "?min_valid_for=7200").await, "at-1");
        let after_read = server.received_requests().await.unwrap().len();
        assert!(after_read > after_run, "the read tried the provider once the cooldown was over");
        let conn = connection(&app, Some("acme"), "graph").await;
        assert_eq!(conn["status"], "completed", "{conn}");
        assert!(conn["refresh_failures"].as_i64().unwrap() > 0, "{conn}");

        // Within the next 60 s cooldown: served without asking the failing provider.
        app.clock.advance(chrono::Duration::seconds(30));
        assert_eq!(token(&app, &app.admin_key, Some("acme"), "graph", "?min_valid_for=7200").await, "at-1");
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            after_read,
            "no provider call during the cooldown"
        );
    }

    async fn a_permanent_refresh_failure_fails_the_connection_and_then_its_reads(app) {
        // Arrange: an imported grant redeemed once; then the provider revokes it.
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(NumberedTokens::new("at", 3600))
            .up_to_n_times(1)
            .mount(&server).await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_grant",
                "error_description": "Token has been revoked",
            })))
            .mount(&server).await;
        let created = app.create_connection(None, &json!({
            "connection_name": "imported",
            "oauth_flow_type": "refresh_token",
            "client_id": "client-1",
            "client_secret": "secret-1",
            "token_url": format!("{}/token", server.uri()),
            "refresh_token": "rt-1",
        })).await;
        assert_eq!(created["status"], "completed", "{created}");
        // Past the refresher's "just refreshed" window (5 min); 50 min left.
        app.clock.advance(chrono::Duration::minutes(10));

        // Act: the refresher's renewal is refused for good.
        let run = oauth_broker::service::refresher::run(app.broker.clone(), "manual")
            .await
            .expect("no run was in progress");
        assert_eq!(run.failed, 1, "{run:?}");
        let conn = connection(&app, None, "imported").await;
        assert_eq!(conn["status"], "failed", "{conn}");
        assert!(
            conn["status_message"].as_str().is_some_and(|m| m.starts_with("invalid_grant")),
            "{conn}"
        );
        assert_eq!(server.received_requests().await.unwrap().len(), 2, "invalid_grant is not retried");

        // Once the token has expired, reads say the connection failed.
        app.clock.advance(chrono::Duration::minutes(51));
        let problem = assert_refused(
            &app,
            "the token expired and the grant was revoked",
            app.admin(Method::GET, "/api/oauth/credentials/imported", None),
            503,
            "connection_unavailable",
            None,
        )
        .await;
        assert_eq!(problem["connection_status"], "failed", "{problem}");
        assert!(
            problem["status_message"].as_str().is_some_and(|m| m.starts_with("invalid_grant")),
            "{problem}"
        );
        assert_eq!(server.received_requests().await.unwrap().len(), 2, "a failed connection is not retried");
    }

    async fn a_read_with_x_workflow_id_is_recorded_on_the_dependency(app) {
        // Arrange
        let server = MockServer::start().await;
        let url = mount_numbered(&server, "cc", 3600).await;
        app.create_connection(Some("acme"), &client_credentials_body("graph", &url)).await;
        let key = app.create_key("acme-workflows", "workflow", "acme").await;
        let res = app
            .with_key(&key, Method::POST, "/api/oauth/workflows/wf-1/dependencies", Some("acme"))
            .json(&json!({"connection_name": "graph", "workflow_name": "Nightly sync"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        app.clock.advance(chrono::Duration::seconds(90));

        // Act
        let res = app
            .with_key(&key, Method::GET, "/api/oauth/credentials/graph", Some("acme"))
            .header("X-Workflow-Id", "wf-1")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);

        // Assert: written off the request's path, so wait for it briefly.
        let mut last_accessed = Value::Null;
        for _ in 0..50 {
            let res = app
                .admin(Method::GET, "/api/oauth/workflows/wf-1/dependencies", Some("acme"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let body: Value = res.json().await.unwrap();
            last_accessed = body["connections"][0]["last_accessed_at"].clone();
            if !last_accessed.is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last_accessed, "2026-01-15T09:01:30Z", "the read's time is recorded");
        // And its event, written right after.
        let mut reads = 0;
        for _ in 0..50 {
            let events = app.admin(Method::GET, "/api/oauth/connections/graph/events", Some("acme")).send().await.unwrap();
            let events: Value = events.json().await.unwrap();
            reads = events["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "credentials_read").count();
            if reads > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(reads, 1, "the read is an event of the connection");

        // A malformed workflow id is refused.
        let problem = assert_refused(
            &app,
            "a malformed X-Workflow-Id",
            app.with_key(&key, Method::GET, "/api/oauth/credentials/graph", Some("acme"))
                .header("X-Workflow-Id", "wf 1/../x"),
            400,
            "bad_request",
            None,
        )
        .await;
        assert!(!problem.to_string().contains("cc-1"), "{problem}");
    }
}

/// 1,000 reads of an expired token at once. The provider takes 200 ms; its timeout is
/// raised from the test default (700 ms) so that a loaded machine cannot turn that into
/// a timeout and a retry, which would be a second call for a reason other than the
/// one under test.
mod a_thousand_concurrent_reads_of_an_expired_token_cause_one_provider_call {
    use super::*;

    fn patient(settings: &mut oauth_broker::config::Settings) {
        settings.provider_timeout_ms = 10_000;
    }

    async fn scenario(app: TestApp) {
        // Arrange: a token that has expired; the provider takes 200 ms to answer.
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(NumberedTokens::new("at", 3600).delayed(Duration::from_millis(200)))
            .mount(&server)
            .await;
        app.create_connection(
            Some("acme"),
            &client_credentials_body("graph", &format!("{}/token", server.uri())),
        )
        .await;
        let key = app.create_key("acme-workflows", "workflow", "acme").await;
        app.clock.advance(chrono::Duration::seconds(3601));

        // Act: 1,000 reads at once.
        let reads = (0..1000).map(|_| read(&app, &key, Some("acme"), "graph", ""));
        let answers = futures::future::join_all(reads).await;

        // Assert: one refresh, and every caller got its token.
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        for (status, body) in &answers {
            *outcomes
                .entry(format!("{status} {}", body["access_token"]))
                .or_default() += 1;
        }
        let calls = server.received_requests().await.unwrap().len();
        assert_eq!(
            calls, 2,
            "the creation and exactly one refresh; answers: {outcomes:?}"
        );
        for (i, (status, body)) in answers.iter().enumerate() {
            assert_eq!(*status, 200, "read {i}: {body}");
            assert_eq!(
                body["access_token"], "at-2",
                "read {i} carries the new token"
            );
        }
    }

    #[tokio::test]
    async fn sqlite() {
        if let Some(app) = spawn_app_tuned(Backend::Sqlite, patient).await {
            scenario(app).await;
        }
    }

    #[tokio::test]
    async fn postgres() {
        if let Some(app) = spawn_app_tuned(Backend::Postgres, patient).await {
            scenario(app).await;
        }
    }
}

/// Lookups answered from memory: a replica's own writes are seen at once; another
/// replica's at once on PostgreSQL (announced), within the cache's lifetime on SQLite
/// (set to 1 s here; its default is 30 s).
mod a_replica_answers_from_memory_only_until_a_write_it_made_or_heard_of {
    use super::*;

    async fn scenario(app: TestApp) {
        // Arrange: GLOBAL `graph`, read by acme on two replicas (both remember it).
        let server = MockServer::start().await;
        let global_url = mount_numbered(&server, "global", 3600).await;
        let acme_url = mount_numbered(&server, "acme", 3600).await;
        app.create_connection(None, &client_credentials_body("graph", &global_url))
            .await;
        let replica = app.replica().await;
        let key = app.create_key("acme-workflows", "workflow", "acme").await;
        for service in [&app, &replica] {
            assert_eq!(
                token(service, &key, Some("acme"), "graph", "").await,
                "global-1"
            );
        }
        // The documented bound, plus room for a loaded machine: on PostgreSQL replicas
        // announce their writes, so it is far below the cache's lifetime (30 s); two
        // processes on one SQLite file see each other's writes within its lifetime.
        let bound = match app.backend {
            Backend::Postgres => Duration::from_secs(2),
            Backend::Sqlite => app.settings.credentials_cache() + Duration::from_secs(2),
        };

        // acme gets its own `graph` on the first replica: served there at once, and on
        // the other within the cache TTL.
        app.create_connection(Some("acme"), &client_credentials_body("graph", &acme_url))
            .await;
        assert_eq!(
            token(&app, &key, Some("acme"), "graph", "").await,
            "acme-1",
            "the writing replica"
        );
        let started = std::time::Instant::now();
        while token(&replica, &key, Some("acme"), "graph", "").await != "acme-1" {
            assert!(
                started.elapsed() < bound,
                "the other replica still serves GLOBAL after {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            token(&replica, &key, Some("acme"), "graph", "").await,
            "acme-1"
        );

        // Deleting acme's on the first replica: GLOBAL's again at once there.
        let res = app
            .admin(Method::DELETE, "/api/oauth/connections/graph", Some("acme"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "deleting acme's graph");
        assert_eq!(
            token(&app, &key, Some("acme"), "graph", "").await,
            "global-1",
            "the writing replica"
        );
        // Deleting GLOBAL's: nothing for acme at once there, and within the TTL on the other.
        let res = app
            .admin(Method::DELETE, "/api/oauth/connections/graph", None)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "deleting GLOBAL's graph");
        let (status, body) = read(&app, &key, Some("acme"), "graph", "").await;
        assert_eq!(
            status, 404,
            "the writing replica forgets GLOBAL's graph at once: {body}"
        );
        let started = std::time::Instant::now();
        loop {
            let (status, body) = read(&replica, &key, Some("acme"), "graph", "").await;
            if status == 404 {
                break;
            }
            assert_eq!(status, 200, "{body}");
            assert!(
                started.elapsed() < bound,
                "the other replica still serves a deleted connection after {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn sqlite() {
        let short = |s: &mut oauth_broker::config::Settings| s.credentials_cache_ms = 1000;
        if let Some(app) = spawn_app_tuned(Backend::Sqlite, short).await {
            scenario(app).await;
        }
    }

    #[tokio::test]
    async fn postgres() {
        if let Some(app) = spawn_app_tuned(Backend::Postgres, |_| {}).await {
            scenario(app).await;
        }
    }
}

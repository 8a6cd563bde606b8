//! The refresher: which connections a run renews, its status and run routes, runs back
//! to back, and a run over more connections than one page holds.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::on_both_backends;
use crate::support::seed::{self, Due};

/// `GET /refresh/status` with the admin key, asserting 200.
async fn status(app: &TestApp) -> Value {
    let res = app
        .admin(Method::GET, "/api/oauth/refresh/status", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Polls the status until `done` holds (10 s at most) and returns it.
async fn status_until(app: &TestApp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = status(app).await;
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {what}; last status: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// Inserts a completed client-credentials connection through the store, its token
/// expiring in one hour: what a refresher run finds due, without a provider call.
async fn insert_due(app: &TestApp, org: &str, name: &str, token_url: &str) {
    let due = Due {
        org,
        name,
        token_url,
        client_secret: "secret-1",
        access_token: "at-0",
    };
    seed::insert_due(&app.broker.store, &due, app.broker.clock.now()).await;
}

on_both_backends! {
    async fn a_run_refreshes_every_due_connection_of_every_org_and_only_those(app) {
        // Arrange: due in orgs a and b (1 h left, threshold 4 h), not due (10 h), failed.
        let server = MockServer::start().await;
        let a_url = mount_numbered(&server, "a", 3600).await;
        let b_url = mount_numbered(&server, "b", 3600).await;
        let later_url = mount_numbered(&server, "later", 36_000).await;
        Mock::given(method("POST")).and(path("/broken"))
            .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client"})))
            .mount(&server).await;
        app.create_connection(Some("a"), &client_credentials_body("graph", &a_url)).await;
        app.create_connection(Some("b"), &client_credentials_body("graph", &b_url)).await;
        app.create_connection(None, &client_credentials_body("later", &later_url)).await;
        let broken = app.create_connection(Some("a"), &client_credentials_body("broken", &format!("{}/broken", server.uri()))).await;
        assert_eq!(broken["status"], "failed", "{broken}");
        app.clock.advance(chrono::Duration::minutes(10));

        // Act
        let res = app.admin(Method::POST, "/api/oauth/refresh/run", None).send().await.unwrap();
        assert_eq!(res.status(), 202);
        let body = status_until(&app, "the run to finish", |s| !s["last_run"].is_null()).await;

        // Assert: the run's record.
        let run = &body["last_run"];
        assert_eq!(run["trigger"], "manual", "{run}");
        assert_eq!(run["started_at"], "2026-01-15T09:10:00Z", "{run}");
        assert!(run["finished_at"].is_string(), "{run}");
        assert_eq!(
            (&run["considered"], &run["refreshed"], &run["failed"], &run["skipped"]),
            (&json!(2), &json!(2), &json!(0), &json!(0)),
            "{run}"
        );
        assert_eq!(run["errors"], json!([]), "{run}");
        status_until(&app, "`running` to clear", |s| s["running"].is_null()).await;

        // Each due connection once more, nothing else.
        assert_eq!(calls_to(&server, "/a").await, 2, "org a's is refreshed");
        assert_eq!(calls_to(&server, "/b").await, 2, "org b's is refreshed");
        assert_eq!(calls_to(&server, "/later").await, 1, "a token valid for 10 h is not due");
        assert_eq!(calls_to(&server, "/broken").await, 1, "a failed connection waits for a person");
        for org in ["a", "b"] {
            let conn = connection(&app, Some(org), "graph").await;
            assert_eq!(conn["last_refresh_at"], "2026-01-15T09:10:00Z", "{conn}");
            assert_eq!(conn["token_expires_at"], "2026-01-15T10:10:00Z", "{conn}");
        }
        assert_eq!(connection(&app, Some("a"), "broken").await["status"], "failed");
    }

    async fn a_run_requested_during_another_is_busy_and_only_global_admins_may_ask(app) {
        // A run in progress (held by the test).
        let state = app.broker.clone();
        let guard = oauth_broker::service::refresher::try_begin(&state).expect("no run in progress yet");
        let problem = assert_refused(
            &app,
            "a run while one is in progress",
            app.admin(Method::POST, "/api/oauth/refresh/run", None),
            409,
            "busy",
            None,
        )
        .await;
        assert!(problem["detail"].is_string(), "{problem}");
        drop(guard);
        let res = app.admin(Method::POST, "/api/oauth/refresh/run", None).send().await.unwrap();
        assert_eq!(res.status(), 202, "once it ended, a run starts");
        status_until(&app, "the run to finish", |s| !s["last_run"].is_null() && s["running"].is_null()).await;

        // Both routes need an admin key of every org.
        let acme_admin = app.create_key("acme-admin", "admin", "acme").await;
        let all_workflows = app.create_key("all-workflows", "workflow", "*").await;
        for (who, key) in [("an acme admin", &acme_admin), ("a workflow key of every org", &all_workflows)] {
            for (method, route) in [(Method::GET, "/api/oauth/refresh/status"), (Method::POST, "/api/oauth/refresh/run")] {
                assert_refused(
                    &app,
                    &format!("{who} on {method} {route}"),
                    app.with_key(key, method.clone(), route, None),
                    403,
                    "forbidden",
                    None,
                )
                .await;
            }
        }
        assert_refused(
            &app,
            "the status without a key",
            app.client.get(app.url("/api/oauth/refresh/status")),
            401,
            "unauthorized",
            None,
        )
        .await;
    }

    async fn a_second_scheduled_run_in_one_cycle_does_not_refresh_again_but_a_manual_run_does(app) {
        // Created at 09:00 (a token valid 1 h, inside the 4 h threshold: always due).
        let server = MockServer::start().await;
        let url = mount_numbered(&server, "cc", 3600).await;
        app.create_connection(None, &client_credentials_body("graph", &url)).await;
        // 09:40, in the cycle of the 09:30 tick.
        app.clock.advance(chrono::Duration::minutes(40));
        let broker = app.broker.clone();

        let first = oauth_broker::service::refresher::run(broker.clone(), "schedule").await.expect("first run starts");
        assert_eq!((first.considered, first.refreshed, first.skipped, first.failed), (1, 1, 0, 0), "{first:?}");
        assert_eq!(calls_to(&server, "/cc").await, 2);

        // 09:41: still due by expiry, but refreshed in this cycle already: the run does
        // not even claim it.
        app.clock.advance(chrono::Duration::minutes(1));
        let second = oauth_broker::service::refresher::run(broker.clone(), "schedule").await.expect("second run starts");
        assert_eq!((second.considered, second.refreshed, second.skipped, second.failed), (0, 0, 0, 0), "{second:?}");
        assert_eq!(calls_to(&server, "/cc").await, 2, "no provider call for what this cycle refreshed");

        // 09:42: a run started by hand refreshes what is due and was not refreshed since it began.
        app.clock.advance(chrono::Duration::minutes(1));
        let manual = oauth_broker::service::refresher::run(broker, "manual").await.expect("manual run starts");
        assert_eq!((manual.considered, manual.refreshed, manual.skipped, manual.failed), (1, 1, 0, 0), "{manual:?}");
        assert_eq!(calls_to(&server, "/cc").await, 3);
    }

    async fn a_run_started_by_hand_right_after_creation_refreshes_the_connection(app) {
        // A client-credentials connection fetched its first token on creation, at 09:00.
        let server = MockServer::start().await;
        let url = mount_numbered(&server, "cc", 3600).await;
        app.create_connection(None, &client_credentials_body("graph", &url)).await;
        app.clock.advance(chrono::Duration::seconds(1));

        let run = oauth_broker::service::refresher::run(app.broker.clone(), "manual").await.expect("run starts");

        assert_eq!((run.considered, run.refreshed, run.skipped, run.failed), (1, 1, 0, 0), "{run:?}");
        assert_eq!(calls_to(&server, "/cc").await, 2, "the run called the provider");
        assert_eq!(connection(&app, None, "graph").await["last_refresh_at"], "2026-01-15T09:00:01Z");
    }

    async fn one_run_refreshes_more_due_connections_than_fit_on_a_page(app) {
        // Arrange: 1,200 due connections (pages hold 500), over three orgs.
        let server = MockServer::start().await;
        let url = mount_numbered(&server, "bulk", 3600).await;
        futures::stream::iter(0..1200)
            .map(|i| {
                let url = &url;
                let app = &app;
                async move { insert_due(app, &format!("org-{}", i % 3), &format!("c-{i:04}"), url).await }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;

        // Act
        let run = oauth_broker::service::refresher::run(app.broker.clone(), "manual")
            .await
            .expect("no run in progress");

        // Assert
        assert_eq!((run.considered, run.refreshed, run.failed, run.skipped), (1200, 1200, 0, 0), "errors: {:?}", run.errors);
        assert_eq!(calls_to(&server, "/bulk").await, 1200, "one provider call per connection");
    }
}

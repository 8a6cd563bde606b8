//! The security review's findings (issue 13), each held to its fix on SQLite and
//! PostgreSQL: unbounded provider replies, write-only secrets read back by moving the URL
//! they are sent to, provider text that reflects the request's secrets, reads turned into
//! unbounded writes, authorization links that outlive a newer authorization, control
//! characters in free text, `return_to` tricks, duplicated callback parameters, invented
//! HTTP methods as metric labels, and the docs page's policy.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::*;
use crate::on_both_backends;
use crate::support::hostile::Hostile;

async fn connection(app: &TestApp, org: Option<&str>, name: &str) -> Value {
    let res = app
        .admin(Method::GET, &format!("/api/oauth/connections/{name}"), org)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "reading connection {name}");
    res.json().await.unwrap()
}

async fn events(app: &TestApp, org: Option<&str>, name: &str) -> Vec<Value> {
    let res = app
        .admin(
            Method::GET,
            &format!("/api/oauth/connections/{name}/events?limit=500"),
            org,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["events"].as_array().unwrap().clone()
}

async fn authorize(app: &TestApp, name: &str) -> (u16, Value) {
    let res = app
        .admin(
            Method::POST,
            &format!("/api/oauth/connections/{name}/authorize"),
            None,
        )
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

async fn callback(app: &TestApp, name: &str, query: &str) -> (u16, String) {
    let res = app
        .client
        .get(app.url(&format!("/api/oauth/callback/{name}?{query}")))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

fn token_reply(access: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": access, "token_type": "Bearer", "expires_in": 3600,
    }))
}

/// A provider whose error text repeats the request's form (some do).
fn reflecting(request: &Request) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(json!({
        "error": "invalid_grant",
        "error_description": format!("bad request: {}", String::from_utf8_lossy(&request.body)),
    }))
}

on_both_backends! {
    async fn a_token_reply_past_one_mib_fails_cleanly_and_an_endless_one_too(app) {
        let server = MockServer::start().await;
        let huge = format!("{{\"access_token\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
        Mock::given(method("POST")).and(path("/huge"))
            .respond_with(ResponseTemplate::new(200).insert_header("content-type", "application/json").set_body_string(huge))
            .mount(&server).await;
        let endless = Hostile::endless().await;

        for (name, url) in [("huge", format!("{}/huge", server.uri())), ("endless", format!("{}/token", endless.url))] {
            let created = app.create_connection(None, &client_credentials_body(name, &url)).await;
            assert_eq!(created["status"], "failed", "{name}: {created}");
            let message = created["status_message"].as_str().unwrap_or_default();
            assert!(message.contains("larger than 1024 KiB"), "{name}: {message}");
        }
    }

    async fn moving_where_the_client_secret_goes_needs_the_secret_in_the_same_request(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(token_reply("at")).mount(&server).await;
        app.create_connection(None, &client_credentials_body("graph", &format!("{}/token", server.uri()))).await;
        let elsewhere = format!("{}/attacker", server.uri());

        let problem = assert_refused(
            &app,
            "token_url moved without the secret",
            app.admin(Method::PATCH, "/api/oauth/connections/graph", None).json(&json!({"token_url": elsewhere})),
            422,
            "validation_failed",
            Some("client_secret"),
        ).await;
        assert!(problem["errors"]["client_secret"][0].as_str().unwrap().contains("token_url"), "{problem}");

        // With the secret again, the change is the admin's to make.
        let res = app.admin(Method::PATCH, "/api/oauth/connections/graph", None)
            .json(&json!({"token_url": elsewhere, "client_secret": "the-secret-again"}))
            .send().await.unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        // Other edits need no secret.
        let res = app.admin(Method::PATCH, "/api/oauth/connections/graph", None)
            .json(&json!({"test_url": "https://api.example.com/me"}))
            .send().await.unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    async fn a_provider_reflecting_the_request_never_shows_its_secrets_and_workflow_keys_get_the_broker_s_words(app) {
        // Arrange: a refresh-token connection whose provider echoes the form it received.
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token")).respond_with(token_reply("at-1")).up_to_n_times(1).mount(&server).await;
        Mock::given(method("POST")).and(path("/token")).respond_with(reflecting).mount(&server).await;
        let created = app.create_connection(None, &json!({
            "connection_name": "echo",
            "oauth_flow_type": "refresh_token",
            "client_id": "client-1",
            "client_secret": "s3cret-client-value",
            "token_auth_method": "client_secret_post",
            "token_url": format!("{}/token", server.uri()),
            "refresh_token": "rt-imported-value",
        })).await;
        assert_eq!(created["status"], "completed", "{created}");
        let workflow = app.create_key("wf", "workflow", "GLOBAL").await;

        // Act: near expiry, an admin forces a refresh; the provider refuses, reflecting
        // the form. Then both keys read.
        app.clock.advance(chrono::Duration::seconds(3500));
        let res = app.admin(Method::POST, "/api/oauth/connections/echo/refresh", None).send().await.unwrap();
        assert_eq!(res.status(), 502);
        let forced: Value = res.json().await.unwrap();
        let res = app.with_key(&workflow, Method::GET, "/api/oauth/credentials/echo", None).send().await.unwrap();
        assert_eq!(res.status(), 503);
        let for_workflow: Value = res.json().await.unwrap();
        let res = app.admin(Method::GET, "/api/oauth/credentials/echo", None).send().await.unwrap();
        assert_eq!(res.status(), 503);
        let for_admin: Value = res.json().await.unwrap();

        // Assert: no secret anywhere; the admin sees the provider's (redacted) words, the
        // workflow key the broker's.
        let conn = connection(&app, None, "echo").await;
        let everything = format!("{forced}{for_workflow}{for_admin}{conn}{:?}{}", events(&app, None, "echo").await, captured_logs());
        for secret in ["s3cret-client-value", "rt-imported-value"] {
            assert!(!everything.contains(secret), "{secret} reached an answer, an event or a log");
        }
        assert!(conn["status_message"].as_str().unwrap().contains("[redacted]"), "{conn}");
        assert_eq!(for_workflow["connection_status"], "failed", "{for_workflow}");
        assert!(!for_workflow.to_string().contains("bad request"), "provider text for a workflow key: {for_workflow}");
        assert!(for_admin["status_message"].as_str().unwrap().contains("bad request"), "{for_admin}");
    }

    async fn reads_are_recorded_only_on_registered_dependencies_and_never_per_invented_workflow(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(token_reply("at")).mount(&server).await;
        app.create_connection(Some("acme"), &client_credentials_body("graph", &format!("{}/token", server.uri()))).await;
        let key = app.create_key("acme-wf", "workflow", "acme").await;
        let register = app.with_key(&key, Method::POST, "/api/oauth/workflows/known/dependencies", Some("acme"))
            .json(&json!({"connection_name": "graph"})).send().await.unwrap();
        assert_eq!(register.status(), 201);

        // 200 reads, each claiming a new workflow, and one from the registered workflow.
        let invented = (0..200).map(|i| {
            app.with_key(&key, Method::GET, "/api/oauth/credentials/graph", Some("acme"))
                .header("X-Workflow-Id", format!("invented-{i}"))
                .send()
        });
        for res in futures::future::join_all(invented).await {
            assert_eq!(res.unwrap().status(), 200);
        }
        let res = app.with_key(&key, Method::GET, "/api/oauth/credentials/graph", Some("acme"))
            .header("X-Workflow-Id", "known").send().await.unwrap();
        assert_eq!(res.status(), 200);
        tokio::time::sleep(Duration::from_millis(500)).await;

        let reads: Vec<Value> = events(&app, Some("acme"), "graph").await.into_iter()
            .filter(|e| e["kind"] == "credentials_read").collect();
        assert!(reads.len() <= 1, "only the registered workflow's read may be recorded: {reads:?}");
        let deps = app.db.query_texts("select workflow_id from workflow_dependencies").await;
        assert_eq!(deps, vec![vec!["known".to_owned()]], "no dependency is invented by a read");
    }

    async fn an_older_authorization_link_dies_when_a_newer_one_completes_and_links_are_capped(app) {
        // Arrange: two links for one connection.
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token")).respond_with(token_reply("at")).mount(&server).await;
        app.create_connection(None, &json!({
            "connection_name": "web",
            "oauth_flow_type": "authorization_code",
            "client_id": "c", "client_secret": "s",
            "authorization_url": "https://login.example.com/authorize",
            "token_url": format!("{}/token", server.uri()),
        })).await;
        let (_, older) = authorize(&app, "web").await;
        let (_, newer) = authorize(&app, "web").await;

        // Act: the newer completes; then the older link is used.
        let (status, page) = callback(&app, "web", &format!("code=c2&state={}", newer["state"].as_str().unwrap())).await;
        assert_eq!(status, 200, "{page}");
        let (status, page) = callback(&app, "web", &format!("code=c1&state={}", older["state"].as_str().unwrap())).await;

        // Assert
        assert_eq!(status, 400, "{page}");
        assert!(page.contains("unknown or was already used"), "{page}");
        assert_eq!(calls_to(&server, "/token").await, 1, "the older code was never exchanged");

        // At most ten links per connection, and concurrent starts all succeed.
        let starts = futures::future::join_all((0..25).map(|_| authorize(&app, "web"))).await;
        for (status, body) in &starts {
            assert_eq!(*status, 200, "{body}");
        }
        let pending = app.db.query_texts("select count(*) from pending_authorizations").await;
        assert_eq!(pending, vec![vec!["10".to_owned()]]);
    }

    async fn control_characters_in_free_text_are_refused_naming_the_field(app) {
        let key = app.create_key("wf", "workflow", "GLOBAL").await;
        let mut conn = auth_code_connection_body("ctl");
        conn["client_id"] = json!("client\u{0}id");
        let mut params = auth_code_connection_body("ctl");
        params["extra_token_params"] = json!({"audience": "api\u{0}x"});
        let cases: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
            ("a NUL in client_id", app.admin(Method::POST, "/api/oauth/connections", None).json(&conn), "client_id"),
            ("a NUL in a parameter value", app.admin(Method::POST, "/api/oauth/connections", None).json(&params), "extra_token_params.audience"),
            (
                "a newline in workflow_name",
                app.with_key(&key, Method::POST, "/api/oauth/workflows/wf-1/dependencies", None)
                    .json(&json!({"connection_name": "ctl", "workflow_name": "nightly\nsync"})),
                "workflow_name",
            ),
            (
                "a NUL in a session label",
                app.with_key(&key, Method::POST, "/api/oauth/obo-sessions", None)
                    .json(&json!({"connection_name": "ctl", "assertion": "x.y.z", "label": "a\u{0}b"})),
                "label",
            ),
        ];
        for (reason, request, field) in cases {
            assert_refused(&app, reason, request, 422, "validation_failed", Some(field)).await;
        }
    }

    async fn return_to_refuses_user_information_and_other_schemes(app) {
        app.create_connection(None, &auth_code_connection_body("web")).await;
        for (reason, return_to) in [
            ("user information before an allowed host", "https://evil.example@app.example.com/done"),
            ("a blob URL of an allowed origin", "blob:https://app.example.com/8d1d4c5e"),
            ("a javascript URL", "javascript:alert(1)"),
        ] {
            assert_refused(
                &app,
                reason,
                app.admin(Method::POST, "/api/oauth/connections/web/authorize", None).json(&json!({"return_to": return_to})),
                422,
                "validation_failed",
                Some("return_to"),
            ).await;
        }
    }

    async fn a_parameter_twice_in_the_callback_gets_the_page_not_a_bare_error(app) {
        let (status, page) = callback(&app, "web", "state=a&state=b&code=c").await;
        assert_eq!(status, 400);
        assert!(page.contains("<!doctype html>") && page.contains("more than once"), "{page}");
        let (status, page) = callback(&app, "web", "code=a&code=b&state=c").await;
        assert_eq!(status, 400);
        assert!(page.contains("more than once"), "{page}");
    }

    async fn invented_methods_are_one_label_and_never_grow_the_metrics(app) {
        // Methods nobody uses, each a 405 or 404.
        for i in 0..200 {
            let method = Method::from_bytes(format!("INVENTED{i}{}", "X".repeat(2000)).as_bytes()).unwrap();
            let res = app.client.request(method, app.url("/healthz")).send().await.unwrap();
            assert!(res.status().is_client_error());
        }
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(!metrics.contains("INVENTED"), "an invented method became a label");
        assert!(metrics.contains("method=\"other\""), "{metrics}");
        assert!(metrics.len() < 64 * 1024, "/metrics is {} bytes", metrics.len());
    }

    async fn the_docs_page_has_a_strict_policy(app) {
        let res = app.client.get(app.url("/docs/")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let policy = res.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        for directive in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"] {
            assert!(policy.contains(directive), "{directive} missing from {policy:?}");
        }
        assert!(!policy.contains("script-src 'self' 'unsafe"), "{policy}");
    }
}

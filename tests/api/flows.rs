//! Grants against a scripted token endpoint (wiremock): the wire format, retries,
//! timeouts, error classes, odd token responses, and attacks on the callback.

use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::*;
use crate::on_both_backends;

fn token_reply(access: &str, refresh: Option<&str>, expires_in: Option<u64>) -> ResponseTemplate {
    let mut body = json!({"access_token": access, "token_type": "bearer"});
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
    }
    if let Some(e) = expires_in {
        body["expires_in"] = json!(e);
    }
    ResponseTemplate::new(200).set_body_json(body)
}

fn form(req: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect()
}

fn form_value(req: &Request, key: &str) -> Option<String> {
    form(req)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

async fn connection(app: &TestApp, org: Option<&str>, name: &str) -> Value {
    let res = app
        .admin(Method::GET, &format!("/api/oauth/connections/{name}"), org)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn events(app: &TestApp, org: Option<&str>, name: &str) -> Vec<String> {
    let res = app
        .admin(
            Method::GET,
            &format!("/api/oauth/connections/{name}/events"),
            org,
        )
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn auth_code_body(name: &str, server: &MockServer) -> Value {
    json!({
        "connection_name": name,
        "oauth_flow_type": "authorization_code",
        "client_id": "web-client",
        "client_secret": "web-secret",
        "authorization_url": format!("{}/authorize", server.uri()),
        "token_url": format!("{}/token", server.uri()),
        "scopes": ["openid", "offline_access"],
        "extra_authorization_params": {"prompt": "consent"},
    })
}

async fn authorize(app: &TestApp, org: Option<&str>, name: &str) -> (String, String) {
    let res = app
        .admin(
            Method::POST,
            &format!("/api/oauth/connections/{name}/authorize"),
            org,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    (
        body["authorization_url"].as_str().unwrap().to_owned(),
        body["state"].as_str().unwrap().to_owned(),
    )
}

async fn callback(app: &TestApp, name: &str, query: &[(&str, &str)]) -> (u16, String) {
    let res = app
        .client
        .get(app.url(&format!("/api/oauth/callback/{name}")))
        .query(query)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

on_both_backends! {
    async fn client_credentials_sends_the_grant_with_basic_auth_and_joined_scopes(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .and(header("authorization", format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("client-1:secret-1")).as_str()))
            .respond_with(token_reply("at-1", None, Some(3600)))
            .expect(1)
            .mount(&server).await;
        let created = app.create_connection(None, &client_credentials_body("cc", &format!("{}/token", server.uri()))).await;
        assert_eq!(created["status"], "completed", "{created}");
        assert_eq!(created["token_expires_at"], "2026-01-15T10:00:00Z");
        let requests = server.received_requests().await.unwrap();
        assert_eq!(form_value(&requests[0], "grant_type").as_deref(), Some("client_credentials"));
        assert_eq!(form_value(&requests[0], "scope").as_deref(), Some("read write"));
        assert_eq!(form_value(&requests[0], "client_secret"), None, "basic auth keeps the secret out of the body");
        assert_eq!(events(&app, None, "cc").await, ["status_changed", "token_acquired", "created"]);
    }

    async fn client_secret_post_puts_the_credentials_in_the_body_with_extra_params(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .and(body_string_contains("client_secret=secret-1"))
            .and(body_string_contains("audience=https%3A%2F%2Fapi.example.com"))
            .respond_with(token_reply("at-1", None, Some(60)))
            .expect(1)
            .mount(&server).await;
        let mut body = client_credentials_body("post", &format!("{}/token", server.uri()));
        body["token_auth_method"] = json!("client_secret_post");
        body["extra_token_params"] = json!({"audience": "https://api.example.com"});
        let created = app.create_connection(None, &body).await;
        assert_eq!(created["status"], "completed", "{created}");
    }

    async fn a_server_error_is_retried_and_then_succeeds(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
            .up_to_n_times(1)
            .mount(&server).await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("at-2", None, Some(3600)))
            .mount(&server).await;
        let created = app.create_connection(None, &client_credentials_body("retry", &format!("{}/token", server.uri()))).await;
        assert_eq!(created["status"], "completed", "{created}");
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    async fn a_hanging_provider_times_out_after_three_attempts(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("late", None, Some(3600)).set_delay(Duration::from_secs(5)))
            .mount(&server).await;
        let started = std::time::Instant::now();
        let created = app.create_connection(None, &client_credentials_body("hang", &format!("{}/token", server.uri()))).await;
        assert!(started.elapsed() < Duration::from_secs(5), "every attempt is bounded by the timeout");
        assert_eq!(created["status"], "failed");
        assert!(created["status_message"].as_str().unwrap().contains("did not answer in time"), "{created}");
        assert_eq!(server.received_requests().await.unwrap().len(), 3);
    }

    async fn a_refresh_that_timed_out_is_not_replayed_because_the_provider_may_have_rotated_it(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("late", Some("rt-next"), Some(3600)).set_delay(Duration::from_secs(5)))
            .mount(&server).await;
        let created = app.create_connection(None, &json!({
            "connection_name": "slow-rotation",
            "oauth_flow_type": "refresh_token",
            "client_id": "c",
            "client_secret": "s",
            "token_url": format!("{}/token", server.uri()),
            "refresh_token": "rt-once",
        })).await;
        assert_eq!(created["status"], "failed");
        assert!(created["status_message"].as_str().unwrap().contains("did not answer in time"), "{created}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "a used refresh token is never sent twice");
    }

    async fn invalid_grant_is_permanent_and_not_retried(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant", "error_description": "Token has been revoked"})))
            .mount(&server).await;
        let created = app.create_connection(None, &json!({
            "connection_name": "imported",
            "oauth_flow_type": "refresh_token",
            "client_id": "c",
            "client_secret": "s",
            "token_url": format!("{}/token", server.uri()),
            "refresh_token": "rt-revoked",
        })).await;
        assert_eq!(created["status"], "failed");
        assert_eq!(created["status_message"], "invalid_grant: Token has been revoked");
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "4xx is not retried");
        let requests = server.received_requests().await.unwrap();
        assert_eq!(form_value(&requests[0], "grant_type").as_deref(), Some("refresh_token"));
        assert_eq!(form_value(&requests[0], "refresh_token").as_deref(), Some("rt-revoked"));
    }

    async fn a_reply_without_expires_in_is_given_the_default_lifetime(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("at", None, None))
            .mount(&server).await;
        let created = app.create_connection(None, &client_credentials_body("noexp", &format!("{}/token", server.uri()))).await;
        assert_eq!(created["status"], "completed");
        assert_eq!(created["token_expires_at"], "2026-01-15T10:00:00Z", "one hour, so the refresher still renews it");
    }

    async fn expires_in_as_a_string_and_a_201_are_accepted(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"access_token": "at", "token_type": "Bearer", "expires_in": "120"})))
            .mount(&server).await;
        let created = app.create_connection(None, &client_credentials_body("lenient", &format!("{}/token", server.uri()))).await;
        assert_eq!(created["status"], "completed", "{created}");
        assert_eq!(created["token_expires_at"], "2026-01-15T09:02:00Z");
    }

    async fn a_refresh_without_a_new_refresh_token_keeps_the_old_one_and_a_new_one_replaces_it(app) {
        let server = MockServer::start().await;
        // Redeeming rt-1 rotates to rt-2; refreshing with rt-2 returns no refresh token.
        Mock::given(method("POST")).and(path("/token")).and(body_string_contains("refresh_token=rt-1"))
            .respond_with(token_reply("at-1", Some("rt-2"), Some(3600)))
            .expect(1).mount(&server).await;
        Mock::given(method("POST")).and(path("/token")).and(body_string_contains("refresh_token=rt-2"))
            .respond_with(token_reply("at-2", None, Some(3600)))
            .expect(2).mount(&server).await;
        let created = app.create_connection(None, &json!({
            "connection_name": "rot",
            "oauth_flow_type": "refresh_token",
            "client_id": "c",
            "client_secret": "s",
            "token_url": format!("{}/token", server.uri()),
            "refresh_token": "rt-1",
        })).await;
        assert_eq!(created["status"], "completed", "{created}");
        for _ in 0..2 {
            let res = app.admin(Method::POST, "/api/oauth/connections/rot/refresh", None).send().await.unwrap();
            assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        }
        let conn = connection(&app, None, "rot").await;
        assert_eq!(conn["has_refresh_token"], true);
    }

    async fn malformed_json_and_html_error_pages_fail_without_echoing_the_body(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/bad-json"))
            .respond_with(ResponseTemplate::new(200).insert_header("content-type", "application/json").set_body_string("{\"access_token\": \"leaky-token\""))
            .mount(&server).await;
        Mock::given(method("POST")).and(path("/html"))
            .respond_with(ResponseTemplate::new(502).insert_header("content-type", "text/html").set_body_string("<html>Bad gateway secret-page</html>"))
            .mount(&server).await;
        let bad = app.create_connection(None, &client_credentials_body("badjson", &format!("{}/bad-json", server.uri()))).await;
        assert_eq!(bad["status"], "failed");
        let message = bad["status_message"].as_str().unwrap();
        assert!(message.contains("not a valid token response") && !message.contains("leaky"), "{message}");
        let html = app.create_connection(None, &client_credentials_body("html", &format!("{}/html", server.uri()))).await;
        assert_eq!(html["status"], "failed");
        let message = html["status_message"].as_str().unwrap();
        assert!(message.contains("HTTP 502") && !message.contains("secret-page"), "{message}");
        let html_calls = server.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/html").count();
        assert_eq!(html_calls, 3, "a 5xx is retried");
    }

    async fn too_many_requests_honours_retry_after(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
            .up_to_n_times(1).mount(&server).await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("at", None, Some(3600)))
            .mount(&server).await;
        let started = std::time::Instant::now();
        let created = app.create_connection(None, &client_credentials_body("limited", &format!("{}/token", server.uri()))).await;
        assert_eq!(created["status"], "completed");
        assert!(started.elapsed() >= Duration::from_millis(950), "waited for Retry-After");
    }

    async fn the_authorization_code_flow_uses_pkce_and_the_exact_redirect_uri(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("at-code", Some("rt-code"), Some(3600)))
            .mount(&server).await;
        app.create_connection(Some("acme"), &auth_code_body("web", &server)).await;
        let (authorization_url, state) = authorize(&app, Some("acme"), "web").await;
        assert!(state.len() >= 43, "at least 256 bits of state");
        let url = url::Url::parse(&authorization_url).unwrap();
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["state"], state);
        assert_eq!(q["scope"], "openid offline_access");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["redirect_uri"], format!("{}/api/oauth/callback/web", app.address));
        assert_eq!(connection(&app, Some("acme"), "web").await["status"], "waiting_callback");

        let (status, page) = callback(&app, "web", &[("code", "the-code"), ("state", &state)]).await;
        assert_eq!(status, 200, "{page}");
        assert!(!page.contains("at-code"), "no token on the page");
        let requests = server.received_requests().await.unwrap();
        let verifier = form_value(&requests[0], "code_verifier").unwrap();
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        assert_eq!(challenge, q["code_challenge"], "the verifier matches the S256 challenge");
        assert_eq!(form_value(&requests[0], "redirect_uri").unwrap(), q["redirect_uri"]);
        assert_eq!(form_value(&requests[0], "code").as_deref(), Some("the-code"));
        let conn = connection(&app, Some("acme"), "web").await;
        assert_eq!(conn["status"], "completed");
        assert_eq!(conn["has_refresh_token"], true);
    }

    async fn a_callback_with_an_unknown_expired_or_foreign_state_is_refused(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("at", Some("rt"), Some(3600)))
            .mount(&server).await;
        app.create_connection(None, &auth_code_body("one", &server)).await;
        app.create_connection(None, &auth_code_body("two", &server)).await;

        let (status, page) = callback(&app, "one", &[("code", "c"), ("state", "made-up")]).await;
        assert_eq!(status, 400);
        assert!(page.contains("unknown or was already used"), "{page}");

        let (_, state) = authorize(&app, None, "one").await;
        app.clock.advance(chrono::Duration::minutes(11));
        let (status, page) = callback(&app, "one", &[("code", "c"), ("state", &state)]).await;
        assert_eq!(status, 400);
        assert!(page.contains("expired"), "{page}");

        let (_, state) = authorize(&app, None, "one").await;
        let (status, page) = callback(&app, "two", &[("code", "c"), ("state", &state)]).await;
        assert_eq!(status, 400);
        assert!(page.contains("another connection"), "{page}");
        assert_ne!(connection(&app, None, "two").await["status"], "completed");
        assert_ne!(connection(&app, None, "one").await["status"], "completed");
        assert!(server.received_requests().await.unwrap().is_empty(), "no code was exchanged");
    }

    async fn a_state_is_bound_to_the_org_that_asked_for_it(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("at", Some("rt"), Some(3600)))
            .mount(&server).await;
        app.create_connection(Some("org-a"), &auth_code_body("same", &server)).await;
        app.create_connection(Some("org-b"), &auth_code_body("same", &server)).await;
        let (_, state) = authorize(&app, Some("org-a"), "same").await;
        let (status, _) = callback(&app, "same", &[("code", "c"), ("state", &state)]).await;
        assert_eq!(status, 200);
        assert_eq!(connection(&app, Some("org-a"), "same").await["status"], "completed");
        assert_eq!(connection(&app, Some("org-b"), "same").await["status"], "not_connected");
    }

    async fn a_replayed_state_succeeds_exactly_once_under_concurrency(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("at", Some("rt"), Some(3600)).set_delay(Duration::from_millis(50)))
            .mount(&server).await;
        app.create_connection(None, &auth_code_body("race", &server)).await;
        let (_, state) = authorize(&app, None, "race").await;
        let query = [("code", "c"), ("state", state.as_str())];
        let attempts = (0..8).map(|_| callback(&app, "race", &query));
        let results = futures::future::join_all(attempts).await;
        let ok = results.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(ok, 1, "exactly one callback wins: {:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "the code is exchanged once");
    }

    async fn a_denied_consent_fails_the_connection_and_the_page_escapes_provider_text(app) {
        let server = MockServer::start().await;
        app.create_connection(None, &auth_code_body("deny", &server)).await;
        let (_, state) = authorize(&app, None, "deny").await;
        let (status, page) = callback(&app, "deny", &[
            ("error", "access_denied"),
            ("error_description", "<script>alert(1)</script>"),
            ("state", &state),
        ]).await;
        assert_eq!(status, 400);
        assert!(!page.contains("<script>"), "provider text is escaped: {page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        let conn = connection(&app, None, "deny").await;
        assert_eq!(conn["status"], "failed");
        assert!(conn["status_message"].as_str().unwrap().starts_with("access_denied"), "{conn}");
        assert!(events(&app, None, "deny").await.contains(&"callback_failed".to_owned()));
    }

    async fn the_test_route_calls_test_url_with_the_token(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("at-test", None, Some(3600)))
            .mount(&server).await;
        Mock::given(method("GET")).and(path("/me")).and(header("authorization", "Bearer at-test"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server).await;
        let mut body = client_credentials_body("tested", &format!("{}/token", server.uri()));
        body["test_url"] = json!(format!("{}/me", server.uri()));
        app.create_connection(None, &body).await;
        let res = app.admin(Method::POST, "/api/oauth/connections/tested/test", None).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let outcome: Value = res.json().await.unwrap();
        assert_eq!(outcome["test_result"], "success", "{outcome}");
        assert!(connection(&app, None, "tested").await["last_test_at"].is_string());

        let res = app.admin(Method::PATCH, "/api/oauth/connections/tested", None)
            .json(&json!({"test_url": format!("{}/nope", server.uri())})).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let res = app.admin(Method::POST, "/api/oauth/connections/tested/test", None).send().await.unwrap();
        let outcome: Value = res.json().await.unwrap();
        assert_eq!(outcome["test_result"], "failed");
        assert!(outcome["message"].as_str().unwrap().contains("404"), "{outcome}");
    }

    async fn authorize_is_refused_for_other_flows_and_foreign_return_origins(app) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/token"))
            .respond_with(token_reply("at", None, Some(3600)))
            .mount(&server).await;
        app.create_connection(None, &client_credentials_body("m2m", &format!("{}/token", server.uri()))).await;
        let res = app.admin(Method::POST, "/api/oauth/connections/m2m/authorize", None).send().await.unwrap();
        assert_eq!(res.status(), 400);
        app.create_connection(None, &auth_code_body("web", &server)).await;
        let res = app.admin(Method::POST, "/api/oauth/connections/web/authorize", None)
            .json(&json!({"return_to": "https://evil.example.com/x"})).send().await.unwrap();
        assert_eq!(res.status(), 422);
        let problem: Value = res.json().await.unwrap();
        assert!(problem["errors"]["return_to"].is_array(), "{problem}");
    }
}

//! The README's Security promises that no other file holds: cache and sniffing headers
//! on every kind of answer and a strict policy on the callback page, revocation across
//! replicas, org isolation on every route, bounded request heads, and refused keys
//! logged as bursts rather than one line per request, without a lockout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use oauth_broker::http::auth::{FAILED_AUTH_BURST, FAILED_AUTH_WINDOW};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::on_both_backends;

/// The README and API.md: "a revoked key is refused within 5 seconds on every replica".
const REVOCATION_BOUND: Duration = Duration::from_secs(5);

/// A token endpoint that answers every grant with `<prefix>-access-token` (an hour) and
/// `<prefix>-refresh-token`.
async fn provider(prefix: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": format!("{prefix}-access-token"),
            "refresh_token": format!("{prefix}-refresh-token"),
            "token_type": "Bearer",
            "expires_in": 3600,
        })))
        .mount(&server)
        .await;
    server
}

/// Sends `request`, asserts its status (showing the body when it differs) and returns
/// the headers and the body text.
async fn send(request: reqwest::RequestBuilder, status: u16, what: &str) -> (HeaderMap, String) {
    let res = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    let got = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "{what}: {text}");
    (headers, text)
}

/// Like `send`, for a JSON answer.
async fn send_json(request: reqwest::RequestBuilder, status: u16, what: &str) -> Value {
    let (_, text) = send(request, status, what).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// Creates a key and returns (id, key).
async fn create_key_with_id(app: &TestApp, name: &str, role: &str, org: &str) -> (String, String) {
    let request = app
        .admin(Method::POST, "/api/oauth/keys", None)
        .json(&json!({"name": name, "role": role, "org_id": org}));
    let body = send_json(request, 201, &format!("creating key {name}")).await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

/// The one value of header `name`, if there is exactly one.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`, each exactly once.
fn assert_not_cached_nor_sniffed(headers: &HeaderMap, what: &str) {
    assert_eq!(
        single(headers, "cache-control"),
        Some("no-store"),
        "{what}: Cache-Control must be exactly `no-store`: {headers:?}"
    );
    assert_eq!(
        single(headers, "x-content-type-options"),
        Some("nosniff"),
        "{what}: X-Content-Type-Options must be exactly `nosniff`: {headers:?}"
    );
}

/// A Content-Security-Policy as directive name -> sources.
fn directives(policy: &str) -> BTreeMap<String, Vec<String>> {
    policy
        .split(';')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            let mut parts = d.split_ascii_whitespace();
            let name = parts.next().unwrap().to_ascii_lowercase();
            (name, parts.map(str::to_owned).collect())
        })
        .collect()
}

/// The callback page's policy allows no script, no load, no frame, no form and no
/// `<base>`, and styles only by the hash of the page's own inline stylesheet.
fn assert_strict_callback_page(headers: &HeaderMap, page: &str, what: &str) {
    assert!(
        single(headers, "content-type").is_some_and(|t| t.starts_with("text/html")),
        "{what}: {headers:?}"
    );
    let policy = single(headers, "content-security-policy")
        .unwrap_or_else(|| panic!("{what}: one Content-Security-Policy header: {headers:?}"));
    let csp = directives(policy);
    let none = vec!["'none'".to_owned()];
    assert_eq!(csp.get("default-src"), Some(&none), "{what}: {policy}");
    for fetch in [
        "script-src",
        "script-src-elem",
        "script-src-attr",
        "object-src",
        "connect-src",
        "img-src",
        "frame-src",
    ] {
        // Absent means it falls back to default-src 'none'.
        assert!(
            csp.get(fetch).is_none_or(|s| s == &none),
            "{what}: {fetch} must be absent or 'none': {policy}"
        );
    }
    for (directive, sources) in &csp {
        for source in sources {
            let s = source.to_ascii_lowercase();
            assert!(
                !s.starts_with("'unsafe-") && s != "*" && s != "data:" && s != "'strict-dynamic'",
                "{what}: `{directive} {source}` weakens the policy: {policy}"
            );
        }
    }
    for directive in ["frame-ancestors", "base-uri", "form-action"] {
        assert_eq!(
            csp.get(directive),
            Some(&none),
            "{what}: {directive}: {policy}"
        );
    }
    // The page keeps its look: its inline stylesheet is the one the policy's hash allows.
    let style = page
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(style, _)| style)
        .unwrap_or_else(|| panic!("{what}: the page has its stylesheet: {page}"));
    let hash =
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style.as_bytes()));
    assert_eq!(
        csp.get("style-src"),
        Some(&vec![format!("'sha256-{hash}'")]),
        "{what}: style-src allows exactly the page's stylesheet: {policy}"
    );
    assert!(
        !page.to_ascii_lowercase().contains("<script"),
        "{what}: {page}"
    );
    // The callback URL carries the code and the state: never send it on as a referrer.
    assert_eq!(
        single(headers, "referrer-policy"),
        Some("no-referrer"),
        "{what}: {headers:?}"
    );
}

/// One request over a raw socket, the head written by a task of its own while the
/// answer is read: the service answers 431 and closes before reading all of an
/// oversized head. Returns the answer's status (0 when it had none) and its text.
async fn raw_request(app: &TestApp, head: String) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        writer
    });
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut response))
        .await
        .expect("the service answers an oversized head within 10 s");
    if let Err(e) = read {
        // A reset after the answer was written still leaves the answer in `response`.
        assert!(
            !response.is_empty(),
            "no answer before the connection failed: {e}"
        );
    }
    writing.abort();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A GET of `path` with the given extra header lines, closing the connection after.
fn head_with(path: &str, key: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n{extra}Connection: close\r\n\r\n"
    )
}

/// Routes whose cross-org refusals other files already hold, with where.
const CROSS_ORG_ELSEWHERE: &[(&str, &str)] = &[
    (
        "GET /api/oauth/connections",
        "auth.rs: a_key_bound_to_an_org_manages_that_org_and_nothing_else, an_org_bound_key_never_lists_global_connections",
    ),
    (
        "POST /api/oauth/connections",
        "auth.rs: a_key_bound_to_an_org_manages_that_org_and_nothing_else",
    ),
    (
        "GET /api/oauth/callback/{name}",
        "flows.rs: a_state_is_bound_to_the_org_that_asked_for_it (public: the state is the credential)",
    ),
    (
        "POST /api/oauth/callback/{name}",
        "flows.rs: a_state_is_bound_to_the_org_that_asked_for_it (public: the state is the credential)",
    ),
    (
        "GET /api/oauth/keys",
        "auth.rs: only_an_admin_key_for_every_org_manages_keys",
    ),
    (
        "POST /api/oauth/keys",
        "auth.rs: only_an_admin_key_for_every_org_manages_keys",
    ),
    (
        "DELETE /api/oauth/keys/{id}",
        "auth.rs: only_an_admin_key_for_every_org_manages_keys",
    ),
    (
        "GET /api/oauth/refresh/status",
        "refresher.rs: a_run_requested_during_another_is_busy_and_only_global_admins_may_ask",
    ),
    (
        "POST /api/oauth/refresh/run",
        "refresher.rs: a_run_requested_during_another_is_busy_and_only_global_admins_may_ask",
    ),
];

/// One attempt of org `org-a`'s keys on org `org-b`'s data.
struct Probe {
    /// The documented route, as `METHOD /path/{param}` in the OpenAPI document.
    route: &'static str,
    method: Method,
    path: String,
    /// `org-b`: naming the other org outright; `org-a`: the key's own org, with b's ids.
    org: &'static str,
    body: Option<Value>,
    /// A listing in the key's own org may answer 200, with nothing of b in it.
    listing: bool,
}

/// Connections, keys, a workflow dependency, a disabled workflow and an on-behalf-of
/// session of org `org-b`; returns every string that is b's (names, ids, tokens,
/// labels), none of which an `org-a` key may ever see.
async fn org_b_with_everything(app: &TestApp, session_id: &mut String) -> Vec<String> {
    let server = provider("bravo").await;
    let token_url = format!("{}/token", server.uri());
    let mut ledger = client_credentials_body("bravo-ledger", &token_url);
    ledger["client_id"] = json!("bravo-client-id");
    let created = app.create_connection(Some("org-b"), &ledger).await;
    assert_eq!(created["status"], "completed", "{created}");
    app.create_connection(Some("org-b"), &auth_code_connection_body("bravo-portal"))
        .await;
    app.create_connection(Some("org-b"), &auth_code_connection_body("bravo-doomed"))
        .await;
    app.create_connection(
        Some("org-b"),
        &json!({
            "connection_name": "bravo-obo",
            "oauth_flow_type": "on_behalf_of",
            "client_id": "bravo-client-id",
            "client_secret": "bravo-client-secret",
            "token_url": token_url,
            "scopes": ["https://graph.microsoft.com/.default"],
            "obo_grant": "jwt_bearer",
        }),
    )
    .await;
    let (robot_id, robot) = create_key_with_id(app, "bravo-robot", "workflow", "org-b").await;
    let request = app
        .with_key(&robot, Method::POST, "/api/oauth/obo-sessions", Some("org-b"))
        .json(&json!({"connection_name": "bravo-obo", "assertion": "bravo-user-assertion", "label": "bravo-session-label"}));
    let session = send_json(request, 201, "org-b's robot starts a session").await;
    *session_id = session["session_id"].as_str().unwrap().to_owned();
    for (workflow, connection) in [
        ("bravo-nightly", "bravo-ledger"),
        ("bravo-retired", "bravo-doomed"),
    ] {
        let request = app
            .admin(Method::POST, &format!("/api/oauth/workflows/{workflow}/dependencies"), Some("org-b"))
            .json(&json!({"connection_name": connection, "workflow_name": format!("{workflow}-sync")}));
        send(request, 201, &format!("registering {workflow}")).await;
    }
    let request = app.admin(
        Method::DELETE,
        "/api/oauth/connections/bravo-doomed?confirm_disable_workflows=true",
        Some("org-b"),
    );
    send(request, 204, "deleting bravo-doomed disables bravo-retired").await;

    let mut data: Vec<String> = [
        "bravo-ledger",
        "bravo-portal",
        "bravo-doomed",
        "bravo-obo",
        "bravo-client-id",
        "bravo-access-token",
        "bravo-refresh-token",
        "bravo-robot",
        "bravo-session-label",
        "bravo-nightly",
        "bravo-nightly-sync",
        "bravo-retired",
        "bravo-retired-sync",
    ]
    .map(str::to_owned)
    .into();
    data.push(robot_id);
    data.push(session_id.clone());
    for row in app
        .db
        .query_texts("select id from connections where org_id = 'org-b'")
        .await
    {
        data.extend(row);
    }

    // Each of them is there to be seen by a key that may: the probes' "absent" means something.
    let seen = [
        ("/api/oauth/credentials/bravo-ledger", "bravo-access-token"),
        ("/api/oauth/obo-sessions", session_id.as_str()),
        ("/api/oauth/obo-sessions", "bravo-session-label"),
        (
            "/api/oauth/workflows/bravo-nightly/dependencies",
            "bravo-ledger",
        ),
        ("/api/oauth/workflows/disabled", "bravo-retired"),
        ("/api/oauth/connections/bravo-portal/events", "created"),
    ];
    for (path, datum) in seen {
        let (_, text) = send(app.admin(Method::GET, path, Some("org-b")), 200, path).await;
        assert!(
            text.contains(datum),
            "org-b's own admin sees {datum} at {path}: {text}"
        );
    }
    data
}

/// Every probe of an `org-a` key on `org-b`: each route both naming `org-b` and in
/// the key's own org with b's names and ids.
fn probes(session: &str) -> Vec<Probe> {
    let edit = json!({"test_url": "https://api.example.com/me"});
    let assertion = json!({"assertion": "alpha-user-assertion"});
    let mut probes = Vec::new();
    let mut both =
        |route: &'static str, method: Method, path: String, body: Option<Value>, listing: bool| {
            for org in ["org-b", "org-a"] {
                probes.push(Probe {
                    route,
                    method: method.clone(),
                    path: path.clone(),
                    org,
                    body: body.clone(),
                    listing,
                });
            }
        };
    both(
        "GET /api/oauth/connections/{name}",
        Method::GET,
        "/api/oauth/connections/bravo-ledger".into(),
        None,
        false,
    );
    both(
        "PATCH /api/oauth/connections/{name}",
        Method::PATCH,
        "/api/oauth/connections/bravo-ledger".into(),
        Some(edit),
        false,
    );
    both(
        "DELETE /api/oauth/connections/{name}",
        Method::DELETE,
        "/api/oauth/connections/bravo-ledger?confirm_disable_workflows=true".into(),
        None,
        false,
    );
    both(
        "GET /api/oauth/connections/{name}/events",
        Method::GET,
        "/api/oauth/connections/bravo-ledger/events".into(),
        None,
        false,
    );
    both(
        "POST /api/oauth/connections/{name}/authorize",
        Method::POST,
        "/api/oauth/connections/bravo-portal/authorize".into(),
        None,
        false,
    );
    both(
        "POST /api/oauth/connections/{name}/test",
        Method::POST,
        "/api/oauth/connections/bravo-ledger/test".into(),
        None,
        false,
    );
    both(
        "POST /api/oauth/connections/{name}/refresh",
        Method::POST,
        "/api/oauth/connections/bravo-ledger/refresh".into(),
        None,
        false,
    );
    both(
        "GET /api/oauth/credentials/{name}",
        Method::GET,
        "/api/oauth/credentials/bravo-ledger".into(),
        None,
        false,
    );
    both(
        "POST /api/oauth/credentials/{name}/on-behalf-of",
        Method::POST,
        "/api/oauth/credentials/bravo-obo/on-behalf-of".into(),
        Some(assertion.clone()),
        false,
    );
    let mut new_session = assertion;
    new_session["connection_name"] = json!("bravo-obo");
    both(
        "POST /api/oauth/obo-sessions",
        Method::POST,
        "/api/oauth/obo-sessions".into(),
        Some(new_session),
        false,
    );
    both(
        "GET /api/oauth/obo-sessions",
        Method::GET,
        "/api/oauth/obo-sessions".into(),
        None,
        true,
    );
    both(
        "GET /api/oauth/obo-sessions",
        Method::GET,
        "/api/oauth/obo-sessions?connection_name=bravo-obo".into(),
        None,
        true,
    );
    both(
        "GET /api/oauth/obo-sessions/{id}/credentials",
        Method::GET,
        format!("/api/oauth/obo-sessions/{session}/credentials"),
        None,
        false,
    );
    both(
        "DELETE /api/oauth/obo-sessions/{id}",
        Method::DELETE,
        format!("/api/oauth/obo-sessions/{session}"),
        None,
        false,
    );
    both(
        "POST /api/oauth/workflows/{workflow_id}/dependencies",
        Method::POST,
        "/api/oauth/workflows/bravo-nightly/dependencies".into(),
        Some(json!({"connection_name": "bravo-ledger"})),
        false,
    );
    both(
        "GET /api/oauth/workflows/{workflow_id}/dependencies",
        Method::GET,
        "/api/oauth/workflows/bravo-nightly/dependencies".into(),
        None,
        true,
    );
    both(
        "DELETE /api/oauth/workflows/{workflow_id}/dependencies/{connection_name}",
        Method::DELETE,
        "/api/oauth/workflows/bravo-nightly/dependencies/bravo-ledger".into(),
        None,
        false,
    );
    both(
        "GET /api/oauth/workflows/disabled",
        Method::GET,
        "/api/oauth/workflows/disabled".into(),
        None,
        true,
    );
    both(
        "POST /api/oauth/workflows/{workflow_id}/enable",
        Method::POST,
        "/api/oauth/workflows/bravo-retired/enable".into(),
        None,
        false,
    );
    probes
}

/// What `org-b`'s on-behalf-of sessions are, behind the service's back (the snapshot
/// helper does not read that table).
async fn sessions_of_b(app: &TestApp) -> Vec<Vec<String>> {
    app.db
        .query_texts("select id, status, revoked_at, access_token_sealed, refresh_token_sealed from obo_sessions where org_id = 'org-b' order by id")
        .await
}

/// What the service logged since `start` (a length of `captured_logs()` taken earlier:
/// the buffer only grows), so a long test run's earlier lines are not searched again.
fn logs_since(start: usize) -> String {
    let logs = captured_logs();
    logs.get(start..).unwrap_or(&logs).to_owned()
}

/// The burst lines this replica wrote since `start`.
fn burst_lines(app: &TestApp, start: usize) -> Vec<String> {
    let replica = format!("replica={}", app.broker.replica_id);
    logs_since(start)
        .lines()
        .filter(|l| {
            l.contains(" WARN ") && l.contains("oauth_broker::http::auth") && l.contains(&replica)
        })
        .map(str::to_owned)
        .collect()
}

on_both_backends! {
    async fn every_kind_of_answer_is_neither_cached_nor_sniffed_and_the_callback_page_is_locked_down(app) {
        // Arrange: a token endpoint for a client-credentials connection and a code exchange.
        let server = provider("headers").await;
        let token_url = format!("{}/token", server.uri());
        app.create_connection(Some("acme"), &client_credentials_body("machine", &token_url)).await;
        let mut web = auth_code_connection_body("web");
        web["authorization_url"] = json!(format!("{}/authorize", server.uri()));
        web["token_url"] = json!(token_url);
        app.create_connection(Some("acme"), &web).await;
        app.create_connection(Some("acme"), &auth_code_connection_body("doomed")).await;
        let workflow = app.create_key("headers-workflow", "workflow", "acme").await;
        let authorize = || app.admin(Method::POST, "/api/oauth/connections/web/authorize", Some("acme"));
        let state_of = |body: Value| body["state"].as_str().unwrap().to_owned();
        let big = json!({"connection_name": "x".repeat(70 * 1024)});

        // Act and assert: one answer of every kind.
        let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
            ("a JSON list", app.admin(Method::GET, "/api/oauth/connections", Some("acme")), 200),
            ("a JSON connection", app.admin(Method::GET, "/api/oauth/connections/machine", Some("acme")), 200),
            ("credentials", app.with_key(&workflow, Method::GET, "/api/oauth/credentials/machine", Some("acme")), 200),
            ("a created connection", app.admin(Method::POST, "/api/oauth/connections", Some("acme")).json(&auth_code_connection_body("created")), 201),
            ("a created key", app.admin(Method::POST, "/api/oauth/keys", None).json(&json!({"name": "shown-once", "role": "workflow", "org_id": "acme"})), 201),
            ("an empty 204", app.admin(Method::DELETE, "/api/oauth/connections/doomed", Some("acme")), 204),
            ("401 without a key", app.client.get(app.url("/api/oauth/connections")), 401),
            ("401 with an unknown key", app.with_key("obk_never_issued", Method::GET, "/api/oauth/connections", None), 401),
            ("403 for a workflow key", app.with_key(&workflow, Method::GET, "/api/oauth/connections", Some("acme")), 403),
            ("404 for an unknown connection", app.admin(Method::GET, "/api/oauth/connections/nothing", Some("acme")), 404),
            ("404 for an unknown route", app.admin(Method::GET, "/api/oauth/nothing", None), 404),
            ("405 for an undocumented method", app.admin(Method::PUT, "/api/oauth/connections", None), 405),
            ("400 for malformed JSON", app.admin(Method::POST, "/api/oauth/connections", None).header("content-type", "application/json").body("{"), 400),
            ("400 for a malformed org", app.admin(Method::GET, "/api/oauth/connections", Some("a b")), 400),
            ("413 for a large body", app.admin(Method::POST, "/api/oauth/connections", None).json(&big), 413),
            ("415 for a callback that is not a form", app.client.post(app.url("/api/oauth/callback/web")).json(&json!({})), 415),
            ("422 for a wrong field", app.admin(Method::POST, "/api/oauth/connections", None).json(&json!({"connection_name": 7})), 422),
            ("the health check", app.client.get(app.url("/healthz")), 200),
            ("the readiness check", app.client.get(app.url("/readyz")), 200),
            ("the metrics", app.client.get(app.url("/metrics")), 200),
            ("the OpenAPI document", app.client.get(app.url("/api-docs/openapi.json")), 200),
            ("the docs UI", app.client.get(app.url("/docs/")), 200),
        ];
        for (what, request, status) in cases {
            let (headers, _) = send(request, status, what).await;
            assert_not_cached_nor_sniffed(&headers, what);
        }

        // The callback page, once a success and twice a failure (state, then provider).
        let state = state_of(send_json(authorize(), 200, "authorize").await);
        let request = app.client.get(app.url("/api/oauth/callback/web")).query(&[("code", "c"), ("state", state.as_str())]);
        let (headers, page) = send(request, 200, "the callback's success page").await;
        assert_not_cached_nor_sniffed(&headers, "the success page");
        assert_strict_callback_page(&headers, &page, "the success page");
        assert!(page.contains("Connected"), "{page}");

        let request = app.client.get(app.url("/api/oauth/callback/web")).query(&[("code", "c"), ("state", "made-up")]);
        let (headers, page) = send(request, 400, "the callback's page for an unknown state").await;
        assert_not_cached_nor_sniffed(&headers, "the unknown-state page");
        assert_strict_callback_page(&headers, &page, "the unknown-state page");

        let state = state_of(send_json(authorize(), 200, "authorize again").await);
        let form = [("error", "access_denied"), ("error_description", "<b>no</b>"), ("state", state.as_str())];
        let request = app.client.post(app.url("/api/oauth/callback/web")).form(&form);
        let (headers, page) = send(request, 400, "the form_post callback's page for a provider error").await;
        assert_not_cached_nor_sniffed(&headers, "the provider-error page");
        assert_strict_callback_page(&headers, &page, "the provider-error page");
        assert!(page.contains("&lt;b&gt;no&lt;/b&gt;"), "provider text is escaped: {page}");
    }

    async fn a_revoked_key_is_refused_by_another_replica_within_five_seconds(app) {
        // Arrange: two replicas on one database; replica B has the key cached as valid.
        let b = app.replica().await;
        let (id, key) = create_key_with_id(&app, "short-lived", "admin", "acme").await;
        let list = "/api/oauth/connections";
        send(b.with_key(&key, Method::GET, list, Some("acme")), 200, "replica B accepts the new key").await;

        // Act: replica A revokes it.
        send(app.admin(Method::DELETE, &format!("/api/oauth/keys/{id}"), None), 204, "revoking on A").await;
        let revoked = Instant::now();

        // Assert: A refuses at once, B within the documented bound and from then on.
        send(app.with_key(&key, Method::GET, list, Some("acme")), 401, "replica A right after revoking").await;
        let deadline = revoked + REVOCATION_BOUND;
        let refused_after = loop {
            let sent = Instant::now();
            let status = b.with_key(&key, Method::GET, list, Some("acme")).send().await.unwrap().status();
            if status == 401 {
                break sent - revoked;
            }
            assert_eq!(status, 200, "until B notices, it answers as before");
            assert!(
                Instant::now() < deadline,
                "replica B still accepted the key {:?} after it was revoked on A (promised: {REVOCATION_BOUND:?})",
                revoked.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(refused_after <= REVOCATION_BOUND, "B refused the key only {refused_after:?} after the revocation");
        for attempt in 0..3 {
            send(b.with_key(&key, Method::GET, list, Some("acme")), 401, &format!("B keeps refusing ({attempt})")).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn an_org_bound_key_never_reaches_another_org_on_any_route(app) {
        // Arrange: org-b has one of everything; org-a has an admin and a workflow key.
        let mut session = String::new();
        let b_data = org_b_with_everything(&app, &mut session).await;
        let alpha_admin = app.create_key("alpha-admin", "admin", "org-a").await;
        let alpha_robot = app.create_key("alpha-robot", "workflow", "org-a").await;
        let probes = probes(&session);

        // Every documented route is probed here or, for the routes named, elsewhere.
        let document: Value = serde_json::from_str(&oauth_broker::http::openapi::document()).unwrap();
        for (route, item) in document["paths"].as_object().unwrap() {
            if !route.starts_with("/api/oauth/") {
                continue;
            }
            let verbs = item.as_object().unwrap().keys().filter(|v| ["get", "post", "put", "patch", "delete"].contains(&v.as_str()));
            for verb in verbs {
                let name = format!("{} {route}", verb.to_ascii_uppercase());
                let here = probes.iter().any(|p| p.route == name);
                let elsewhere = CROSS_ORG_ELSEWHERE.iter().any(|(r, _)| *r == name);
                assert!(here || elsewhere, "{name} has no cross-org probe: add one to `probes`");
            }
        }

        // Act and assert.
        let before = (app.db.snapshot().await, sessions_of_b(&app).await);
        for (who, key) in [("org-a's admin key", &alpha_admin), ("org-a's workflow key", &alpha_robot)] {
            for probe in &probes {
                let what = format!("{who} on {} {} as {}", probe.method, probe.path, probe.org);
                let mut request = app.with_key(key, probe.method.clone(), &probe.path, Some(probe.org));
                if let Some(body) = &probe.body {
                    request = request.json(body);
                }
                let res = request.send().await.unwrap();
                let status = res.status().as_u16();
                let headers = format!("{:?}", res.headers());
                let text = res.text().await.unwrap();
                let allowed: &[u16] = match (probe.org, probe.listing) {
                    ("org-b", _) => &[403],
                    (_, false) => &[403, 404],
                    (_, true) => &[200, 403],
                };
                assert!(allowed.contains(&status), "{what}: expected one of {allowed:?}, got {status}: {text}");
                if status != 200 {
                    let problem: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
                    let code = if status == 403 { "forbidden" } else { "not_found" };
                    assert_eq!(problem["code"], code, "{what}: {problem}");
                }
                // b's data that the request itself did not carry never comes back.
                let asked = format!("{} {}", probe.path, probe.body.as_ref().map(Value::to_string).unwrap_or_default());
                for datum in b_data.iter().filter(|d| !asked.contains(d.as_str())) {
                    assert!(!text.contains(datum.as_str()), "{what}: org-b's `{datum}` is in the body: {text}");
                    assert!(!headers.contains(datum.as_str()), "{what}: org-b's `{datum}` is in a header: {headers}");
                }
            }
        }

        // Nothing of org-b changed, and it still works for org-b.
        let after = (app.db.snapshot().await, sessions_of_b(&app).await);
        assert_eq!(after, before, "no probe changed anything");
        let path = format!("/api/oauth/obo-sessions/{session}/credentials");
        let body = send_json(app.admin(Method::GET, &path, Some("org-b")), 200, "org-b's session still works").await;
        assert_eq!(body["access_token"], "bravo-access-token", "{body}");
        let path = "/api/oauth/workflows/bravo-nightly/dependencies";
        let body = send_json(app.admin(Method::GET, path, Some("org-b")), 200, "org-b's dependency").await;
        assert_eq!(body["connections"][0]["connection_name"], "bravo-ledger", "{body}");
    }

    async fn a_request_head_over_the_limit_is_refused_and_the_service_keeps_serving(app) {
        // actix-http 3 reads at most 128 KiB of request head and 96 header fields, and
        // answers 431 beyond either. (A 64 KiB header is within that limit and served.)
        let key = app.admin_key.clone();
        let huge = format!("X-Padding: {}\r\n", "a".repeat(256 * 1024));
        let many: String = (0..100).map(|n| format!("X-Field-{n}: {n}\r\n")).collect();
        let huge_key = format!("obk_{}", "k".repeat(256 * 1024));
        let cases = [
            ("a 256 KiB header", head_with("/api/oauth/connections", &key, &huge)),
            ("100 header fields", head_with("/api/oauth/connections", &key, &many)),
            ("a 256 KiB API key", head_with("/api/oauth/connections", &huge_key, "")),
        ];
        for round in 0..2 {
            for (what, head) in &cases {
                let (status, answer) = raw_request(&app, head.clone()).await;
                assert!(
                    [431, 400].contains(&status),
                    "{what} (round {round}): refused with 431 or 400, got: {}",
                    answer.chars().take(300).collect::<String>()
                );
            }
            // The service keeps serving, with a realistic large header too (an 8 KiB cookie).
            send(app.client.get(app.url("/healthz")), 200, "health after oversized heads").await;
            let cookie = format!("session={}", "c".repeat(8 * 1024));
            let request = app.admin(Method::GET, "/api/oauth/connections", Some("acme")).header("cookie", cookie);
            send(request, 200, "an 8 KiB header is served").await;
        }
    }

    async fn a_burst_of_refused_keys_is_logged_once_per_window_and_locks_nobody_out(app) {
        let start = captured_logs().len();
        let list = app.url("/api/oauth/connections");
        // A connection per request: searching the logs may take longer than the server's
        // keep-alive, and a pooled connection closed meanwhile would fail the next send.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let request = |key: Option<&str>| match key {
            Some(key) => client.get(&list).bearer_auth(key),
            None => client.get(&list),
        };
        let valid = app.admin_key.as_str();
        let presented: Vec<String> = (0..40)
            .map(|_| format!("obk_{}", uuid::Uuid::new_v4().simple()))
            .collect();

        // Act: 40 unknown keys and 5 requests without one, from this client, with the
        // valid admin key used between them.
        for (n, key) in presented.iter().enumerate() {
            send(request(Some(key)), 401, &format!("unknown key {n}")).await;
            if n % 8 == 0 {
                send(request(None), 401, "no key").await;
                send(request(Some(valid)), 200, "the valid key during the burst").await;
            }
        }

        // Assert: one line with the count and the window, naming no key.
        let lines = burst_lines(&app, start);
        assert_eq!(lines.len(), 1, "one line for the burst, not one per request: {lines:#?}");
        let window = format!("window_seconds={}", FAILED_AUTH_WINDOW.num_seconds());
        let count = format!("failures={}", FAILED_AUTH_BURST + 1);
        for field in [window.as_str(), count.as_str(), "source=127.0.0.1"] {
            assert!(lines[0].contains(field), "the line has `{field}`: {}", lines[0]);
        }
        let logs = logs_since(start);
        for key in &presented {
            let random = &key["obk_".len()..];
            assert!(!logs.contains(&random[..12]), "no part of a presented key is logged ({key})");
        }
        // Other tests' refusals (this binary's) are in these lines too: none is a line of its own.
        for line in logs.lines().filter(|l| l.contains(" WARN ") && l.contains("oauth_broker::http::auth")) {
            assert!(line.contains("window_seconds="), "auth warnings are burst summaries only: {line}");
        }

        // The next window counts from zero: up to the threshold is quiet, one more is logged.
        app.clock.advance(FAILED_AUTH_WINDOW + chrono::Duration::seconds(1));
        for key in presented.iter().take(FAILED_AUTH_BURST as usize) {
            send(request(Some(key)), 401, "a refusal in the next window").await;
        }
        assert_eq!(burst_lines(&app, start).len(), 1, "{FAILED_AUTH_BURST} refusals in a window are not a burst");
        send(request(None), 401, "one more").await;
        assert_eq!(burst_lines(&app, start).len(), 2, "the next window's burst is logged once");
        send(request(Some(valid)), 200, "the valid key after the bursts").await;
    }
}

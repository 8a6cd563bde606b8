//! Bad input is refused with the contract's problem document and changes nothing.
//!
//! Every case asserts the status, `application/problem+json`, the `code` and `status`
//! members, the field named in `errors` (for validation failures) and that the database
//! is exactly as it was before the request (`assert_refused`).

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::on_both_backends;

const CREATE: &str = "/api/oauth/connections";

/// A valid client-credentials body: each case breaks exactly one thing in it.
fn valid() -> Value {
    client_credentials_body("graph", "https://login.example.com/token")
}

/// A valid authorization-code body.
fn valid_authorization_code() -> Value {
    json!({
        "connection_name": "web",
        "oauth_flow_type": "authorization_code",
        "client_id": "client-1",
        "client_secret": "secret-1",
        "authorization_url": "https://login.example.com/authorize",
        "token_url": "https://login.example.com/token",
        "scopes": ["User.Read"],
    })
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn without(mut body: Value, field: &str) -> Value {
    body.as_object_mut().unwrap().remove(field);
    body
}

/// A create request by the admin key in org `acme`.
fn create(app: &TestApp) -> reqwest::RequestBuilder {
    app.admin(Method::POST, CREATE, Some("acme"))
}

on_both_backends! {
    async fn malformed_json_is_a_bad_request(app) {
        let cases: &[(&str, &[u8])] = &[
            ("a truncated object", br#"{"connection_name": "graph","#),
            ("a trailing comma", br#"{"connection_name": "graph",}"#),
            ("not JSON at all", b"connection_name=graph"),
            ("single-quoted strings", b"{'connection_name': 'graph'}"),
            ("invalid UTF-8", b"{\"connection_name\": \"\xff\xfe\"}"),
        ];
        for (reason, body) in cases {
            let request = create(&app)
                .header("content-type", "application/json")
                .body(body.to_vec());
            assert_refused(&app, reason, request, 400, "bad_request", None).await;
        }
    }

    async fn a_body_that_is_not_declared_as_json_is_a_bad_request(app) {
        let request = create(&app)
            .header("content-type", "text/plain")
            .body(valid().to_string());
        assert_refused(&app, "Content-Type text/plain", request, 400, "bad_request", None).await;
    }

    async fn json_of_the_wrong_type_is_refused_naming_the_field(app) {
        let cases = [
            ("a number as connection_name", with(valid(), "connection_name", json!(42)), "connection_name"),
            ("null as client_id", with(valid(), "client_id", Value::Null), "client_id"),
            ("a number as client_secret", with(valid(), "client_secret", json!(7)), "client_secret"),
            ("a string as scopes", with(valid(), "scopes", json!("read write")), "scopes"),
            ("a number inside scopes", with(valid(), "scopes", json!(["read", 5])), "scopes[1]"),
            ("an array as extra_token_params", with(valid(), "extra_token_params", json!(["audience"])), "extra_token_params"),
            ("a number as an extra param value", with(valid(), "extra_token_params", json!({"audience": 1})), "extra_token_params.audience"),
            ("an object as token_url", with(valid(), "token_url", json!({"url": "https://x"})), "token_url"),
            ("a boolean as test_url", with(valid(), "test_url", json!(true)), "test_url"),
            ("an unknown oauth_flow_type", with(valid(), "oauth_flow_type", json!("implicit")), "oauth_flow_type"),
            ("a flow type in another case", with(valid(), "oauth_flow_type", json!("Client_Credentials")), "oauth_flow_type"),
            ("an unknown token_auth_method", with(valid(), "token_auth_method", json!("private_key_jwt")), "token_auth_method"),
            ("an empty client_id", with(valid(), "client_id", json!("")), "client_id"),
            ("an empty client_secret", with(valid(), "client_secret", json!("")), "client_secret"),
            ("a scope with a space", with(valid(), "scopes", json!(["read write"])), "scopes"),
            ("a missing token_url", without(valid(), "token_url"), "token_url"),
            ("a missing client_id", without(valid(), "client_id"), "client_id"),
            (
                "a nested object missing a field",
                with(valid(), "assertion_validation", json!({"audiences": ["api://x"], "jwks_url": "https://login.example.com/keys"})),
                "assertion_validation.issuer",
            ),
        ];
        for (reason, body, field) in cases {
            let request = create(&app).json(&body);
            assert_refused(&app, reason, request, 422, "validation_failed", Some(field)).await;
        }
        let request = create(&app).header("content-type", "application/json").body("");
        assert_refused(&app, "an empty body (read as {})", request, 422, "validation_failed", Some("connection_name")).await;
        let request = create(&app).json(&json!(["not", "an", "object"]));
        assert_refused(&app, "an array instead of an object", request, 422, "validation_failed", None).await;
    }

    async fn invalid_connection_names_are_refused_naming_connection_name(app) {
        let long = "n".repeat(101);
        let cases = [
            ("a slash", "a/b"),
            ("a parent directory", ".."),
            ("a dot", "a.b"),
            ("a space", "my graph"),
            ("unicode", "café"),
            ("an emoji", "graph🔑"),
            ("SQL metacharacters", "x'; drop table connections; --"),
            ("a quote", "graph\""),
            ("a percent sign", "a%2Fb"),
            ("a NUL byte", "graph\u{0}"),
            ("an empty name", ""),
            ("101 characters", long.as_str()),
        ];
        for (reason, name) in cases {
            let request = create(&app).json(&with(valid(), "connection_name", json!(name)));
            assert_refused(&app, reason, request, 422, "validation_failed", Some("connection_name")).await;
        }
    }

    async fn plain_http_urls_are_refused_unless_they_are_loopback(app) {
        let cases = [
            ("token_url over http", "token_url", "http://login.example.com/token"),
            ("token_url over http to a private address", "token_url", "http://10.0.0.1/token"),
            ("token_url over http to a host named like loopback", "token_url", "http://localhost.example.com/token"),
            ("token_url with credentials", "token_url", "https://user:pw@login.example.com/token"),
            ("token_url with a fragment", "token_url", "https://login.example.com/token#x"),
            ("token_url with another scheme", "token_url", "ftp://login.example.com/token"),
            ("token_url that is not a URL", "token_url", "login.example.com/token"),
            ("test_url over http", "test_url", "http://api.example.com/me"),
            ("authorization_url over http", "authorization_url", "http://login.example.com/authorize"),
        ];
        for (reason, field, url) in cases {
            let body = with(valid_authorization_code(), field, json!(url));
            let request = create(&app).json(&body);
            assert_refused(&app, reason, request, 422, "validation_failed", Some(field)).await;
        }
    }

    async fn each_flow_refuses_a_body_missing_what_it_needs(app) {
        let refresh_token_flow = with(
            without(valid(), "refresh_token"),
            "oauth_flow_type",
            json!("refresh_token"),
        );
        let cases = [
            (
                "authorization_code without authorization_url",
                without(valid_authorization_code(), "authorization_url"),
                "authorization_url",
            ),
            (
                "client_credentials without client_secret",
                without(valid(), "client_secret"),
                "client_secret",
            ),
            (
                "client_credentials with a null client_secret",
                with(valid(), "client_secret", Value::Null),
                "client_secret",
            ),
            ("refresh_token without refresh_token", refresh_token_flow, "refresh_token"),
            (
                "on_behalf_of without obo_grant",
                with(valid(), "oauth_flow_type", json!("on_behalf_of")),
                "obo_grant",
            ),
        ];
        for (reason, body, field) in cases {
            let request = create(&app).json(&body);
            assert_refused(&app, reason, request, 422, "validation_failed", Some(field)).await;
        }
    }

    async fn extra_params_may_not_override_what_the_service_sets(app) {
        let cases = [
            ("extra_token_params.grant_type", "extra_token_params", "grant_type"),
            ("extra_token_params.client_secret", "extra_token_params", "client_secret"),
            ("extra_token_params.refresh_token", "extra_token_params", "refresh_token"),
            ("extra_token_params.code_verifier", "extra_token_params", "code_verifier"),
            ("extra_authorization_params.redirect_uri", "extra_authorization_params", "redirect_uri"),
            ("extra_authorization_params.state", "extra_authorization_params", "state"),
            ("extra_authorization_params.code_challenge_method", "extra_authorization_params", "code_challenge_method"),
            ("extra_authorization_params.response_type", "extra_authorization_params", "response_type"),
        ];
        for (reason, field, param) in cases {
            let body = with(valid_authorization_code(), field, json!({ param: "x" }));
            let request = create(&app).json(&body);
            let problem = assert_refused(&app, reason, request, 422, "validation_failed", Some(field)).await;
            assert!(
                problem["errors"][field].to_string().contains(param),
                "{reason}: the message names the parameter: {problem}"
            );
        }
        let body = with(valid(), "extra_token_params", json!({"bad name": "x"}));
        let request = create(&app).json(&body);
        assert_refused(&app, "an extra param name with a space", request, 422, "validation_failed", Some("extra_token_params")).await;
    }

    async fn unknown_fields_are_refused_naming_them(app) {
        let cases = [
            ("a misspelt field", "client_secrte"),
            ("a field of another API", "redirect_uri"),
            ("a read-only field", "status"),
            ("an org in the body", "org_id"),
        ];
        for (reason, field) in cases {
            let request = create(&app).json(&with(valid(), field, json!("x")));
            assert_refused(&app, reason, request, 422, "validation_failed", Some(field)).await;
        }
    }

    async fn edits_are_validated_like_creation(app) {
        app.create_connection(Some("acme"), &valid_authorization_code()).await;
        let path = "/api/oauth/connections/web";
        let cases = [
            ("a plain http token_url", json!({"token_url": "http://login.example.com/token"}), Some("token_url")),
            ("an unknown field", json!({"colour": "blue"}), Some("colour")),
            ("a rename", json!({"connection_name": "other"}), Some("connection_name")),
            ("a reserved extra param", json!({"extra_token_params": {"grant_type": "password"}}), Some("extra_token_params")),
            ("switching to a flow whose needs are missing", json!({"oauth_flow_type": "refresh_token"}), Some("refresh_token")),
            ("a wrong type", json!({"scopes": "read"}), Some("scopes")),
            ("an empty refresh_token", json!({"refresh_token": ""}), Some("refresh_token")),
            ("null as client_id (only absent means unchanged)", json!({"client_id": null}), Some("client_id")),
            ("null as token_url", json!({"token_url": null}), Some("token_url")),
            ("null as scopes", json!({"scopes": null}), Some("scopes")),
        ];
        for (reason, body, field) in cases {
            let request = app.admin(Method::PATCH, path, Some("acme")).json(&body);
            assert_refused(&app, reason, request, 422, "validation_failed", field).await;
        }
        let request = app
            .admin(Method::PATCH, path, Some("acme"))
            .header("content-type", "application/json")
            .body("{");
        assert_refused(&app, "malformed JSON", request, 400, "bad_request", None).await;
    }

    async fn bad_paths_and_query_strings_are_refused_naming_the_parameter(app) {
        // An authorization_code connection: created without calling a provider.
        app.create_connection(Some("acme"), &with(valid_authorization_code(), "connection_name", json!("graph"))).await;
        let cases = [
            ("a connection name with unicode in the path", Method::GET, "/api/oauth/connections/caf%C3%A9", "name"),
            ("a connection name with a space in the path", Method::DELETE, "/api/oauth/connections/a%20b", "name"),
            ("include_global that is not a boolean", Method::GET, "/api/oauth/connections?include_global=maybe", "include_global"),
            ("an unknown query parameter", Method::GET, "/api/oauth/connections?org=other", "org"),
            ("an events limit of 0", Method::GET, "/api/oauth/connections/graph/events?limit=0", "limit"),
            ("an events limit over 1000", Method::GET, "/api/oauth/connections/graph/events?limit=1001", "limit"),
            ("an events limit that is not a number", Method::GET, "/api/oauth/connections/graph/events?limit=ten", "limit"),
            ("confirm_disable_workflows that is not a boolean", Method::DELETE, "/api/oauth/connections/graph?confirm_disable_workflows=please", "confirm_disable_workflows"),
        ];
        for (reason, method, path, field) in cases {
            let request = app.admin(method, path, Some("acme"));
            assert_refused(&app, reason, request, 422, "validation_failed", Some(field)).await;
        }
    }

    async fn a_body_over_64_kib_is_refused_with_413(app) {
        let big = "x".repeat(65 * 1024);
        let request = create(&app).json(&with(valid(), "client_id", json!(big)));
        assert_refused(&app, "a 65 KiB create body", request, 413, "payload_too_large", None).await;

        let request = app
            .admin(Method::POST, "/api/oauth/keys", None)
            .json(&json!({"name": big, "role": "admin", "org_id": "*"}));
        assert_refused(&app, "a 65 KiB key body", request, 413, "payload_too_large", None).await;

        // Without a Content-Length (chunked), the limit must hold while reading.
        let before = app.db.snapshot().await;
        let body = with(valid(), "client_id", json!(big)).to_string();
        let (status, head, text) = chunked_post(&app, CREATE, &body).await;
        assert_eq!(status, 413, "a chunked 65 KiB body: {head}\n{text}");
        assert!(
            head.to_ascii_lowercase().contains("content-type: application/problem+json"),
            "a chunked 65 KiB body answers problem+json: {head}"
        );
        assert!(text.contains("payload_too_large"), "a chunked 65 KiB body: {text}");
        assert_eq!(app.db.snapshot().await, before, "a chunked 65 KiB body changes nothing");

        // Just under the limit is parsed (and refused for its content, not its size).
        let body = with(valid(), "client_id", json!("x".repeat(63 * 1024)));
        let request = create(&app).json(&body);
        assert_refused(&app, "a 63 KiB body with a too long client_id", request, 422, "validation_failed", Some("client_id")).await;
    }

    async fn callers_without_a_valid_key_get_401_with_a_bearer_challenge(app) {
        let cases: &[(&str, Option<&str>)] = &[
            ("no Authorization header", None),
            ("an unknown key", Some("Bearer obk_this_key_was_never_issued_0000000000")),
            ("a Basic credential", Some("Basic YWRtaW46YWRtaW4=")),
            ("a bearer without a key", Some("Bearer")),
            ("a key without a scheme", Some("obk_this_key_was_never_issued_0000000000")),
        ];
        let routes = [
            (Method::GET, "/api/oauth/connections"),
            (Method::POST, CREATE),
            (Method::GET, "/api/oauth/connections/graph"),
            (Method::GET, "/api/oauth/keys"),
            (Method::POST, "/api/oauth/keys"),
        ];
        for (reason, authorization) in cases {
            for (method, path) in &routes {
                let mut request = app
                    .client
                    .request(method.clone(), app.url(path))
                    .header("X-Organization-Id", "acme")
                    .json(&valid());
                if let Some(value) = authorization {
                    request = request.header("authorization", *value);
                }
                let before = app.db.snapshot().await;
                let res = request.send().await.unwrap();
                let challenge = res
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap().to_owned());
                assert_eq!(res.status(), 401, "{reason} on {method} {path}");
                assert!(
                    challenge.as_deref().is_some_and(|c| c.starts_with("Bearer")),
                    "{reason} on {method} {path}: WWW-Authenticate: Bearer is required, got {challenge:?}"
                );
                assert_eq!(
                    res.headers()["content-type"], "application/problem+json",
                    "{reason} on {method} {path}"
                );
                let problem: Value = res.json().await.unwrap();
                assert_eq!(problem["code"], "unauthorized", "{reason} on {method} {path}: {problem}");
                assert_eq!(problem["status"], 401, "{reason} on {method} {path}: {problem}");
                assert_eq!(app.db.snapshot().await, before, "{reason} on {method} {path} changes nothing");
            }
        }
    }

    async fn a_malformed_organization_header_is_a_bad_request(app) {
        let long = "o".repeat(65);
        let cases = [
            ("a slash", "a/b"),
            ("a parent directory", ".."),
            ("a space", "acme corp"),
            ("the key scope wildcard", "*"),
            ("65 characters", long.as_str()),
            ("an empty value", ""),
            ("SQL metacharacters", "acme'--"),
        ];
        for (reason, org) in cases {
            let request = app.admin(Method::POST, CREATE, Some(org)).json(&valid());
            assert_refused(&app, reason, request, 400, "bad_request", None).await;
            let request = app.admin(Method::GET, "/api/oauth/connections", Some(org));
            assert_refused(&app, reason, request, 400, "bad_request", None).await;
        }
        let request = app
            .admin(Method::GET, "/api/oauth/connections", None)
            .header("X-Organization-Id", reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert_refused(&app, "a non-ASCII org id", request, 400, "bad_request", None).await;
    }

    async fn keys_without_the_right_get_403_and_change_nothing(app) {
        // An authorization_code connection: created without calling a provider.
        app.create_connection(Some("acme"), &with(valid_authorization_code(), "connection_name", json!("graph"))).await;
        let acme_admin = app.create_key("acme-admin", "admin", "acme").await;
        let acme_workflow = app.create_key("acme-workflow", "workflow", "acme").await;
        let every_org_workflow = app.create_key("all-workflow", "workflow", "*").await;
        let new_key = json!({"name": "sneaky", "role": "admin", "org_id": "*"});
        let other_body = with(valid(), "connection_name", json!("other-graph"));
        let cases = [
            ("an acme key creating in another org", &acme_admin, Method::POST, CREATE, Some("other"), Some(&other_body)),
            ("an acme key creating in GLOBAL", &acme_admin, Method::POST, CREATE, None, Some(&other_body)),
            ("an acme key editing in another org", &acme_admin, Method::PATCH, "/api/oauth/connections/graph", Some("other"), Some(&json!({"client_id": "x"}))),
            ("an acme key deleting in GLOBAL", &acme_admin, Method::DELETE, "/api/oauth/connections/graph", None, None),
            ("a workflow key creating a connection", &acme_workflow, Method::POST, CREATE, Some("acme"), Some(&other_body)),
            ("a workflow key listing connections", &acme_workflow, Method::GET, "/api/oauth/connections", Some("acme"), None),
            ("a workflow key reading a connection", &acme_workflow, Method::GET, "/api/oauth/connections/graph", Some("acme"), None),
            ("a workflow key editing a connection", &acme_workflow, Method::PATCH, "/api/oauth/connections/graph", Some("acme"), Some(&json!({"client_id": "x"}))),
            ("a workflow key deleting a connection", &acme_workflow, Method::DELETE, "/api/oauth/connections/graph", Some("acme"), None),
            ("a workflow key reading events", &acme_workflow, Method::GET, "/api/oauth/connections/graph/events", Some("acme"), None),
            ("a workflow key for every org creating a key", &every_org_workflow, Method::POST, "/api/oauth/keys", None, Some(&new_key)),
            ("a workflow key for every org listing keys", &every_org_workflow, Method::GET, "/api/oauth/keys", None, None),
            ("a workflow key for every org editing a connection", &every_org_workflow, Method::PATCH, "/api/oauth/connections/graph", Some("acme"), Some(&json!({"client_id": "x"}))),
            ("an acme admin key creating a key", &acme_admin, Method::POST, "/api/oauth/keys", None, Some(&new_key)),
        ];
        for (reason, key, method, path, org, body) in cases {
            let mut request = app.with_key(key, method, path, org);
            if let Some(body) = body {
                request = request.json(body);
            }
            assert_refused(&app, reason, request, 403, "forbidden", None).await;
        }
    }
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no Content-Length) over a raw socket;
/// returns the status, the response head and the rest.
async fn chunked_post(app: &TestApp, path: &str, body: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         X-Organization-Id: acme\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.admin_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before it has read everything: ignore write errors.
    for chunk in body.as_bytes().chunks(8 * 1024) {
        let framed = [
            format!("{:x}\r\n", chunk.len()).as_bytes(),
            chunk,
            b"\r\n".as_slice(),
        ]
        .concat();
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await
    .expect("the server answers a chunked body within 10 s");
    if let Err(e) = read {
        // A reset after the answer was written still leaves the answer in `response`.
        assert!(!response.is_empty(), "no answer to the chunked body: {e}");
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), rest.to_owned())
}

//! Secrets are write-only: never in the database in clear, never in a log, never in an
//! answer; and a ciphertext only opens in the row and column it was sealed for.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use oauth_broker::domain::{ConnectionName, OrgId};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::on_both_backends;

/// A value no test could produce by accident.
fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

/// A provider whose token endpoint answers every grant with the given tokens.
async fn provider(access_token: &str, refresh_token: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": refresh_token,
        })))
        .mount(&server)
        .await;
    server
}

/// Sends a request, asserts its status and returns the body text.
async fn answer(request: reqwest::RequestBuilder, status: u16, what: &str) -> String {
    let res = request.send().await.unwrap();
    let got = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "{what}: {text}");
    text
}

async fn connection(app: &TestApp, org: &str, name: &str) -> oauth_broker::domain::Connection {
    app.broker
        .store
        .get_connection(
            &OrgId::parse(org).unwrap(),
            &ConnectionName::parse(name).unwrap(),
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("connection {org}/{name} exists"))
}

on_both_backends! {
    async fn client_secrets_and_tokens_never_appear_in_the_database_logs_or_answers(app) {
        // Arrange: every secret is unique to this test.
        let cc_secret = unique("cc-client-secret");
        let rt_secret = unique("rt-client-secret");
        let imported_refresh = unique("imported-refresh-token");
        let patched_secret = unique("patched-client-secret");
        let patched_refresh = unique("patched-refresh-token");
        let issued_access = unique("issued-access-token");
        let issued_refresh = unique("issued-refresh-token");
        let server = provider(&issued_access, &issued_refresh).await;
        let token_url = format!("{}/token", server.uri());
        let mut answers = Vec::new();

        // Act: create, read, list, edit and read the events of two connections.
        let cc = json!({
            "connection_name": "machine",
            "oauth_flow_type": "client_credentials",
            "client_id": "cc-client",
            "client_secret": cc_secret,
            "token_url": token_url,
            "scopes": ["read"],
        });
        let rt = json!({
            "connection_name": "imported",
            "oauth_flow_type": "refresh_token",
            "client_id": "rt-client",
            "client_secret": rt_secret,
            "refresh_token": imported_refresh,
            "token_url": token_url,
            "token_auth_method": "client_secret_post",
            "scopes": ["offline_access"],
        });
        for (what, body) in [("create client_credentials", &cc), ("create refresh_token", &rt)] {
            let request = app.admin(Method::POST, "/api/oauth/connections", Some("acme")).json(body);
            answers.push(answer(request, 201, what).await);
        }
        // Both flows get a token at creation (the contract); it is held sealed.
        for (name, what) in [("machine", "client_credentials"), ("imported", "refresh_token")] {
            let conn = connection(&app, "acme", name).await;
            let opened = app.broker.store.open_secrets(&conn).unwrap();
            assert_eq!(
                opened.access_token.as_ref().map(|t| t.expose_secret().to_owned()),
                Some(issued_access.clone()),
                "the {what} connection holds the issued access token"
            );
        }
        for name in ["machine", "imported"] {
            let path = format!("/api/oauth/connections/{name}");
            answers.push(answer(app.admin(Method::GET, &path, Some("acme")), 200, "get").await);
        }
        answers.push(answer(app.admin(Method::GET, "/api/oauth/connections", Some("acme")), 200, "list").await);
        let request = app
            .admin(Method::PATCH, "/api/oauth/connections/machine", Some("acme"))
            .json(&json!({"client_secret": patched_secret}));
        answers.push(answer(request, 200, "patch client_secret").await);
        let request = app
            .admin(Method::PATCH, "/api/oauth/connections/imported", Some("acme"))
            .json(&json!({"refresh_token": patched_refresh}));
        answers.push(answer(request, 200, "patch refresh_token").await);
        for name in ["machine", "imported"] {
            let path = format!("/api/oauth/connections/{name}/events");
            answers.push(answer(app.admin(Method::GET, &path, Some("acme")), 200, "events").await);
        }

        // Assert: the secrets are stored (so the searches below can find something) ...
        let machine = connection(&app, "acme", "machine").await;
        let opened = app.broker.store.open_secrets(&machine).unwrap();
        assert_eq!(opened.client_secret.unwrap().expose_secret(), patched_secret, "the patched secret is stored");
        let imported = connection(&app, "acme", "imported").await;
        let opened = app.broker.store.open_secrets(&imported).unwrap();
        assert_eq!(opened.client_secret.unwrap().expose_secret(), rt_secret, "the client secret is stored");
        assert!(opened.refresh_token.is_some(), "a refresh token is stored");

        // ... sealed under the configured key ...
        let sealed = app
            .db
            .query_texts(
                "select name, client_secret_sealed, access_token_sealed, refresh_token_sealed \
                 from connections order by name",
            )
            .await;
        assert_eq!(sealed.len(), 2, "{sealed:?}");
        for row in &sealed {
            for value in &row[1..] {
                assert!(
                    value == "NULL" || value.starts_with("v1:test1:"),
                    "a sealed column of {} is not `v1:test1:...`: {value}",
                    row[0]
                );
            }
        }
        assert!(sealed.iter().all(|r| r[1] != "NULL"), "client secrets are stored sealed: {sealed:?}");
        assert_ne!(sealed[0][3], "NULL", "the refresh token of `imported` is stored sealed: {sealed:?}");

        // ... and none of them is anywhere in clear.
        let raw = app.db.raw_contents().await;
        let logs = captured_logs();
        let secrets = [
            ("the client_credentials client secret", &cc_secret),
            ("the refresh_token client secret", &rt_secret),
            ("the imported refresh token", &imported_refresh),
            ("the patched client secret", &patched_secret),
            ("the patched refresh token", &patched_refresh),
            ("the issued access token", &issued_access),
            ("the issued refresh token", &issued_refresh),
        ];
        for (what, secret) in secrets {
            assert!(
                !contains(&raw, secret.as_bytes()),
                "{what} is in the database in clear"
            );
            assert!(!logs.contains(secret.as_str()), "{what} is in the logs");
            for text in &answers {
                assert!(!text.contains(secret.as_str()), "{what} is in an answer: {text}");
            }
        }
        for (client_id, secret) in [("cc-client", &cc_secret), ("cc-client", &patched_secret), ("rt-client", &rt_secret)] {
            let basic = STANDARD.encode(format!("{client_id}:{secret}"));
            assert!(!logs.contains(&basic), "an HTTP Basic credential of {client_id} is in the logs");
        }
        let created: Value = serde_json::from_str(&answers[0]).unwrap();
        assert_eq!(created["has_client_secret"], true, "the answer says a secret is held: {created}");
    }

    async fn a_ciphertext_copied_into_another_row_or_column_does_not_open(app) {
        let server = provider(&unique("access"), &unique("refresh")).await;
        let token_url = format!("{}/token", server.uri());
        let web = |name: &str| json!({
            "connection_name": name,
            "oauth_flow_type": "authorization_code",
            "client_id": "client-1",
            "client_secret": unique("secret"),
            "authorization_url": "https://login.example.com/authorize",
            "token_url": token_url,
        });
        app.create_connection(Some("acme"), &web("source")).await;
        app.create_connection(Some("acme"), &web("same-org")).await;
        app.create_connection(Some("other"), &web("source")).await;
        app.create_connection(Some("acme"), &json!({
            "connection_name": "with-refresh",
            "oauth_flow_type": "refresh_token",
            "client_id": "client-1",
            "client_secret": unique("secret"),
            "refresh_token": unique("refresh"),
            "token_url": token_url,
        })).await;
        for (org, name) in [("acme", "same-org"), ("other", "source"), ("acme", "with-refresh")] {
            let conn = connection(&app, org, name).await;
            assert!(app.broker.store.open_secrets(&conn).is_ok(), "{org}/{name} opens before tampering");
        }

        let source = "(select client_secret_sealed from connections where org_id = 'acme' and name = 'source')";
        let cases = [
            (
                "a client secret copied into another row of the same org",
                format!("update connections set client_secret_sealed = {source} where org_id = 'acme' and name = 'same-org'"),
                ("acme", "same-org"),
            ),
            (
                "a client secret copied into the same name in another org",
                format!("update connections set client_secret_sealed = {source} where org_id = 'other' and name = 'source'"),
                ("other", "source"),
            ),
            (
                "a refresh token copied into the client secret column of its own row",
                "update connections set client_secret_sealed = refresh_token_sealed \
                 where org_id = 'acme' and name = 'with-refresh'".to_owned(),
                ("acme", "with-refresh"),
            ),
        ];
        for (reason, sql, (org, name)) in cases {
            app.db.execute(&sql).await;
            let conn = connection(&app, org, name).await;
            assert_eq!(
                conn.sealed.client_secret.as_ref().map(|s| s.starts_with("v1:test1:")),
                Some(true),
                "{reason}: the copy is in place"
            );
            let opened = app.broker.store.open_secrets(&conn);
            assert!(opened.is_err(), "{reason}: opening must fail, got {opened:?}");
        }

        // The row the ciphertext came from still opens.
        let conn = connection(&app, "acme", "source").await;
        assert!(app.broker.store.open_secrets(&conn).is_ok(), "the original row still opens");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

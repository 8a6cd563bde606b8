//! End to end against a real authorization server (oidc-provider 9, see
//! `tests/e2e/provider.rs`): the code flow with PKCE through the broker's callback and a
//! scripted browser, the test URL, client credentials with both client authentication
//! methods, refresh-token rotation, a denied consent and an imported refresh token.
//!
//! The provider runs on real time while the broker runs on the test's `ManualClock`, so
//! expiry instants are the provider's `expires_in` added to `start_time()`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth_broker::domain::{ConnectionName, OrgId};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::helpers::*;
use crate::on_both_backends;
use crate::provider::{AuthMethod, ClientConfig, Provider, ProviderConfig, authorize_in_browser};

/// The confidential client the broker's `authorization_code` connections use.
const WEB_CLIENT: &str = "broker-web";
const WEB_SECRET: &str = "broker-web-secret";
/// Client credentials clients, one per token endpoint authentication method.
const CC_BASIC: &str = "service-basic";
const CC_BASIC_SECRET: &str = "service-basic-secret";
const CC_POST: &str = "service-post";
const CC_POST_SECRET: &str = "service-post-secret";
/// A second code-flow client, driven by the test itself (not the broker) to obtain a
/// refresh token to import.
const IMPORTER: &str = "importer";
const IMPORTER_SECRET: &str = "importer-secret";
const IMPORTER_REDIRECT: &str = "http://127.0.0.1:9/imported/callback";

/// The provider's access token lifetime (its default) as seen from the broker's clock.
const ACCESS_TTL_SECS: i64 = 300;

fn callback_uri(app: &TestApp, name: &str) -> String {
    app.url(&format!("/api/oauth/callback/{name}"))
}

/// Starts the provider with every client the scenarios need; the broker's web client may
/// redirect to the callback of each of `names`. `None`: skipped (already printed).
async fn start_provider(app: &TestApp, names: &[&str]) -> Option<Provider> {
    Provider::start(ProviderConfig {
        clients: vec![
            ClientConfig::authorization_code(
                WEB_CLIENT,
                WEB_SECRET,
                AuthMethod::ClientSecretBasic,
                names.iter().map(|n| callback_uri(app, n)),
            ),
            ClientConfig::client_credentials(
                CC_BASIC,
                CC_BASIC_SECRET,
                AuthMethod::ClientSecretBasic,
            ),
            ClientConfig::client_credentials(CC_POST, CC_POST_SECRET, AuthMethod::ClientSecretPost),
            ClientConfig::authorization_code(
                IMPORTER,
                IMPORTER_SECRET,
                AuthMethod::ClientSecretBasic,
                [IMPORTER_REDIRECT],
            ),
        ],
        ..ProviderConfig::default()
    })
    .await
}

/// An `authorization_code` connection for the broker's web client at `op`.
async fn auth_code_body(op: &Provider, name: &str, test_url: Option<String>) -> Value {
    let mut body = json!({
        "connection_name": name,
        "oauth_flow_type": "authorization_code",
        "client_id": WEB_CLIENT,
        "client_secret": WEB_SECRET,
        "token_auth_method": "client_secret_basic",
        "authorization_url": op.authorization_endpoint().await,
        "token_url": op.token_endpoint().await,
        "scopes": ["openid", "read"],
    });
    if let Some(test_url) = test_url {
        body["test_url"] = json!(test_url);
    }
    body
}

async fn connection(app: &TestApp, name: &str) -> Value {
    let res = app
        .admin(Method::GET, &format!("/api/oauth/connections/{name}"), None)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "GET connection {name}: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn event_kinds(app: &TestApp, name: &str) -> Vec<String> {
    let res = app
        .admin(
            Method::GET,
            &format!("/api/oauth/connections/{name}/events"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events of {name}: {body}"))
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// POSTs an admin action on a connection; returns status and JSON body.
async fn act(app: &TestApp, name: &str, action: &str) -> (u16, Value) {
    let res = app
        .admin(
            Method::POST,
            &format!("/api/oauth/connections/{name}/{action}"),
            None,
        )
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{action} {name}: not JSON ({e}): {text}"));
    (status, body)
}

fn param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// What the broker's callback answered to the browser.
struct CallbackPage {
    status: u16,
    content_type: String,
    body: String,
}

/// Authorize through the broker, sign in (and approve or cancel) at the provider as a
/// browser would, then let that browser follow the provider's redirect to the broker.
async fn connect_in_browser(
    app: &TestApp,
    op: &Provider,
    name: &str,
    username: &str,
    approve: bool,
) -> CallbackPage {
    let (status, started) = act(app, name, "authorize").await;
    assert_eq!(status, 200, "authorize {name}: {started}");
    let authorization_url = started["authorization_url"].as_str().unwrap();
    assert!(
        authorization_url.starts_with(&op.authorization_endpoint().await),
        "{authorization_url}"
    );
    assert_eq!(
        param(authorization_url, "redirect_uri"),
        Some(callback_uri(app, name))
    );
    assert_eq!(connection(app, name).await["status"], "waiting_callback");

    let redirect = authorize_in_browser(authorization_url, username, approve).await;
    assert!(
        redirect.starts_with(&callback_uri(app, name)),
        "the provider sends the browser to the broker's callback: {redirect}"
    );
    assert_eq!(
        param(&redirect, "state"),
        started["state"].as_str().map(str::to_owned)
    );
    assert_eq!(
        param(&redirect, "iss").as_deref(),
        Some(op.issuer.as_str()),
        "the provider adds iss (RFC 9207), which the callback must tolerate"
    );

    let res = app.client.get(&redirect).send().await.unwrap();
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = res.text().await.unwrap();
    CallbackPage {
        status,
        content_type,
        body,
    }
}

/// Sends a GET to the provider's `/test/userinfo-like` with `token`; returns the status.
async fn userinfo_like(op: &Provider, token: &str) -> u16 {
    reqwest::Client::new()
        .get(op.userinfo_like_url())
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The plaintext (access token, refresh token) the broker stores for `name` in GLOBAL.
async fn stored_tokens(app: &TestApp, name: &str) -> (Option<String>, Option<String>) {
    let conn = app
        .broker
        .store
        .get_connection(
            &OrgId::parse("GLOBAL").unwrap(),
            &ConnectionName::parse(name).unwrap(),
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("connection {name} exists"));
    let secrets = app.broker.store.open_secrets(&conn).unwrap();
    (
        secrets.access_token.map(|t| t.expose_secret().to_owned()),
        secrets.refresh_token.map(|t| t.expose_secret().to_owned()),
    )
}

/// The `refresh_token_sealed` column of `name`, read behind the service's back.
async fn sealed_refresh_token(app: &TestApp, name: &str) -> String {
    let rows = app
        .db
        .query_texts(&format!(
            "select refresh_token_sealed from connections where name = '{name}'"
        ))
        .await;
    assert_eq!(rows.len(), 1, "one row for {name}: {rows:?}");
    rows[0][0].clone()
}

/// Runs the code flow with PKCE straight against the provider as the `importer` client
/// (no broker involved) and returns its refresh token.
async fn refresh_token_from_provider(op: &Provider) -> String {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut url = Url::parse(&op.authorization_endpoint().await).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", IMPORTER)
        .append_pair("redirect_uri", IMPORTER_REDIRECT)
        .append_pair("scope", "openid read")
        .append_pair("state", "import-state")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let redirect = authorize_in_browser(url.as_str(), "erin", true).await;
    let code = param(&redirect, "code").unwrap_or_else(|| panic!("no code in {redirect}"));
    let res = reqwest::Client::new()
        .post(op.token_endpoint().await)
        .basic_auth(IMPORTER, Some(IMPORTER_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", IMPORTER_REDIRECT),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status();
    let tokens: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{tokens}\n{}", op.logs());
    tokens["refresh_token"]
        .as_str()
        .expect("a refresh token from the code flow")
        .to_owned()
}

fn expected_expiry() -> String {
    (start_time() + chrono::Duration::seconds(ACCESS_TTL_SECS))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

on_both_backends! {
    async fn authorization_code_flow_with_pkce_completes_through_the_callback(app) {
        let Some(op) = start_provider(&app, &["web"]).await else { return };
        let created = app.create_connection(None, &auth_code_body(&op, "web", None).await).await;
        assert_eq!(created["status"], "not_connected", "{created}");
        assert_eq!(created["redirect_uri"], callback_uri(&app, "web"));

        let page = connect_in_browser(&app, &op, "web", "alice", true).await;
        assert_eq!(page.status, 200, "callback page: {}\nprovider logs:\n{}", page.body, op.logs());
        assert!(page.content_type.starts_with("text/html"), "{}", page.content_type);

        let conn = connection(&app, "web").await;
        assert_eq!(conn["status"], "completed", "{conn}");
        assert_eq!(conn["has_refresh_token"], true, "{conn}");
        assert_eq!(conn["token_expires_at"], expected_expiry(), "{conn}");
        let kinds = event_kinds(&app, "web").await;
        for kind in ["callback_succeeded", "token_acquired"] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
        }

        // The access token the broker holds is one the provider honours.
        let (access, refresh) = stored_tokens(&app, "web").await;
        assert_eq!(userinfo_like(&op, &access.expect("an access token")).await, 200);
        assert!(refresh.is_some());
        assert!(!page.body.contains(&refresh.unwrap()), "no token on the page");
    }

    async fn authorization_code_flow_runs_the_test_url_in_the_callback(app) {
        let Some(op) = start_provider(&app, &["tested"]).await else { return };
        let body = auth_code_body(&op, "tested", Some(op.userinfo_like_url())).await;
        app.create_connection(None, &body).await;

        let page = connect_in_browser(&app, &op, "tested", "bob", true).await;
        assert_eq!(page.status, 200, "callback page: {}\nprovider logs:\n{}", page.body, op.logs());
        assert!(page.content_type.starts_with("text/html"), "{}", page.content_type);

        let conn = connection(&app, "tested").await;
        assert_eq!(conn["status"], "completed", "{conn}");
        assert!(conn["last_test_at"].is_string(), "the callback ran the test: {conn}");
        assert!(conn["status_message"].is_null() || conn["status_message"].is_string());

        let (status, outcome) = act(&app, "tested", "test").await;
        assert_eq!(status, 200, "{outcome}");
        assert_eq!(outcome["test_result"], "success", "{outcome}");
        assert!(outcome["tested_at"].is_string(), "{outcome}");
    }

    async fn client_credentials_with_basic_and_post_client_authentication(app) {
        let Some(op) = start_provider(&app, &[]).await else { return };
        let token_url = op.token_endpoint().await;
        for (name, client_id, secret, method) in [
            ("cc-basic", CC_BASIC, CC_BASIC_SECRET, "client_secret_basic"),
            ("cc-post", CC_POST, CC_POST_SECRET, "client_secret_post"),
        ] {
            let created = app.create_connection(None, &json!({
                "connection_name": name,
                "oauth_flow_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                "token_auth_method": method,
                "token_url": token_url,
                "scopes": ["read"],
                "test_url": op.userinfo_like_url(),
            })).await;
            assert_eq!(created["status"], "completed", "{method}: {created}\nprovider logs:\n{}", op.logs());
            assert_eq!(created["token_expires_at"], expected_expiry(), "{created}");
            assert_eq!(created["has_refresh_token"], false, "{created}");

            let (status, outcome) = act(&app, name, "test").await;
            assert_eq!(status, 200, "{outcome}");
            assert_eq!(outcome["test_result"], "success", "{method}: {outcome}");
            assert!(connection(&app, name).await["last_test_at"].is_string());
        }

        // The provider insists on the registered method: the wrong one fails the grant,
        // and the connection is still created.
        let created = app.create_connection(None, &json!({
            "connection_name": "cc-wrong-method",
            "oauth_flow_type": "client_credentials",
            "client_id": CC_POST,
            "client_secret": CC_POST_SECRET,
            "token_auth_method": "client_secret_basic",
            "token_url": token_url,
            "scopes": ["read"],
        })).await;
        assert_eq!(created["status"], "failed", "{created}");
        assert!(
            created["status_message"].as_str().unwrap_or_default().contains("invalid_client"),
            "{created}"
        );
    }

    async fn refresh_twice_follows_refresh_token_rotation(app) {
        let Some(op) = start_provider(&app, &["rotating"]).await else { return };
        app.create_connection(None, &auth_code_body(&op, "rotating", None).await).await;
        let page = connect_in_browser(&app, &op, "rotating", "carol", true).await;
        assert_eq!(page.status, 200, "callback page: {}\nprovider logs:\n{}", page.body, op.logs());
        assert_eq!(connection(&app, "rotating").await["status"], "completed");

        let mut refresh_tokens = vec![stored_tokens(&app, "rotating").await.1.expect("a refresh token")];
        let mut sealed = vec![sealed_refresh_token(&app, "rotating").await];
        for round in 1..=2 {
            let (status, conn) = act(&app, "rotating", "refresh").await;
            assert_eq!(status, 200, "refresh #{round}: {conn}\nprovider logs:\n{}", op.logs());
            assert_eq!(conn["status"], "completed", "refresh #{round}: {conn}");
            assert_eq!(conn["has_refresh_token"], true, "refresh #{round}: {conn}");
            assert!(conn["last_refresh_at"].is_string(), "refresh #{round}: {conn}");
            assert_eq!(connection(&app, "rotating").await["status"], "completed");

            let (access, refresh) = stored_tokens(&app, "rotating").await;
            let refresh = refresh.expect("a refresh token after refreshing");
            assert!(
                !refresh_tokens.contains(&refresh),
                "refresh #{round}: the rotated refresh token is stored"
            );
            refresh_tokens.push(refresh);
            assert_eq!(userinfo_like(&op, &access.expect("an access token")).await, 200);

            let now_sealed = sealed_refresh_token(&app, "rotating").await;
            assert_ne!(now_sealed, "NULL");
            assert!(!sealed.contains(&now_sealed), "refresh #{round}: the sealed column changed");
            sealed.push(now_sealed);
        }
        let kinds = event_kinds(&app, "rotating").await;
        assert!(kinds.iter().filter(|k| *k == "refreshed").count() >= 2, "{kinds:?}");
    }

    async fn denied_consent_fails_the_connection(app) {
        let Some(op) = start_provider(&app, &["denied"]).await else { return };
        app.create_connection(None, &auth_code_body(&op, "denied", None).await).await;

        let page = connect_in_browser(&app, &op, "denied", "dave", false).await;
        assert_eq!(page.status, 400, "callback page: {}", page.body);
        assert!(page.content_type.starts_with("text/html"), "{}", page.content_type);
        assert!(page.body.contains("access_denied"), "{}", page.body);

        let conn = connection(&app, "denied").await;
        assert_eq!(conn["status"], "failed", "{conn}");
        assert!(
            conn["status_message"].as_str().unwrap_or_default().starts_with("access_denied"),
            "{conn}"
        );
        assert_eq!(conn["has_refresh_token"], false, "{conn}");
        let kinds = event_kinds(&app, "denied").await;
        assert!(kinds.iter().any(|k| k == "callback_failed"), "{kinds:?}");
        assert!(!kinds.iter().any(|k| k == "token_acquired"), "{kinds:?}");
    }

    async fn an_imported_refresh_token_completes_at_once(app) {
        let Some(op) = start_provider(&app, &[]).await else { return };
        let imported = refresh_token_from_provider(&op).await;

        let created = app.create_connection(None, &json!({
            "connection_name": "imported",
            "oauth_flow_type": "refresh_token",
            "client_id": IMPORTER,
            "client_secret": IMPORTER_SECRET,
            "token_url": op.token_endpoint().await,
            "scopes": ["openid", "read"],
            "refresh_token": imported,
            "test_url": op.userinfo_like_url(),
        })).await;
        assert_eq!(created["status"], "completed", "{created}\nprovider logs:\n{}", op.logs());
        assert_eq!(created["has_refresh_token"], true, "{created}");
        assert_eq!(created["token_expires_at"], expected_expiry(), "{created}");

        // Redeeming rotated the grant: the broker keeps the new refresh token, not the
        // imported one (which the provider no longer accepts).
        let (access, refresh) = stored_tokens(&app, "imported").await;
        assert_ne!(refresh.as_deref(), Some(imported.as_str()), "the rotated refresh token is stored");
        assert!(refresh.is_some());
        assert_eq!(userinfo_like(&op, &access.expect("an access token")).await, 200);

        // And it keeps working: a forced refresh with the stored (rotated) token.
        let (status, conn) = act(&app, "imported", "refresh").await;
        assert_eq!(status, 200, "{conn}\nprovider logs:\n{}", op.logs());
        assert_eq!(conn["status"], "completed", "{conn}");
        let (status, outcome) = act(&app, "imported", "test").await;
        assert_eq!(status, 200, "{outcome}");
        assert_eq!(outcome["test_result"], "success", "{outcome}");
    }
}

//! Proves the end-to-end OAuth provider harness (`tests/e2e/provider.rs`) works on its
//! own, without the broker: the code flow with PKCE through the development login and
//! consent pages, refresh-token rotation and replay, client credentials, the
//! `/test/userinfo-like` route and a denied consent. Then what the broker's newer
//! features need:
//! - `private_key_jwt` client authentication (RFC 7523 2.2), RS256, PS256, ES256 and x5t;
//! - revocation and introspection (RFC 7009, 7662), refresh-token reuse, `/test/stats`;
//! - pushed authorization requests (RFC 9126) and `iss` in authorization responses (RFC 9207);
//! - the device authorization grant (RFC 8628);
//! - the on-behalf-of grants (RFC 8693 token exchange, Microsoft Entra's jwt-bearer form).

#[path = "e2e/provider.rs"]
mod provider;
mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use provider::{
    ACCESS_TOKEN_TYPE, AuthMethod, ClientAuth, ClientConfig, DEVICE_CODE_GRANT, JWT_BEARER_GRANT,
    Provider, ProviderConfig, ResourceConfig, TOKEN_EXCHANGE_GRANT, TestKey, TokenFormat,
    authorize_in_browser,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";

fn config() -> ProviderConfig {
    ProviderConfig {
        clients: vec![
            ClientConfig::authorization_code(
                "web-app",
                "web-app-secret",
                AuthMethod::ClientSecretBasic,
                [REDIRECT, "http://127.0.0.1:9/other"],
            ),
            ClientConfig::authorization_code(
                "post-app",
                "post-app-secret",
                AuthMethod::ClientSecretPost,
                [REDIRECT],
            ),
            ClientConfig::client_credentials(
                "service",
                "service-secret",
                AuthMethod::ClientSecretBasic,
            ),
        ],
        access_token_ttl_secs: 120,
        client_credentials_ttl_secs: Some(90),
        ..ProviderConfig::default()
    }
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn new_pkce() -> Pkce {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

async fn authorization_url(op: &Provider, client_id: &str, state: &str, pkce: &Pkce) -> String {
    let mut url = Url::parse(&op.authorization_endpoint().await).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "openid read")
        .append_pair("state", state)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256");
    url.to_string()
}

fn query(url: &str) -> Vec<(String, String)> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(url: &str, name: &str) -> Option<String> {
    query(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// POSTs a token request with client_secret_basic; returns status and JSON body.
async fn token_basic(op: &Provider, id: &str, secret: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = http()
        .post(op.token_endpoint().await)
        .basic_auth(id, Some(secret))
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn userinfo_like(op: &Provider, token: &str) -> u16 {
    http()
        .get(op.userinfo_like_url())
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn code_flow_with_pkce_then_refresh_rotation_and_replay() {
    let Some(op) = Provider::start(config()).await else {
        return;
    };
    assert_eq!(op.issuer, format!("http://127.0.0.1:{}", op.port));

    let pkce = new_pkce();
    let url = authorization_url(&op, "web-app", "state-123", &pkce).await;
    let redirect = authorize_in_browser(&url, "alice", true).await;
    assert!(redirect.starts_with(REDIRECT), "{redirect}");
    assert_eq!(param(&redirect, "state").as_deref(), Some("state-123"));
    assert_eq!(param(&redirect, "iss").as_deref(), Some(op.issuer.as_str()));
    let code = param(&redirect, "code").expect("code in redirect");

    // A wrong verifier is refused (and does not consume the code in a usable way).
    let (status, body) = token_basic(
        &op,
        "web-app",
        "web-app-secret",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &new_pkce().verifier),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // The same flow again, with the right verifier this time.
    let url = authorization_url(&op, "web-app", "state-456", &pkce).await;
    let redirect = authorize_in_browser(&url, "alice", true).await;
    let code = param(&redirect, "code").expect("code in redirect");
    let (status, tokens) = token_basic(
        &op,
        "web-app",
        "web-app-secret",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}\n{}", op.logs());
    let access = tokens["access_token"].as_str().expect("access_token");
    let refresh_1 = tokens["refresh_token"].as_str().expect("refresh_token");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 120);
    assert_eq!(tokens["scope"], "openid read");
    assert!(tokens["id_token"].is_string());
    assert_eq!(userinfo_like(&op, access).await, 200);
    assert_eq!(userinfo_like(&op, "not-a-token").await, 401);

    // Refresh: a new refresh token and a new working access token.
    let (status, refreshed) = token_basic(
        &op,
        "web-app",
        "web-app-secret",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_1),
        ],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let refresh_2 = refreshed["refresh_token"]
        .as_str()
        .expect("rotated refresh_token");
    assert_ne!(refresh_2, refresh_1);
    let access_2 = refreshed["access_token"].as_str().unwrap();
    assert_ne!(access_2, access);
    assert_eq!(refreshed["expires_in"], 120);
    assert_eq!(userinfo_like(&op, access_2).await, 200);

    // The old refresh token is dead. (Replaying it also revokes the whole grant, so the
    // new refresh token dies too: oidc-provider's replay detection.)
    let (status, body) = token_basic(
        &op,
        "web-app",
        "web-app-secret",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_1),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let (status, body) = token_basic(
        &op,
        "web-app",
        "web-app-secret",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_2),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(userinfo_like(&op, access_2).await, 401);
}

#[tokio::test]
async fn client_secret_post_client_gets_tokens() {
    let Some(op) = Provider::start(config()).await else {
        return;
    };
    let pkce = new_pkce();
    let url = authorization_url(&op, "post-app", "s", &pkce).await;
    let redirect = authorize_in_browser(&url, "bob", true).await;
    let code = param(&redirect, "code").expect("code in redirect");
    let token_endpoint = op.token_endpoint().await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", pkce.verifier.as_str()),
        ("client_id", "post-app"),
        ("client_secret", "post-app-secret"),
    ];
    let resp = http()
        .post(&token_endpoint)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    assert!(tokens["access_token"].is_string() && tokens["refresh_token"].is_string());

    // Basic auth is refused for a client registered with client_secret_post.
    let (status, body) = token_basic(
        &op,
        "post-app",
        "post-app-secret",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // And the secret in the body is refused for a client_secret_basic client.
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "service"),
        ("client_secret", "service-secret"),
    ];
    let resp = http()
        .post(&token_endpoint)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn client_credentials_opaque_and_jwt() {
    let Some(op) = Provider::start(config()).await else {
        return;
    };
    let (status, token) = token_basic(
        &op,
        "service",
        "service-secret",
        &[
            ("grant_type", "client_credentials"),
            ("scope", "read unknown"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["expires_in"], 90);
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["scope"], "read"); // unknown scopes are dropped
    assert!(token.get("refresh_token").is_none());
    let access = token["access_token"].as_str().unwrap();
    assert!(!access.contains('.'), "opaque: {access}");
    assert_eq!(userinfo_like(&op, access).await, 200);

    let (status, body) = token_basic(
        &op,
        "service",
        "wrong",
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    drop(op);

    // With a resource server: JWT access tokens for it, by default.
    let Some(op) = Provider::start(ProviderConfig {
        resource: Some(ResourceConfig {
            indicator: "https://api.example.test/".into(),
            scope: "read write".into(),
            format: TokenFormat::Jwt,
        }),
        ..config()
    })
    .await
    else {
        return;
    };
    let (status, token) = token_basic(
        &op,
        "service",
        "service-secret",
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["expires_in"], 90);
    let access = token["access_token"].as_str().unwrap();
    assert_eq!(access.split('.').count(), 3, "JWT: {access}");
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "https://api.example.test/");
    assert_eq!(claims["client_id"], "service");
    assert_eq!(userinfo_like(&op, access).await, 200);
    let mut forged = access.to_owned();
    forged.push('x');
    assert_eq!(userinfo_like(&op, &forged).await, 401);
}

#[tokio::test]
async fn denied_consent_redirects_with_access_denied() {
    let Some(op) = Provider::start(config()).await else {
        return;
    };
    let url = authorization_url(&op, "web-app", "deny-me", &new_pkce()).await;
    let redirect = authorize_in_browser(&url, "carol", false).await;
    assert!(redirect.starts_with(REDIRECT), "{redirect}");
    assert_eq!(param(&redirect, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&redirect, "state").as_deref(), Some("deny-me"));
    assert!(param(&redirect, "code").is_none());
}

#[tokio::test]
async fn no_rotation_short_ttl_and_restart() {
    let Some(mut op) = Provider::start(ProviderConfig {
        rotate_refresh_tokens: false,
        access_token_ttl_secs: 2,
        ..config()
    })
    .await
    else {
        return;
    };
    let pkce = new_pkce();
    let url = authorization_url(&op, "web-app", "s", &pkce).await;
    let code = param(&authorize_in_browser(&url, "dave", true).await, "code").unwrap();
    let (status, tokens) = token_basic(
        &op,
        "web-app",
        "web-app-secret",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["expires_in"], 2);
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(userinfo_like(&op, access).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(userinfo_like(&op, access).await, 401, "expired");

    for _ in 0..2 {
        let (status, refreshed) = token_basic(
            &op,
            "web-app",
            "web-app-secret",
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
        assert_eq!(status, 200, "{refreshed}");
        assert_eq!(
            refreshed["refresh_token"].as_str(),
            Some(refresh),
            "not rotated"
        );
    }

    // A restart forgets every token: refresh is then invalid_grant.
    let port = op.port;
    op.restart().await;
    assert_eq!(op.port, port);
    let (status, body) = token_basic(
        &op,
        "web-app",
        "web-app-secret",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

// ---------------------------------------------------------------------------------------
// private_key_jwt (RFC 7523 2.2)

/// Signs a client assertion for `client_id` with `key`: `iss` = `sub` = client id, `aud`,
/// a fresh `jti`, `iat` now and `exp` two minutes later. `header` picks `kid`/`x5t`.
fn assertion(key: &TestKey, header: jsonwebtoken::Header, client_id: &str, aud: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let encoding_key = match header.alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(key.private_pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(key.private_pem.as_bytes()),
    }
    .expect("test key PEM");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
        "exp": now + 120,
    });
    jsonwebtoken::encode(&header, &claims, &encoding_key).expect("sign assertion")
}

fn header_with_kid(alg: jsonwebtoken::Algorithm, kid: &str) -> jsonwebtoken::Header {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.into());
    header
}

/// Microsoft Entra's form: certificate thumbprints, no `kid`.
fn header_with_thumbprints(alg: jsonwebtoken::Algorithm, key: &TestKey) -> jsonwebtoken::Header {
    let mut header = jsonwebtoken::Header::new(alg);
    header.x5t = key.x5t.clone();
    header.x5t_s256 = key.x5t_s256.clone();
    header
}

const KEYED: &str = "keyed-service";

/// A client_credentials client authenticating with the RSA certificate (kid `rsa-1`) and
/// the EC key (kid `ec-1`).
fn keyed_config() -> ProviderConfig {
    ProviderConfig {
        clients: vec![
            ClientConfig::client_credentials(KEYED, "", AuthMethod::PrivateKeyJwt).with_keys([
                TestKey::rsa().client_key(Some("rsa-1")),
                TestKey::ec_p256().client_key(Some("ec-1")),
            ]),
        ],
        ..config()
    }
}

async fn client_credentials_with(op: &Provider, client_assertion: &str) -> (u16, Value) {
    op.token(
        &ClientAuth::private_key_jwt(client_assertion),
        &[("grant_type", "client_credentials"), ("scope", "read")],
    )
    .await
}

#[tokio::test]
async fn private_key_jwt_accepts_rs256_ps256_and_es256_assertions() {
    use jsonwebtoken::Algorithm::{ES256, PS256, RS256};
    let Some(op) = Provider::start(keyed_config()).await else {
        return;
    };
    let token_endpoint = op.token_endpoint().await;

    for (alg, key, kid) in [
        (RS256, TestKey::rsa(), "rsa-1"),
        (PS256, TestKey::rsa(), "rsa-1"),
        (ES256, TestKey::ec_p256(), "ec-1"),
    ] {
        let jwt = assertion(&key, header_with_kid(alg, kid), KEYED, &token_endpoint);
        let (status, body) = client_credentials_with(&op, &jwt).await;
        assert_eq!(status, 200, "{alg:?}: {body}\n{}", op.logs());
        assert!(body["access_token"].is_string(), "{alg:?}: {body}");
    }

    // What a broker test checks on the assertions the provider saw.
    let seen = op.client_assertions().await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    let algs: Vec<&str> = seen
        .iter()
        .map(|a| a["header"]["alg"].as_str().unwrap())
        .collect();
    assert_eq!(algs, ["RS256", "PS256", "ES256"]);
    let kids: Vec<&str> = seen
        .iter()
        .map(|a| a["header"]["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["rsa-1", "rsa-1", "ec-1"]);
    let jtis: std::collections::HashSet<&str> = seen
        .iter()
        .map(|a| a["claims"]["jti"].as_str().unwrap())
        .collect();
    assert_eq!(jtis.len(), 3, "every jti is unique");
    for a in &seen {
        assert_eq!(a["endpoint"], "token");
        assert_eq!(a["status"], 200);
        assert_eq!(a["claims"]["aud"], token_endpoint.as_str());
        assert_eq!(a["claims"]["iss"], KEYED);
        let lifetime = a["claims"]["exp"].as_u64().unwrap() - a["claims"]["iat"].as_u64().unwrap();
        assert!(lifetime <= 300, "exp - iat = {lifetime}");
    }
}

#[tokio::test]
async fn private_key_jwt_signed_with_the_wrong_key_is_invalid_client() {
    use jsonwebtoken::Algorithm::RS256;
    let Some(op) = Provider::start(keyed_config()).await else {
        return;
    };
    let aud = op.token_endpoint().await;
    let wrong = TestKey::rsa_wrong();
    for header in [
        header_with_kid(RS256, "rsa-1"),
        jsonwebtoken::Header::new(RS256),
    ] {
        let jwt = assertion(&wrong, header, KEYED, &aud);
        let (status, body) = client_credentials_with(&op, &jwt).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
    }
    // A kid the client never registered names no key at all.
    let jwt = assertion(&TestKey::rsa(), header_with_kid(RS256, "nope"), KEYED, &aud);
    assert_eq!(client_credentials_with(&op, &jwt).await.0, 401);
    let statuses: Vec<u64> = op
        .client_assertions()
        .await
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [401, 401, 401]);
}

#[tokio::test]
async fn private_key_jwt_refuses_a_replayed_assertion_and_a_foreign_audience() {
    use jsonwebtoken::Algorithm::ES256;
    let Some(op) = Provider::start(keyed_config()).await else {
        return;
    };
    let key = TestKey::ec_p256();
    let jwt = assertion(&key, header_with_kid(ES256, "ec-1"), KEYED, &op.issuer);
    assert_eq!(
        client_credentials_with(&op, &jwt).await.0,
        200,
        "aud = issuer is fine"
    );
    let (status, body) = client_credentials_with(&op, &jwt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "replayed jti"
    );

    let jwt = assertion(
        &key,
        header_with_kid(ES256, "ec-1"),
        KEYED,
        "https://elsewhere.test/token",
    );
    let (status, body) = client_credentials_with(&op, &jwt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "foreign aud"
    );
}

#[tokio::test]
async fn private_key_jwt_accepts_entra_style_thumbprint_headers_without_kid() {
    use jsonwebtoken::Algorithm::{PS256, RS256};
    let Some(op) = Provider::start(keyed_config()).await else {
        return;
    };
    let aud = op.token_endpoint().await;
    let key = TestKey::rsa();
    for alg in [RS256, PS256] {
        let jwt = assertion(&key, header_with_thumbprints(alg, &key), KEYED, &aud);
        let (status, body) = client_credentials_with(&op, &jwt).await;
        assert_eq!(status, 200, "{alg:?}: {body}\n{}", op.logs());
    }
    let seen = op.client_assertions().await;
    for a in &seen {
        assert!(a["header"].get("kid").is_none(), "{a}");
        assert_eq!(a["header"]["x5t"].as_str(), key.x5t.as_deref());
        assert_eq!(a["header"]["x5t#S256"].as_str(), key.x5t_s256.as_deref());
    }

    // A thumbprint that names no registered certificate is refused, signature or not
    // (as Entra does).
    let mut header = header_with_thumbprints(RS256, &key);
    header.x5t = Some("bm90LXRoZS1yaWdodC10aHVtYnByaW50".into());
    header.x5t_s256 = None;
    let (status, body) = client_credentials_with(&op, &assertion(&key, header, KEYED, &aud)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
}

#[tokio::test]
async fn private_key_jwt_works_at_par_token_introspection_revocation_and_device_endpoints() {
    use jsonwebtoken::Algorithm::PS256;
    let mut cfg = config();
    cfg.clients.push(
        ClientConfig::authorization_code("keyed-app", "", AuthMethod::PrivateKeyJwt, [REDIRECT])
            .with_grant_types([DEVICE_CODE_GRANT])
            .with_keys([TestKey::rsa().client_key(Some("rsa-1"))]),
    );
    let Some(op) = Provider::start(cfg).await else {
        return;
    };
    let key = TestKey::rsa();
    // aud: the endpoint's own URL (oidc-provider also takes the issuer or token endpoint).
    let signed = |aud: &str| {
        ClientAuth::private_key_jwt(&assertion(
            &key,
            header_with_kid(PS256, "rsa-1"),
            "keyed-app",
            aud,
        ))
    };

    let pkce = new_pkce();
    let par = op.pushed_authorization_request_endpoint().await;
    let (status, pushed) = signed(&par)
        .post_form(&par, &authorization_params("keyed-app", "s", &pkce))
        .await;
    assert_eq!(status, 201, "{pushed}\n{}", op.logs());
    let mut url = Url::parse(&op.authorization_endpoint().await).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", "keyed-app")
        .append_pair("request_uri", pushed["request_uri"].as_str().unwrap());
    let code = param(
        &authorize_in_browser(url.as_str(), "quinn", true).await,
        "code",
    )
    .unwrap();

    let token_endpoint = op.token_endpoint().await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let (status, tokens) = op.token(&signed(&token_endpoint), &form).await;
    assert_eq!(status, 200, "{tokens}");
    let refresh_token = tokens["refresh_token"].as_str().unwrap();

    let introspection = op.introspection_endpoint().await;
    assert_eq!(
        op.introspect_as(&signed(&introspection), refresh_token)
            .await["active"],
        true
    );
    let revocation = op.revocation_endpoint().await;
    assert_eq!(op.revoke(&signed(&revocation), refresh_token).await, 200);
    assert_eq!(
        op.introspect_as(&signed(&introspection), refresh_token)
            .await["active"],
        false
    );

    let device = op.device_authorization_endpoint().await;
    let (status, body) = signed(&device)
        .post_form(&device, &[("scope", "openid")])
        .await;
    assert_eq!(status, 200, "{body}");

    let seen: Vec<(String, u64)> = op
        .client_assertions()
        .await
        .iter()
        .map(|a| {
            (
                a["endpoint"].as_str().unwrap().to_owned(),
                a["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        "pushed_authorization_request",
        "token",
        "introspection",
        "revocation",
        "introspection",
        "device_authorization",
    ]
    .map(|e| {
        (
            e.to_owned(),
            if e == "pushed_authorization_request" {
                201
            } else {
                200
            },
        )
    });
    assert_eq!(seen, expected);
}

// ---------------------------------------------------------------------------------------
// PAR (RFC 9126) and iss (RFC 9207)

const PAR_ONLY: &str = "par-only";

fn par_config() -> ProviderConfig {
    let mut cfg = config();
    cfg.clients.push(
        ClientConfig::authorization_code(
            PAR_ONLY,
            "par-secret",
            AuthMethod::ClientSecretBasic,
            [REDIRECT],
        )
        .requiring_par(),
    );
    cfg
}

/// The authorization request parameters of [`authorization_url`], as a form.
fn authorization_params<'a>(
    client_id: &'a str,
    state: &'a str,
    pkce: &'a Pkce,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "openid read"),
        ("state", state),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
    ]
}

#[tokio::test]
async fn pushed_authorization_request_leads_through_login_and_consent_to_tokens() {
    let Some(op) = Provider::start(par_config()).await else {
        return;
    };
    let pkce = new_pkce();
    let (status, pushed) = ClientAuth::basic(PAR_ONLY, "par-secret")
        .post_form(
            &op.pushed_authorization_request_endpoint().await,
            &authorization_params(PAR_ONLY, "par-state", &pkce),
        )
        .await;
    assert_eq!(status, 201, "{pushed}\n{}", op.logs());
    let request_uri = pushed["request_uri"].as_str().expect("request_uri");
    assert!(
        request_uri.starts_with("urn:ietf:params:oauth:request_uri:"),
        "{request_uri}"
    );
    assert!(pushed["expires_in"].as_u64().unwrap() > 0);

    // RFC 9126 4: the authorization request carries only client_id and request_uri.
    let mut url = Url::parse(&op.authorization_endpoint().await).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", PAR_ONLY)
        .append_pair("request_uri", request_uri);
    let redirect = authorize_in_browser(url.as_str(), "erin", true).await;
    assert!(redirect.starts_with(REDIRECT), "{redirect}");
    assert_eq!(param(&redirect, "state").as_deref(), Some("par-state"));
    assert_eq!(param(&redirect, "iss").as_deref(), Some(op.issuer.as_str()));
    let code = param(&redirect, "code").expect("code");

    let (status, tokens) = token_basic(
        &op,
        PAR_ONLY,
        "par-secret",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["access_token"].is_string() && tokens["refresh_token"].is_string());

    // A request_uri works once.
    let again = authorize_in_browser(url.as_str(), "erin", true).await;
    assert_eq!(
        param(&again, "error").as_deref(),
        Some("invalid_request_uri"),
        "{again}"
    );
}

#[tokio::test]
async fn client_requiring_par_is_refused_a_plain_authorization_request() {
    let Some(op) = Provider::start(par_config()).await else {
        return;
    };
    let url = authorization_url(&op, PAR_ONLY, "plain", &new_pkce()).await;
    let redirect = authorize_in_browser(&url, "erin", true).await;
    assert!(redirect.starts_with(REDIRECT), "{redirect}");
    assert_eq!(
        param(&redirect, "error").as_deref(),
        Some("invalid_request"),
        "{redirect}"
    );
    assert_eq!(
        param(&redirect, "error_description").as_deref(),
        Some("Pushed Authorization Request must be used")
    );
    assert!(param(&redirect, "code").is_none());

    // Other clients may still choose either way.
    let url = authorization_url(&op, "web-app", "plain", &new_pkce()).await;
    assert!(param(&authorize_in_browser(&url, "erin", true).await, "code").is_some());
}

#[tokio::test]
async fn authorization_responses_carry_iss_and_discovery_says_so() {
    let Some(op) = Provider::start(config()).await else {
        return;
    };
    assert_eq!(
        op.discovery().await["authorization_response_iss_parameter_supported"],
        true
    );

    let url = authorization_url(&op, "web-app", "s", &new_pkce()).await;
    let granted = authorize_in_browser(&url, "frank", true).await;
    assert!(param(&granted, "code").is_some(), "{granted}");
    assert_eq!(param(&granted, "iss").as_deref(), Some(op.issuer.as_str()));

    // RFC 9207 2: error responses carry it too.
    let url = authorization_url(&op, "web-app", "s", &new_pkce()).await;
    let denied = authorize_in_browser(&url, "frank", false).await;
    assert_eq!(param(&denied, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&denied, "iss").as_deref(), Some(op.issuer.as_str()));
}

// ---------------------------------------------------------------------------------------
// Device authorization grant (RFC 8628)

const DEVICE: &str = "tv-app";

fn device_config() -> ProviderConfig {
    let mut cfg = config();
    cfg.clients.push(ClientConfig::device(
        DEVICE,
        "tv-secret",
        AuthMethod::ClientSecretBasic,
    ));
    cfg.device_poll_interval_secs = 1;
    cfg
}

/// RFC 8628 3.1: returns the device authorization response.
async fn start_device_flow(op: &Provider) -> Value {
    let (status, body) = ClientAuth::basic(DEVICE, "tv-secret")
        .post_form(
            &op.device_authorization_endpoint().await,
            &[("scope", "openid read offline_access")],
        )
        .await;
    assert_eq!(status, 200, "{body}\n{}", op.logs());
    body
}

/// RFC 8628 3.4: one poll of the token endpoint.
async fn poll(op: &Provider, device: &Value) -> (u16, Value) {
    op.token(
        &ClientAuth::basic(DEVICE, "tv-secret"),
        &[
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", device["device_code"].as_str().unwrap()),
        ],
    )
    .await
}

async fn wait_interval(device: &Value) {
    let secs = device["interval"].as_u64().expect("interval");
    tokio::time::sleep(std::time::Duration::from_millis(secs * 1000 + 100)).await;
}

#[tokio::test]
async fn device_flow_is_pending_until_the_user_approves_then_issues_tokens() {
    let Some(op) = Provider::start(device_config()).await else {
        return;
    };
    let device = start_device_flow(&op).await;
    assert_eq!(device["interval"], 1);
    assert_eq!(device["expires_in"], 600);
    assert_eq!(device["verification_uri"], format!("{}/device", op.issuer));
    let user_code = device["user_code"].as_str().unwrap();
    assert_eq!(
        device["verification_uri_complete"],
        format!("{}/device?user_code={user_code}", op.issuer)
    );

    let (status, body) = poll(&op, &device).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );

    op.approve_device(user_code, "grace", true).await;
    wait_interval(&device).await;
    let (status, tokens) = poll(&op, &device).await;
    assert_eq!(status, 200, "{tokens}\n{}", op.logs());
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "openid read offline_access");
    let access = tokens["access_token"].as_str().unwrap();
    assert!(tokens["refresh_token"].is_string());
    let info = op
        .introspect_as(&ClientAuth::basic(DEVICE, "tv-secret"), access)
        .await;
    assert_eq!(
        (info["active"].as_bool(), info["sub"].as_str()),
        (Some(true), Some("grace"))
    );

    // The device code is spent: polling again is invalid_grant, and oidc-provider treats
    // it as a replay and revokes what the code issued.
    wait_interval(&device).await;
    let (status, body) = poll(&op, &device).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(!op.introspect(DEVICE, "tv-secret", access).await);
}

#[tokio::test]
async fn device_flow_polling_too_fast_gets_slow_down() {
    let Some(op) = Provider::start(ProviderConfig {
        device_poll_interval_secs: 2,
        ..device_config()
    })
    .await
    else {
        return;
    };
    let device = start_device_flow(&op).await;
    assert_eq!(device["interval"], 2);
    let (_, first) = poll(&op, &device).await;
    assert_eq!(first["error"], "authorization_pending");
    let (status, body) = poll(&op, &device).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("slow_down")),
        "{body}"
    );
    assert_eq!(op.stats().await["device_slow_down"], 1);
}

#[tokio::test]
async fn device_flow_denied_ends_in_access_denied() {
    let Some(op) = Provider::start(device_config()).await else {
        return;
    };
    let device = start_device_flow(&op).await;
    op.approve_device(device["user_code"].as_str().unwrap(), "heidi", false)
        .await;
    let (status, body) = poll(&op, &device).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("access_denied")),
        "{body}"
    );
    // The answer is given once; the code is spent after it.
    wait_interval(&device).await;
    let (status, body) = poll(&op, &device).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test]
async fn device_flow_past_its_lifetime_ends_in_expired_token() {
    let Some(op) = Provider::start(ProviderConfig {
        device_code_ttl_secs: 1,
        ..device_config()
    })
    .await
    else {
        return;
    };
    let device = start_device_flow(&op).await;
    assert_eq!(device["expires_in"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body) = poll(&op, &device).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("expired_token")),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------
// Revocation, introspection, refresh-token reuse

/// The code flow for `web-app` as `user`: the token response.
async fn user_tokens(op: &Provider, user: &str, scope: &str) -> Value {
    let pkce = new_pkce();
    let mut url = Url::parse(&authorization_url(op, "web-app", "s", &pkce).await).unwrap();
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "scope" {
                scope.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(query);
    let code = param(
        &authorize_in_browser(url.as_str(), user, true).await,
        "code",
    )
    .expect("code");
    let (status, tokens) = token_basic(
        op,
        "web-app",
        "web-app-secret",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

async fn refresh(op: &Provider, client: &ClientAuth, refresh_token: &str) -> (u16, Value) {
    op.token(
        client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

#[tokio::test]
async fn revoked_refresh_token_is_inactive_and_cannot_refresh() {
    let Some(op) = Provider::start(config()).await else {
        return;
    };
    let tokens = user_tokens(&op, "ivan", "openid read").await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    assert!(
        op.introspect("web-app", "web-app-secret", refresh_token)
            .await
    );
    assert!(op.introspect("web-app", "web-app-secret", access).await);

    let web = ClientAuth::basic("web-app", "web-app-secret");
    assert_eq!(op.revoke(&web, refresh_token).await, 200);

    assert!(
        !op.introspect("web-app", "web-app-secret", refresh_token)
            .await
    );
    assert!(
        !op.introspect("web-app", "web-app-secret", access).await,
        "the grant went with it"
    );
    let (status, body) = refresh(&op, &web, refresh_token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(op.stats().await["grants_revoked"], 1);
}

#[tokio::test]
async fn refresh_token_reuse_is_counted_and_revokes_the_grant() {
    let Some(op) = Provider::start(config()).await else {
        return;
    };
    let web = ClientAuth::basic("web-app", "web-app-secret");
    let tokens = user_tokens(&op, "judy", "openid read").await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let (status, rotated) = refresh(&op, &web, first).await;
    assert_eq!(status, 200, "{rotated}");
    let newest = rotated["refresh_token"].as_str().unwrap();

    let (status, body) = refresh(&op, &web, first).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let stats = op.stats().await;
    assert_eq!(stats["refresh_token_reuse"], 1, "{stats}");
    assert_eq!(stats["grants_revoked"], 1, "{stats}");

    // The whole grant is gone: the newest refresh token and access token too.
    let (status, body) = refresh(&op, &web, newest).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(
        userinfo_like(&op, rotated["access_token"].as_str().unwrap()).await,
        401
    );

    let stats = op.stats().await;
    assert_eq!(stats["token_requests"]["authorization_code"], 1, "{stats}");
    assert_eq!(stats["token_requests"]["refresh_token"], 3, "{stats}");
    assert_eq!(
        stats["refresh_tokens_issued"], 2,
        "code + one rotation: {stats}"
    );
    // The first token was destroyed with the grant: presenting it once more is no
    // longer recognisable as reuse.
    refresh(&op, &web, first).await;
    assert_eq!(op.stats().await["refresh_token_reuse"], 1);
}

// ---------------------------------------------------------------------------------------
// On-behalf-of: RFC 8693 token exchange and Microsoft Entra's jwt-bearer form

const MIDDLE: &str = "middle-tier";

/// `web-app` gets user tokens; `middle-tier` (client_secret_basic) and `middle-keyed`
/// (private_key_jwt) may exchange them.
fn obo_config() -> ProviderConfig {
    let mut cfg = config();
    cfg.clients.push(
        ClientConfig::client_credentials(MIDDLE, "middle-secret", AuthMethod::ClientSecretBasic)
            .with_grant_types([TOKEN_EXCHANGE_GRANT, JWT_BEARER_GRANT, "refresh_token"]),
    );
    cfg.clients.push(
        ClientConfig::client_credentials("middle-keyed", "", AuthMethod::PrivateKeyJwt)
            .with_grant_types([JWT_BEARER_GRANT, "refresh_token"])
            .with_keys([TestKey::rsa().client_key(None)]),
    );
    cfg
}

fn token_exchange_form(subject_token: &str, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT.into()),
        ("subject_token", subject_token.into()),
        ("subject_token_type", ACCESS_TOKEN_TYPE.into()),
        ("scope", scope.into()),
    ]
}

fn entra_obo_form(assertion: &str, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", JWT_BEARER_GRANT.into()),
        ("assertion", assertion.into()),
        ("requested_token_use", "on_behalf_of".into()),
        ("scope", scope.into()),
    ]
}

fn borrowed<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn token_exchange_acts_for_the_same_user_and_its_refresh_token_works() {
    let Some(op) = Provider::start(obo_config()).await else {
        return;
    };
    let user = user_tokens(&op, "mallory", "openid read").await;
    let middle = ClientAuth::basic(MIDDLE, "middle-secret");
    let form = token_exchange_form(
        user["access_token"].as_str().unwrap(),
        "read offline_access",
    );
    let (status, exchanged) = op.token(&middle, &borrowed(&form)).await;
    assert_eq!(status, 200, "{exchanged}\n{}", op.logs());
    assert_eq!(exchanged["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(exchanged["token_type"], "Bearer");
    assert_eq!(exchanged["expires_in"], 120);
    assert_eq!(exchanged["scope"], "read offline_access");
    let access = exchanged["access_token"].as_str().unwrap();
    let info = op.introspect_as(&middle, access).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "mallory", "same user");
    assert_eq!(info["client_id"], MIDDLE, "acting as the requesting client");

    let (status, refreshed) = refresh(
        &op,
        &middle,
        exchanged["refresh_token"].as_str().expect("refresh_token"),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}\n{}", op.logs());
    let info = op
        .introspect_as(&middle, refreshed["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        (info["active"].as_bool(), info["sub"].as_str()),
        (Some(true), Some("mallory"))
    );

    // Without offline_access there is no refresh token.
    let form = token_exchange_form(user["access_token"].as_str().unwrap(), "read");
    let (status, body) = op.token(&middle, &borrowed(&form)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
}

#[tokio::test]
async fn entra_on_behalf_of_with_private_key_jwt_acts_for_the_same_user_and_refreshes() {
    use jsonwebtoken::Algorithm::RS256;
    let Some(op) = Provider::start(obo_config()).await else {
        return;
    };
    let user = user_tokens(&op, "niaj", "openid read").await;
    let aud = op.token_endpoint().await;
    let key = TestKey::rsa();
    let keyed = |op_aud: &str| {
        ClientAuth::private_key_jwt(&assertion(
            &key,
            header_with_thumbprints(RS256, &key),
            "middle-keyed",
            op_aud,
        ))
    };
    let form = entra_obo_form(
        user["access_token"].as_str().unwrap(),
        "openid read offline_access",
    );
    let (status, obo) = op.token(&keyed(&aud), &borrowed(&form)).await;
    assert_eq!(status, 200, "{obo}\n{}", op.logs());
    assert_eq!(obo["token_type"], "Bearer");
    assert_eq!(obo["scope"], "openid read offline_access");
    let access = obo["access_token"].as_str().unwrap();
    let info = op.introspect_as(&keyed(&aud), access).await;
    assert_eq!(
        (info["sub"].as_str(), info["client_id"].as_str()),
        (Some("niaj"), Some("middle-keyed"))
    );

    let (status, refreshed) =
        refresh(&op, &keyed(&aud), obo["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}\n{}", op.logs());
    assert_ne!(refreshed["refresh_token"], obo["refresh_token"], "rotated");
    assert_eq!(
        userinfo_like(&op, refreshed["access_token"].as_str().unwrap()).await,
        200
    );

    // Only the on_behalf_of use of jwt-bearer exists here.
    let mut form = entra_obo_form(user["access_token"].as_str().unwrap(), "read");
    form.retain(|(k, _)| *k != "requested_token_use");
    let (status, body) = op.token(&keyed(&aud), &borrowed(&form)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
}

#[tokio::test]
async fn on_behalf_of_refuses_unknown_revoked_and_userless_subject_tokens() {
    let Some(op) = Provider::start(obo_config()).await else {
        return;
    };
    let middle = ClientAuth::basic(MIDDLE, "middle-secret");
    let user = user_tokens(&op, "olivia", "openid read").await;
    let subject = user["access_token"].as_str().unwrap();
    assert_eq!(
        op.revoke(
            &ClientAuth::basic("web-app", "web-app-secret"),
            user["refresh_token"].as_str().unwrap()
        )
        .await,
        200
    );
    let (status, service) = token_basic(
        &op,
        "service",
        "service-secret",
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, 200);

    for (why, token) in [
        ("unknown", "not-a-token-this-provider-issued"),
        ("revoked", subject),
        ("no user", service["access_token"].as_str().unwrap()),
    ] {
        for form in [
            token_exchange_form(token, "read"),
            entra_obo_form(token, "read"),
        ] {
            let (status, body) = op.token(&middle, &borrowed(&form)).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("invalid_grant")),
                "{why} subject token, {}: {body}",
                form[0].1
            );
        }
    }
}

#[tokio::test]
async fn on_behalf_of_refuses_an_expired_subject_token() {
    let Some(op) = Provider::start(ProviderConfig {
        access_token_ttl_secs: 1,
        ..obo_config()
    })
    .await
    else {
        return;
    };
    let user = user_tokens(&op, "peggy", "openid read").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let middle = ClientAuth::basic(MIDDLE, "middle-secret");
    let subject = user["access_token"].as_str().unwrap();
    for form in [
        token_exchange_form(subject, "read"),
        entra_obo_form(subject, "read"),
    ] {
        let (status, body) = op.token(&middle, &borrowed(&form)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn token_exchange_accepts_a_jwt_access_token_it_can_verify() {
    let Some(op) = Provider::start(ProviderConfig {
        resource: Some(ResourceConfig {
            indicator: "https://api.example.test/".into(),
            scope: "read write".into(),
            format: TokenFormat::Jwt,
        }),
        ..obo_config()
    })
    .await
    else {
        return;
    };
    // A user token for the resource server: a JWT signed by the provider.
    let pkce = new_pkce();
    let mut url = Url::parse(&authorization_url(&op, "web-app", "s", &pkce).await).unwrap();
    url.query_pairs_mut()
        .append_pair("resource", "https://api.example.test/");
    let code = param(
        &authorize_in_browser(url.as_str(), "rupert", true).await,
        "code",
    )
    .unwrap();
    let (status, user) = token_basic(
        &op,
        "web-app",
        "web-app-secret",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce.verifier),
            ("resource", "https://api.example.test/"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{user}\n{}", op.logs());
    let jwt = user["access_token"].as_str().unwrap();
    assert_eq!(jwt.split('.').count(), 3, "JWT: {jwt}");

    let middle = ClientAuth::basic(MIDDLE, "middle-secret");
    let (status, exchanged) = op
        .token(&middle, &borrowed(&token_exchange_form(jwt, "read")))
        .await;
    assert_eq!(status, 200, "{exchanged}\n{}", op.logs());
    let info = op
        .introspect_as(&middle, exchanged["access_token"].as_str().unwrap())
        .await;
    assert_eq!(info["sub"], "rupert");

    // One changed character in the signature and it is no longer the provider's. (Not
    // the last one: its low bits may be base64 padding.)
    let mut forged = jwt.as_bytes().to_vec();
    let i = forged.len() - 20;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, body) = op
        .token(&middle, &borrowed(&token_exchange_form(&forged, "read")))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

//! A real OAuth 2.0 authorization server for end-to-end tests: `oidc-provider` 9 (npm)
//! run by Node on loopback from `tests/e2e/provider/server.js`, plus a scripted user
//! agent that logs in and consents through its development pages.
//!
//! Include it from a test binary with
//! `#[path = "../e2e/provider.rs"] mod provider;` (from `tests/<dir>/main.rs`) or
//! `#[path = "e2e/provider.rs"] mod provider;` (from `tests/<name>.rs`).
//!
//! ```ignore
//! let Some(op) = Provider::start(ProviderConfig {
//!     clients: vec![ClientConfig::authorization_code("app", "secret", AuthMethod::ClientSecretBasic,
//!         ["http://127.0.0.1:8080/oauth/callback"])],
//!     ..ProviderConfig::default()
//! }).await else { return }; // `skipped: ...` printed (panics under OAUTH_BROKER_REQUIRE_ALL_TESTS=1)
//! let redirect = authorize_in_browser(&url_built_by_the_broker, "alice", true).await;
//! ```
//!
//! Besides the code flow and client credentials it serves what the broker's newer features
//! need, each proven by `tests/e2e_provider_selftest.rs`:
//! - `private_key_jwt` client authentication (RFC 7523 2.2) with RS256, PS256 and ES256 keys
//!   ([`ClientConfig::keys`], [`TestKey`]), Entra's `x5t`/`x5t#S256` form included; every
//!   assertion received is recorded ([`Provider::client_assertions`]);
//! - the device authorization grant (RFC 8628) with `interval` and `slow_down`
//!   ([`Provider::approve_device`] plays the user);
//! - pushed authorization requests (RFC 9126), optionally required per client;
//! - `iss` on every authorization response (RFC 9207);
//! - revocation (RFC 7009) and introspection (RFC 7662) ([`Provider::introspect`]);
//! - on-behalf-of grants: RFC 8693 token exchange and Microsoft Entra's jwt-bearer
//!   `requested_token_use=on_behalf_of`;
//! - counters of what clients did ([`Provider::stats`]), refresh-token reuse included.
//!
//! What the token endpoint answers a device-code poll (RFC 8628 3.5), as the self-test
//! shows; every error is HTTP 400 with a JSON `error`:
//!
//! | state of the device code | answer |
//! |---|---|
//! | user has not finished (or not started) | `authorization_pending` |
//! | same, but polled sooner than `interval` after the previous poll | `slow_down` (the code's interval grows by 5 s) |
//! | user approved | 200 with tokens (a refresh token if the client may refresh) |
//! | user cancelled | `access_denied`, once |
//! | past `expires_in` | `expired_token` (for 15 s clock tolerance, then `invalid_grant`) |
//! | already answered with tokens or `access_denied` | `invalid_grant`; after tokens, oidc-provider takes it for a replay and revokes them |
//!
//! Refresh-token reuse: with rotation on, each refresh consumes the presented refresh
//! token. Presenting a consumed one again is `invalid_grant`, and oidc-provider then
//! destroys that token and revokes the whole grant: every access and refresh token issued
//! from it, the newest refresh token included. The `/test/stats` counter
//! `refresh_token_reuse` counts such requests; a third presentation of the same token is
//! plain `invalid_grant` ("not found") and no longer counted.
//!
//! Self-contained: uses only tokio, reqwest (cookies), serde_json and url.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

use crate::support::skip;

/// RFC 8628 3.4 device code grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8693 2.1 token exchange grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 7523 2.1 jwt-bearer grant type (Microsoft Entra's on-behalf-of flow uses it with
/// `requested_token_use=on_behalf_of`).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 8693 3 token type of an access token (`subject_token_type`, `issued_token_type`).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 7523 2.2 `client_assertion_type`.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How a client authenticates at the token endpoint (and at PAR, device authorization,
/// revocation and introspection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 2.2: a JWT signed with one of [`ClientConfig::keys`]; no secret.
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// A public key of a `private_key_jwt` client, as the provider registers it.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// An SPKI public key (`BEGIN PUBLIC KEY`) or an X.509 certificate (`BEGIN
    /// CERTIFICATE`) in PEM. The server turns it into a JWK; a certificate also gives the
    /// JWK `x5c`, `x5t` and `x5t#S256`, and only then may assertions name the key by
    /// `x5t`/`x5t#S256` (a thumbprint that matches no registered certificate is 401).
    pub pem: String,
    /// The JWK's `kid`. An assertion whose header has a `kid` must name it exactly; one
    /// without `kid` is tried against every key of its type.
    pub kid: Option<String>,
}

/// One of the committed test-only keys in `tests/fixtures/keys/` (see its README).
#[derive(Debug, Clone)]
pub struct TestKey {
    /// PKCS#8 PEM, for signing assertions (`jsonwebtoken::EncodingKey::from_rsa_pem` /
    /// `from_ec_pem`) or for the broker's configuration.
    pub private_pem: String,
    /// SPKI PEM.
    pub public_pem: String,
    /// Self-signed certificate PEM, if the key has one.
    pub certificate_pem: Option<String>,
    /// base64url SHA-1 thumbprint of the certificate (JWS `x5t`, RFC 7515 4.1.7).
    pub x5t: Option<String>,
    /// base64url SHA-256 thumbprint of the certificate (JWS `x5t#S256`, RFC 7515 4.1.8).
    pub x5t_s256: Option<String>,
}

impl TestKey {
    /// RSA 2048 with a self-signed certificate: RS256 and PS256.
    pub fn rsa() -> TestKey {
        TestKey {
            private_pem: fixture("rsa-private.pem"),
            public_pem: fixture("rsa-public.pem"),
            certificate_pem: Some(fixture("rsa-cert.pem")),
            x5t: Some(fixture("rsa-cert.x5t").trim().to_owned()),
            x5t_s256: Some(fixture("rsa-cert.x5t-s256").trim().to_owned()),
        }
    }

    /// Another RSA 2048 key, no certificate: "the wrong key", registered nowhere unless a
    /// test does it.
    pub fn rsa_wrong() -> TestKey {
        TestKey {
            private_pem: fixture("rsa-wrong-private.pem"),
            public_pem: fixture("rsa-wrong-public.pem"),
            certificate_pem: None,
            x5t: None,
            x5t_s256: None,
        }
    }

    /// EC P-256: ES256.
    pub fn ec_p256() -> TestKey {
        TestKey {
            private_pem: fixture("ec-p256-private.pem"),
            public_pem: fixture("ec-p256-public.pem"),
            certificate_pem: None,
            x5t: None,
            x5t_s256: None,
        }
    }

    /// What to register at the provider: the certificate if there is one, else the
    /// public key.
    pub fn client_key(&self, kid: Option<&str>) -> ClientKey {
        ClientKey {
            pem: self
                .certificate_pem
                .clone()
                .unwrap_or_else(|| self.public_pem.clone()),
            kid: kid.map(Into::into),
        }
    }
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One client registered at the provider.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub client_id: String,
    pub client_secret: String,
    pub auth_method: AuthMethod,
    /// Exact redirect URIs allowed (http on loopback is fine).
    pub redirect_uris: Vec<String>,
    /// e.g. `["authorization_code", "refresh_token"]` or `["client_credentials"]`.
    pub grant_types: Vec<String>,
    /// Optional allow-list of the provider's known scopes for this client.
    pub scope: Option<String>,
    /// Public keys of a [`AuthMethod::PrivateKeyJwt`] client (its JWKS).
    pub keys: Vec<ClientKey>,
    /// RFC 9126 5: this client's authorization requests must come through PAR; a plain
    /// one is refused (`invalid_request`, "Pushed Authorization Request must be used").
    pub require_pushed_authorization_requests: bool,
}

impl ClientConfig {
    /// A confidential client for authorization_code (PKCE S256 required) + refresh_token.
    pub fn authorization_code<I, S>(
        client_id: &str,
        client_secret: &str,
        auth_method: AuthMethod,
        redirect_uris: I,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            auth_method,
            redirect_uris: redirect_uris.into_iter().map(Into::into).collect(),
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scope: None,
            keys: Vec::new(),
            require_pushed_authorization_requests: false,
        }
    }

    /// A client for the client_credentials grant only.
    pub fn client_credentials(
        client_id: &str,
        client_secret: &str,
        auth_method: AuthMethod,
    ) -> Self {
        ClientConfig {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            auth_method,
            redirect_uris: Vec::new(),
            grant_types: vec!["client_credentials".into()],
            scope: None,
            keys: Vec::new(),
            require_pushed_authorization_requests: false,
        }
    }

    /// A client for the device authorization grant (RFC 8628) + refresh_token.
    pub fn device(client_id: &str, client_secret: &str, auth_method: AuthMethod) -> Self {
        ClientConfig {
            grant_types: vec![DEVICE_CODE_GRANT.into(), "refresh_token".into()],
            ..ClientConfig::client_credentials(client_id, client_secret, auth_method)
        }
    }

    /// Also allows these grant types (e.g. [`TOKEN_EXCHANGE_GRANT`], [`JWT_BEARER_GRANT`]).
    pub fn with_grant_types<I, S>(mut self, grant_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for grant_type in grant_types {
            let grant_type = grant_type.into();
            if !self.grant_types.contains(&grant_type) {
                self.grant_types.push(grant_type);
            }
        }
        self
    }

    /// Registers these public keys (for [`AuthMethod::PrivateKeyJwt`]).
    pub fn with_keys(mut self, keys: impl IntoIterator<Item = ClientKey>) -> Self {
        self.keys.extend(keys);
        self
    }

    /// Sets [`ClientConfig::require_pushed_authorization_requests`].
    pub fn requiring_par(mut self) -> Self {
        self.require_pushed_authorization_requests = true;
        self
    }
}

/// Format of the access tokens issued for [`ResourceConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    Opaque,
    Jwt,
}

/// A resource server (RFC 8707 resource indicator) that client_credentials tokens are
/// issued for when the request names no `resource`.
#[derive(Debug, Clone)]
pub struct ResourceConfig {
    /// Absolute URI, e.g. `https://api.example.test/`; becomes the token's `aud`.
    pub indicator: String,
    /// Space-separated scopes the resource server accepts.
    pub scope: String,
    pub format: TokenFormat,
}

/// Everything the provider is started with.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// 0 picks a free port.
    pub port: u16,
    pub clients: Vec<ClientConfig>,
    /// `expires_in` of access tokens from the code and refresh grants.
    pub access_token_ttl_secs: u64,
    /// `expires_in` of client_credentials tokens; `None` = `access_token_ttl_secs`.
    pub client_credentials_ttl_secs: Option<u64>,
    /// `None` = 14 days.
    pub refresh_token_ttl_secs: Option<u64>,
    /// On: each refresh returns a new refresh token and the old one stops working
    /// (reusing it is `invalid_grant` and revokes the whole grant). Off: the same
    /// refresh token comes back and stays valid.
    pub rotate_refresh_tokens: bool,
    /// false: every client allowed the refresh_token grant gets a refresh token from the
    /// code flow. true: only when `offline_access` was requested with `prompt=consent`.
    pub refresh_token_requires_offline_access: bool,
    /// Scope names the provider knows besides `openid` and `offline_access`; others are
    /// silently dropped from requests and from the `scope` of token responses.
    pub scopes: Vec<String>,
    pub resource: Option<ResourceConfig>,
    /// `expires_in` of device codes (RFC 8628 3.2); polling after that is `expired_token`
    /// (for the provider's 15 s clock tolerance, then `invalid_grant`).
    pub device_code_ttl_secs: u64,
    /// `interval` of device authorization responses (RFC 8628 3.2). A poll sooner than
    /// that after the previous one (0.25 s slack), while the user has not decided, is
    /// answered `slow_down`, and each `slow_down` adds 5 s to that device code's interval.
    pub device_poll_interval_secs: u64,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            port: 0,
            clients: Vec::new(),
            access_token_ttl_secs: 300,
            client_credentials_ttl_secs: None,
            refresh_token_ttl_secs: None,
            rotate_refresh_tokens: true,
            refresh_token_requires_offline_access: false,
            scopes: vec!["read".into(), "write".into()],
            resource: None,
            device_code_ttl_secs: 600,
            device_poll_interval_secs: 5,
        }
    }
}

impl ProviderConfig {
    /// The JSON that `server.js` reads from `PROVIDER_CONFIG`.
    pub fn to_json(&self) -> Value {
        json!({
            "port": self.port,
            "clients": self.clients.iter().map(|c| json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "token_endpoint_auth_method": c.auth_method.as_str(),
                "redirect_uris": c.redirect_uris,
                "grant_types": c.grant_types,
                "scope": c.scope,
                "keys": c.keys.iter().map(|k| json!({ "pem": k.pem, "kid": k.kid })).collect::<Vec<_>>(),
                "require_pushed_authorization_requests": c.require_pushed_authorization_requests,
            })).collect::<Vec<_>>(),
            "access_token_ttl": self.access_token_ttl_secs,
            "client_credentials_ttl": self.client_credentials_ttl_secs,
            "refresh_token_ttl": self.refresh_token_ttl_secs,
            "rotate_refresh_token": self.rotate_refresh_tokens,
            "refresh_token_requires_offline_access": self.refresh_token_requires_offline_access,
            "scopes": self.scopes,
            "resource": self.resource.as_ref().map(|r| json!({
                "indicator": r.indicator,
                "scope": r.scope,
                "format": match r.format { TokenFormat::Opaque => "opaque", TokenFormat::Jwt => "jwt" },
            })),
            "device_code_ttl": self.device_code_ttl_secs,
            "device_poll_interval": self.device_poll_interval_secs,
        })
    }
}

/// How a request authenticates its client, for [`Provider::token`] and friends.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// `Authorization: Basic` with the id and secret as they are (the tests' ids and
    /// secrets need no form-encoding, RFC 6749 2.3.1).
    Basic {
        client_id: String,
        client_secret: String,
    },
    /// `client_id` and `client_secret` in the form.
    Post {
        client_id: String,
        client_secret: String,
    },
    /// RFC 7523 2.2: `client_assertion` (signed by the test, used once: the provider
    /// refuses a repeated `jti`) and `client_assertion_type` in the form.
    PrivateKeyJwt { client_assertion: String },
}

impl ClientAuth {
    pub fn basic(client_id: &str, client_secret: &str) -> ClientAuth {
        ClientAuth::Basic {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }

    pub fn post(client_id: &str, client_secret: &str) -> ClientAuth {
        ClientAuth::Post {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }

    pub fn private_key_jwt(client_assertion: &str) -> ClientAuth {
        ClientAuth::PrivateKeyJwt {
            client_assertion: client_assertion.into(),
        }
    }

    /// POSTs `form` to `url` with this authentication; returns the status and the body
    /// (JSON, or the text as a JSON string if it is not JSON).
    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let mut body: Vec<(&str, &str)> = form.to_vec();
        let mut request = http_client().post(url);
        match self {
            ClientAuth::Basic {
                client_id,
                client_secret,
            } => request = request.basic_auth(client_id, Some(client_secret)),
            ClientAuth::Post {
                client_id,
                client_secret,
            } => body.extend([
                ("client_id", &**client_id),
                ("client_secret", client_secret),
            ]),
            ClientAuth::PrivateKeyJwt { client_assertion } => body.extend([
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", client_assertion),
            ]),
        }
        let resp = request
            .form(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url} failed: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A running provider; the Node process is killed when this is dropped.
pub struct Provider {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub issuer: String,
    pub port: u16,
    pub config: ProviderConfig,
    child: Child,
    /// Held open: the server exits by itself when it closes (test binary killed).
    _stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    discovery: tokio::sync::OnceCell<Value>,
}

impl Provider {
    /// Starts the provider (installing its npm packages first if needed). `None` after
    /// printing `skipped: <reason>` when node/npm is missing or the install fails;
    /// panics instead under `OAUTH_BROKER_REQUIRE_ALL_TESTS=1`. Panics if the server
    /// itself fails to start (that is a bug, not a missing tool).
    pub async fn start(config: ProviderConfig) -> Option<Provider> {
        if let Err(reason) = ensure_installed().await {
            skip(&reason);
            return None;
        }
        let (child, stdin, port, stderr) = spawn(&config).await;
        Some(Provider {
            issuer: format!("http://127.0.0.1:{port}"),
            port,
            config,
            child,
            _stdin: stdin,
            stderr,
            discovery: tokio::sync::OnceCell::new(),
        })
    }

    /// Kills the server and starts it again on the same port with the same config: every
    /// token, grant and session it had is forgotten (refresh then gets `invalid_grant`).
    pub async fn restart(&mut self) {
        self.stop();
        let config = ProviderConfig {
            port: self.port,
            ..self.config.clone()
        };
        let (child, stdin, port, stderr) = spawn(&config).await;
        assert_eq!(port, self.port);
        self.child = child;
        self._stdin = stdin;
        self.stderr = stderr;
    }

    /// What the server wrote on stderr so far (warnings, `grant.error ...` lines).
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `/.well-known/openid-configuration`, fetched once.
    pub async fn discovery(&self) -> &Value {
        self.discovery
            .get_or_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.issuer);
                let resp = reqwest::get(&url).await.expect("discovery request");
                assert!(resp.status().is_success(), "discovery: {}", resp.status());
                resp.json().await.expect("discovery JSON")
            })
            .await
    }

    async fn endpoint(&self, name: &str) -> String {
        self.discovery().await[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in discovery"))
            .to_owned()
    }

    /// `<issuer>/auth`
    pub async fn authorization_endpoint(&self) -> String {
        self.endpoint("authorization_endpoint").await
    }

    /// `<issuer>/token`
    pub async fn token_endpoint(&self) -> String {
        self.endpoint("token_endpoint").await
    }

    /// `<issuer>/token/revocation` (RFC 7009; revoking a refresh token kills its grant).
    pub async fn revocation_endpoint(&self) -> String {
        self.endpoint("revocation_endpoint").await
    }

    /// `<issuer>/token/introspection` (RFC 7662).
    pub async fn introspection_endpoint(&self) -> String {
        self.endpoint("introspection_endpoint").await
    }

    /// GET with `Authorization: Bearer <token>`: 200 (JSON with `client_id`, `sub`, `scope`)
    /// for an access token this provider issued and still honours, else 401.
    pub fn userinfo_like_url(&self) -> String {
        format!("{}/test/userinfo-like", self.issuer)
    }

    /// `<issuer>/device/auth` (RFC 8628 3.1).
    pub async fn device_authorization_endpoint(&self) -> String {
        self.endpoint("device_authorization_endpoint").await
    }

    /// `<issuer>/request` (RFC 9126 2).
    pub async fn pushed_authorization_request_endpoint(&self) -> String {
        self.endpoint("pushed_authorization_request_endpoint").await
    }

    /// POSTs a token request; returns the status and the JSON body.
    pub async fn token(&self, auth: &ClientAuth, form: &[(&str, &str)]) -> (u16, Value) {
        auth.post_form(&self.token_endpoint().await, form).await
    }

    /// RFC 7009 revocation of `token` (access or refresh token); returns the status (200
    /// even for an unknown token, RFC 7009 2.2). Revoking a refresh token revokes its
    /// whole grant, access tokens included.
    pub async fn revoke(&self, auth: &ClientAuth, token: &str) -> u16 {
        let url = self.revocation_endpoint().await;
        auth.post_form(&url, &[("token", token)]).await.0
    }

    /// RFC 7662: whether the provider still honours `token` (access or refresh token),
    /// asked with client_secret_basic. Panics unless the provider answers 200.
    pub async fn introspect(&self, client_id: &str, client_secret: &str, token: &str) -> bool {
        let answer = self
            .introspect_as(&ClientAuth::basic(client_id, client_secret), token)
            .await;
        answer["active"]
            .as_bool()
            .expect("`active` in introspection")
    }

    /// RFC 7662 introspection with any client authentication: the whole answer (`active`,
    /// and for an active token `client_id`, `sub`, `scope`, `exp`, `token_type`, ...).
    /// Any authenticated client may introspect any token (oidc-provider's default
    /// policy; only public clients are limited to their own). Panics unless the provider
    /// answers 200.
    pub async fn introspect_as(&self, auth: &ClientAuth, token: &str) -> Value {
        let url = self.introspection_endpoint().await;
        let (status, answer) = auth.post_form(&url, &[("token", token)]).await;
        assert_eq!(status, 200, "introspection: {answer}\n{}", self.logs());
        answer
    }

    /// `GET /test/stats`: what clients did at the provider since it started (a restart
    /// starts from zero): `token_requests` (object: grant type -> every POST /token with
    /// it, whatever the outcome), `refresh_token_reuse` (refresh requests with an already
    /// rotated refresh token), `grants_revoked` (by reuse detection, revocation of a
    /// refresh token, or a replayed code), `refresh_tokens_issued`, `device_slow_down`.
    pub async fn stats(&self) -> Value {
        self.get_json("/test/stats").await
    }

    /// `GET /test/client-assertions`: every `client_assertion` received, oldest first, as
    /// `{ "endpoint": "token" | "pushed_authorization_request" | "device_authorization" |
    /// "revocation" | "introspection", "header": {..}, "claims": {..}, "status": <HTTP
    /// status answered> }` (decoded, not verified; `error` instead if it was no JWT).
    pub async fn client_assertions(&self) -> Vec<Value> {
        match self.get_json("/test/client-assertions").await {
            Value::Array(entries) => entries,
            other => panic!("client assertions: {other}"),
        }
    }

    async fn get_json(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.issuer);
        let resp = http_client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.json().await.expect("JSON")
    }

    /// Acts as the user with the device in hand (RFC 8628 3.3), in a fresh browser: opens
    /// the verification URI (`<issuer>/device`), submits `user_code` with the page's xsrf
    /// token, confirms the device, signs in as `login` and then approves the consent page,
    /// or cancels it when `approve` is false (the device's next poll then gets
    /// `access_denied`). Panics if the provider refuses the user code (unknown, expired
    /// or already used) or shows anything unexpected.
    pub async fn approve_device(&self, user_code: &str, login: &str, approve: bool) {
        let mut agent = UserAgent::new();
        let mut step = Step::Get(Url::parse(&format!("{}/device", self.issuer)).unwrap());
        let mut code_entered = false;
        for _ in 0..25 {
            let url = step.url().clone();
            let (status, body) = match agent.send(step).await {
                Answer::Redirect(next) => {
                    step = Step::Get(next);
                    continue;
                }
                Answer::Page(status, body) => (status, body),
            };
            assert!(
                status.is_success(),
                "provider answered {status} at {url}: {body}\nsteps:\n{}",
                agent.steps()
            );
            let page = InteractionPage::parse(&body);
            if let Some(next) = page.login_or_consent(&url, login, approve) {
                step = next;
                continue;
            }
            step = match page.form_id.as_deref() {
                Some("op.deviceInputForm") if !code_entered => {
                    code_entered = true;
                    let mut fields = page.fields;
                    set_field(&mut fields, "user_code", user_code);
                    Step::Post(url.join(&page.action).expect("form action"), fields)
                }
                // Cancelling the consent brings the user back to the code form.
                Some("op.deviceInputForm")
                    if !approve
                        && page
                            .notice
                            .as_deref()
                            .is_some_and(|n| n.contains("interrupted")) =>
                {
                    return;
                }
                Some("op.deviceInputForm") => panic!(
                    "the provider refused user code {user_code}: {}\nsteps:\n{}",
                    page.notice.unwrap_or_default(),
                    agent.steps()
                ),
                Some("op.deviceConfirmForm") => {
                    Step::Post(url.join(&page.action).expect("form action"), page.fields)
                }
                _ if approve && body.contains("Sign-in Success") => return,
                _ => panic!(
                    "unexpected page at {url} (status {status}): {body}\nsteps:\n{}",
                    agent.steps()
                ),
            };
        }
        panic!("too many steps:\n{}", agent.steps());
    }

    fn stop(&mut self) {
        self._stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/provider")
}

/// `npm ci` once per process (async once-cell) and across processes (file lock), only
/// when `node_modules` is missing or older than `package-lock.json`.
async fn ensure_installed() -> Result<(), String> {
    static INSTALLED: tokio::sync::OnceCell<Result<(), String>> =
        tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            tokio::task::spawn_blocking(install_blocking)
                .await
                .unwrap_or_else(|e| Err(format!("npm install task failed: {e}")))
        })
        .await
        .clone()
}

fn install_blocking() -> Result<(), String> {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(format!("`node --version` failed: {}", out.status)),
        Err(e) => {
            return Err(format!(
                "node not found ({e}): the e2e OAuth provider needs Node.js 20+"
            ));
        }
    }
    let dir = provider_dir();
    let is_fresh = || {
        let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        match (
            modified(dir.join("node_modules/.package-lock.json")),
            modified(dir.join("package-lock.json")),
        ) {
            (Some(installed), Some(lock)) => installed >= lock,
            _ => false,
        }
    };
    if is_fresh() {
        return Ok(());
    }
    // Another test binary (e.g. under nextest) may be installing right now.
    let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-provider-npm.lock");
    let lock_file = std::fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock_file
        .lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if is_fresh() {
        return Ok(());
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("npm not found ({e}): the e2e OAuth provider needs npm"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(format!(
            "`npm ci` in {} failed ({}): {}",
            dir.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(())
}

type Spawned = (Child, Option<ChildStdin>, u16, Arc<Mutex<String>>);

/// Starts `node server.js` and waits for its `READY <port>` line.
async fn spawn(config: &ProviderConfig) -> Spawned {
    let dir = provider_dir();
    let mut child = Command::new("node")
        .arg("server.js")
        .current_dir(&dir)
        .env("PROVIDER_CONFIG", config.to_json().to_string())
        .env("PROVIDER_EXIT_ON_STDIN_CLOSE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node server.js in {}: {e}", dir.display()));

    // Plain threads drain both pipes, so the server never blocks on a full pipe, whatever
    // tokio runtime the test has (or has already shut down).
    let stderr = Arc::new(Mutex::new(String::new()));
    {
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<u16>();
    {
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("READY ")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(port.trim().parse().expect("READY <port>"));
                }
            }
        });
    }

    let port = match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
        Ok(Ok(port)) => port,
        outcome => {
            let _ = child.kill();
            let status = child.wait();
            std::thread::sleep(Duration::from_millis(100)); // let stderr drain
            panic!(
                "the e2e OAuth provider did not start ({}; exit: {status:?}); stderr:\n{}",
                if outcome.is_err() {
                    "no READY line within 30 s"
                } else {
                    "exited before READY"
                },
                stderr.lock().unwrap()
            );
        }
    };
    let stdin = child.stdin.take();
    (child, stdin, port, stderr)
}

/// Acts as the user's browser (fresh cookie jar): opens `authorization_url`, follows
/// redirects into the provider's development pages, signs in as `username` (any name
/// works), then approves the consent page, or cancels it when `approve` is false, and
/// follows redirects until the provider sends the browser to another origin (the
/// client's `redirect_uri`). That URL is returned without being requested: it carries
/// `code`, `state` and `iss`, or `error=access_denied` and `state`.
pub async fn authorize_in_browser(
    authorization_url: &str,
    username: &str,
    approve: bool,
) -> String {
    let start = Url::parse(authorization_url).expect("authorization URL");
    let provider_origin = start.origin();
    let redirect_uri = start
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned());
    let leaves_provider = |url: &Url| {
        url.origin() != provider_origin
            || redirect_uri
                .as_deref()
                .is_some_and(|r| url.as_str().starts_with(r))
    };

    let mut agent = UserAgent::new();
    let mut step = Step::Get(start.clone());
    for _ in 0..25 {
        let url = step.url().clone();
        match agent.send(step).await {
            Answer::Redirect(next) => {
                if leaves_provider(&next) {
                    return next.to_string();
                }
                step = Step::Get(next);
            }
            Answer::Page(status, body) => {
                assert!(
                    status.is_success(),
                    "provider answered {status} at {url}: {body}\nsteps:\n{}",
                    agent.steps()
                );
                step = InteractionPage::parse(&body)
                    .login_or_consent(&url, username, approve)
                    .unwrap_or_else(|| {
                        panic!(
                            "unexpected page at {url} (status {status}): {body}\nsteps:\n{}",
                            agent.steps()
                        )
                    });
            }
        }
    }
    panic!("too many steps:\n{}", agent.steps());
}

/// What the scripted browser requests next.
enum Step {
    Get(Url),
    /// POST this form body to the URL.
    Post(Url, Vec<(String, String)>),
}

impl Step {
    fn url(&self) -> &Url {
        match self {
            Step::Get(url) | Step::Post(url, _) => url,
        }
    }
}

enum Answer {
    /// A redirect, resolved against the request URL; not followed.
    Redirect(Url),
    Page(reqwest::StatusCode, String),
}

/// A browser with a fresh cookie jar that follows no redirect by itself.
struct UserAgent {
    client: reqwest::Client,
    history: Vec<String>,
}

impl UserAgent {
    fn new() -> UserAgent {
        UserAgent {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            history: Vec::new(),
        }
    }

    async fn send(&mut self, step: Step) -> Answer {
        let (url, resp) = match step {
            Step::Get(url) => {
                self.history.push(format!("GET {url}"));
                let resp = self.client.get(url.clone()).send().await;
                (url, resp)
            }
            Step::Post(url, body) => {
                self.history.push(format!("POST {url}"));
                let resp = self.client.post(url.clone()).form(&body).send().await;
                (url, resp)
            }
        };
        let resp = resp.unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{status} without Location from {url}"));
            let next = url
                .join(location)
                .unwrap_or_else(|e| panic!("bad Location {location:?}: {e}"));
            return Answer::Redirect(next);
        }
        Answer::Page(status, resp.text().await.unwrap_or_default())
    }

    fn steps(&self) -> String {
        self.history.join("\n")
    }
}

fn set_field(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    match fields.iter_mut().find(|(k, _)| k == name) {
        Some(field) => field.1 = value.to_owned(),
        None => fields.push((name.to_owned(), value.to_owned())),
    }
}

/// The parts of an oidc-provider development page the user agent needs: the login and
/// consent interaction pages, and the device flow's user code and confirmation pages.
struct InteractionPage {
    /// Value of the hidden `prompt` input: `login` or `consent`.
    prompt: Option<String>,
    /// `id` of the first form (`op.deviceInputForm`, `op.deviceConfirmForm`).
    form_id: Option<String>,
    /// The text of a `<p class="red">` notice (device pages: why a code was refused).
    notice: Option<String>,
    action: String,
    /// Every named `<input>` of the first POST form, with its value (empty if none).
    fields: Vec<(String, String)>,
    /// The `[ Cancel ]` link (`/interaction/<uid>/abort`).
    abort_href: Option<String>,
}

impl InteractionPage {
    fn parse(html: &str) -> InteractionPage {
        let mut page = InteractionPage {
            prompt: None,
            form_id: None,
            notice: None,
            action: String::new(),
            fields: Vec::new(),
            abort_href: None,
        };
        if let Some(start) = html.find("<form") {
            let form = &html[start..];
            let form = &form[..form.find("</form>").unwrap_or(form.len())];
            let open_tag = &form[..form.find('>').unwrap_or(form.len())];
            page.action = attr(open_tag, "action").unwrap_or_default();
            page.form_id = attr(open_tag, "id");
            for input in form.split("<input").skip(1) {
                let tag = &input[..input.find('>').unwrap_or(input.len())];
                if let Some(name) = attr(tag, "name") {
                    let value = attr(tag, "value").unwrap_or_default();
                    if name == "prompt" {
                        page.prompt = Some(value.clone());
                    }
                    page.fields.push((name, value));
                }
            }
        }
        page.abort_href = html
            .split("href=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .map(unescape)
            .find(|href| href.contains("/abort"));
        page.notice = html
            .split("<p class=\"red\">")
            .nth(1)
            .map(|rest| unescape(rest[..rest.find("</p>").unwrap_or(rest.len())].trim()));
        page
    }

    /// The next step on a login page (signs in as `username`, any password) or a consent
    /// page (approves, or follows the cancel link); `None` on any other page.
    fn login_or_consent(&self, url: &Url, username: &str, approve: bool) -> Option<Step> {
        match self.prompt.as_deref() {
            Some("login") => {
                let mut fields = self.fields.clone();
                set_field(&mut fields, "login", username);
                set_field(&mut fields, "password", "any-password");
                Some(Step::Post(
                    url.join(&self.action).expect("form action"),
                    fields,
                ))
            }
            Some("consent") if approve => Some(Step::Post(
                url.join(&self.action).expect("form action"),
                self.fields.clone(),
            )),
            Some("consent") => {
                let abort = self
                    .abort_href
                    .as_deref()
                    .unwrap_or_else(|| panic!("no cancel link on the consent page at {url}"));
                Some(Step::Get(url.join(abort).expect("abort link")))
            }
            _ => None,
        }
    }
}

/// Value of `name="..."` in one tag (double quotes, as oidc-provider writes them).
fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + len]))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

//! On-behalf-of: local validation of the user's assertion (a JWKS served by wiremock,
//! user tokens signed here with fixed RSA keys), both grant styles on the wire, the
//! exchange cache, the secrecy of the assertion, claims challenges, the mapping of
//! provider errors, and long-running sessions refreshed far past their first token.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use chrono::Duration;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::*;
use crate::on_both_backends;

/// The issuer's signing key (PKCS#1, 2048 bits, made for these tests only).
const KEY_A: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEAuO9TeoHhuuB34HLPBU1vxYY3WOpb6jJthu9cAZIt8okubCuB\n\
lrVYk/fM77A9kXoaFRB946wGmrgJllIcUFf7C7NZmKtCPNdrG+jNB+3fVSB9LvjB\n\
OcMqigCvyU6omzXh5fRr/cO7OxQU/U1d0rdWjMJDE8WXgruCYerJs/QdiYMejAVi\n\
eRaGKWRzCp8RzgFDrvDS8FSnYuEhB7qmADE3bs/4Nqh1fSB5QHd8ZwJM6Kxo6o58\n\
vTmslgh8H7Zw9sqacMZYjzCXc7QbP9lMCfCdbxQmc0LsVPn9/Z8ZWExQUehPcDHy\n\
9biGvuvbD5U8CDYtme8mP96y6ZzCHES1m0xAwwIDAQABAoIBABkL8NZquNPCivnP\n\
EtK5BiZOYzibpQ82/TaFPITJ84chpTPpQIfUz8ZajVr5F52YV+f6b9Jh/hL+Ue4V\n\
+Ne40rtm8v+GUlZDJrKE+R/Vy6WP3OR7tE/Kavx901EEYjmDNrEaRXX9CGKb+avE\n\
yqw7QHGX7dXDsR13n9T7I45HxahV6rKirGws/Wiaq/o7hHXsVZIoTtDcJJ5MGOmU\n\
i/NPpsOsYOGDfu9ToEcg7Npc7868GVUpe0kvqiH8GpqFK3FTrBQpdc8Oeu8zCP66\n\
J46tyUWSZIekV8JiNz+FqAQ028+SJQXHa5UrJW/KB5qNxelTLdXfbY2rXVgZFTm4\n\
uiae8AECgYEA61SNYOVrsib0jcdXaOcxhgN6W99TTitD38zMGtJuUfEBjeRnQGpe\n\
+Owh9qbbZFXguBoOqRyID3TMVNgf0/Xt4/aOIIF0U2aZZer1s3PGCYV5IwqRwByl\n\
ifq6IG98ohXhe49LIWerJmgbyjc/1ZT89nmv6kkz7nREY1LWcLskEsMCgYEAyS2f\n\
fSsaksfxjTYkgqxpp8sicxw51flpIa/BvKzoVLmXXn/QXXxbwj105yQfsW/1GwgG\n\
cobhvdi4RYupXI5xfv2UHB6voiR3ksk0LAB/By7V58cJj7QP4MClw6vfQTMzzcQp\n\
k7N3yQIIf3cnlgHmwH+BApgnn45s3hJJWu34OgECgYEA5k2cAqzjRbkb8jiY0aAY\n\
dkenEowvUbvDtB0PzlwL/QM4ey2A4qh3A3LMFj/bS4lD38gYeuXiPgYXBh1woJX4\n\
VvVuyF8IgapSC0zzYci2kZDfKSzp0LH4S11lk+KnfVSek7Z7V1jGRVLzh2WkghhJ\n\
q8kRIN69BOsiFnX2SOLMfdMCgYAkO0Y9CbVIeCAFuZmLuzdwE8KJjqzP35JSkc/H\n\
hjB1idM8HrLNE2eHLQBP3I6kqzAuhRx8JdSkF1Lgm42N8M15/HtfMRuajQzH79qo\n\
jhJSndnCW3NaYSh25tszyVF08Z7D0S9XvXu2RNp48mG7v23qf0whxntkXgc3W33A\n\
lZkeAQKBgDmZy4RbWayVPK44T3bibgqWt5vaIu4SYUAv8U9OG7cSt8DCzbxb+Ijn\n\
nCdR+348NRlvv5ydZSmjABmSIzPQAvrXaOh4qyncGmiKbfWKblJvJZ9uV3h/MiTc\n\
QZLmjVejN5MM+Btvzkyy+LFZimOP2wOlwQ8mFbeKT29y/vyAh8eH\n\
-----END RSA PRIVATE KEY-----\n";

/// Another key: an attacker's, or the issuer's next one after a rotation.
const KEY_B: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEogIBAAKCAQEA2iDI/ugsQQ+TMOkd9V+xloKX0uzlBE0QDzClBo2n+f5YO5VL\n\
GMrOv/xYTXdRRt1oBZ+3AQUjrcmPV1vm6ejKUbzup6gMl5jNzSq0Jl3iHeRv4FWy\n\
6unORMI6sdX+czxmoxsaptIls/y3rR70zw3KIDsuMLU1+8oiOXMZcgbMm2jw/mDD\n\
HKpeR9jRzFHBg5ZqaeiWOz/amdZ5K4QnjHz9pu10seemfqHCpmKUX82/i7Jq9VHU\n\
aTtKbWmeafOwOK3+vxnrzUpj8NulBkIdC1E/G8EInXXIZV22stgi+lgbH8MkR9Vi\n\
216E+JoyPpmjnpjtIKf/Y11O5REzJwkpak7o1wIDAQABAoIBAF2UqDa4O9gzyuW2\n\
dYxiYCme4Gz1BjHor+WcbIhZuMGnjYoOfFfoFnhGVknx0TRSY8DZ6yTsZAi4ix8j\n\
Bfe/UCFuKYNTNQfK3ixR0FUPfSVu7lJz4d0nrr9QBudp1A7zUGNUiwQb72H/H3wN\n\
5mB4XYmjaicqbz0VVMaJ61ZAtYJMYeGDLMl5vQBrQOmON2bHlO30AH2OdqEs0p0K\n\
paLXG7TPSoON27pXS5DV9uOGxNYftQlWvIB7qx7hTsAYaO1xtYBKJRWdjs/4YRhH\n\
0uMkuZ6EOKoHnfNA5fgotFnnczLCtA62i415STgWHu3+dlQqIrz09z7LgydrXypt\n\
bodTAA0CgYEA+QX9Mcvjbqf5lMqLaR5MRC4Jxl2drEeKaGJF6XVyFhhOIXbENaEt\n\
WAcZQbvnsYuZIEljPNNgDWREwpjNBdgrMQp/ed3Nw2Kr9OgGsqdrEqw9qQs/J532\n\
rrr8kdGQKTF276Z5VWhdLNAWAlJ5VbVpgt/H3S0U2H1QHjlwT4WqZPMCgYEA4D02\n\
gkp8Plu7jYrLW6RBV8q7ijGnlm0uFIw1yqAaIv/rjbay2vV93kk7ANGG29+5xRsU\n\
F6iTHfJDio5VLZcRFA9DxqVTVQwwMn7M2Qnp4/ww50PMfdXP/cGmTrEnEFNtcehU\n\
+JNvIDbDNjCqNJDnWZ4ndKMSTVMDStcqhHj1NY0CgYEA1crPgpYCDzmFK7nskHXj\n\
klFYMQakXIkbCdz9Gp6rMM7zHQXDFCvpKv8FLwsssqAf+bknysvKVhT0d4EJ2++n\n\
vTW/FZhYlFs9OEiPn4fehCx9z4iJUvDqHT8JogMh2kvOSZdJ6gpsnBGWI64831md\n\
WS/Yfkm68NY9F4XGp28hSAMCgYEAomv0RZ+KKujrCvUTo4dwRRT1jn209AKVNBDz\n\
DZe2Fs/kYLuLBYp350CH2mnqEu0UdC7O+OwD09cdEQlTrTgVCMCdyQ8LMzkm2Ax8\n\
eGDz501OZtT3E9aBVz6jJbCvqOWlCrLMiVjRTzYbY+8P+g9TY9hon9VWdmfApL8B\n\
bv7mLikCfwRSD2k8UGpMDGhkbi9CU+C2q3D89jy4t8p4nhu3hWOPolcrAec8pBQQ\n\
ONwjwq74nNBfevw2fnOnIeZ1i0bWklicECpTm8ii5jkXuHPLgOYH8WvGoJLFLXLT\n\
Dho7lazkopWWk3qmM1EslvQX3qQPqC/MkmUBe+gkA0n+Ibn8rsQ=\n\
-----END RSA PRIVATE KEY-----\n";

const KID_A: &str = "kid-a";
const KID_B: &str = "kid-b";
const ISSUER: &str = "https://login.example.com/tid-1/v2.0";
const AUDIENCE: &str = "api://middle-tier";
const TENANT: &str = "tid-1";
const GRAPH_DEFAULT: &str = "https://graph.microsoft.com/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const CONNECTION: &str = "graph-obo";
/// What the provider asks for in a Conditional Access challenge.
const CLAIMS: &str = r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#;

// --- the issuer: keys, JWKS and user tokens ----------------------------------------

fn encoding_key(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).expect("a test RSA key")
}

/// The public half of `pem` as a JWK named `kid` (base64url without padding).
fn public_jwk(pem: &str, kid: &str) -> Value {
    let jwk = Jwk::from_encoding_key(&encoding_key(pem), Algorithm::RS256).unwrap();
    let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
        panic!("an RSA key has RSA parameters")
    };
    json!({"kty": "RSA", "kid": kid, "n": rsa.n, "e": rsa.e, "alg": "RS256", "use": "sig"})
}

/// Serves a JWKS of `keys` (`(pem, kid)`) at `/keys`.
async fn serve_jwks(server: &MockServer, keys: &[(&str, &str)]) {
    let keys: Vec<Value> = keys.iter().map(|(pem, kid)| public_jwk(pem, kid)).collect();
    Mock::given(method("GET"))
        .and(path("/keys"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "keys": keys })))
        .mount(server)
        .await;
}

/// A user's token for the middle tier, valid from a minute before the service's clock
/// starts until two hours after; `jti` makes every one different.
fn claims() -> Value {
    let now = start_time().timestamp();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "tid": TENANT,
        "sub": "user-sub-1",
        "oid": "user-oid-1",
        "scp": "access_as_user",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 2 * 3600,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

fn with_claim(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn sign(claims: &Value, pem: &str, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &encoding_key(pem)).unwrap()
}

/// A valid user token signed by the issuer's current key.
fn user_token() -> String {
    sign(&claims(), KEY_A, KID_A)
}

/// The issuer's JWKS endpoint and the provider's token endpoint, on two servers so the
/// JWKS can be changed without touching the token endpoint.
struct Idp {
    jwks: MockServer,
    provider: MockServer,
}

impl Idp {
    /// A JWKS with the issuer's key `KID_A`; no token endpoint mounted yet.
    async fn start() -> Idp {
        let jwks = MockServer::start().await;
        serve_jwks(&jwks, &[(KEY_A, KID_A)]).await;
        Idp {
            jwks,
            provider: MockServer::start().await,
        }
    }

    fn connection_body(&self, name: &str, grant: &str) -> Value {
        json!({
            "connection_name": name,
            "oauth_flow_type": "on_behalf_of",
            "client_id": "mid",
            "client_secret": "s",
            "token_url": format!("{}/token", self.provider.uri()),
            "scopes": [GRAPH_DEFAULT],
            "obo_grant": grant,
            "assertion_validation": {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "tenant_id": TENANT,
                "jwks_url": format!("{}/keys", self.jwks.uri()),
            },
        })
    }

    /// Creates the connection `name` in `org` and checks it is usable at once.
    async fn connect(&self, app: &TestApp, org: Option<&str>, name: &str, grant: &str) {
        let created = app
            .create_connection(org, &self.connection_body(name, grant))
            .await;
        assert_eq!(
            created["status"], "completed",
            "an on_behalf_of connection holds no token and is usable once created: {created}"
        );
    }

    /// The requests the token endpoint received, oldest first.
    async fn token_requests(&self) -> Vec<Request> {
        self.provider
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == "/token")
            .collect()
    }

    async fn token_calls(&self) -> usize {
        calls_to(&self.provider, "/token").await
    }

    async fn jwks_fetches(&self) -> usize {
        calls_to(&self.jwks, "/keys").await
    }
}

/// Mounts a token endpoint that issues `<prefix>-1`, `<prefix>-2`, ... for an hour.
async fn mount_numbered_tokens(server: &MockServer, prefix: &str) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(NumberedTokens::new(prefix, 3600))
        .mount(server)
        .await;
}

// --- a provider that keeps delegated grants: refresh tokens rotate, used ones fail ---

struct GrantsInner {
    prefix: String,
    delay: std::time::Duration,
    issued: AtomicUsize,
    live: Mutex<HashSet<String>>,
    revoked: AtomicBool,
}

/// Token endpoint of a provider with rotating refresh tokens: an OBO exchange (either
/// grant) or a refresh issues `<prefix>-at-n` (an hour) and `<prefix>-rt-n`; a refresh
/// token works once; once `revoke_all` was called every refresh is `invalid_grant`.
#[derive(Clone)]
struct Grants(Arc<GrantsInner>);

impl Grants {
    fn new(prefix: &str) -> Self {
        Self::delayed(prefix, std::time::Duration::ZERO)
    }

    /// Every answer waits `delay` first.
    fn delayed(prefix: &str, delay: std::time::Duration) -> Self {
        Self(Arc::new(GrantsInner {
            prefix: prefix.to_owned(),
            delay,
            issued: AtomicUsize::new(0),
            live: Mutex::new(HashSet::new()),
            revoked: AtomicBool::new(false),
        }))
    }

    async fn mount(&self, server: &MockServer) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(self.clone())
            .mount(server)
            .await;
    }

    /// The user's grant is revoked upstream (password reset, admin revocation).
    fn revoke_all(&self) {
        self.0.revoked.store(true, Ordering::SeqCst);
    }

    fn issue(&self) -> ResponseTemplate {
        let n = self.0.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let refresh = format!("{}-rt-{n}", self.0.prefix);
        self.0.live.lock().unwrap().insert(refresh.clone());
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": format!("{}-at-{n}", self.0.prefix),
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": refresh,
            }))
            .set_delay(self.0.delay)
    }
}

fn invalid_grant(description: &str) -> ResponseTemplate {
    ResponseTemplate::new(400)
        .set_body_json(json!({"error": "invalid_grant", "error_description": description}))
}

impl Respond for Grants {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        match form_value(request, "grant_type").as_deref() {
            Some(JWT_BEARER) | Some(TOKEN_EXCHANGE) => self.issue(),
            Some("refresh_token") => {
                if self.0.revoked.load(Ordering::SeqCst) {
                    return invalid_grant(
                        "AADSTS50173: The provided grant has expired due to it being revoked.",
                    );
                }
                let presented = form_value(request, "refresh_token").unwrap_or_default();
                if self.0.live.lock().unwrap().remove(&presented) {
                    self.issue()
                } else {
                    invalid_grant("AADSTS54005: OAuth2 Authorization code was already redeemed.")
                }
            }
            _ => {
                ResponseTemplate::new(400).set_body_json(json!({"error": "unsupported_grant_type"}))
            }
        }
    }
}

// --- requests and answers -------------------------------------------------------------

fn form(request: &Request) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect();
    pairs.sort();
    pairs
}

fn form_value(request: &Request, key: &str) -> Option<String> {
    form(request)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn expected_form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    pairs.sort();
    pairs
}

fn request_header(request: &Request, name: &str) -> Option<String> {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let res = request.send().await.expect("the service answers");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// `POST /credentials/{name}/on-behalf-of` with `key`, acting in `org`.
async fn exchange(app: &TestApp, key: &str, org: Option<&str>, name: &str, body: Value) -> Answer {
    send(
        app.with_key(
            key,
            Method::POST,
            &format!("/api/oauth/credentials/{name}/on-behalf-of"),
            org,
        )
        .json(&body),
    )
    .await
}

/// A successful exchange: 200, `no-store`, and the token's parts; returns the body.
fn assert_exchanged(answer: &Answer, reason: &str) -> Value {
    assert_eq!(answer.status, 200, "{reason}: {}", answer.body);
    assert_eq!(
        answer.header("cache-control").as_deref(),
        Some("no-store"),
        "{reason}: a token is never cached by intermediaries"
    );
    let token = answer.body["access_token"].as_str().unwrap_or_default();
    assert!(!token.is_empty(), "{reason}: {}", answer.body);
    assert_eq!(
        answer.body["authorization_header"],
        format!("Bearer {token}"),
        "{reason}"
    );
    answer.body.clone()
}

/// An on-behalf-of refusal: status, problem+json, `code`, and a correlation id that is
/// also on the service's log line; returns the problem.
fn assert_obo_problem(answer: &Answer, status: u16, code: &str, reason: &str) -> Value {
    assert_eq!(answer.status, status, "{reason}: {}", answer.body);
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("application/problem+json"),
        "{reason}"
    );
    assert_eq!(answer.body["code"], code, "{reason}: {}", answer.body);
    assert_eq!(answer.body["status"], status, "{reason}: {}", answer.body);
    let correlation_id = answer.body["correlation_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{reason}: a correlation_id in the body: {}", answer.body));
    assert!(!correlation_id.is_empty(), "{reason}");
    assert!(
        captured_logs().contains(correlation_id),
        "{reason}: the correlation id {correlation_id} is on the service's log line"
    );
    answer.body.clone()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

// --- sessions --------------------------------------------------------------------------

/// `POST /obo-sessions` with `key` in `org`, asserting 201; returns the session id.
async fn create_session(app: &TestApp, key: &str, org: &str, body: Value) -> String {
    let answer = send(
        app.with_key(key, Method::POST, "/api/oauth/obo-sessions", Some(org))
            .json(&body),
    )
    .await;
    assert_eq!(answer.status, 201, "creating a session: {}", answer.body);
    let id = answer.body["session_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{}", answer.body);
    id
}

async fn session_credentials(app: &TestApp, key: &str, org: &str, id: &str) -> Answer {
    send(app.with_key(
        key,
        Method::GET,
        &format!("/api/oauth/obo-sessions/{id}/credentials"),
        Some(org),
    ))
    .await
}

async fn revoke_session(app: &TestApp, key: &str, org: &str, id: &str) -> Answer {
    send(app.with_key(
        key,
        Method::DELETE,
        &format!("/api/oauth/obo-sessions/{id}"),
        Some(org),
    ))
    .await
}

async fn list_sessions(app: &TestApp, key: &str, org: &str) -> Value {
    let answer = send(app.with_key(key, Method::GET, "/api/oauth/obo-sessions", Some(org))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// `status` of each listed session, by id.
fn statuses(list: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["session_id"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A problem answer with `status` and `code` (no correlation id expected).
fn assert_problem(answer: &Answer, status: u16, code: &str, reason: &str) {
    assert_eq!(answer.status, status, "{reason}: {}", answer.body);
    assert_eq!(answer.body["code"], code, "{reason}: {}", answer.body);
}

on_both_backends! {
    async fn each_bad_assertion_is_refused_locally_naming_the_claim(app) {
        let idp = Idp::start().await;
        mount_numbered_tokens(&idp.provider, "graph").await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        // A workflow key of one org, reading the GLOBAL connection through the fallback.
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let now = start_time().timestamp();
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        let hs256 = {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(KID_A.to_owned());
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"a shared secret")).unwrap()
        };
        let cases: Vec<(&str, String, Vec<&str>)> = vec![
            ("signed by another key under the issuer's kid", sign(&claims(), KEY_B, KID_A), vec!["signature"]),
            ("expired two minutes ago", sign(&with_claim(claims(), "exp", json!(now - 120)), KEY_A, KID_A), vec!["`exp`", "expired"]),
            ("without exp", sign(&no_exp, KEY_A, KID_A), vec!["`exp`"]),
            ("not valid for five more minutes", sign(&with_claim(claims(), "nbf", json!(now + 300)), KEY_A, KID_A), vec!["`nbf`"]),
            ("for another audience", sign(&with_claim(claims(), "aud", json!("api://another-service")), KEY_A, KID_A), vec!["`aud`"]),
            ("from another issuer", sign(&with_claim(claims(), "iss", json!("https://login.example.com/tid-2/v2.0")), KEY_A, KID_A), vec!["`iss`"]),
            ("from another tenant", sign(&with_claim(claims(), "tid", json!("tid-2")), KEY_A, KID_A), vec!["`tid`"]),
            ("a chained token, already for the downstream resource", sign(&with_claim(claims(), "aud", json!("https://graph.microsoft.com")), KEY_A, KID_A), vec!["`aud`", "chained"]),
            ("signed with a kid the JWKS does not have", sign(&claims(), KEY_B, KID_B), vec![KID_B]),
            ("HS256 under the issuer's kid (algorithm confusion)", hs256, vec!["HS256"]),
            ("not a JWT at all", "an-opaque-user-token".to_owned(), vec!["JWT"]),
        ];
        let mut correlation_ids = HashSet::new();
        for (reason, assertion, needles) in &cases {
            let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": assertion})).await;
            let problem = assert_obo_problem(&answer, 401, "assertion_invalid", reason);
            let detail = problem["detail"].as_str().unwrap_or_default();
            for needle in needles {
                assert!(detail.contains(needle), "{reason}: the detail names `{needle}`: {detail}");
            }
            assert!(!detail.contains(assertion.as_str()), "{reason}: the detail never echoes the assertion");
            assert!(
                correlation_ids.insert(problem["correlation_id"].as_str().unwrap().to_owned()),
                "{reason}: every refusal has its own correlation id"
            );
        }
        assert_eq!(idp.token_calls().await, 0, "no refused assertion reaches the token endpoint");
        assert_eq!(
            idp.jwks_fetches().await,
            1,
            "the JWKS is fetched once and cached; an unknown kid right after a fetch does not refetch it"
        );

        // The 60 s skew: expired 30 s ago, or valid only in 30 s, is still accepted.
        let just_expired = sign(&with_claim(claims(), "exp", json!(now - 30)), KEY_A, KID_A);
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": just_expired})).await;
        let body = assert_exchanged(&answer, "expired 30 s ago, within the 60 s skew");
        assert_eq!(body["access_token"], "graph-1");
        assert_eq!(body["cached"], false);
        let almost_valid = sign(&with_claim(claims(), "nbf", json!(now + 30)), KEY_A, KID_A);
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": almost_valid})).await;
        assert_eq!(assert_exchanged(&answer, "nbf 30 s ahead, within the skew")["access_token"], "graph-2");
        assert_eq!(idp.token_calls().await, 2);
        let requests = idp.token_requests().await;
        assert_eq!(form_value(&requests[0], "assertion").as_deref(), Some(just_expired.as_str()));
    }

    async fn a_key_published_before_the_first_fetch_is_accepted_after_a_rotation(app) {
        // The JWKS the connection was configured against has only the old key; the
        // issuer rotates (now serving both) before the service ever fetched it.
        let idp = Idp::start().await;
        mount_numbered_tokens(&idp.provider, "graph").await;
        idp.connect(&app, None, CONNECTION, "token_exchange").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        idp.jwks.reset().await;
        serve_jwks(&idp.jwks, &[(KEY_A, KID_A), (KEY_B, KID_B)]).await;
        let rotated = sign(&claims(), KEY_B, KID_B);
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": rotated})).await;
        assert_eq!(assert_exchanged(&answer, "a token signed with the new key")["access_token"], "graph-1");
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": user_token()})).await;
        assert_eq!(assert_exchanged(&answer, "a token signed with the old key")["access_token"], "graph-2");
        assert_eq!(idp.jwks_fetches().await, 1, "both keys came with one fetch");
    }

    async fn both_grant_styles_send_the_exact_form_with_basic_client_auth(app) {
        let idp = Idp::start().await;
        mount_numbered_tokens(&idp.provider, "graph").await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        idp.connect(&app, None, "graph-te", "token_exchange").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("mid:s"));

        let entra = user_token();
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": entra})).await;
        assert_exchanged(&answer, "jwt_bearer");
        assert_eq!(answer.body, json!({
            "connection_name": CONNECTION,
            "org_id": "GLOBAL",
            "access_token": "graph-1",
            "token_type": "Bearer",
            "authorization_header": "Bearer graph-1",
            "expires_at": "2026-01-15T10:00:00Z",
            "scopes": [GRAPH_DEFAULT],
            "cached": false,
        }));
        let requests = idp.token_requests().await;
        assert_eq!(requests.len(), 1);
        assert_eq!(form(&requests[0]), expected_form(&[
            ("grant_type", JWT_BEARER),
            ("requested_token_use", "on_behalf_of"),
            ("assertion", &entra),
            ("scope", GRAPH_DEFAULT),
        ]), "the Entra on-behalf-of form, client credentials not in the body");
        assert_eq!(request_header(&requests[0], "authorization"), Some(basic.clone()));
        assert_eq!(
            request_header(&requests[0], "content-type").as_deref(),
            Some("application/x-www-form-urlencoded")
        );

        let rfc8693 = user_token();
        let answer = exchange(&app, &key, Some("acme"), "graph-te", json!({"assertion": rfc8693})).await;
        assert_exchanged(&answer, "token_exchange");
        assert_eq!(answer.body["connection_name"], "graph-te");
        assert_eq!(answer.body["access_token"], "graph-2");
        assert_eq!(answer.body["cached"], false);
        let requests = idp.token_requests().await;
        assert_eq!(requests.len(), 2);
        assert_eq!(form(&requests[1]), expected_form(&[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", &rfc8693),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("scope", GRAPH_DEFAULT),
        ]), "the RFC 8693 form");
        assert_eq!(request_header(&requests[1], "authorization"), Some(basic));
    }

    async fn exchanges_are_cached_per_assertion_and_scopes_until_five_minutes_before_expiry(app) {
        let idp = Idp::start().await;
        mount_numbered_tokens(&idp.provider, "graph").await;
        // The connection may act for two scopes; a caller narrows them per request.
        let mut body = idp.connection_body(CONNECTION, "jwt_bearer");
        body["scopes"] = json!([GRAPH_DEFAULT, "https://graph.microsoft.com/User.Read"]);
        app.create_connection(None, &body).await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let first = user_token();
        let ask = |assertion: &str, scopes: Option<&[&str]>| {
            let mut body = json!({"assertion": assertion});
            if let Some(scopes) = scopes {
                body["scopes"] = json!(scopes);
            }
            exchange(&app, &key, Some("acme"), CONNECTION, body)
        };

        let answer = ask(&first, None).await;
        assert_eq!(assert_exchanged(&answer, "first")["access_token"], "graph-1");
        assert_eq!(answer.body["cached"], false);
        let answer = ask(&first, None).await;
        let body = assert_exchanged(&answer, "the same request again");
        assert_eq!((body["access_token"].clone(), body["cached"].clone()), (json!("graph-1"), json!(true)));
        assert_eq!(body["expires_at"], "2026-01-15T10:00:00Z");
        assert_eq!(idp.token_calls().await, 1, "a cached answer makes no exchange");

        // The token expires at 10:00; it is served until 09:55.
        app.clock.set(start_time() + Duration::minutes(55) - Duration::seconds(1));
        let answer = ask(&first, None).await;
        assert_eq!(assert_exchanged(&answer, "09:54:59")["cached"], true);
        assert_eq!(answer.body["access_token"], "graph-1");
        app.clock.set(start_time() + Duration::minutes(55));
        let answer = ask(&first, None).await;
        let body = assert_exchanged(&answer, "09:55, five minutes before expiry");
        assert_eq!((body["access_token"].clone(), body["cached"].clone()), (json!("graph-2"), json!(false)));
        assert_eq!(body["expires_at"], "2026-01-15T10:55:00Z");
        assert_eq!(idp.token_calls().await, 2);
        let answer = ask(&first, None).await;
        assert_eq!(assert_exchanged(&answer, "the renewed token")["access_token"], "graph-2");
        assert_eq!(answer.body["cached"], true);

        // Another assertion is another entry.
        let second = user_token();
        let answer = ask(&second, None).await;
        let body = assert_exchanged(&answer, "another assertion");
        assert_eq!((body["access_token"].clone(), body["cached"].clone()), (json!("graph-3"), json!(false)));
        assert_eq!(idp.token_calls().await, 3);
        let requests = idp.token_requests().await;
        assert_eq!(form_value(&requests[2], "assertion").as_deref(), Some(second.as_str()));

        // Other scopes (of the connection's) are another entry, and are what is asked for.
        let user_read = "https://graph.microsoft.com/User.Read";
        let answer = ask(&first, Some(&[user_read])).await;
        let body = assert_exchanged(&answer, "other scopes");
        assert_eq!((body["access_token"].clone(), body["cached"].clone()), (json!("graph-4"), json!(false)));
        assert_eq!(body["scopes"], json!([user_read]));
        let requests = idp.token_requests().await;
        assert_eq!(requests.len(), 4);
        assert_eq!(form_value(&requests[3], "scope").as_deref(), Some(user_read));
        let answer = ask(&first, Some(&[user_read])).await;
        assert_eq!(assert_exchanged(&answer, "other scopes again")["cached"], true);
        assert_eq!(answer.body["access_token"], "graph-4");
        let answer = ask(&first, None).await;
        assert_eq!(assert_exchanged(&answer, "the default scopes entry is untouched")["access_token"], "graph-2");
        assert_eq!(answer.body["cached"], true);
        assert_eq!(idp.token_calls().await, 4);
    }

    async fn twenty_identical_concurrent_exchanges_cause_one(app) {
        let idp = Idp::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            // Long enough for all twenty to arrive during the exchange, well under the
            // tests' 700 ms provider timeout even on a loaded machine (a timeout would
            // retry and issue a second token).
            .respond_with(NumberedTokens::new("burst", 3600).delayed(std::time::Duration::from_millis(250)))
            .mount(&idp.provider)
            .await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let assertion = user_token();
        let answers = futures::future::join_all((0..20).map(|_| {
            exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": assertion}))
        }))
        .await;
        for answer in &answers {
            assert_eq!(assert_exchanged(answer, "a concurrent request")["access_token"], "burst-1");
        }
        assert_eq!(idp.token_calls().await, 1, "one exchange for twenty identical requests");
        let fresh = answers.iter().filter(|a| a.body["cached"] == false).count();
        assert_eq!(fresh, 1, "only the request that made the exchange says cached: false");
    }

    async fn the_assertion_is_never_logged_nor_stored(app) {
        let idp = Idp::start().await;
        let rejected = user_token();
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(body_string_contains(rejected.as_str()))
            .respond_with(invalid_grant("AADSTS50173: The provided grant has expired due to it being revoked."))
            .with_priority(1)
            .mount(&idp.provider)
            .await;
        let grants = Grants::new("nolog");
        grants.mount(&idp.provider).await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;

        let exchanged = user_token();
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": exchanged})).await;
        assert_exchanged(&answer, "an exchange");
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": exchanged})).await;
        assert_eq!(assert_exchanged(&answer, "a cache hit")["cached"], true);
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": rejected})).await;
        assert_obo_problem(&answer, 401, "obo_rejected", "refused by the provider");
        let expired = sign(&with_claim(claims(), "exp", json!(start_time().timestamp() - 3600)), KEY_A, KID_A);
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": expired})).await;
        assert_obo_problem(&answer, 401, "assertion_invalid", "refused locally");
        let for_session = user_token();
        let session = create_session(&app, &key, "acme", json!({
            "connection_name": CONNECTION, "assertion": for_session, "label": "report",
        })).await;
        app.clock.advance(Duration::hours(1));
        let answer = session_credentials(&app, &key, "acme", &session).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(idp.token_calls().await, 4, "three exchanges and one refresh");

        let logs = captured_logs();
        let mut database = app.db.raw_contents().await;
        // The PostgreSQL snapshot predates the sessions table: add its rows.
        for row in app.db.query_texts("select * from obo_sessions").await {
            database.extend(row.join(" | ").into_bytes());
        }
        assert!(contains(&database, &session), "the search covers the sessions table");
        for (what, assertion) in [("exchanged", &exchanged), ("rejected", &rejected), ("expired", &expired), ("session", &for_session)] {
            let signature = assertion.rsplit('.').next().unwrap();
            assert!(!logs.contains(assertion.as_str()), "the {what} assertion is in the log");
            assert!(!logs.contains(signature), "the {what} assertion's signature is in the log");
            assert!(!contains(&database, assertion), "the {what} assertion is in the database");
            assert!(!contains(&database, signature), "the {what} assertion's signature is in the database");
        }
        for token in ["nolog-at-1", "nolog-at-2", "nolog-at-3", "nolog-rt-1", "nolog-rt-2", "nolog-rt-3"] {
            assert!(!contains(&database, token), "the session's token {token} is stored in clear");
            assert!(!logs.contains(token), "the token {token} is in the log");
        }
    }

    async fn a_claims_challenge_round_trips_to_the_provider(app) {
        let idp = Idp::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(|r: &Request| form_value(r, "claims").is_some())
            .respond_with(NumberedTokens::new("stepped-up", 3600))
            .with_priority(1)
            .mount(&idp.provider)
            .await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "error": "interaction_required",
                "error_description": "AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access the resource.",
                "error_codes": [50076],
                "claims": CLAIMS,
            })))
            .mount(&idp.provider)
            .await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let assertion = user_token();

        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": assertion})).await;
        let problem = assert_obo_problem(&answer, 401, "claims_challenge", "the provider asks for claims");
        assert_eq!(problem["claims"], CLAIMS, "the claims to send back, verbatim");
        let encoded = base64::engine::general_purpose::STANDARD.encode(CLAIMS);
        assert_eq!(
            answer.header("www-authenticate"),
            Some(format!("Bearer error=\"insufficient_claims\", claims=\"{encoded}\"")),
        );
        let requests = idp.token_requests().await;
        assert_eq!(requests.len(), 1);
        assert_eq!(form_value(&requests[0], "claims"), None);

        // The user satisfied the policy; the middle tier repeats with the claims.
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": assertion, "claims": CLAIMS})).await;
        let body = assert_exchanged(&answer, "the repeat with claims");
        assert_eq!((body["access_token"].clone(), body["cached"].clone()), (json!("stepped-up-1"), json!(false)));
        let requests = idp.token_requests().await;
        assert_eq!(requests.len(), 2);
        assert_eq!(form(&requests[1]), expected_form(&[
            ("grant_type", JWT_BEARER),
            ("requested_token_use", "on_behalf_of"),
            ("assertion", &assertion),
            ("scope", GRAPH_DEFAULT),
            ("claims", CLAIMS),
        ]));
        // The stepped-up token is what the assertion's cache entry now holds.
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": assertion})).await;
        assert_eq!(assert_exchanged(&answer, "after the step-up")["access_token"], "stepped-up-1");
        assert_eq!(answer.body["cached"], true);
        assert_eq!(idp.token_calls().await, 2);
    }

    async fn provider_errors_map_to_the_contract(app) {
        let idp = Idp::start().await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let cases: Vec<(&str, Value, u16, &str, Option<&str>)> = vec![
            (
                "invalid_grant: the user must sign in again",
                json!({"error": "invalid_grant", "error_description": "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed.", "error_codes": [50173]}),
                401, "obo_rejected", None,
            ),
            (
                "AADSTS50013: the assertion's audience is not this client",
                json!({"error": "invalid_grant", "error_description": "AADSTS50013: Assertion failed signature validation. [Reason - The key was not found.]", "error_codes": [50013]}),
                502, "obo_misconfigured", Some("AADSTS50013"),
            ),
            (
                "AADSTS70011: an invalid scope",
                json!({"error": "invalid_scope", "error_description": "AADSTS70011: The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid.", "error_codes": [70011]}),
                502, "obo_misconfigured", Some("AADSTS70011"),
            ),
        ];
        for (reason, reply, status, code, provider_code) in cases {
            idp.provider.reset().await;
            Mock::given(method("POST"))
                .and(path("/token"))
                .respond_with(ResponseTemplate::new(400).set_body_json(reply))
                .mount(&idp.provider)
                .await;
            let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": user_token()})).await;
            let problem = assert_obo_problem(&answer, status, code, reason);
            assert_eq!(problem["provider_code"].as_str(), provider_code, "{reason}: {problem}");
            assert_eq!(idp.token_calls().await, 1, "{reason}: an OAuth error is not retried");
        }
        // A provider that keeps failing is a provider error, not the user's fault.
        idp.provider.reset().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(503).set_body_json(json!({"error": "temporarily_unavailable"})))
            .mount(&idp.provider)
            .await;
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": user_token()})).await;
        assert_obo_problem(&answer, 502, "provider_error", "a failing provider");

        // Only on_behalf_of connections exchange; an unknown one is 404.
        idp.provider.reset().await;
        app.create_connection(None, &auth_code_connection_body("web-login")).await;
        let answer = exchange(&app, &key, Some("acme"), "web-login", json!({"assertion": user_token()})).await;
        assert_problem(&answer, 400, "bad_request", "an authorization_code connection");
        let answer = send(app.with_key(&key, Method::POST, "/api/oauth/obo-sessions", Some("acme"))
            .json(&json!({"connection_name": "web-login", "assertion": user_token()}))).await;
        assert_problem(&answer, 400, "bad_request", "a session on an authorization_code connection");
        let answer = exchange(&app, &key, Some("acme"), "nowhere", json!({"assertion": user_token()})).await;
        assert_problem(&answer, 404, "not_found", "an unknown connection");
        assert_eq!(idp.token_calls().await, 0);
    }

    async fn an_assertion_entra_finds_expired_means_sign_in_again(app) {
        // AADSTS500133 (the user's token expired, e.g. between local validation and the
        // exchange) is the user's problem, not a misconfiguration: its code merely
        // starts with the digits of AADSTS50013.
        let idp = Idp::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_grant",
                "error_description": "AADSTS500133: Assertion is not within its valid time range. Ensure that the access token is not expired before using it for user assertion, or request a new token. Current time: 2026-01-15T09:00:00.0000000Z, expiry time of assertion 2026-01-15T08:59:31.0000000Z.",
                "error_codes": [500133],
            })))
            .mount(&idp.provider)
            .await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let just_expired = sign(&with_claim(claims(), "exp", json!(start_time().timestamp() - 29)), KEY_A, KID_A);
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": just_expired})).await;
        let problem = assert_obo_problem(&answer, 401, "obo_rejected", "AADSTS500133");
        assert_eq!(problem["provider_code"], Value::Null, "{problem}");
    }

    async fn a_session_outlives_its_first_token_by_many_refreshes(app) {
        let idp = Idp::start().await;
        let grants = Grants::new("sess");
        grants.mount(&idp.provider).await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let assertion = user_token();

        let answer = send(app.with_key(&key, Method::POST, "/api/oauth/obo-sessions", Some("acme")).json(&json!({
            "connection_name": CONNECTION,
            "assertion": assertion,
            "max_lifetime_seconds": 7 * 86_400,
            "label": "nightly report",
        }))).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(answer.body["expires_at"], "2026-01-22T09:00:00Z");
        let session = answer.body["session_id"].as_str().unwrap().to_owned();
        let requests = idp.token_requests().await;
        assert_eq!(requests.len(), 1);
        assert_eq!(form_value(&requests[0], "grant_type").as_deref(), Some(JWT_BEARER));
        assert_eq!(form_value(&requests[0], "requested_token_use").as_deref(), Some("on_behalf_of"));
        assert_eq!(form_value(&requests[0], "assertion").as_deref(), Some(assertion.as_str()));
        let scope = form_value(&requests[0], "scope").unwrap_or_default();
        let scopes: Vec<&str> = scope.split(' ').collect();
        assert!(scopes.contains(&"offline_access"), "a session asks for offline_access: {scope}");
        assert!(scopes.contains(&GRAPH_DEFAULT), "{scope}");

        let answer = session_credentials(&app, &key, "acme", &session).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
        assert_eq!(answer.body["access_token"], "sess-at-1");
        assert_eq!(answer.body["authorization_header"], "Bearer sess-at-1");
        assert_eq!(answer.body["expires_at"], "2026-01-15T10:00:00Z");
        assert_eq!(idp.token_calls().await, 1, "a fresh token is served as it is");

        // Long past the user's own token (it expired at 11:00): hour after hour.
        for hour in 1..=5 {
            app.clock.advance(Duration::hours(1));
            let answer = session_credentials(&app, &key, "acme", &session).await;
            assert_eq!(answer.status, 200, "hour {hour}: {}", answer.body);
            assert_eq!(answer.body["access_token"], format!("sess-at-{}", hour + 1), "hour {hour}");
            let expires = start_time() + Duration::hours(hour + 1);
            assert_eq!(answer.body["expires_at"], expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "hour {hour}");
            let requests = idp.token_requests().await;
            assert_eq!(requests.len() as i64, hour + 1, "hour {hour}: one refresh");
            let refresh = requests.last().unwrap();
            assert_eq!(form_value(refresh, "grant_type").as_deref(), Some("refresh_token"), "hour {hour}");
            assert_eq!(
                form_value(refresh, "refresh_token"),
                Some(format!("sess-rt-{hour}")),
                "hour {hour}: the current, rotated refresh token"
            );
            assert!(form_value(refresh, "assertion").is_none(), "hour {hour}: the assertion is not kept");
            // A second read in the same hour is served without a refresh.
            let again = session_credentials(&app, &key, "acme", &session).await;
            assert_eq!(again.body["access_token"], format!("sess-at-{}", hour + 1), "hour {hour}");
            assert_eq!(idp.token_calls().await as i64, hour + 1, "hour {hour}");
        }

        // The refresher keeps it alive too.
        app.clock.advance(Duration::hours(1));
        let run = oauth_broker::service::refresher::run(app.broker.clone(), "manual")
            .await
            .expect("no other run in progress");
        assert_eq!((run.refreshed, run.failed), (1, 0), "{:?}", run.errors);
        let requests = idp.token_requests().await;
        assert_eq!(requests.len(), 7);
        assert_eq!(form_value(&requests[6], "refresh_token").as_deref(), Some("sess-rt-6"));
        let answer = session_credentials(&app, &key, "acme", &session).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["access_token"], "sess-at-7", "the refresher's token");
        assert_eq!(idp.token_calls().await, 7, "no refresh on read after the refresher's");

        // Every use is an event of the connection that names the session.
        let events = send(app.admin(Method::GET, &format!("/api/oauth/connections/{CONNECTION}/events?limit=100"), None)).await;
        assert_eq!(events.status, 200, "{}", events.body);
        let mine: Vec<&Value> = events.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"].as_str().is_some_and(|d| d.contains(&session)))
            .collect();
        let count = |kind: &str| mine.iter().filter(|e| e["kind"] == kind).count();
        assert_eq!(count("token_acquired"), 1, "{mine:?}");
        // Twelve reads over seven hours: recorded once a minute per session and key, so
        // the second read of each hour is not an event.
        assert_eq!(count("credentials_read"), 7, "one per session, key and minute: {mine:?}");
        assert_eq!(count("refreshed"), 6, "{mine:?}");
        assert!(
            mine.iter().filter(|e| e["kind"] == "credentials_read").all(|e| e["actor"] == "wf-acme"),
            "{mine:?}"
        );
        let text = events.body.to_string();
        assert!(!text.contains("sess-at-") && !text.contains("sess-rt-"), "no token in events: {text}");
        assert!(!text.contains(assertion.as_str()));
    }

    async fn sessions_can_be_revoked_expire_and_belong_to_their_key(app) {
        let idp = Idp::start().await;
        let grants = Grants::new("own");
        grants.mount(&idp.provider).await;
        idp.connect(&app, Some("acme"), CONNECTION, "jwt_bearer").await;
        let owner = app.create_key("wf-owner", "workflow", "acme").await;
        let colleague = app.create_key("wf-colleague", "workflow", "acme").await;
        let stranger = app.create_key("wf-stranger", "workflow", "globex").await;
        let new_session = |label: &str, lifetime: Option<i64>| {
            let mut body = json!({"connection_name": CONNECTION, "assertion": user_token(), "label": label});
            if let Some(seconds) = lifetime {
                body["max_lifetime_seconds"] = json!(seconds);
            }
            body
        };
        for (reason, lifetime) in [("under a minute", 59), ("over the 90-day maximum", 90 * 86_400 + 1)] {
            let answer = send(app.with_key(&owner, Method::POST, "/api/oauth/obo-sessions", Some("acme"))
                .json(&new_session(reason, Some(lifetime)))).await;
            assert_problem(&answer, 422, "validation_failed", reason);
            assert!(answer.body["errors"]["max_lifetime_seconds"].is_array(), "{}", answer.body);
        }
        let expired = sign(&with_claim(claims(), "exp", json!(start_time().timestamp() - 600)), KEY_A, KID_A);
        let answer = send(app.with_key(&owner, Method::POST, "/api/oauth/obo-sessions", Some("acme"))
            .json(&json!({"connection_name": CONNECTION, "assertion": expired}))).await;
        assert_obo_problem(&answer, 401, "assertion_invalid", "a session from an expired assertion");
        assert_eq!(statuses(&list_sessions(&app, &owner, "acme").await), vec![], "no session was made");
        assert_eq!(idp.token_calls().await, 0);

        let cancelled = create_session(&app, &owner, "acme", new_session("cancelled", None)).await;
        let short = create_session(&app, &owner, "acme", new_session("short", Some(3600))).await;
        let kept = create_session(&app, &owner, "acme", new_session("kept", None)).await;
        assert_eq!(idp.token_calls().await, 3);

        // Revocation by the user's side.
        let answer = revoke_session(&app, &owner, "acme", &cancelled).await;
        assert_eq!(answer.status, 204, "{}", answer.body);
        let answer = session_credentials(&app, &owner, "acme", &cancelled).await;
        assert_problem(&answer, 410, "gone", "a revoked session");
        let answer = revoke_session(&app, &owner, "acme", &cancelled).await;
        assert_problem(&answer, 410, "gone", "revoking twice");
        let sealed = app.db.query_texts(&format!(
            "select access_token_sealed, refresh_token_sealed from obo_sessions where id = '{cancelled}'"
        )).await;
        assert_eq!(sealed, vec![vec!["NULL".to_owned(), "NULL".to_owned()]], "a revoked session keeps no token");

        // A session belongs to the key that made it.
        let answer = session_credentials(&app, &colleague, "acme", &kept).await;
        assert_problem(&answer, 403, "forbidden", "another workflow key of the org");
        let answer = revoke_session(&app, &colleague, "acme", &kept).await;
        assert_problem(&answer, 403, "forbidden", "another key revoking");
        let answer = session_credentials(&app, &stranger, "acme", &kept).await;
        assert_problem(&answer, 403, "forbidden", "a key of another org naming this org");
        let answer = session_credentials(&app, &stranger, "globex", &kept).await;
        assert_problem(&answer, 404, "not_found", "a key of another org in its own org");
        let answer = session_credentials(&app, &owner, "acme", &uuid::Uuid::new_v4().to_string()).await;
        assert_problem(&answer, 404, "not_found", "an unknown session");
        assert_eq!(statuses(&list_sessions(&app, &colleague, "acme").await), vec![], "a workflow key lists its own");
        assert_eq!(statuses(&list_sessions(&app, &stranger, "globex").await), vec![]);

        // Past the short session's maximum lifetime (and the first tokens' expiry).
        app.clock.advance(Duration::seconds(3601));
        let answer = session_credentials(&app, &owner, "acme", &short).await;
        assert_problem(&answer, 410, "gone", "past max_lifetime_seconds");
        let answer = session_credentials(&app, &owner, "acme", &kept).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["access_token"], "own-at-4", "refreshed with own-rt-3");
        assert_eq!(idp.token_calls().await, 4, "no refresh for the revoked or expired sessions");

        let mut expected = vec![
            (cancelled.clone(), "revoked".to_owned()),
            (short.clone(), "expired".to_owned()),
            (kept.clone(), "active".to_owned()),
        ];
        expected.sort();
        let listed = list_sessions(&app, &owner, "acme").await;
        assert_eq!(statuses(&listed), expected, "{listed}");
        let admin_listed = list_sessions(&app, &app.admin_key, "acme").await;
        assert_eq!(statuses(&admin_listed), expected, "an admin sees the org's sessions");
        let text = listed.to_string();
        assert!(!text.contains("own-at-") && !text.contains("own-rt-"), "no token material: {text}");
        for session in listed["sessions"].as_array().unwrap() {
            let fields: Vec<&String> = session.as_object().unwrap().keys().collect();
            assert!(
                fields.iter().all(|f| !f.contains("token") || f.as_str() == "token_expires_at"),
                "{session}"
            );
        }
        let by_name = send(app.with_key(&owner, Method::GET, "/api/oauth/obo-sessions?connection_name=other", Some("acme"))).await;
        assert_eq!(statuses(&by_name.body), vec![], "filtered by connection");

        // The user's grant is revoked upstream: the next refresh fails for good.
        grants.revoke_all();
        app.clock.advance(Duration::hours(1));
        let answer = session_credentials(&app, &owner, "acme", &kept).await;
        assert_problem(&answer, 503, "connection_unavailable", "the grant was revoked upstream");
        assert_eq!(idp.token_calls().await, 5);
        let answer = session_credentials(&app, &owner, "acme", &kept).await;
        assert_problem(&answer, 503, "connection_unavailable", "still revoked upstream");
        assert_eq!(idp.token_calls().await, 5, "a failed grant is not retried on every read");
        let listed = list_sessions(&app, &owner, "acme").await;
        let kept_view = listed["sessions"].as_array().unwrap().iter().find(|s| s["session_id"] == kept.as_str()).unwrap().clone();
        assert_eq!(kept_view["status"], "failed", "{kept_view}");

        // A day after, the refresher purges the revoked and the expired session.
        app.clock.advance(Duration::hours(25));
        oauth_broker::service::refresher::run(app.broker.clone(), "manual")
            .await
            .expect("no other run in progress");
        assert_eq!(statuses(&list_sessions(&app, &owner, "acme").await), vec![(kept.clone(), "failed".to_owned())]);
        let answer = session_credentials(&app, &owner, "acme", &cancelled).await;
        assert_problem(&answer, 404, "not_found", "a purged session");
    }

    async fn concurrent_reads_of_an_expiring_session_refresh_it_once_across_replicas(app) {
        // Refresh tokens rotate and work once: a second refresh would burn the grant.
        let idp = Idp::start().await;
        let grants = Grants::delayed("race", std::time::Duration::from_millis(300));
        grants.mount(&idp.provider).await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let session = create_session(&app, &key, "acme", json!({"connection_name": CONNECTION, "assertion": user_token()})).await;
        let replica = app.replica().await;
        for hour in 1..=2 {
            app.clock.advance(Duration::hours(1));
            replica.clock.advance(Duration::hours(1));
            let answers = futures::future::join_all((0..10).map(|i| {
                let server = if i % 2 == 0 { &app } else { &replica };
                session_credentials(server, &key, "acme", &session)
            }))
            .await;
            for answer in &answers {
                assert_eq!(answer.status, 200, "hour {hour}: {}", answer.body);
                assert_eq!(answer.body["access_token"], format!("race-at-{}", hour + 1), "hour {hour}");
            }
            assert_eq!(idp.token_calls().await as i64, 1 + hour, "hour {hour}: one refresh for ten readers on two replicas");
        }
    }

    async fn a_cold_jwks_cache_is_filled_by_one_fetch_under_concurrency(app) {
        // Twenty users arrive at once after a start (or after the JWKS aged out): the
        // issuer's JWKS is read once, not once per request.
        let idp = Idp::start().await;
        mount_numbered_tokens(&idp.provider, "graph").await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let answers = futures::future::join_all((0..20).map(|_| {
            exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": user_token()}))
        }))
        .await;
        for answer in &answers {
            assert_exchanged(answer, "a concurrent first request");
        }
        assert_eq!(idp.token_calls().await, 20, "twenty users, twenty exchanges");
        assert_eq!(idp.jwks_fetches().await, 1, "one JWKS fetch fills the cache for everyone");
    }

    async fn session_credentials_name_the_org_whose_connection_served_them(app) {
        // The credentials shape: `org_id` is the org whose connection served the token
        // (the caller's, or GLOBAL), as the exchange endpoint answers for the same case.
        let idp = Idp::start().await;
        Grants::new("org").mount(&idp.provider).await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let answer = exchange(&app, &key, Some("acme"), CONNECTION, json!({"assertion": user_token()})).await;
        assert_eq!(assert_exchanged(&answer, "an exchange through the fallback")["org_id"], "GLOBAL");
        let session = create_session(&app, &key, "acme", json!({"connection_name": CONNECTION, "assertion": user_token()})).await;
        let answer = session_credentials(&app, &key, "acme", &session).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["connection_name"], CONNECTION);
        assert_eq!(answer.body["org_id"], "GLOBAL", "{}", answer.body);
    }
}

/// Key rotation as it happens: the service cached a JWKS without the new key, the
/// issuer publishes it, and a token signed with it is accepted once the service may
/// refetch (at most every 30 s of real time). The JWKS cache is in memory and uses
/// the real clock, so this waits for real, once, on SQLite only.
mod a_rotated_signing_key_is_fetched_once_the_refetch_interval_passed {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        let Some(app) = spawn_app(Backend::Sqlite).await else {
            return;
        };
        let idp = Idp::start().await;
        mount_numbered_tokens(&idp.provider, "graph").await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let answer = exchange(
            &app,
            &key,
            Some("acme"),
            CONNECTION,
            json!({"assertion": user_token()}),
        )
        .await;
        assert_exchanged(&answer, "a token of the current key");
        assert_eq!(idp.jwks_fetches().await, 1);

        idp.jwks.reset().await;
        serve_jwks(&idp.jwks, &[(KEY_A, KID_A), (KEY_B, KID_B)]).await;
        let rotated = sign(&claims(), KEY_B, KID_B);
        let answer = exchange(
            &app,
            &key,
            Some("acme"),
            CONNECTION,
            json!({"assertion": rotated}),
        )
        .await;
        assert_obo_problem(
            &answer,
            401,
            "assertion_invalid",
            "a new kid right after a fetch",
        );
        assert_eq!(
            idp.jwks_fetches().await,
            0,
            "not refetched within 30 s (the reset cleared the count)"
        );

        tokio::time::sleep(std::time::Duration::from_secs(31)).await;
        let answer = exchange(
            &app,
            &key,
            Some("acme"),
            CONNECTION,
            json!({"assertion": rotated}),
        )
        .await;
        assert_eq!(
            assert_exchanged(&answer, "the new kid after 30 s")["access_token"],
            "graph-2"
        );
        assert_eq!(
            idp.jwks_fetches().await,
            1,
            "one refetch for the unknown kid"
        );
        let answer = exchange(
            &app,
            &key,
            Some("acme"),
            CONNECTION,
            json!({"assertion": user_token()}),
        )
        .await;
        assert_eq!(
            assert_exchanged(&answer, "the old key still works")["access_token"],
            "graph-3"
        );
        assert_eq!(idp.jwks_fetches().await, 1);
    }
}

on_both_backends! {
    async fn a_hanging_jwks_of_one_org_does_not_hold_up_another_and_its_failure_is_remembered(app) {
        // Arrange: org `slow`'s issuer keys never answer; org `fast`'s do.
        let idp = Idp::start().await;
        mount_numbered_tokens(&idp.provider, "graph").await;
        let hanging = crate::support::hostile::Hostile::hanging().await;
        let mut slow = idp.connection_body(CONNECTION, "jwt_bearer");
        slow["assertion_validation"]["jwks_url"] = json!(format!("{}/keys", hanging.url));
        app.create_connection(Some("slow"), &slow).await;
        idp.connect(&app, Some("fast"), CONNECTION, "jwt_bearer").await;
        let slow_key = app.create_key("wf-slow", "workflow", "slow").await;
        let fast_key = app.create_key("wf-fast", "workflow", "fast").await;
        let assertion = user_token();

        // Act: `slow`'s exchange waits on its JWKS; `fast`'s starts once that wait began.
        let slow_exchange = exchange(&app, &slow_key, Some("slow"), CONNECTION, json!({"assertion": assertion}));
        let fast_exchange = async {
            while hanging.connections() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let answer = exchange(&app, &fast_key, Some("fast"), CONNECTION, json!({"assertion": assertion})).await;
            (answer, hanging.connections())
        };
        let mut slow_exchange = std::pin::pin!(slow_exchange);
        let ((fast, _), slow_pending_when_fast_done) = {
            let fast_exchange = std::pin::pin!(fast_exchange);
            match futures::future::select(fast_exchange, &mut slow_exchange).await {
                futures::future::Either::Left((fast, _)) => (fast, true),
                futures::future::Either::Right(_) => panic!("the slow exchange finished before the fast one"),
            }
        };
        let slow = slow_exchange.await;

        // Assert: `fast` was served while `slow` still waited; `slow` failed as the
        // provider's fault, and a second try is answered from memory, not a new wait.
        assert!(slow_pending_when_fast_done);
        assert_exchanged(&fast, "the other org's exchange");
        assert_eq!(slow.status, 502, "{}", slow.body);
        let again = exchange(&app, &slow_key, Some("slow"), CONNECTION, json!({"assertion": assertion})).await;
        assert_eq!(again.status, 502, "{}", again.body);
        assert_eq!(hanging.connections(), 1, "a failed JWKS is not fetched again at once");
    }

    async fn moving_the_token_endpoint_ends_the_connection_s_sessions(app) {
        let idp = Idp::start().await;
        let grants = Grants::new("sess");
        grants.mount(&idp.provider).await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let session = create_session(&app, &key, "acme", json!({"connection_name": CONNECTION, "assertion": user_token()})).await;
        assert_eq!(session_credentials(&app, &key, "acme", &session).await.status, 200);

        // An admin points the connection elsewhere (with its secret, as required).
        let moved = send(app.admin(Method::PATCH, &format!("/api/oauth/connections/{CONNECTION}"), None).json(&json!({
            "token_url": format!("{}/elsewhere", idp.provider.uri()),
            "client_secret": "s",
        }))).await;
        assert_eq!(moved.status, 200, "{}", moved.body);

        // The session is over: its refresh token never reaches the new endpoint.
        app.clock.advance(Duration::hours(2));
        let answer = session_credentials(&app, &key, "acme", &session).await;
        assert_eq!(answer.status, 410, "{}", answer.body);
        let sealed = app.db.query_texts("select refresh_token_sealed from obo_sessions").await;
        assert_eq!(sealed, vec![vec!["NULL".to_owned()]], "its refresh token is discarded");
        assert_eq!(calls_to(&idp.provider, "/elsewhere").await, 0);
    }

    async fn a_caller_cannot_ask_for_scopes_the_connection_does_not_have(app) {
        let idp = Idp::start().await;
        mount_numbered_tokens(&idp.provider, "graph").await;
        idp.connect(&app, None, CONNECTION, "jwt_bearer").await;
        let key = app.create_key("wf-acme", "workflow", "acme").await;
        let problem = assert_refused(
            &app,
            "a scope the admin never configured",
            app.with_key(&key, Method::POST, &format!("/api/oauth/credentials/{CONNECTION}/on-behalf-of"), Some("acme"))
                .json(&json!({"assertion": user_token(), "scopes": ["https://outlook.office.com/.default"]})),
            422,
            "validation_failed",
            Some("scopes"),
        ).await;
        assert!(problem["errors"]["scopes"][0].as_str().unwrap().contains("outlook"), "{problem}");
        assert_eq!(idp.token_calls().await, 0, "no exchange was made");
    }
}

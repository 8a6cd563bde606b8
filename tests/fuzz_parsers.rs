//! Property-based fuzzing of every parser of untrusted input: token endpoint replies
//! (through oauth2's own reading and through our on-behalf-of reader), the OAuth
//! callback's query and the page it answers, user JWTs handed to on-behalf-of (and the
//! issuer's JWKS behind them), and sealed secrets read back from the database.
//!
//! Every parser is held to the same four promises: it never panics, what it returns is
//! bounded whatever it was given, its errors never echo a secret it was handed, and valid
//! input still reads back to exactly what was generated.
//!
//! Case counts are kept small for a debug build on two cores (the whole file runs in
//! seconds); `PROPTEST_CASES=5000 cargo test --test fuzz_parsers` raises every one of them.
//! Failure persistence is off: a failure prints its shrunk input, which belongs in a named
//! regression test beside the parser, not in a regressions file.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::http::StatusCode;
use actix_web::web;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
};
use oauth2::{ClientId, EndpointNotSet, StandardRevocableToken, TokenUrl};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use oauth_broker::crypto::{Aad, Keyring, OpenError};
use oauth_broker::domain::AssertionRules;
use oauth_broker::http::routes::callback::{CALLBACK_CSP, CallbackQuery, render};
use oauth_broker::oauth::{
    JwksCache, JwtError, LenientTokenResponse, MAX_EXPIRES_IN, OboError, Outbound, OutboundConfig,
    ProviderError, TokenSet, TransportError, downstream_resources, read_obo_reply, sanitize,
    unverified_audiences,
};
use oauth_broker::service::authorization::{CallbackOutcome, CallbackParams};

/// `cases` per property, unless `PROPTEST_CASES` asks for another number for all of them.
fn cases(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        ..default
    }
}

// --- shared strategies ----------------------------------------------------------------

/// Any text of up to `max` characters: every Unicode scalar value, controls included.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("(?s:.{{0,{max}}})")).expect("a valid regex")
}

/// Text rich in what HTML, JSON, URLs and our own formats treat specially.
fn tricky(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        text(max),
        proptest::string::string_regex(&format!(
            "[<>\"'&;:/=%+#?. \\t\\r\\n\\\\a-zA-Z0-9\\x00\\x7f\u{202e}\u{feff}]{{0,{max}}}"
        ))
        .expect("a valid regex"),
    ]
}

/// A value that must never reappear in an error: long and distinctive.
fn secret(prefix: &'static str) -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{24,40}".prop_map(move |s| format!("{prefix}{s}"))
}

/// Any JSON document, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text(40).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(text(12), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `value` as a JSON reader sees it: serde_json (without `float_roundtrip`) may read a
/// float back one ulp off what was written, which is no parser's fault.
fn as_read(value: &Value) -> Value {
    serde_json::from_str(&value.to_string()).expect("JSON reads back")
}

fn is_printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Bytes, as JSON, as text, or cut out of a real reply: all the shapes a body can take.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        text(300).prop_map(String::into_bytes),
        json_value().prop_map(|v| serde_json::to_vec(&v).expect("JSON serializes")),
        (success(), any::<Index>()).prop_map(|(s, cut)| {
            let body = serde_json::to_vec(&s.body).expect("JSON serializes");
            body[..cut.index(body.len() + 1)].to_vec()
        }),
    ]
}

// --- token endpoint replies -------------------------------------------------------------

type TokenClient = oauth2::Client<
    BasicErrorResponse,
    LenientTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
>;

/// What a provider's token endpoint answered.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
    retry_after: Option<u64>,
}

/// Reads `reply` as `ProviderClient` does: a token request through oauth2 whose HTTP call
/// answers `reply`, then our classification of the outcome.
fn token_request(reply: &Reply) -> Result<TokenSet, ProviderError> {
    let client = TokenClient::new(ClientId::new("client".into()))
        .set_token_uri(TokenUrl::new("https://provider.example/token".into()).expect("a URL"));
    // As `Outbound` does: oauth2 takes only 200 for success, and any 2xx is one.
    let status = if (200..300).contains(&reply.status) {
        200
    } else {
        reply.status
    };
    let http = |_request: oauth2::HttpRequest| {
        let mut response = http::Response::builder().status(status);
        if let Some(content_type) = &reply.content_type {
            response = response.header(http::header::CONTENT_TYPE, content_type.as_str());
        }
        let response = response
            .body(reply.body.clone())
            .expect("status and header are valid");
        async move { Ok::<_, TransportError>(response) }
    };
    let result =
        futures::executor::block_on(client.exchange_client_credentials().request_async(&http));
    TokenSet::from_reply(
        result,
        Some(reply.status),
        reply.retry_after.map(Duration::from_secs),
    )
}

/// What a token reply must read as.
#[derive(Debug, Clone)]
struct Expected {
    access_token: String,
    token_type: String,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
    scopes: Option<Vec<String>>,
}

/// A well-formed success body (RFC 6749 5.1 and the deviations we accept).
#[derive(Debug, Clone)]
struct Success {
    body: Value,
    expected: Expected,
}

/// `expires_in` as providers send it, and the seconds it means.
fn expires_in() -> impl Strategy<Value = (Option<Value>, Option<u64>)> {
    prop_oneof![
        Just((None, None)),
        Just((Some(Value::Null), None)),
        (0u64..100_000).prop_map(|n| (Some(json!(n)), Some(n))),
        any::<u64>().prop_map(|n| (Some(json!(n)), Some(n))),
        (i64::MIN..0).prop_map(|n| (Some(json!(n)), None)),
        (0.0f64..1e16).prop_map(|f| {
            let read = as_read(&json!(f)).as_f64().expect("a number");
            (Some(json!(f)), Some(read as u64))
        }),
        (any::<u64>(), "[ \t\n]{0,2}", "[ \t\n]{0,2}")
            .prop_map(|(n, a, b)| (Some(json!(format!("{a}{n}{b}"))), Some(n))),
        "|[a-z]{1,8}|-[0-9]{1,5}|[0-9]{1,5}\\.[0-9]".prop_map(|t| (Some(Value::String(t)), None)),
    ]
}

fn success() -> impl Strategy<Value = Success> {
    let non_empty = || text(64).prop_filter("non-empty", |s| !s.is_empty());
    let token_type = prop_oneof![
        Just(None),
        "(?i)bearer".prop_map(Some),
        text(20).prop_map(Some),
    ];
    let refresh_token = prop_oneof![
        Just((None, None)),
        Just((Some(Value::Null), None)),
        Just((Some(json!("")), None)),
        non_empty().prop_map(|s| (Some(json!(s)), Some(s))),
    ];
    let scope = prop_oneof![
        Just((None, None)),
        Just((Some(Value::Null), None)),
        text(60).prop_map(|s| {
            let scopes = s.split_whitespace().map(str::to_owned).collect();
            (Some(json!(s)), Some(scopes))
        }),
    ];
    let extra =
        prop::collection::btree_map("x_[a-z]{1,8}|id_token|ext_expires_in", json_value(), 0..3);
    (
        non_empty(),
        token_type,
        expires_in(),
        refresh_token,
        scope,
        extra,
    )
        .prop_map(
            |(access_token, token_type, (expires_value, expires_in), refresh, scope, extra)| {
                let mut body = serde_json::Map::new();
                body.insert("access_token".into(), json!(access_token));
                let expected_type = match &token_type {
                    None => "Bearer".to_owned(),
                    Some(t) if t.eq_ignore_ascii_case("bearer") => "Bearer".to_owned(),
                    Some(t) => t.clone(),
                };
                if let Some(t) = token_type {
                    body.insert("token_type".into(), json!(t));
                }
                if let Some(v) = expires_value {
                    body.insert("expires_in".into(), v);
                }
                if let Some(v) = refresh.0 {
                    body.insert("refresh_token".into(), v);
                }
                if let Some(v) = scope.0 {
                    body.insert("scope".into(), v);
                }
                for (k, v) in extra {
                    body.insert(k, v);
                }
                Success {
                    body: Value::Object(body),
                    expected: Expected {
                        access_token,
                        token_type: expected_type,
                        expires_in,
                        refresh_token: refresh.1,
                        scopes: scope.1,
                    },
                }
            },
        )
}

fn json_content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json".to_owned())),
        Just(Some("application/json; charset=utf-8".to_owned())),
        Just(Some("Application/JSON;charset=UTF-8".to_owned())),
    ]
}

fn any_content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        json_content_type(),
        Just(Some("text/html; charset=utf-8".to_owned())),
        "[ -~]{0,40}".prop_map(Some),
    ]
}

fn check_token_set(tokens: &TokenSet, expected: &Expected) -> Result<(), TestCaseError> {
    prop_assert_eq!(tokens.access_token.expose_secret(), &expected.access_token);
    prop_assert_eq!(&tokens.token_type, &expected.token_type);
    prop_assert_eq!(
        tokens.expires_in,
        expected
            .expires_in
            .map(|n| Duration::from_secs(n).min(MAX_EXPIRES_IN))
    );
    prop_assert_eq!(
        tokens.refresh_token.as_ref().map(|t| t.expose_secret()),
        expected.refresh_token.as_deref()
    );
    prop_assert_eq!(&tokens.scopes, &expected.scopes);
    if let Some(lifetime) = tokens.expires_in {
        // What the grant and OBO code do with it: an instant, which must exist.
        let lifetime = chrono::Duration::from_std(lifetime).expect("a bounded lifetime");
        prop_assert!(
            Utc::now().checked_add_signed(lifetime).is_some(),
            "expires_in {lifetime} overflows a timestamp"
        );
    }
    Ok(())
}

/// A reply that must fail, and secrets it carries that the failure must not repeat.
#[derive(Debug, Clone)]
struct Malformed {
    reply: Reply,
    wrong: Wrong,
    secrets: Vec<String>,
}

/// The ways a reply holding tokens can be wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wrong {
    /// Cut short by the network.
    CutShort,
    /// A field of the wrong JSON type.
    FieldOfWrongType,
    /// A login page instead of JSON.
    LoginPage,
    /// A good body labelled as something other than JSON.
    NotLabelledJson,
    /// Good JSON followed by more. oauth2 reads the first JSON value and ignores the
    /// rest (it never calls `Deserializer::end`), so this one may pass there.
    TrailingGarbage,
    /// An empty access token beside a refresh token.
    EmptyAccessToken,
    /// An RFC 6749 5.2 error response that also holds tokens.
    ErrorWithTokens,
    /// An error status with a success body.
    ErrorStatusWithTokens,
    /// An error status with an HTML page.
    ErrorStatusWithPage,
    /// JSON that is not an object.
    NotAnObject,
    /// The access token not a string, the refresh token beside it.
    AccessTokenNotAString,
}

fn malformed() -> impl Strategy<Value = Malformed> {
    let wrong = prop::sample::select(vec![
        Wrong::CutShort,
        Wrong::FieldOfWrongType,
        Wrong::LoginPage,
        Wrong::NotLabelledJson,
        Wrong::TrailingGarbage,
        Wrong::EmptyAccessToken,
        Wrong::ErrorWithTokens,
        Wrong::ErrorStatusWithTokens,
        Wrong::ErrorStatusWithPage,
        Wrong::NotAnObject,
        Wrong::AccessTokenNotAString,
    ]);
    let wrong_value = prop::sample::select(vec![
        json!(true),
        json!({}),
        json!([]),
        json!({"seconds": 3600}),
    ]);
    let field = prop::sample::select(vec!["expires_in", "token_type", "refresh_token", "scope"]);
    let code = prop::sample::select(vec!["invalid_grant", "server_error", "slow_down", "x"]);
    (
        (secret("at_"), secret("rt_"), wrong),
        (any::<Index>(), wrong_value, field, code),
        (200u16..300, 400u16..600),
    )
        .prop_map(|((at, rt, wrong), (cut, value, field, code), (ok, failed))| {
            let good = json!({
                "access_token": at, "refresh_token": rt, "token_type": "Bearer", "expires_in": 3600,
            });
            let good_bytes = good.to_string().into_bytes();
            let json = || Some("application/json".to_owned());
            let html = || Some("text/html".to_owned());
            let (status, content_type, body) = match wrong {
                Wrong::CutShort => (ok, json(), good_bytes[..cut.index(good_bytes.len())].to_vec()),
                Wrong::FieldOfWrongType => {
                    let mut body = good.clone();
                    body[field] = value;
                    (ok, json(), body.to_string().into_bytes())
                }
                Wrong::LoginPage => {
                    let page = format!("<html><body><pre>{good}</pre>{at}</body></html>");
                    (ok, html(), page.into_bytes())
                }
                Wrong::NotLabelledJson => (ok, Some("text/plain".to_owned()), good_bytes),
                Wrong::TrailingGarbage => {
                    (ok, json(), format!("{good} <!-- {at} -->").into_bytes())
                }
                Wrong::EmptyAccessToken => {
                    let body = json!({"access_token": "", "refresh_token": rt});
                    (ok, json(), body.to_string().into_bytes())
                }
                Wrong::ErrorWithTokens => {
                    let body = json!({"error": code, "access_token": at, "refresh_token": rt});
                    (failed, json(), body.to_string().into_bytes())
                }
                Wrong::ErrorStatusWithTokens => (failed, json(), good_bytes),
                Wrong::ErrorStatusWithPage => {
                    (failed, html(), format!("<html>{at} {rt}</html>").into_bytes())
                }
                Wrong::NotAnObject => (ok, json(), json!([at, rt]).to_string().into_bytes()),
                Wrong::AccessTokenNotAString => {
                    let body = json!({"access_token": 12345, "refresh_token": rt});
                    (ok, json(), body.to_string().into_bytes())
                }
            };
            Malformed {
                reply: Reply {
                    status,
                    content_type,
                    body,
                    retry_after: None,
                },
                wrong,
                secrets: vec![at, rt],
            }
        })
}

/// RFC 6749 5.2 codes that no retry fixes (the list in `src/oauth/error.rs`).
const PERMANENT: &[&str] = &[
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_request",
    "access_denied",
];

fn error_code() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(PERMANENT).prop_map(str::to_owned),
        prop::sample::select(vec!["server_error", "temporarily_unavailable", "slow_down"])
            .prop_map(str::to_owned),
        tricky(400),
    ]
}

/// Checks an error's message: bounded, printable, and free of every secret.
fn check_error_text(shown: &str, debug: &str, secrets: &[String]) -> Result<(), TestCaseError> {
    prop_assert!(
        shown.chars().count() <= 700,
        "unbounded: {} chars",
        shown.len()
    );
    prop_assert!(is_printable(shown), "control characters in {shown:?}");
    for secret in secrets {
        prop_assert!(
            !shown.contains(secret.as_str()),
            "{secret} echoed in {shown}"
        );
        prop_assert!(
            !debug.contains(secret.as_str()),
            "{secret} echoed in {debug}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_well_formed_token_reply_reads_back_what_the_provider_sent(
        success in success(),
        status in 200u16..300,
        content_type in json_content_type(),
        pretty in any::<bool>(),
    ) {
        let body = if pretty {
            serde_json::to_vec_pretty(&success.body)
        } else {
            serde_json::to_vec(&success.body)
        }
        .expect("JSON serializes");
        let reply = Reply { status, content_type, body: body.clone(), retry_after: None };
        let tokens = token_request(&reply)
            .map_err(|e| TestCaseError::fail(format!("a valid reply was refused: {e}")))?;
        check_token_set(&tokens, &success.expected)?;
        // The on-behalf-of reader sees the same body after the client made it a 200.
        let tokens = read_obo_reply(200, &body)
            .map_err(|e| TestCaseError::fail(format!("a valid OBO reply was refused: {e}")))?;
        check_token_set(&tokens, &success.expected)?;
    }

    #[test]
    fn a_token_set_never_prints_its_tokens(
        access in secret("at_"),
        refresh in secret("rt_"),
        token_type in text(30),
    ) {
        let body = serde_json::to_vec(
            &json!({"access_token": access, "refresh_token": refresh, "token_type": token_type}),
        )
        .expect("JSON serializes");
        let tokens = read_obo_reply(200, &body)
            .map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
        let shown = format!("{tokens:?}");
        prop_assert!(!shown.contains(&access) && !shown.contains(&refresh), "{shown}");
    }

    #[test]
    fn a_malformed_token_reply_fails_without_echoing_its_tokens(case in malformed()) {
        let status = case.reply.status;
        match token_request(&case.reply) {
            Err(error) => {
                check_error_text(&error.to_string(), &format!("{error:?}"), &case.secrets)?;
                // Not an OAuth error response: a 4xx needs a human, the rest is retried.
                if !(200..300).contains(&status) && case.wrong != Wrong::ErrorWithTokens {
                    let permanent = (400..500).contains(&status) && status != 429;
                    prop_assert_eq!(error.is_permanent(), permanent, "{}", error);
                }
            }
            Ok(_) => prop_assert_eq!(case.wrong, Wrong::TrailingGarbage, "accepted"),
        }
        // The OBO reader reads JSON whatever the label says, and the whole body.
        let obo_status = if (200..300).contains(&status) { 200 } else { status };
        match read_obo_reply(obo_status, &case.reply.body) {
            Err(error) => {
                check_error_text(&error.to_string(), &format!("{error:?}"), &case.secrets)?;
            }
            Ok(_) => prop_assert_eq!(case.wrong, Wrong::NotLabelledJson, "accepted"),
        }
    }

    #[test]
    fn any_token_reply_reads_without_panic_into_a_bounded_printable_error(
        status in 100u16..600,
        content_type in any_content_type(),
        body in any_body(),
        retry_after in proptest::option::of(0u64..100_000),
    ) {
        let reply = Reply { status, content_type, body, retry_after };
        match token_request(&reply) {
            Ok(tokens) => prop_assert!(!tokens.access_token.expose_secret().is_empty()),
            Err(error) => check_error_text(&error.to_string(), "", &[])?,
        }
        let obo_status = if (200..300).contains(&status) { 200 } else { status };
        match read_obo_reply(obo_status, &reply.body) {
            Ok(tokens) => prop_assert!(!tokens.access_token.expose_secret().is_empty()),
            Err(OboError::ClaimsChallenge { description, .. }) => {
                check_error_text(&description, "", &[])?;
            }
            Err(error) => check_error_text(&error.to_string(), "", &[])?,
        }
    }

    #[test]
    fn an_oauth_error_reply_is_permanent_unless_the_status_says_try_again(
        status in prop_oneof![400u16..600, Just(429u16), Just(503u16)],
        code in error_code(),
        description in proptest::option::of(tricky(400)),
        error_uri in proptest::option::of("https://[a-z]{1,10}\\.example/[a-z]{0,10}"),
        retry_after in proptest::option::of(0u64..100_000),
        content_type in json_content_type(),
    ) {
        let mut body = json!({"error": code});
        if let Some(d) = &description {
            body["error_description"] = json!(d);
        }
        if let Some(uri) = &error_uri {
            body["error_uri"] = json!(uri);
        }
        let reply = Reply {
            status,
            content_type,
            body: serde_json::to_vec(&body).expect("JSON serializes"),
            retry_after,
        };
        let error = token_request(&reply).expect_err("an error reply fails");
        let code = sanitize(&code);
        let description = description.as_deref().map(sanitize);
        let try_again = status >= 500 || status == 429;
        let expected = if try_again && !PERMANENT.contains(&code.as_str()) {
            let message = match &description {
                Some(d) => format!("{code}: {d}"),
                None => code.clone(),
            };
            ProviderError::Transient {
                reason: format!("HTTP {status}: {message}"),
                retry_after: retry_after.map(Duration::from_secs),
            }
        } else {
            ProviderError::Permanent { code, description }
        };
        prop_assert_eq!(&error, &expected);
        check_error_text(&error.to_string(), "", &[])?;
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn provider_text_is_shown_printable_bounded_and_as_sent(text in tricky(2_000)) {
        let shown = sanitize(&text);
        prop_assert!(shown.chars().count() <= 300, "{} chars", shown.chars().count());
        prop_assert!(is_printable(&shown), "{shown:?}");
        prop_assert_eq!(sanitize(&shown), shown.clone(), "sanitizing twice changes nothing");
        // Nothing is rewritten, only dropped: what is shown is the start of the text.
        let kept: String = text.chars().filter(|c| !c.is_control()).collect();
        prop_assert!(kept.trim_start().starts_with(&shown), "{shown:?} from {text:?}");
    }
}

// --- on-behalf-of error replies ---------------------------------------------------------

/// Entra's error numbers that mean the broker's configuration is wrong (`src/oauth/obo.rs`).
const ENTRA_MISCONFIGURATION: &[(i64, &str)] = &[
    (50013, "AADSTS50013"),
    (70011, "AADSTS70011"),
    (700016, "AADSTS700016"),
    (7000215, "AADSTS7000215"),
    (65001, "AADSTS65001"),
];

/// What an exchange's error reply must mean, by the rules of `src/oauth/obo.rs`: a claims
/// challenge first, then Entra's misconfiguration numbers (or, with no numbers, a
/// description that starts with one and a colon), then the RFC 6749 / RFC 8693 code.
fn expected_obo_error(
    status: u16,
    error: &str,
    description: Option<&str>,
    codes: &[i64],
    claims: Option<&str>,
) -> OboError {
    let error = sanitize(error);
    let description = description.map(sanitize).unwrap_or_default();
    let both = format!("{error}: {description}");
    if let Some(claims) = claims.filter(|c| !c.trim().is_empty()) {
        return OboError::ClaimsChallenge {
            claims: claims.to_owned(),
            description: both,
        };
    }
    let entra = ENTRA_MISCONFIGURATION.iter().find(|(number, name)| {
        codes.contains(number) || (codes.is_empty() && description.starts_with(&format!("{name}:")))
    });
    if let Some((_, name)) = entra {
        return OboError::Misconfigured {
            provider_code: (*name).to_owned(),
            description: both,
        };
    }
    match error.as_str() {
        "invalid_grant" | "interaction_required" | "consent_required" | "login_required" => {
            OboError::Rejected(both)
        }
        "invalid_client"
        | "unauthorized_client"
        | "invalid_scope"
        | "unsupported_grant_type"
        | "invalid_target"
        | "invalid_request" => OboError::Misconfigured {
            provider_code: error,
            description: both,
        },
        _ if status >= 500 || status == 429 => OboError::Provider(format!("HTTP {status}: {both}")),
        _ => OboError::Rejected(both),
    }
}

fn obo_error_code() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "invalid_grant",
            "interaction_required",
            "consent_required",
            "login_required",
            "invalid_client",
            "unauthorized_client",
            "invalid_scope",
            "unsupported_grant_type",
            "invalid_target",
            "invalid_request",
            "server_error",
            " invalid_grant\n",
        ])
        .prop_map(str::to_owned),
        tricky(100),
    ]
}

fn obo_description() -> impl Strategy<Value = Option<String>> {
    let entra = prop::sample::select(vec![
        "AADSTS50013",
        "AADSTS500133",
        "AADSTS70011",
        "AADSTS700016",
        "AADSTS7000215",
        "AADSTS65001",
        "AADSTS650010",
        "AADSTS9999",
    ]);
    proptest::option::of(prop_oneof![
        tricky(400),
        (entra, prop::sample::select(vec![":", " :", ""]), text(80))
            .prop_map(|(name, colon, rest)| format!("{name}{colon} {rest}")),
    ])
}

/// Fields an exchange's error reply may carry besides ours (a token among them).
fn obo_noise() -> impl Strategy<Value = std::collections::BTreeMap<String, Value>> {
    prop::collection::btree_map("x_[a-z]{1,6}|access_token|trace_id", json_value(), 0..3)
}

fn entra_numbers() -> impl Strategy<Value = Vec<i64>> {
    let known = prop::sample::select(vec![50013i64, 70011, 700016, 7000215, 65001, 500133]);
    prop::collection::vec(prop_oneof![known, any::<i64>()], 0..3)
}

/// A Conditional Access claims challenge, or a blank one (which is none).
fn obo_claims() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just(String::new()),
        Just(" \n".to_owned()),
        tricky(300),
    ])
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn an_exchange_error_reply_maps_to_the_contract(
        status in prop_oneof![300u16..600, Just(400u16), Just(429u16)],
        error in obo_error_code(),
        description in obo_description(),
        codes in entra_numbers(),
        with_codes in any::<bool>(),
        claims in obo_claims(),
        noise in obo_noise(),
    ) {
        let mut body = json!({"error": error});
        if let Some(d) = &description {
            body["error_description"] = json!(d);
        }
        let codes = if with_codes { codes } else { Vec::new() };
        if with_codes {
            body["error_codes"] = json!(codes);
        }
        if let Some(c) = &claims {
            body["claims"] = json!(c);
        }
        for (k, v) in noise {
            body[k] = v;
        }
        let body = serde_json::to_vec(&body).expect("JSON serializes");
        let error_seen = read_obo_reply(status, &body).expect_err("an error reply fails");
        let expected =
            expected_obo_error(status, &error, description.as_deref(), &codes, claims.as_deref());
        prop_assert_eq!(&error_seen, &expected);
        let shown = match &error_seen {
            OboError::ClaimsChallenge { description, .. } => description.clone(),
            other => other.to_string(),
        };
        check_error_text(&shown, "", &[])?;
    }
}

// --- the callback: its query, its form and its page ------------------------------------

/// What a provider sends back to the callback (RFC 6749 4.1.2 and 4.1.2.1).
#[derive(Debug, Clone)]
struct Sent {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    pairs: Vec<(String, String)>,
}

fn sent() -> impl Strategy<Value = Sent> {
    let value = || proptest::option::of(tricky(200));
    let extra = prop::collection::vec(
        (
            "iss|session_state|scope|authuser|prompt|x_[a-z]{1,6}",
            tricky(60),
        ),
        0..4,
    );
    (value(), value(), value(), value(), extra).prop_flat_map(
        |(code, state, error, error_description, extra)| {
            let mut pairs = extra;
            for (name, v) in [
                ("code", &code),
                ("state", &state),
                ("error", &error),
                ("error_description", &error_description),
            ] {
                if let Some(v) = v {
                    pairs.push((name.to_owned(), v.clone()));
                }
            }
            let (code, state, error, error_description) = (
                code.clone(),
                state.clone(),
                error.clone(),
                error_description.clone(),
            );
            Just(pairs).prop_shuffle().prop_map(move |pairs| Sent {
                code: code.clone(),
                state: state.clone(),
                error: error.clone(),
                error_description: error_description.clone(),
                pairs,
            })
        },
    )
}

/// `application/x-www-form-urlencoded` as a form serializer writes it (`+` for spaces),
/// or with every byte percent-encoded, as some providers do.
fn encode(pairs: &[(String, String)], every_byte: bool) -> String {
    if !every_byte {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            out.append_pair(k, v);
        }
        return out.finish();
    }
    let escape = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn check_params(params: CallbackParams, sent: &Sent) -> Result<(), TestCaseError> {
    let reveal = |s: &Option<SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
    prop_assert_eq!(reveal(&params.code), sent.code.clone());
    prop_assert_eq!(reveal(&params.state), sent.state.clone());
    prop_assert_eq!(&params.error, &sent.error);
    prop_assert_eq!(&params.error_description, &sent.error_description);
    Ok(())
}

/// The status, headers and body of the page `render` answers.
fn page(outcome: &CallbackOutcome) -> (StatusCode, actix_web::http::header::HeaderMap, String) {
    let response = render(outcome);
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .try_into_bytes()
        .map_err(|_| ())
        .expect("the page is one buffer");
    (
        status,
        headers,
        String::from_utf8(body.to_vec()).expect("the page is UTF-8"),
    )
}

/// The page holds `message` escaped, in one paragraph, with nothing raw that could open a
/// tag or leave an attribute, and it unescapes to exactly the message.
fn check_page(outcome: &CallbackOutcome) -> Result<String, TestCaseError> {
    let (status, headers, page) = page(outcome);
    let expected = if outcome.success { 200 } else { 400 };
    prop_assert_eq!(status.as_u16(), expected);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    prop_assert_eq!(header("content-security-policy"), Some(CALLBACK_CSP));
    prop_assert_eq!(header("content-type"), Some("text/html; charset=utf-8"));
    prop_assert_eq!(header("cache-control"), Some("no-store"));
    prop_assert_eq!(page.matches("<p>").count(), 1, "one paragraph: {}", page);
    prop_assert_eq!(page.matches("</p>").count(), 1, "one paragraph: {}", page);
    prop_assert!(page.ends_with("</p></body></html>"), "{}", page);
    let start = page.find("<p>").expect("counted") + 3;
    let end = page.find("</p>").expect("counted");
    let shown = &page[start..end];
    for raw in ['<', '>', '"', '\''] {
        prop_assert!(!shown.contains(raw), "raw {raw:?} in the page: {shown}");
    }
    let entities = ["&amp;", "&lt;", "&gt;", "&quot;", "&#x27;"];
    for (at, _) in shown.match_indices('&') {
        prop_assert!(
            entities.iter().any(|e| shown[at..].starts_with(e)),
            "a bare & at {at}: {shown}"
        );
    }
    prop_assert_eq!(
        html_escape::decode_html_entities(shown),
        outcome.message.as_str()
    );
    Ok(page)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn the_callback_query_and_form_read_back_what_the_provider_sent(
        sent in sent(),
        every_byte in any::<bool>(),
    ) {
        let encoded = encode(&sent.pairs, every_byte);
        // GET: actix's `Query` extractor, exactly as the handler gets it.
        let query = web::Query::<CallbackQuery>::from_query(&encoded)
            .map_err(|e| TestCaseError::fail(format!("{encoded:?} refused: {e}")))?;
        check_params(query.into_inner().into(), &sent)?;
        // POST (`response_mode=form_post`): actix's `Form` reads the body the same way.
        let form: CallbackQuery = serde_urlencoded::from_bytes(encoded.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{encoded:?} refused: {e}")))?;
        check_params(form.into(), &sent)?;
    }

    #[test]
    fn any_callback_query_or_form_reads_without_panic(
        query in prop_oneof![
            text(300),
            "([a-z_]{1,18}(=[%0-9A-Fa-fgz+&=;]{0,12})?&?){0,8}",
            (
                "(code|state|error|error_description)=[%0-9A-F]{0,30}",
                "(&(code|state|error)=[%0-9a-f]{0,8}){0,3}",
            )
                .prop_map(|(a, b)| format!("{a}{b}")),
        ],
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = web::Query::<CallbackQuery>::from_query(&query);
        let _ = serde_urlencoded::from_bytes::<CallbackQuery>(query.as_bytes());
        let _ = serde_urlencoded::from_bytes::<CallbackQuery>(&bytes);
    }

    #[test]
    fn the_callback_page_escapes_any_message(
        message in tricky(2000),
        success in any::<bool>(),
    ) {
        check_page(&CallbackOutcome { success, message, return_to: None })?;
    }

    #[test]
    fn the_callback_page_escapes_and_bounds_what_the_provider_sent(
        error in tricky(3000),
        error_description in proptest::option::of(tricky(3000)),
    ) {
        // As `service::authorization::callback` words a provider's refusal.
        let refusal = ProviderError::Permanent {
            code: sanitize(&error),
            description: error_description.as_deref().map(sanitize),
        };
        let message = format!("The provider refused: {refusal}");
        let page = check_page(&CallbackOutcome { success: false, message, return_to: None })?;
        prop_assert!(page.len() <= 5000, "a {} byte page", page.len());
        prop_assert!(is_printable(&page), "control characters reach the page");
    }

    #[test]
    fn a_callback_redirect_keeps_its_target_and_adds_the_status(
        return_to in prop_oneof![
            text(200),
            "https://app\\.example/(done|back)?(\\?[a-z=&%0-9]{0,20})?(#[a-z]{0,5})?",
            "(mailto|data|javascript|file):[ -~]{0,30}",
        ],
        success in any::<bool>(),
    ) {
        let target = url::Url::parse(&return_to);
        let message = String::new();
        let response = render(&CallbackOutcome { success, message, return_to: Some(return_to) });
        let Ok(target) = target else {
            prop_assert_eq!(response.status().as_u16(), if success { 200 } else { 400 });
            return Ok(());
        };
        prop_assert_eq!(response.status().as_u16(), 303);
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("a Location header");
        let location = url::Url::parse(location).expect("an absolute URL");
        let place = |u: &url::Url| {
            (u.scheme().to_owned(), u.host_str().map(str::to_owned), u.port(), u.path().to_owned())
        };
        prop_assert_eq!(place(&location), place(&target));
        let last = location.query_pairs().last().map(|(k, v)| (k.into_owned(), v.into_owned()));
        let status = if success { "success" } else { "failed" };
        prop_assert_eq!(last, Some(("status".to_owned(), status.to_owned())));
    }
}

// --- JWTs handed to on-behalf-of ----------------------------------------------------------

const ISSUER: &str = "https://login.example.com/tid-1/v2.0";
const AUDIENCE: &str = "api://middle-tier";
const TENANT: &str = "tid-1";
const DOWNSTREAM: &str = "https://graph.microsoft.com";
const KID: &str = "k1";
/// The service's clock during these tests.
const NOW: i64 = 1_800_000_000;
const SKEW: i64 = 60;

/// One runtime for every async parser (reqwest needs one for the JWKS fetch).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
});

/// An Ed25519 key from a 32-byte seed, as PKCS#8 (RFC 8410 section 7). Ed25519 rather
/// than RSA: signing and verifying stay fast in a debug build.
fn ed25519_key(seed: u8) -> EncodingKey {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend([seed; 32]);
    EncodingKey::from_ed_der(&der)
}

fn public_jwk(key: &EncodingKey, kid: &str) -> Value {
    let mut jwk = serde_json::to_value(
        Jwk::from_encoding_key(key, Algorithm::EdDSA).expect("an Ed25519 JWK"),
    )
    .expect("a JWK serializes");
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk
}

fn sign(claims: &Value, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("a signed token")
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).expect("a valid instant")
}

/// A JWKS served from memory, which a test may change between cases.
#[derive(Clone)]
struct JwksDocument(Arc<Mutex<Value>>);

impl Respond for JwksDocument {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(self.0.lock().expect("jwks lock").clone())
    }
}

/// An issuer: its JWKS behind a local HTTP server, and our cache of it.
struct Issuer {
    server: MockServer,
    document: JwksDocument,
    outbound: Arc<Outbound>,
    cache: JwksCache,
    key: EncodingKey,
    rules: AssertionRules,
    started: Instant,
}

impl Issuer {
    fn start() -> Self {
        let key = ed25519_key(1);
        let document = JwksDocument(Arc::new(Mutex::new(
            json!({"keys": [public_jwk(&key, KID)]}),
        )));
        let server = RUNTIME.block_on(async {
            let server = MockServer::start().await;
            Mock::given(wiremock::matchers::method("GET"))
                .respond_with(document.clone())
                .mount(&server)
                .await;
            server
        });
        let outbound = Arc::new(Outbound::new(OutboundConfig {
            allow_private_addresses: true,
            ..OutboundConfig::default()
        }));
        let rules = AssertionRules {
            issuer: ISSUER.into(),
            audiences: vec![AUDIENCE.into(), "api://other-name".into()],
            tenant_id: Some(TENANT.into()),
            jwks_url: format!("{}/keys", server.uri()),
        };
        Self {
            server,
            document,
            cache: JwksCache::new(outbound.clone()),
            outbound,
            key,
            rules,
            started: Instant::now(),
        }
    }

    fn validate(&self, token: &str, rules: &AssertionRules) -> Result<Value, JwtError> {
        self.validate_with(&self.cache, token, rules)
    }

    fn validate_with(
        &self,
        cache: &JwksCache,
        token: &str,
        rules: &AssertionRules,
    ) -> Result<Value, JwtError> {
        RUNTIME.block_on(cache.validate(token, rules, now(), &[DOWNSTREAM.to_owned()]))
    }

    fn fetches(&self) -> usize {
        RUNTIME
            .block_on(self.server.received_requests())
            .map_or(0, |r| r.len())
    }
}

/// The issuer most properties share; the kid and JWKS properties have their own, since
/// they count fetches or change the document.
static ISSUER_A: LazyLock<Issuer> = LazyLock::new(Issuer::start);

/// A valid user token (Ed25519 signatures are deterministic: one is enough).
static VALID_TOKEN: LazyLock<String> =
    LazyLock::new(|| sign(&valid_claims(), Some(KID), &ISSUER_A.key));

/// Claims a valid user token for the middle tier carries.
fn valid_claims() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "tid": TENANT, "sub": "user-1",
        "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600,
    })
}

/// `aud` as RFC 7519 4.1.3 allows it: one string or an array of them.
fn audiences(claims: &Value) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// What `validate` must answer for `claims` with a good signature: the checks of
/// `src/oauth/jwt.rs` in their order, with 60 s of skew.
fn judge(claims: &Value, rules: &AssertionRules) -> Result<(), JwtError> {
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JwtError::NoExpiry)?;
    if exp.saturating_add(SKEW) < NOW {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && nbf.saturating_sub(SKEW) > NOW
    {
        return Err(JwtError::NotYetValid);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer.as_str()) {
        return Err(JwtError::WrongIssuer);
    }
    let audiences = audiences(claims);
    if audiences.iter().any(|a| a == DOWNSTREAM) {
        return Err(JwtError::Chained);
    }
    if !audiences.iter().any(|a| rules.audiences.contains(a)) {
        return Err(JwtError::WrongAudience);
    }
    if let Some(tenant) = &rules.tenant_id
        && claims.get("tid").and_then(Value::as_str) != Some(tenant.as_str())
    {
        return Err(JwtError::WrongTenant);
    }
    Ok(())
}

fn user_claims() -> impl Strategy<Value = Value> {
    let instant = || {
        prop_oneof![
            (-200i64..200).prop_map(|d| json!(NOW + d)),
            (-100_000i64..100_000).prop_map(|d| json!(NOW + d)),
            any::<i64>().prop_map(|n| json!(n)),
            Just(json!(NOW as f64 + 0.5)),
            Just(json!(NOW.to_string())),
            Just(json!(u64::MAX)),
            Just(json!(i64::MAX)),
            Just(json!(i64::MIN)),
        ]
    };
    let audience = prop_oneof![
        Just(json!(AUDIENCE)),
        Just(json!([AUDIENCE, "api://another"])),
        Just(json!(["api://another", "api://other-name"])),
        Just(json!(DOWNSTREAM)),
        Just(json!([AUDIENCE, DOWNSTREAM])),
        Just(json!([1, 2, null])),
        text(30).prop_map(|a| json!(a)),
    ];
    let issuer = prop_oneof![
        Just(json!(ISSUER)),
        Just(json!(ISSUER.to_uppercase())),
        json_value()
    ];
    let tenant = prop_oneof![Just(json!(TENANT)), Just(json!("tid-2")), json_value()];
    (
        proptest::option::of(instant()),
        proptest::option::of(instant()),
        proptest::option::of(issuer),
        proptest::option::of(audience),
        proptest::option::of(tenant),
        text(40),
        json_value(),
    )
        .prop_map(|(exp, nbf, iss, aud, tid, name, extra)| {
            let mut claims = json!({"name": name, "extra": extra});
            for (field, value) in [
                ("exp", exp),
                ("nbf", nbf),
                ("iss", iss),
                ("aud", aud),
                ("tid", tid),
            ] {
                if let Some(v) = value {
                    claims[field] = v;
                }
            }
            claims
        })
}

/// A change to a token's text.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Replace(Index, char),
    Insert(Index, char),
    Delete(Index),
    Truncate(Index),
    DropSegment(Index),
    DuplicateSegment(Index),
    SwapSegments(Index, Index),
    /// A segment replaced by this many bytes of base64url.
    HugeSegment(Index, usize),
    /// The header made huge by a field of this many characters (and re-encoded).
    HugeHeader(usize),
    Wrap(String, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ch = prop_oneof![
        prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ %"
                .chars()
                .collect::<Vec<_>>()
        ),
        any::<char>(),
    ];
    prop_oneof![
        4 => (any::<Index>(), 0u8..7).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        3 => (any::<Index>(), ch.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        2 => (any::<Index>(), ch).prop_map(|(i, c)| Mutation::Insert(i, c)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => any::<Index>().prop_map(Mutation::DropSegment),
        1 => any::<Index>().prop_map(Mutation::DuplicateSegment),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapSegments(a, b)),
        1 => (any::<Index>(), prop_oneof![0usize..64, 1_000usize..100_000])
            .prop_map(|(i, n)| Mutation::HugeSegment(i, n)),
        1 => (1_000usize..100_000).prop_map(Mutation::HugeHeader),
        1 => (text(4), text(4)).prop_map(|(a, b)| Mutation::Wrap(a, b)),
    ]
}

fn apply(token: &str, mutation: &Mutation) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    match mutation {
        Mutation::FlipBit(at, bit) => {
            let at = at.index(chars.len());
            chars[at] = char::from(chars[at] as u8 ^ (1 << bit));
        }
        Mutation::Replace(at, c) => {
            let at = at.index(chars.len());
            chars[at] = *c;
        }
        Mutation::Insert(at, c) => chars.insert(at.index(chars.len() + 1), *c),
        Mutation::Delete(at) => {
            chars.remove(at.index(chars.len()));
        }
        Mutation::Truncate(at) => chars.truncate(at.index(chars.len())),
        Mutation::DropSegment(at) => {
            segments.remove(at.index(segments.len()));
            return segments.join(".");
        }
        Mutation::DuplicateSegment(at) => {
            let at = at.index(segments.len());
            segments.insert(at, segments[at].clone());
            return segments.join(".");
        }
        Mutation::SwapSegments(a, b) => {
            let n = segments.len();
            segments.swap(a.index(n), b.index(n));
            return segments.join(".");
        }
        Mutation::HugeSegment(at, n) => {
            let at = at.index(segments.len());
            let bytes: Vec<u8> = (0..*n).map(|i| (i * 31 % 251) as u8).collect();
            segments[at] = URL_SAFE_NO_PAD.encode(bytes);
            return segments.join(".");
        }
        Mutation::HugeHeader(n) => {
            let header = json!({"alg": "EdDSA", "kid": KID, "pad": "x".repeat(*n)});
            segments[0] = URL_SAFE_NO_PAD.encode(header.to_string());
            return segments.join(".");
        }
        Mutation::Wrap(before, after) => return format!("{before}{token}{after}"),
    }
    chars.into_iter().collect()
}

/// A token that is not the issuer's own, in ways an attacker would try.
#[derive(Debug, Clone)]
enum Forgery {
    /// The header's `alg` changed, the signature kept or dropped.
    Alg(String, bool),
    /// HMAC keyed with the issuer's public key (the classic key confusion), as its
    /// base64url text or as its raw bytes.
    PublicKeyAsHmacSecret(Algorithm, bool),
    /// Signed with another key under the issuer's `kid`.
    OtherKey,
    /// No `kid`.
    NoKid,
}

fn forgery() -> impl Strategy<Value = Forgery> {
    let alg = prop_oneof![
        prop::sample::select(vec![
            "none", "None", "NONE", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
            "ES256", "ES384", "EdDSA", "eddsa", "ES256K", "",
        ])
        .prop_map(str::to_owned),
        text(20),
    ];
    prop_oneof![
        (alg, any::<bool>()).prop_map(|(a, keep)| Forgery::Alg(a, keep)),
        (
            prop::sample::select(vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]),
            any::<bool>(),
        )
            .prop_map(|(alg, raw)| Forgery::PublicKeyAsHmacSecret(alg, raw)),
        Just(Forgery::OtherKey),
        Just(Forgery::NoKid),
    ]
}

fn forge(issuer: &Issuer, claims: &Value, forgery: &Forgery) -> String {
    match forgery {
        Forgery::Alg(alg, keep_signature) => {
            let token = sign(claims, Some(KID), &issuer.key);
            let mut parts: Vec<&str> = token.split('.').collect();
            let header =
                URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": KID, "typ": "JWT"}).to_string());
            parts[0] = &header;
            if !keep_signature {
                parts[2] = "";
            }
            parts.join(".")
        }
        Forgery::PublicKeyAsHmacSecret(alg, raw) => {
            let jwk = public_jwk(&issuer.key, KID);
            let x = jwk["x"].as_str().expect("an OKP key has x");
            let secret = if *raw {
                URL_SAFE_NO_PAD.decode(x).expect("base64url")
            } else {
                x.as_bytes().to_vec()
            };
            let mut header = Header::new(*alg);
            header.kid = Some(KID.into());
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&secret))
                .expect("an HMAC token")
        }
        Forgery::OtherKey => sign(claims, Some(KID), &ed25519_key(2)),
        Forgery::NoKid => sign(claims, None, &issuer.key),
    }
}

/// A refusal's message: bounded and printable whatever the token held.
fn check_refusal(error: &JwtError) -> Result<(), TestCaseError> {
    let shown = error.to_string();
    prop_assert!(
        shown.chars().count() <= 400,
        "unbounded: {} chars",
        shown.len()
    );
    prop_assert!(is_printable(&shown), "control characters in {shown:?}");
    Ok(())
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn a_signed_token_is_judged_by_its_claims_and_its_claims_read_back(
        claims in user_claims(),
        with_tenant in any::<bool>(),
    ) {
        let issuer = &*ISSUER_A;
        let mut rules = issuer.rules.clone();
        if !with_tenant {
            rules.tenant_id = None;
        }
        let token = sign(&claims, Some(KID), &issuer.key);
        let verdict = issuer.validate(&token, &rules);
        match (&verdict, judge(&claims, &rules)) {
            (Ok(read), Ok(())) => prop_assert_eq!(read, &as_read(&claims)),
            (Err(got), Err(expected)) => prop_assert_eq!(got, &expected),
            (got, expected) => {
                return Err(TestCaseError::fail(format!("{got:?}, expected {expected:?}")));
            }
        }
        // Without validation configured, only `aud` is read, and read faithfully.
        prop_assert_eq!(unverified_audiences(&token), audiences(&claims));
    }

    #[test]
    fn a_mutated_token_never_validates(mutation in mutation()) {
        let issuer = &*ISSUER_A;
        let token = &*VALID_TOKEN;
        prop_assert!(issuer.validate(token, &issuer.rules).is_ok(), "the unmutated token is valid");
        let mutated = apply(token, &mutation);
        let verdict = issuer.validate(&mutated, &issuer.rules);
        if mutated == *token {
            prop_assert!(verdict.is_ok());
        } else {
            let Err(error) = verdict else {
                return Err(TestCaseError::fail(format!("{mutated} validated")));
            };
            check_refusal(&error)?;
        }
        let _ = unverified_audiences(&mutated);
    }

    #[test]
    fn a_forged_token_never_validates(forgery in forgery()) {
        let issuer = &*ISSUER_A;
        let token = forge(issuer, &valid_claims(), &forgery);
        let error = issuer.validate(&token, &issuer.rules).expect_err("a forgery is refused");
        check_refusal(&error)?;
        match forgery {
            Forgery::OtherKey => prop_assert_eq!(error, JwtError::BadSignature),
            Forgery::NoKid => prop_assert_eq!(error, JwtError::NoKeyId),
            Forgery::PublicKeyAsHmacSecret(..) => {
                prop_assert!(matches!(error, JwtError::Algorithm(_)), "{error:?}");
            }
            Forgery::Alg(..) => {}
        }
    }

    #[test]
    fn downstream_resources_are_read_from_any_scopes_without_panic(
        scopes in prop::collection::vec(tricky(80), 0..6),
    ) {
        // The scopes an OBO caller asks for decide which audiences count as chained.
        for resource in downstream_resources(&scopes) {
            prop_assert!(
                scopes.iter().any(|s| s.starts_with(&format!("{resource}/"))),
                "{resource} is not the resource of a requested scope"
            );
        }
    }

    #[test]
    fn any_string_as_a_token_is_refused_without_panic(
        token in prop_oneof![
            text(500),
            "[A-Za-z0-9_=-]{0,80}(\\.[A-Za-z0-9_=-]{0,80}){0,4}",
            // A real header (or a near one) before arbitrary segments.
            (
                "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0|eyJhbGciOiJFZERTQSJ9|eyJ9|e30",
                "(\\.[A-Za-z0-9_=-]{0,120}){0,3}",
            )
                .prop_map(|(h, rest)| format!("{h}{rest}")),
        ],
    ) {
        let issuer = &*ISSUER_A;
        let error = issuer.validate(&token, &issuer.rules).expect_err("not a valid token");
        check_refusal(&error)?;
        let _ = unverified_audiences(&token);
    }
}

static ISSUER_KIDS: LazyLock<Issuer> = LazyLock::new(Issuer::start);

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn unknown_kids_are_refused_boundedly_and_do_not_hammer_the_issuer(
        kid in prop_oneof![text(40), tricky(5_000), Just("k2".to_owned())],
    ) {
        prop_assume!(kid != KID);
        let issuer = &*ISSUER_KIDS;
        let token = sign(&valid_claims(), Some(&kid), &issuer.key);
        let error = issuer.validate(&token, &issuer.rules).expect_err("an unknown kid");
        prop_assert!(matches!(error, JwtError::UnknownKey(_)), "{error:?}");
        check_refusal(&error)?;
        // A fetch for a cold cache, then at most one more per 30 s however many kids.
        let allowed = 2 + issuer.started.elapsed().as_secs() / 30;
        prop_assert!(issuer.fetches() as u64 <= allowed, "{} JWKS fetches", issuer.fetches());
    }
}

static ISSUER_JWKS: LazyLock<Issuer> = LazyLock::new(Issuer::start);

/// A JWK as an issuer might publish it, well-formed or not, named `k1`.
fn jwk() -> impl Strategy<Value = Value> {
    let b64 = |max: usize| {
        prop::collection::vec(any::<u8>(), 0..max).prop_map(|b| json!(URL_SAFE_NO_PAD.encode(b)))
    };
    let field = || prop_oneof![3 => b64(70), 1 => json_value()];
    prop_oneof![
        (
            field(),
            proptest::option::of(prop::sample::select(vec![
                "Ed25519", "Ed448", "X25519", "P-256"
            ]))
        )
            .prop_map(|(x, crv)| json!({"kty": "OKP", "crv": crv, "x": x})),
        (prop_oneof![b64(300), field()], prop_oneof![b64(5), field()])
            .prop_map(|(n, e)| json!({"kty": "RSA", "n": n, "e": e})),
        (
            prop::sample::select(vec!["P-256", "P-384", "P-521", "secp256k1"]),
            field(),
            field()
        )
            .prop_map(|(crv, x, y)| json!({"kty": "EC", "crv": crv, "x": x, "y": y})),
        field().prop_map(|k| json!({"kty": "oct", "k": k})),
        json_value(),
    ]
    .prop_flat_map(|jwk| {
        proptest::option::of(prop::sample::select(vec![
            "EdDSA", "RS256", "PS256", "ES256", "ES384", "HS256", "none",
        ]))
        .prop_map(move |alg| {
            let mut jwk = jwk.clone();
            if let Value::Object(map) = &mut jwk {
                map.insert("kid".into(), json!(KID));
                if let Some(alg) = alg {
                    map.insert("alg".into(), json!(alg));
                }
            }
            jwk
        })
    })
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn any_jwks_the_issuer_publishes_is_read_without_panic(
        jwk in jwk(),
        alg in prop::sample::select(vec![
            Algorithm::EdDSA,
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
        ]),
        signature in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let issuer = &*ISSUER_JWKS;
        *issuer.document.0.lock().expect("jwks lock") = json!({"keys": [jwk]});
        // A fresh cache per case, so that this document is the one fetched.
        let cache = JwksCache::new(issuer.outbound.clone());
        let header = URL_SAFE_NO_PAD.encode(
            serde_json::to_string(&{
                let mut h = Header::new(alg);
                h.kid = Some(KID.into());
                h
            })
            .expect("a header serializes"),
        );
        let payload = URL_SAFE_NO_PAD.encode(valid_claims().to_string());
        let token = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(&signature));
        if let Err(error) = issuer.validate_with(&cache, &token, &issuer.rules) {
            check_refusal(&error)?;
        }
    }
}

// --- sealed secrets ---------------------------------------------------------------------

/// The keyring every sealing property uses: `k1` seals, `k2` opens too.
static KEYRING: LazyLock<(Keyring, SecretString, SecretString)> = LazyLock::new(|| {
    let (_, k1) = Keyring::generate("k1");
    let (_, k2) = Keyring::generate("k2");
    let both = format!("{},{}", k1.expose_secret(), k2.expose_secret());
    let ring = Keyring::parse(&SecretString::from(both)).expect("two generated keys parse");
    (ring, k1, k2)
});

fn aad_parts() -> impl Strategy<Value = (String, String, String)> {
    (tricky(40), tricky(40), tricky(40))
}

fn aad(parts: &(String, String, String)) -> Aad<'_> {
    Aad {
        org_id: &parts.0,
        row_id: &parts.1,
        field: &parts.2,
    }
}

/// `joined` cut in three at the character boundaries `a` and `b` picks.
fn split(joined: &str, a: &Index, b: &Index) -> (String, String, String) {
    let bounds: Vec<usize> = joined
        .char_indices()
        .map(|(i, _)| i)
        .chain([joined.len()])
        .collect();
    let (mut a, mut b) = (bounds[a.index(bounds.len())], bounds[b.index(bounds.len())]);
    if a > b {
        std::mem::swap(&mut a, &mut b);
    }
    (
        joined[..a].to_owned(),
        joined[a..b].to_owned(),
        joined[b..].to_owned(),
    )
}

/// A change to a sealed value.
#[derive(Debug, Clone)]
enum Tamper {
    FlipBit(Index, u8),
    Replace(Index, char),
    Insert(Index, char),
    Delete(Index),
    Truncate(Index),
    Append(String),
    Kid(String),
    Prefix(String),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    let ch = prop_oneof![
        prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_:=+/"
                .chars()
                .collect::<Vec<_>>()
        ),
        any::<char>(),
    ];
    let kid = prop_oneof![
        Just("k2".to_owned()),
        Just("k3".to_owned()),
        Just(String::new()),
        tricky(100),
    ];
    let prefix = prop::sample::select(vec!["v2", "V1", "v1 ", ""]).prop_map(str::to_owned);
    prop_oneof![
        4 => (any::<Index>(), 0u8..7).prop_map(|(i, b)| Tamper::FlipBit(i, b)),
        3 => (any::<Index>(), ch.clone()).prop_map(|(i, c)| Tamper::Replace(i, c)),
        2 => (any::<Index>(), ch).prop_map(|(i, c)| Tamper::Insert(i, c)),
        2 => any::<Index>().prop_map(Tamper::Delete),
        2 => any::<Index>().prop_map(Tamper::Truncate),
        1 => "[A-Za-z0-9_-]{1,8}|:|=|==".prop_map(Tamper::Append),
        2 => kid.prop_map(Tamper::Kid),
        1 => prefix.prop_map(Tamper::Prefix),
    ]
}

fn tampered(sealed: &str, tamper: &Tamper) -> String {
    let mut chars: Vec<char> = sealed.chars().collect();
    let (prefix, rest) = sealed.split_once(':').expect("sealed values have a prefix");
    let (_kid, body) = rest.split_once(':').expect("sealed values have a kid");
    match tamper {
        Tamper::FlipBit(at, bit) => {
            let at = at.index(chars.len());
            chars[at] = char::from(chars[at] as u8 ^ (1 << bit));
        }
        Tamper::Replace(at, c) => {
            let at = at.index(chars.len());
            chars[at] = *c;
        }
        Tamper::Insert(at, c) => chars.insert(at.index(chars.len() + 1), *c),
        Tamper::Delete(at) => {
            chars.remove(at.index(chars.len()));
        }
        Tamper::Truncate(at) => chars.truncate(at.index(chars.len())),
        Tamper::Append(tail) => return format!("{sealed}{tail}"),
        Tamper::Kid(kid) => return format!("{prefix}:{kid}:{body}"),
        Tamper::Prefix(p) => return format!("{p}:{rest}"),
    }
    chars.into_iter().collect()
}

/// An open failure's message: bounded and printable.
fn check_open_error(error: &OpenError) -> Result<(), TestCaseError> {
    let shown = error.to_string();
    prop_assert!(
        shown.chars().count() <= 200,
        "unbounded: {} chars",
        shown.len()
    );
    prop_assert!(is_printable(&shown), "control characters in {shown:?}");
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_sealed_value_opens_to_its_plaintext_under_its_associated_data(
        plaintext in prop_oneof![tricky(300), text(4_000)],
        parts in aad_parts(),
    ) {
        let (ring, _, _) = &*KEYRING;
        let sealed = ring.seal(&plaintext, aad(&parts));
        prop_assert!(sealed.starts_with("v1:k1:"), "{}", sealed);
        prop_assert_eq!(Keyring::kid_of(&sealed), Some("k1"));
        let body = URL_SAFE_NO_PAD.decode(&sealed["v1:k1:".len()..]).expect("base64url");
        prop_assert_eq!(body.len(), 24 + plaintext.len() + 16, "nonce, ciphertext, tag");
        if plaintext.chars().count() >= 12 {
            prop_assert!(!sealed.contains(&plaintext), "the plaintext shows in {}", sealed);
        }
        let opened = ring.open(&sealed, aad(&parts))
            .map_err(|e| TestCaseError::fail(format!("does not open: {e}")))?;
        prop_assert_eq!(opened.expose_secret(), plaintext.as_str());
        prop_assert_eq!(ring.reseal(&sealed, aad(&parts)), Ok(None));
    }

    #[test]
    fn a_sealed_value_does_not_open_under_other_associated_data(
        plaintext in tricky(100),
        parts in aad_parts(),
        other in aad_parts(),
        which in 0usize..4,
        joined in tricky(60),
        cuts in (any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>()),
    ) {
        let (ring, _, _) = &*KEYRING;
        // Another field, or all three, or the same bytes split differently between
        // the fields (`("a|b", "c")` against `("a", "b|c")`).
        let other = match which {
            0 => (other.0, parts.1.clone(), parts.2.clone()),
            1 => (parts.0.clone(), other.1, parts.2.clone()),
            2 => (parts.0.clone(), parts.1.clone(), other.2),
            _ => other,
        };
        for (sealed_with, opened_with) in [
            (parts.clone(), other),
            (split(&joined, &cuts.0, &cuts.1), split(&joined, &cuts.2, &cuts.3)),
        ] {
            if sealed_with == opened_with {
                continue;
            }
            let sealed = ring.seal(&plaintext, aad(&sealed_with));
            let opened = ring.open(&sealed, aad(&opened_with));
            prop_assert_eq!(opened.err(), Some(OpenError::Forged("k1".into())));
            prop_assert!(ring.reseal(&sealed, aad(&opened_with)).is_err());
        }
    }

    #[test]
    fn a_tampered_sealed_value_never_opens(
        plaintext in tricky(100),
        parts in aad_parts(),
        tamper in tamper(),
    ) {
        let (ring, _, _) = &*KEYRING;
        let sealed = ring.seal(&plaintext, aad(&parts));
        let changed = tampered(&sealed, &tamper);
        if changed == sealed {
            return Ok(());
        }
        let Err(error) = ring.open(&changed, aad(&parts)) else {
            return Err(TestCaseError::fail(format!("{changed} opened")));
        };
        check_open_error(&error)?;
        prop_assert!(ring.reseal(&changed, aad(&parts)).is_err());
    }

    #[test]
    fn any_string_as_a_sealed_value_is_refused_without_panic(
        stored in prop_oneof![
            text(300),
            ("v1|v2|", tricky(200), "[A-Za-z0-9_=+/-]{0,120}")
                .prop_map(|(version, kid, body)| format!("{version}:{kid}:{body}")),
            ("k1|k2|k3", prop::collection::vec(any::<u8>(), 0..120))
                .prop_map(|(kid, bytes)| format!("v1:{kid}:{}", URL_SAFE_NO_PAD.encode(bytes))),
        ],
        parts in aad_parts(),
    ) {
        let (ring, _, _) = &*KEYRING;
        let _ = Keyring::kid_of(&stored);
        // Never opens: forging would need the key.
        let error = ring.open(&stored, aad(&parts)).expect_err("not a sealed value");
        check_open_error(&error)?;
        prop_assert!(ring.reseal(&stored, aad(&parts)).is_err());
    }
}

// --- key specifications -------------------------------------------------------------------

fn key_material() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

/// Keys by id, each with whether to write it in base64url rather than base64.
fn keys() -> impl Strategy<Value = std::collections::BTreeMap<String, ([u8; 32], bool)>> {
    prop::collection::btree_map("[A-Za-z0-9_-]{1,32}", (key_material(), any::<bool>()), 1..4)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_well_formed_key_spec_parses_with_its_first_key_active(
        keys in keys(),
        order in any::<Index>(),
        newlines in any::<bool>(),
        comment in "[ -~]{0,40}",
    ) {
        let mut entries: Vec<(String, String)> = keys
            .iter()
            .map(|(kid, (key, url_safe))| {
                let engine = if *url_safe { URL_SAFE_NO_PAD } else { STANDARD };
                (kid.clone(), engine.encode(key))
            })
            .collect();
        let first = order.index(entries.len());
        entries.rotate_left(first);
        let separator = if newlines { "\n" } else { " , " };
        let spec = format!(
            "# {comment}\n{}\n",
            entries.iter().map(|(k, b)| format!("{k}:{b}")).collect::<Vec<_>>().join(separator)
        );
        let ring = Keyring::parse(&SecretString::from(spec))
            .map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
        prop_assert_eq!(ring.active_kid(), entries[0].0.as_str());
        for (kid, _) in &entries {
            prop_assert!(ring.contains(kid), "{kid} missing");
        }
    }

    #[test]
    fn a_malformed_key_spec_is_refused_without_echoing_key_material(
        key in key_material(),
        other in key_material(),
        kid in prop_oneof!["[A-Za-z0-9_-]{1,32}", tricky(40)],
        shape in 0usize..7,
        junk in tricky(60),
    ) {
        let b64 = STANDARD.encode(key);
        let url = URL_SAFE_NO_PAD.encode(key);
        let spec = match shape {
            // Key and id swapped.
            0 => format!("{b64}:{kid}"),
            1 => format!("{url}:{kid}"),
            // No id at all.
            2 => b64.clone(),
            // A key cut short, or two run together.
            3 => format!("{kid}:{}", &b64[..b64.len() - 4]),
            4 => format!("{kid}:{b64}{}", STANDARD.encode(other)),
            // A bad id, or junk, before the key.
            5 => format!("bad kid!:{b64},{junk}"),
            _ => format!("{junk}{b64}"),
        };
        let error = match Keyring::parse(&SecretString::from(spec)) {
            Err(error) => error,
            // Only junk before a key can make a valid spec, by chance.
            Ok(_) => return Err(TestCaseError::reject("the junk made a valid spec")),
        };
        let shown = error.to_string();
        let debug = format!("{error:?}");
        for material in [b64.as_str(), url.as_str(), &b64[..20], &url[..20]] {
            prop_assert!(!shown.contains(material), "key material in {}", shown);
            prop_assert!(!debug.contains(material), "key material in {}", debug);
        }
    }

    #[test]
    fn any_string_as_a_key_spec_is_read_without_panic(spec in tricky(400)) {
        let _ = Keyring::parse(&SecretString::from(spec));
    }
}

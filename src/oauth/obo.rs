//! On-behalf-of token exchange: Microsoft Entra's `jwt-bearer` OBO flow and RFC 8693
//! token exchange. oauth2 has neither, so the forms are posted here (over the same
//! retrying, address-checked client) and the reply parsed with our lenient token type.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::client::{ProviderClient, sent};
use super::error::redact;
use super::error::sanitize;
use super::token::{LenientTokenResponse, TokenSet};
use crate::domain::{Connection, ConnectionSecrets};
use crate::domain::{OboGrant, TokenAuthMethod};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Entra error codes that mean the broker's configuration is wrong, not the user's token.
const MISCONFIGURATION_CODES: &[(i64, &str)] = &[
    (50013, "AADSTS50013"),     // assertion audience does not match the client
    (70011, "AADSTS70011"),     // invalid scope
    (700016, "AADSTS700016"),   // application not found in the tenant
    (7000215, "AADSTS7000215"), // invalid client secret
    (65001, "AADSTS65001"),     // consent missing for the downstream API
];

/// How an exchange failed, in the contract's terms.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OboError {
    /// The provider says the user's token is no good (`invalid_grant`): sign in again.
    #[error("{0}")]
    Rejected(String),
    /// Conditional Access / CAE wants more claims; the caller must step up.
    #[error("the provider requires additional claims")]
    ClaimsChallenge { claims: String, description: String },
    /// The broker's client, audience or scopes are wrong.
    #[error("{description}")]
    Misconfigured {
        provider_code: String,
        description: String,
    },
    /// Network, 5xx, unreadable replies.
    #[error("{0}")]
    Provider(String),
}

impl OboError {
    /// This error with the request's `secrets` removed from the provider's text.
    pub fn redacted(self, secrets: &[&str]) -> Self {
        match self {
            OboError::Rejected(d) => OboError::Rejected(redact(&d, secrets)),
            OboError::ClaimsChallenge {
                claims,
                description,
            } => OboError::ClaimsChallenge {
                claims,
                description: redact(&description, secrets),
            },
            OboError::Misconfigured {
                provider_code,
                description,
            } => OboError::Misconfigured {
                provider_code: redact(&provider_code, secrets),
                description: redact(&description, secrets),
            },
            OboError::Provider(d) => OboError::Provider(redact(&d, secrets)),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ErrorReply {
    error: String,
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<i64>,
    claims: Option<String>,
}

/// What to exchange.
pub struct OboExchange<'a> {
    pub grant: OboGrant,
    pub assertion: &'a SecretString,
    pub scopes: &'a [String],
    pub claims: Option<&'a str>,
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

fn component(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl ProviderClient {
    pub async fn exchange_on_behalf_of(
        &self,
        conn: &Connection,
        secrets: &ConnectionSecrets,
        request: OboExchange<'_>,
    ) -> Result<TokenSet, OboError> {
        let scope = request.scopes.join(" ");
        let assertion = request.assertion.expose_secret();
        let mut pairs: Vec<(&str, &str)> = match request.grant {
            // https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow
            OboGrant::JwtBearer => vec![
                ("grant_type", JWT_BEARER),
                ("requested_token_use", "on_behalf_of"),
                ("assertion", assertion),
            ],
            // RFC 8693 section 2.1
            OboGrant::TokenExchange => vec![
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", assertion),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ],
        };
        if !scope.is_empty() {
            pairs.push(("scope", &scope));
        }
        if let Some(claims) = request.claims {
            pairs.push(("claims", claims));
        }
        let extra: &BTreeMap<String, String> = &conn.config.extra_token_params;
        for (k, v) in extra {
            pairs.push((k, v));
        }
        let secret = secrets
            .client_secret
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .unwrap_or_default();
        let mut builder = http::Request::builder()
            .method(http::Method::POST)
            .uri(&conn.config.token_url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        match conn.config.token_auth_method {
            TokenAuthMethod::ClientSecretBasic => {
                // RFC 6749 2.3.1: form-encode each part, then base64.
                let credentials = format!(
                    "{}:{}",
                    component(&conn.config.client_id),
                    component(&secret)
                );
                builder = builder.header(
                    http::header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(credentials)),
                );
            }
            TokenAuthMethod::ClientSecretPost => {
                pairs.push(("client_id", &conn.config.client_id));
                pairs.push(("client_secret", &secret));
            }
        }
        let body = form_encode(&pairs).into_bytes();
        let request_assertion = request.assertion;
        let claims_sent = request.claims.map(str::to_owned);
        let http_request = builder.body(body).map_err(|_| OboError::Misconfigured {
            provider_code: "invalid_configuration".into(),
            description: "the connection's token_url is not usable".into(),
        })?;
        let call = self.outbound().call();
        let mut sent = sent(secrets, &[request_assertion]);
        sent.extend(claims_sent.as_deref());
        let response = call
            .send(http_request)
            .await
            .map_err(|e| OboError::Provider(e.to_string()).redacted(&sent))?;
        read_reply(response.status().as_u16(), response.body()).map_err(|e| e.redacted(&sent))
    }
}

/// The provider's answer to an exchange: its status (any 2xx already made 200 by the
/// HTTP client) and body. Public for the parser fuzz tests only.
#[doc(hidden)]
pub fn read_reply(status: u16, body: &[u8]) -> Result<TokenSet, OboError> {
    if status == 200 {
        let parsed: LenientTokenResponse = serde_json::from_slice(body).map_err(|_| {
            OboError::Provider("the token response is not a valid token response".into())
        })?;
        return TokenSet::from_response(parsed).map_err(|e| OboError::Provider(e.to_string()));
    }
    let Ok(reply) = serde_json::from_slice::<ErrorReply>(body) else {
        return Err(OboError::Provider(format!(
            "HTTP {status} with a body that is not an OAuth error response"
        )));
    };
    Err(classify(status, reply))
}

fn classify(status: u16, reply: ErrorReply) -> OboError {
    let error = sanitize(&reply.error);
    let description = reply
        .error_description
        .as_deref()
        .map(sanitize)
        .unwrap_or_default();
    if let Some(claims) = reply.claims.filter(|c| !c.trim().is_empty()) {
        return OboError::ClaimsChallenge {
            claims,
            description: format!("{error}: {description}"),
        };
    }
    // By number; the description is a fallback only when the number is followed by a
    // colon (AADSTS500133, an expired assertion, must not read as AADSTS50013).
    let entra = MISCONFIGURATION_CODES.iter().find(|(code, name)| {
        reply.error_codes.contains(code)
            || (reply.error_codes.is_empty() && description.starts_with(&format!("{name}:")))
    });
    if let Some((_, name)) = entra {
        return OboError::Misconfigured {
            provider_code: (*name).to_owned(),
            description: format!("{error}: {description}"),
        };
    }
    match error.as_str() {
        "invalid_grant" | "interaction_required" | "consent_required" | "login_required" => {
            OboError::Rejected(format!("{error}: {description}"))
        }
        "invalid_client"
        | "unauthorized_client"
        | "invalid_scope"
        | "unsupported_grant_type"
        | "invalid_target"
        | "invalid_request" => OboError::Misconfigured {
            provider_code: error.clone(),
            description: format!("{error}: {description}"),
        },
        _ if status >= 500 || status == 429 => {
            OboError::Provider(format!("HTTP {status}: {error}: {description}"))
        }
        _ => OboError::Rejected(format!("{error}: {description}")),
    }
}

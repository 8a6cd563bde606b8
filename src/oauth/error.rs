//! Provider failures: permanent ones need a human (re-authorize, fix the client), transient
//! ones go away by themselves. Messages carry the provider's `error` and
//! `error_description`, never a request or response body (which may hold a token).

use std::time::Duration;

use oauth2::RequestTokenError;
use oauth2::basic::BasicErrorResponse;

use super::outbound::TransportError;

/// RFC 6749 5.2 error codes that no retry will fix.
const PERMANENT: &[&str] = &[
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_request",
    "access_denied",
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("{}", permanent_message(.code, .description))]
    Permanent {
        code: String,
        description: Option<String>,
    },
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
}

fn permanent_message(code: &str, description: &Option<String>) -> String {
    match description {
        Some(d) => format!("{code}: {d}"),
        None => code.to_owned(),
    }
}

/// Provider text shown to admins: printable, bounded.
pub fn sanitize(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    clean.trim().to_owned()
}

/// `text` without the secrets the request carried. A provider that reflects the
/// request in its `error_description` (some echo the whole form) would otherwise put a
/// client secret, a refresh token or a user's assertion into a status message, an event
/// and a log line. Each secret is looked for as sent (raw, form-encoded, and its
/// base64url JWT parts are covered by the raw form) and as the text may have re-encoded it.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        let encoded = form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>();
        let escaped = secret.replace('/', "\\/");
        for form in [secret.to_string(), encoded, escaped] {
            if text.contains(&form) {
                text = text.replace(&form, "[redacted]");
            }
        }
    }
    text
}

impl ProviderError {
    /// This error with the request's `secrets` removed from the provider's text.
    pub fn redacted(self, secrets: &[&str]) -> Self {
        match self {
            ProviderError::Permanent { code, description } => ProviderError::Permanent {
                code: redact(&code, secrets),
                description: description.map(|d| redact(&d, secrets)),
            },
            ProviderError::Transient {
                reason,
                retry_after,
            } => ProviderError::Transient {
                reason: redact(&reason, secrets),
                retry_after,
            },
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, ProviderError::Permanent { .. })
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            ProviderError::Permanent { code, .. } => Some(code),
            ProviderError::Transient { .. } => None,
        }
    }

    /// What a failed token request means, given the last HTTP status the call saw
    /// (`None`: no answer) and the provider's `Retry-After`.
    pub(super) fn classify(
        error: RequestTokenError<TransportError, BasicErrorResponse>,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Self {
        let transient_status = status.is_some_and(|s| s >= 500 || s == 429);
        match error {
            RequestTokenError::ServerResponse(e) => {
                let code = sanitize(e.error().as_ref());
                let description = e.error_description().map(|d| sanitize(d));
                if transient_status && !PERMANENT.contains(&code.as_str()) {
                    ProviderError::Transient {
                        reason: format!(
                            "HTTP {}: {}",
                            status.unwrap_or_default(),
                            permanent_message(&code, &description)
                        ),
                        retry_after,
                    }
                } else {
                    ProviderError::Permanent { code, description }
                }
            }
            RequestTokenError::Request(e) => ProviderError::Transient {
                reason: e.to_string(),
                retry_after,
            },
            RequestTokenError::Parse(_, _) | RequestTokenError::Other(_) => {
                // Never echo the body: a half-parsed success may contain a token.
                let what = match status {
                    Some(200) => "the token response is not a valid token response".to_owned(),
                    Some(s) => format!("HTTP {s} with a body that is not an OAuth error response"),
                    None => "the provider's reply could not be read".to_owned(),
                };
                match status {
                    Some(s) if (400..500).contains(&s) && s != 429 => ProviderError::Permanent {
                        code: format!("http_{s}"),
                        description: Some(what),
                    },
                    _ => ProviderError::Transient {
                        reason: what,
                        retry_after,
                    },
                }
            }
        }
    }
}

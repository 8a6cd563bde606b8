//! A fake provider's token endpoint (a wiremock responder issuing numbered access
//! tokens), mounting it, and counting the calls a mock server received.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

/// A token endpoint (a wiremock responder) that issues `<prefix>-1`, `<prefix>-2`, ...
/// as access tokens, each valid for `expires_in` seconds, after `delay`.
pub struct NumberedTokens {
    prefix: String,
    expires_in: u64,
    delay: Duration,
    issued: AtomicUsize,
}

impl NumberedTokens {
    pub fn new(prefix: &str, expires_in: u64) -> Self {
        Self {
            prefix: prefix.to_owned(),
            expires_in,
            delay: Duration::ZERO,
            issued: AtomicUsize::new(0),
        }
    }

    /// Every answer waits this long first.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl wiremock::Respond for NumberedTokens {
    fn respond(&self, _: &wiremock::Request) -> wiremock::ResponseTemplate {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        wiremock::ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": format!("{}-{n}", self.prefix),
                "token_type": "bearer",
                "expires_in": self.expires_in,
            }))
            .set_delay(self.delay)
    }
}

/// Mounts `tokens` at `POST /{route}` and returns the endpoint's URL.
pub async fn mount_tokens(provider: &MockServer, route: &str, tokens: NumberedTokens) -> String {
    Mock::given(method("POST"))
        .and(path(format!("/{route}")))
        .respond_with(tokens)
        .mount(provider)
        .await;
    format!("{}/{route}", provider.uri())
}

/// Mounts a token endpoint at `POST /{prefix}` issuing `<prefix>-1`, `<prefix>-2`, ...
/// for `expires_in` seconds, and returns its URL.
pub async fn mount_numbered(provider: &MockServer, prefix: &str, expires_in: u64) -> String {
    mount_tokens(provider, prefix, NumberedTokens::new(prefix, expires_in)).await
}

/// How many requests `server` received on `path`.
pub async fn calls_to(server: &MockServer, path: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == path)
        .count()
}

//! The HTTP client for provider calls: rustls, no redirects (a token endpoint that
//! redirects is misconfigured, and following it could leak credentials), a timeout on
//! every attempt, retries with exponential backoff and jitter on network errors, 5xx and
//! 429 (honouring a short `Retry-After`), none on other 4xx. Addresses are checked after
//! DNS resolution so a provider URL cannot reach loopback, private or link-local
//! addresses (cloud metadata) unless configured. System proxies (`HTTP_PROXY`,
//! `HTTPS_PROXY`) are never used: a proxy would resolve names itself, past that check.
//! Reply bodies are read with a cap (`TOKEN_REPLY_CAP`, `DOCUMENT_CAP`): one provider
//! sending an endless body cannot exhaust the process's memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The largest token endpoint reply read (a token reply is a few KiB at most).
pub const TOKEN_REPLY_CAP: usize = 1024 * 1024;
/// The largest JSON document read (a JWKS, a discovery document).
pub const DOCUMENT_CAP: usize = 256 * 1024;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(String);

#[derive(Debug, Clone)]
pub struct OutboundConfig {
    pub timeout: Duration,
    pub attempts: u32,
    pub backoff_base: Duration,
    pub allow_private_addresses: bool,
    /// Longest `Retry-After` worth waiting for inside one call.
    pub max_retry_after: Duration,
    pub test_timeout: Duration,
}

impl OutboundConfig {
    /// The operator's settings over the defaults.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            timeout: Duration::from_millis(settings.provider_timeout_ms.max(1)),
            backoff_base: Duration::from_millis(settings.provider_retry_base_ms),
            allow_private_addresses: settings.allow_private_provider_addresses,
            ..Self::default()
        }
    }
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempts: 3,
            backoff_base: Duration::from_millis(250),
            allow_private_addresses: false,
            max_retry_after: Duration::from_secs(10),
            test_timeout: Duration::from_secs(5),
        }
    }
}

pub struct Outbound {
    client: reqwest::Client,
    config: OutboundConfig,
}

/// Refuses names that resolve only to non-public addresses.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} does not resolve to a public address (set \
                     OAUTH_BROKER_ALLOW_PRIVATE_PROVIDER_ADDRESSES=true to allow private ones)"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local() // 169.254.0.0/16, cloud metadata
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // 100.64.0.0/10 carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            // Addresses that carry an IPv4 address reach it: the IPv4 rules apply.
            // 64:ff9b::/96 NAT64 (RFC 6052) and ::/96 IPv4-compatible (RFC 4291 2.5.5.1):
            // the last 32 bits; 2002::/16 6to4 (RFC 3056): bits 16 to 48.
            if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0])
                || (s[0..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified())
            {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return is_public(IpAddr::V4(embedded(s[1], s[2])));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // 64:ff9b:1::/48 local NAT64 (RFC 8215)
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

impl Outbound {
    pub fn new(config: OutboundConfig) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("oauth-broker/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private_addresses,
            }))
            .build()
            .expect("the HTTP client builds with rustls");
        Self { client, config }
    }

    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    /// One logical provider call (possibly several attempts).
    pub fn call(&self) -> Call<'_> {
        Call {
            outbound: self,
            seen: Mutex::new(Seen::default()),
            replayable: true,
        }
    }

    /// A call that must not be repeated once the provider may have received it: a
    /// single-use authorization code, or a refresh token the provider rotates on use.
    /// Retried only when the request surely did not arrive (the connection failed) or
    /// the provider answered 5xx/429.
    pub fn call_not_replayable(&self) -> Call<'_> {
        Call {
            replayable: false,
            ..self.call()
        }
    }

    /// Refuses a URL whose host is a non-public IP literal (names are checked at resolution).
    fn check_literal(&self, url: &reqwest::Url) -> Result<(), TransportError> {
        if self.config.allow_private_addresses {
            return Ok(());
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if is_public(ip) {
            Ok(())
        } else {
            Err(TransportError(format!(
                "{ip} is not a public address (set OAUTH_BROKER_ALLOW_PRIVATE_PROVIDER_ADDRESSES=true to allow it)"
            )))
        }
    }

    /// GET `url` with the access token (the connection test). `Ok(status)` for any answer.
    pub async fn get_with_token(&self, url: &str, token: &str) -> Result<u16, TransportError> {
        let url = reqwest::Url::parse(url).map_err(|e| TransportError(format!("bad URL: {e}")))?;
        self.check_literal(&url)?;
        let response = self
            .client
            .get(url)
            .bearer_auth(token)
            .timeout(self.config.test_timeout)
            .send()
            .await
            .map_err(describe)?;
        Ok(response.status().as_u16())
    }
}

impl Outbound {
    /// GET a JSON document (a JWKS), one attempt, bounded by the test timeout.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, TransportError> {
        let url = reqwest::Url::parse(url).map_err(|e| TransportError(format!("bad URL: {e}")))?;
        self.check_literal(&url)?;
        let response = self
            .client
            .get(url)
            .timeout(self.config.test_timeout)
            .send()
            .await
            .map_err(describe)?;
        if !response.status().is_success() {
            return Err(TransportError(format!(
                "HTTP {}",
                response.status().as_u16()
            )));
        }
        let body = read_capped(response, DOCUMENT_CAP).await?;
        serde_json::from_slice(&body).map_err(|_| TransportError("the reply is not JSON".into()))
    }
}

/// The body of `response`, refused once it passes `cap` bytes (by its declared length
/// before reading anything, else as it streams in).
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, TransportError> {
    let too_large = || TransportError(format!("the reply is larger than {} KiB", cap / 1024));
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn describe(e: reqwest::Error) -> TransportError {
    // reqwest's Display includes the URL, which carries no secret (query strings of
    // token endpoints are not ours to fill), but keep it short and without the chain.
    let what = if e.is_timeout() {
        "the provider did not answer in time"
    } else if e.is_connect() {
        "could not connect to the provider"
    } else {
        "the request to the provider failed"
    };
    // The innermost cause says what happened (refused, resolved to a private address...).
    let mut cause = std::error::Error::source(&e);
    let mut deepest = None;
    while let Some(c) = cause {
        deepest = Some(c.to_string());
        cause = c.source();
    }
    let cause = deepest.map(|c| format!(": {c}")).unwrap_or_default();
    TransportError(format!("{what}{cause}"))
}

#[derive(Default)]
struct Seen {
    status: Option<u16>,
    retry_after: Option<Duration>,
    attempts: u32,
}

/// One provider call; remembers the last status for error classification.
pub struct Call<'a> {
    outbound: &'a Outbound,
    seen: Mutex<Seen>,
    replayable: bool,
}

impl Call<'_> {
    pub fn last_status(&self) -> Option<u16> {
        self.seen.lock().expect("call lock").status
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.seen.lock().expect("call lock").retry_after
    }

    pub fn attempts(&self) -> u32 {
        self.seen.lock().expect("call lock").attempts
    }

    pub async fn send(
        &self,
        request: oauth2::HttpRequest,
    ) -> Result<oauth2::HttpResponse, TransportError> {
        let config = &self.outbound.config;
        let (parts, body) = request.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| TransportError(format!("bad token URL: {e}")))?;
        self.outbound.check_literal(&url)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.seen.lock().expect("call lock").attempts = attempt;
            let mut builder = self
                .outbound
                .client
                .request(parts.method.clone(), url.clone())
                .body(body.clone());
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let outcome = builder.send().await;
            let last = attempt >= config.attempts;
            match outcome {
                Err(e) => {
                    // A timeout may hide a request the provider processed.
                    let maybe_delivered = !e.is_connect();
                    let error = describe(e);
                    tracing::debug!(attempt, error = %error, "provider call failed");
                    if last || (maybe_delivered && !self.replayable) {
                        return Err(error);
                    }
                    self.backoff(attempt, None).await;
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    {
                        let mut seen = self.seen.lock().expect("call lock");
                        seen.status = Some(status);
                        seen.retry_after = retry_after;
                    }
                    let retryable = status >= 500 || status == 429;
                    let waits_too_long = retry_after.is_some_and(|d| d > config.max_retry_after);
                    if retryable && !last && !waits_too_long {
                        tracing::debug!(
                            attempt,
                            status,
                            "provider answered with a retryable status"
                        );
                        self.backoff(attempt, retry_after).await;
                        continue;
                    }
                    return into_oauth2_response(response).await;
                }
            }
        }
    }

    async fn backoff(&self, attempt: u32, retry_after: Option<Duration>) {
        let base = self.outbound.config.backoff_base;
        let exponential = base * 2u32.saturating_pow(attempt - 1);
        let jitter = base.mul_f64(rand::rng().random_range(0.0..1.0));
        tokio::time::sleep(retry_after.unwrap_or(exponential + jitter)).await;
    }
}

/// The client oauth2 calls; boxing the future keeps it `Send` for every lifetime (a
/// closure here would not be, and the refresh future is shared across tasks).
impl<'c> oauth2::AsyncHttpClient<'c> for Call<'_> {
    type Error = TransportError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<oauth2::HttpResponse, TransportError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

async fn into_oauth2_response(
    response: reqwest::Response,
) -> Result<oauth2::HttpResponse, TransportError> {
    let status = response.status();
    // oauth2 accepts only 200 as success; any 2xx is one (RFC 9110 15.3).
    let status = if status.is_success() {
        http::StatusCode::OK
    } else {
        status
    };
    let mut builder = http::Response::builder().status(status);
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = read_capped(response, TOKEN_REPLY_CAP).await?;
    builder
        .body(body)
        .map_err(|e| TransportError(format!("unreadable response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_loopback_and_private_addresses_are_not_public() {
        for ip in [
            "169.254.169.254",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
            "64:ff9b::7f00:1",    // NAT64 of 127.0.0.1
            "::a00:1",            // IPv4-compatible 10.0.0.1
            "2002:7f00:1::1",     // 6to4 of 127.0.0.1
            "2002:c0a8:101::1",   // 6to4 of 192.168.1.1
            "64:ff9b:1::1",       // local-use NAT64
        ] {
            assert!(
                !is_public(ip.parse().unwrap()),
                "{ip} must not count as public"
            );
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::808:808", // NAT64 of 8.8.8.8
            "2002:808:808::1",  // 6to4 of 8.8.8.8
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }
}

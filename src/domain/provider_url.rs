//! URLs of OAuth providers and test endpoints: `https`, or `http` for loopback hosts only.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use url::{Host, Url};

use super::errors::ParseError;

/// A URL the service may call or send a browser to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ProviderUrl(Url);

pub const MAX_URL_LEN: usize = 2048;

impl ProviderUrl {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        if value.len() > MAX_URL_LEN {
            return Err(ParseError::new(format!(
                "URL must be at most {MAX_URL_LEN} characters"
            )));
        }
        let url = Url::parse(value).map_err(|e| ParseError::new(format!("not a URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ParseError::new("URL must not carry credentials"));
        }
        if url.fragment().is_some() {
            // RFC 6749 3.1 and 3.2: endpoint URIs must not include a fragment.
            return Err(ParseError::new("URL must not have a fragment"));
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(ParseError::new(
                    "URL must use https (http is allowed only for localhost, 127.0.0.0/8 and [::1])",
                ));
            }
            other => {
                return Err(ParseError::new(format!(
                    "URL scheme `{other}` is not https"
                )));
            }
        }
        if url.host().is_none() {
            return Err(ParseError::new("URL must have a host"));
        }
        Ok(Self(url))
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for ProviderUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_and_loopback_http_are_accepted() {
        for ok in [
            "https://login.example.com/oauth2/token",
            "http://localhost:9000/token",
            "http://127.0.0.5/token",
            "http://[::1]:8080/token",
        ] {
            assert!(ProviderUrl::parse(ok).is_ok(), "{ok} must parse");
        }
    }

    #[test]
    fn plain_http_other_schemes_and_credentials_are_refused() {
        for bad in [
            "http://example.com/token",
            "http://10.0.0.1/token",
            "ftp://example.com/x",
            "javascript:alert(1)",
            "https://user:pw@example.com/",
            "https://example.com/a#frag",
            "not a url",
            "",
        ] {
            assert!(ProviderUrl::parse(bad).is_err(), "{bad} must be refused");
        }
    }
}

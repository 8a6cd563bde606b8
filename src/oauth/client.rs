//! The provider side of a connection: the token requests of every grant through the
//! `oauth2` crate, over our own retrying, address-checking HTTP client.

use std::sync::Arc;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    Scope, StandardRevocableToken, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use super::error::ProviderError;
use super::outbound::Outbound;
use super::token::{LenientTokenResponse, TokenSet};
use crate::domain::{Connection, ConnectionSecrets, TokenAuthMethod};

type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    LenientTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointMaybeSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The provider side of one connection.
pub struct ProviderClient {
    outbound: Arc<Outbound>,
}

/// A started authorization: the URL for the browser, and what the callback needs.
pub struct AuthorizationStart {
    pub url: String,
    pub state: SecretString,
    pub pkce_verifier: SecretString,
}

impl ProviderClient {
    pub fn new(outbound: Arc<Outbound>) -> Self {
        Self { outbound }
    }

    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    fn client(
        conn: &Connection,
        secrets: &ConnectionSecrets,
        redirect_uri: Option<&str>,
    ) -> Result<OAuthClient, ProviderError> {
        let config = &conn.config;
        let misconfigured = |what: &str| ProviderError::Permanent {
            code: "invalid_configuration".into(),
            description: Some(format!("the connection's {what} is not usable")),
        };
        let mut client = oauth2::Client::new(ClientId::new(config.client_id.clone()))
            .set_auth_uri_option(
                config
                    .authorization_url
                    .as_ref()
                    .map(|u| AuthUrl::new(u.clone()))
                    .transpose()
                    .map_err(|_| misconfigured("authorization_url"))?,
            )
            .set_token_uri(
                TokenUrl::new(config.token_url.clone()).map_err(|_| misconfigured("token_url"))?,
            )
            .set_auth_type(match config.token_auth_method {
                TokenAuthMethod::ClientSecretBasic => oauth2::AuthType::BasicAuth,
                TokenAuthMethod::ClientSecretPost => oauth2::AuthType::RequestBody,
            });
        if let Some(secret) = &secrets.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
        }
        if let Some(uri) = redirect_uri {
            client = client.set_redirect_uri(
                RedirectUrl::new(uri.to_owned()).map_err(|_| misconfigured("redirect_uri"))?,
            );
        }
        Ok(client)
    }

    /// Builds the authorization URL with a fresh state (256 bits) and PKCE S256
    /// challenge (RFC 7636 4.2), plus the connection's extra parameters.
    pub fn start_authorization(
        &self,
        conn: &Connection,
        secrets: &ConnectionSecrets,
        redirect_uri: &str,
    ) -> Result<AuthorizationStart, ProviderError> {
        let client = Self::client(conn, secrets, Some(redirect_uri))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(|| CsrfToken::new_random_len(32))
            .map_err(|_| ProviderError::Permanent {
                code: "invalid_configuration".into(),
                description: Some("the connection has no authorization_url".into()),
            })?
            .add_scopes(conn.config.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge);
        for (k, v) in &conn.config.extra_authorization_params {
            request = request.add_extra_param(k.as_str(), v.as_str());
        }
        let (url, state) = request.url();
        Ok(AuthorizationStart {
            url: url.to_string(),
            state: SecretString::from(state.secret().clone()),
            pkce_verifier: SecretString::from(verifier.secret().clone()),
        })
    }

    /// RFC 6749 4.1.3 with the RFC 7636 verifier and the exact redirect URI.
    pub async fn exchange_code(
        &self,
        conn: &Connection,
        secrets: &ConnectionSecrets,
        code: &SecretString,
        pkce_verifier: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenSet, ProviderError> {
        let client = Self::client(conn, secrets, Some(redirect_uri))?;
        let mut request = client
            .exchange_code(AuthorizationCode::new(code.expose_secret().to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(
                pkce_verifier.expose_secret().to_owned(),
            ));
        for (k, v) in &conn.config.extra_token_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let call = self.outbound.call_not_replayable();
        let result = request.request_async(&call).await;
        TokenSet::from_result(result, &call)
            .map_err(|e| e.redacted(&sent(secrets, &[code, pkce_verifier])))
    }

    /// RFC 6749 4.4.
    pub async fn client_credentials(
        &self,
        conn: &Connection,
        secrets: &ConnectionSecrets,
    ) -> Result<TokenSet, ProviderError> {
        let client = Self::client(conn, secrets, None)?;
        let mut request = client
            .exchange_client_credentials()
            .add_scopes(conn.config.scopes.iter().cloned().map(Scope::new));
        for (k, v) in &conn.config.extra_token_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let call = self.outbound.call();
        let result = request.request_async(&call).await;
        TokenSet::from_result(result, &call).map_err(|e| e.redacted(&sent(secrets, &[])))
    }

    /// RFC 6749 6. Scopes are not sent: the grant keeps the scopes it was given.
    pub async fn refresh(
        &self,
        conn: &Connection,
        secrets: &ConnectionSecrets,
        refresh_token: &SecretString,
    ) -> Result<TokenSet, ProviderError> {
        self.refresh_with_scopes(conn, secrets, refresh_token, &[])
            .await
    }

    /// RFC 6749 6, asking for `scopes` (Entra's v2 endpoint wants them on every refresh).
    pub async fn refresh_with_scopes(
        &self,
        conn: &Connection,
        secrets: &ConnectionSecrets,
        refresh_token: &SecretString,
        scopes: &[String],
    ) -> Result<TokenSet, ProviderError> {
        let client = Self::client(conn, secrets, None)?;
        let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let mut request = client
            .exchange_refresh_token(&token)
            .add_scopes(scopes.iter().cloned().map(Scope::new));
        for (k, v) in &conn.config.extra_token_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let call = self.outbound.call_not_replayable();
        let result = request.request_async(&call).await;
        TokenSet::from_result(result, &call)
            .map_err(|e| e.redacted(&sent(secrets, &[refresh_token])))
    }
}

/// The secrets a token request carries: what a provider's error text must not repeat.
pub(super) fn sent<'a>(
    secrets: &'a ConnectionSecrets,
    others: &[&'a SecretString],
) -> Vec<&'a str> {
    secrets
        .client_secret
        .iter()
        .chain(secrets.refresh_token.iter())
        .chain(secrets.access_token.iter())
        .chain(others.iter().copied())
        .map(|s| s.expose_secret())
        .collect()
}

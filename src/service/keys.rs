//! API keys: creation (the key is shown once), the bootstrap admin key, the first key.

use secrecy::{ExposeSecret, SecretString};

use crate::auth::{display_prefix, generate_key, hash_key};
use crate::domain::{ApiKey, NewApiKey};
use crate::domain::{OrgScope, Role};
use crate::error::{ApiError, FieldErrors};
use crate::store::DynStore;

/// Shortest key accepted from `OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY`: 128 bits of base64.
pub const MIN_BOOTSTRAP_KEY_LEN: usize = 24;

pub fn parse_key_name(name: &str) -> Result<String, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(FieldErrors::single(
            "name",
            "must match ^[A-Za-z0-9_.-]{1,100}$",
        ))
    }
}

/// Creates a key; returns the record and the key itself, which is never stored.
pub async fn create(
    store: &DynStore,
    name: String,
    role: Role,
    org_scope: OrgScope,
    created_by: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(ApiKey, SecretString), ApiError> {
    let (key, key_hash, key_prefix) = generate_key();
    let record = store
        .insert_api_key(NewApiKey {
            name,
            role,
            org_scope,
            key_hash,
            key_prefix,
            created_by: created_by.to_owned(),
            now,
        })
        .await?;
    Ok((record, key))
}

/// What start-up did about keys.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// The configured bootstrap key was already there, or other keys exist.
    Nothing,
    /// The configured bootstrap key was registered.
    RegisteredConfiguredKey,
    /// No key existed: a first admin key was made and must be shown once.
    CreatedFirstKey(String),
}

/// Makes sure someone can administer the service.
pub async fn bootstrap(
    store: &DynStore,
    configured: Option<&SecretString>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Bootstrap> {
    if let Some(key) = configured {
        let key = key.expose_secret();
        anyhow::ensure!(
            key.len() >= MIN_BOOTSTRAP_KEY_LEN
                && key.is_ascii()
                && !key.contains(char::is_whitespace),
            "OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY must be at least {MIN_BOOTSTRAP_KEY_LEN} ASCII characters without spaces \
             (generate one with `openssl rand -base64 32`)"
        );
        let hash = hash_key(key);
        if store.find_api_key(&hash).await?.is_some() {
            return Ok(Bootstrap::Nothing);
        }
        let prefix = display_prefix(key);
        let mut name = "bootstrap-admin".to_owned();
        for attempt in 0.. {
            let result = store
                .insert_api_key(NewApiKey {
                    name: name.clone(),
                    role: Role::Admin,
                    org_scope: OrgScope::All,
                    key_hash: hash.clone(),
                    key_prefix: prefix.clone(),
                    created_by: "bootstrap".into(),
                    now,
                })
                .await;
            match result {
                Ok(_) => break,
                // Another replica registered the same key meanwhile.
                Err(crate::store::StoreError::Conflict(_))
                    if store.find_api_key(&hash).await?.is_some() =>
                {
                    return Ok(Bootstrap::Nothing);
                }
                Err(crate::store::StoreError::Conflict(_)) if attempt < 20 => {
                    name = format!("bootstrap-admin-{}", attempt + 2);
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(Bootstrap::RegisteredConfiguredKey);
    }
    if store.count_active_api_keys().await? > 0 {
        return Ok(Bootstrap::Nothing);
    }
    let (_, key) = create(
        store,
        "initial-admin".into(),
        Role::Admin,
        OrgScope::All,
        "bootstrap",
        now,
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the first admin key: {e}"))?;
    Ok(Bootstrap::CreatedFirstKey(key.expose_secret().to_owned()))
}

//! API keys: creation (the key is shown once), the bootstrap admin key, the first key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use super::{Broker, Error, Result};
use crate::domain::{ApiKey, FieldErrors, NewApiKey, OrgScope, Page, PageRequest, Role};
use crate::store::DynStore;

/// Every key starts with this, so a leaked one is easy to recognise (secret scanners).
pub const KEY_PREFIX: &str = "obk_";

/// A new API key (256 random bits) with its hash and display prefix.
pub fn generate_key() -> (SecretString, String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_key(&key);
    let prefix = display_prefix(&key);
    (SecretString::from(key), hash, prefix)
}

/// What a key is stored and looked up as. A fast hash is right here (unlike for
/// passwords): a key has full entropy, so nothing can be guessed from its hash.
pub fn hash_key(key: &str) -> String {
    crate::crypto::sha256_hex(key.as_bytes())
}

/// Enough of a key to recognise it in a list, far too little to use it.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 4).collect()
}

/// Shortest key accepted from `OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY`: 128 bits of base64.
pub const MIN_BOOTSTRAP_KEY_LEN: usize = 24;

pub fn parse_key_name(name: &str) -> Result<String, FieldErrors> {
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
) -> Result<(ApiKey, SecretString)> {
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
        if let Some(revoked) = store.find_revoked_api_key(&hash).await? {
            let at = revoked
                .revoked_at
                .map(|at| at.to_rfc3339())
                .unwrap_or_default();
            anyhow::bail!(
                "OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY is the key `{}` (id {}), which was revoked at {at}. \
                 A revoked key stays revoked. Unset OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY (other admin keys \
                 exist), or set it to a new key (e.g. `openssl rand -base64 32`) to register that one.",
                revoked.name,
                revoked.id
            );
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

/// A page of the keys by name, revoked ones included (no key material).
pub async fn list(broker: &Broker, page: &PageRequest<String>) -> Result<Page<ApiKey>> {
    Ok(broker.store.list_api_keys(page).await?)
}

/// Revokes an active key; `NotFound` if there is none with this id.
pub async fn revoke(broker: &Broker, id: &str) -> Result<()> {
    if id.len() > 64 || !broker.store.revoke_api_key(id, broker.clock.now()).await? {
        return Err(Error::NotFound("no active key with this id".into()));
    }
    Ok(())
}

/// The active key whose hash this is.
pub async fn find(broker: &Broker, key_hash: &str) -> Result<Option<ApiKey>> {
    Ok(broker.store.find_api_key(key_hash).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_random_and_hash_stably() {
        let (a, hash_a, prefix) = generate_key();
        let (b, _, _) = generate_key();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().len() >= 40);
        assert_eq!(hash_a, hash_key(a.expose_secret()));
        assert_eq!(hash_a.len(), 64);
        assert!(a.expose_secret().starts_with(&prefix));
    }
}

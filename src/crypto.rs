//! Encryption of secrets at rest: a keyring of XChaCha20-Poly1305 keys, each ciphertext
//! tagged with the id of the key that sealed it and bound to its row by associated data.
//!
//! Sealed format (ASCII, safe in any TEXT column): `v1:<kid>:<base64url(nonce || ciphertext)>`.
//! The 24-byte nonce is random per message, which XChaCha20's extended nonce makes safe
//! without a counter. The associated data names the org, the row and the field, so a
//! ciphertext copied into another row or column fails to open instead of leaking there.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, Generate, Key, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};

const FORMAT_VERSION: &str = "v1";
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// What a ciphertext is bound to. Every field takes part in the associated data.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    pub org_id: &'a str,
    /// The row's stable id (a connection id, a state hash, a session id).
    pub row_id: &'a str,
    /// The column, e.g. `client_secret`.
    pub field: &'a str,
}

impl Aad<'_> {
    fn bytes(&self) -> Vec<u8> {
        // Length-prefixed so that ("a|b", "c") and ("a", "b|c") never collide.
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"oauth-broker/v1");
        for part in [self.org_id, self.row_id, self.field] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("no encryption key is configured")]
    Empty,
    #[error("encryption key entry {0} is not of the form `kid:base64key`")]
    Malformed(usize),
    /// By position, not by text: what stands where the id should may be the key itself
    /// (`base64key:kid`), which must not reach a log.
    #[error(
        "encryption key entry {0} has no valid key id: write entries as `kid:base64key`, \
         the id matching [A-Za-z0-9_-]{{1,32}}"
    )]
    BadKeyId(usize),
    #[error("encryption key `{0}` is not valid base64 of exactly 32 bytes")]
    BadKey(String),
    #[error("encryption key id `{0}` appears twice")]
    DuplicateKeyId(String),
    #[error("cannot read or write the key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("the ciphertext is not in the sealed format")]
    Malformed,
    #[error("the ciphertext was sealed with key id `{0}`, which is not configured")]
    UnknownKey(String),
    #[error("the ciphertext does not open with key `{0}` and its associated data")]
    Forged(String),
}

/// Keys by id; the first configured key seals, all of them open.
pub struct Keyring {
    active: String,
    ciphers: HashMap<String, XChaCha20Poly1305>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.ciphers.keys().collect();
        kids.sort();
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("kids", &kids)
            .finish()
    }
}

/// SHA-256 of `data` as lowercase hex: how API keys, authorization states and
/// on-behalf-of assertions are looked up without being stored.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 32
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Keyring {
    /// Parses `kid:base64key,kid2:base64key2`; the first entry is the active key.
    pub fn parse(spec: &SecretString) -> Result<Self, KeyringError> {
        let mut active = None;
        let mut ciphers = HashMap::new();
        // Comments are whole lines; drop them before splitting on commas, since a
        // comment may itself contain one (the key file's header does).
        for (index, entry) in spec
            .expose_secret()
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (kid, b64) = entry
                .split_once(':')
                .ok_or(KeyringError::Malformed(index + 1))?;
            if !valid_kid(kid) {
                return Err(KeyringError::BadKeyId(index + 1));
            }
            let raw = STANDARD
                .decode(b64.trim())
                .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim()))
                .map_err(|_| KeyringError::BadKey(kid.to_owned()))?;
            if raw.len() != KEY_LEN {
                return Err(KeyringError::BadKey(kid.to_owned()));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&raw)
                .map_err(|_| KeyringError::BadKey(kid.to_owned()))?;
            if ciphers.insert(kid.to_owned(), cipher).is_some() {
                return Err(KeyringError::DuplicateKeyId(kid.to_owned()));
            }
            active.get_or_insert_with(|| kid.to_owned());
        }
        Ok(Self {
            active: active.ok_or(KeyringError::Empty)?,
            ciphers,
        })
    }

    /// A new random key, returned with its `kid:base64` spec for storing.
    pub fn generate(kid: &str) -> (Self, SecretString) {
        let key = Key::<XChaCha20Poly1305>::generate();
        let spec = SecretString::from(format!("{kid}:{}", STANDARD.encode(key.as_slice())));
        let ring = Self::parse(&spec).expect("a generated key always parses");
        (ring, spec)
    }

    /// Reads a key file (same syntax as the environment variable, one key per line allowed).
    pub fn from_file(path: &Path) -> Result<Self, KeyringError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&SecretString::from(text))
    }

    /// Creates a key file readable by its owner only (mode 0600), failing if it exists.
    pub fn create_file(path: &Path, kid: &str) -> Result<Self, KeyringError> {
        use std::io::Write;
        let (ring, spec) = Self::generate(kid);
        let io = |source| KeyringError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        writeln!(
            file,
            "# oauth-broker encryption keys: kid:base64(32 bytes), first is active. Back this file up."
        )
        .map_err(io)?;
        writeln!(file, "{}", spec.expose_secret()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(ring)
    }

    pub fn active_kid(&self) -> &str {
        &self.active
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.ciphers.contains_key(kid)
    }

    /// The key id a sealed value names, without opening it.
    pub fn kid_of(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(FORMAT_VERSION), Some(kid), Some(_)) => Some(kid),
            _ => None,
        }
    }

    pub fn seal(&self, plaintext: &str, aad: Aad<'_>) -> String {
        let cipher = &self.ciphers[&self.active];
        let nonce = XNonce::generate();
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad.bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(nonce.as_slice());
        blob.extend_from_slice(&ciphertext);
        format!(
            "{FORMAT_VERSION}:{}:{}",
            self.active,
            URL_SAFE_NO_PAD.encode(blob)
        )
    }

    pub fn open(&self, sealed: &str, aad: Aad<'_>) -> Result<SecretString, OpenError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(FORMAT_VERSION), Some(kid), Some(body)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(OpenError::Malformed);
        };
        // A kid no keyring could hold is damage, not a missing key; and it is not echoed
        // (errors stay short and printable whatever the column held).
        if !valid_kid(kid) {
            return Err(OpenError::Malformed);
        }
        let cipher = self
            .ciphers
            .get(kid)
            .ok_or_else(|| OpenError::UnknownKey(kid.to_owned()))?;
        let blob = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Malformed)?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenError::Malformed)?;
        let plain = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad.bytes(),
                },
            )
            .map_err(|_| OpenError::Forged(kid.to_owned()))?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| OpenError::Malformed)
    }

    /// Re-seals under the active key; `None` when it already is.
    pub fn reseal(&self, sealed: &str, aad: Aad<'_>) -> Result<Option<String>, OpenError> {
        if Self::kid_of(sealed) == Some(self.active.as_str()) {
            // Still open it: a row that does not authenticate must be reported, not skipped.
            self.open(sealed, aad)?;
            return Ok(None);
        }
        let plain = self.open(sealed, aad)?;
        Ok(Some(self.seal(plain.expose_secret(), aad)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad<'a>(row: &'a str, field: &'a str) -> Aad<'a> {
        Aad {
            org_id: "acme",
            row_id: row,
            field,
        }
    }

    #[test]
    fn a_sealed_value_opens_with_the_same_associated_data() {
        let (ring, _) = Keyring::generate("k1");
        let sealed = ring.seal("s3cret-value", aad("row-1", "client_secret"));
        assert!(!sealed.contains("s3cret"), "plaintext leaked: {sealed}");
        assert_eq!(Keyring::kid_of(&sealed), Some("k1"));
        let opened = ring.open(&sealed, aad("row-1", "client_secret")).unwrap();
        assert_eq!(opened.expose_secret(), "s3cret-value");
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_or_field_or_org_does_not_open() {
        let (ring, _) = Keyring::generate("k1");
        let sealed = ring.seal("token", aad("row-1", "access_token"));
        for (what, other) in [
            ("row", aad("row-2", "access_token")),
            ("field", aad("row-1", "refresh_token")),
            (
                "org",
                Aad {
                    org_id: "other",
                    row_id: "row-1",
                    field: "access_token",
                },
            ),
        ] {
            assert_eq!(
                ring.open(&sealed, other).unwrap_err(),
                OpenError::Forged("k1".into()),
                "a ciphertext moved to another {what} must not open"
            );
        }
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let (ring, _) = Keyring::generate("k1");
        let a = ring.seal("same", aad("r", "f"));
        let b = ring.seal("same", aad("r", "f"));
        assert_ne!(a, b, "nonces must be random per message");
    }

    #[test]
    fn rotation_reseals_under_the_first_key_and_old_keys_still_open() {
        let (old, old_spec) = Keyring::generate("old");
        let sealed = old.seal("v", aad("r", "f"));
        let (_, new_spec) = Keyring::generate("new");
        let both = Keyring::parse(&SecretString::from(format!(
            "{},{}",
            new_spec.expose_secret(),
            old_spec.expose_secret()
        )))
        .unwrap();
        assert_eq!(
            both.open(&sealed, aad("r", "f")).unwrap().expose_secret(),
            "v"
        );
        let resealed = both.reseal(&sealed, aad("r", "f")).unwrap().unwrap();
        assert_eq!(Keyring::kid_of(&resealed), Some("new"));
        assert_eq!(both.reseal(&resealed, aad("r", "f")).unwrap(), None);
    }

    #[test]
    fn bad_key_specs_are_refused_with_a_reason() {
        for (spec, why) in [
            ("", "empty"),
            ("nokid", "no colon"),
            ("bad kid:AAAA", "space in kid"),
            ("k1:not-base64!!", "not base64"),
            ("k1:AAAA", "too short"),
        ] {
            assert!(
                Keyring::parse(&SecretString::from(spec)).is_err(),
                "{why} must be refused"
            );
        }
        let (_, spec) = Keyring::generate("dup");
        let twice = format!("{},{}", spec.expose_secret(), spec.expose_secret());
        assert!(matches!(
            Keyring::parse(&SecretString::from(twice)),
            Err(KeyringError::DuplicateKeyId(_))
        ));
    }

    #[test]
    fn a_created_key_file_reads_back_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.key");
        let created = Keyring::create_file(&path, "k1").unwrap();
        let sealed = created.seal("v", aad("r", "f"));
        let read = Keyring::from_file(&path).expect("the file it wrote parses");
        assert_eq!(read.active_kid(), "k1");
        assert_eq!(
            read.open(&sealed, aad("r", "f")).unwrap().expose_secret(),
            "v"
        );
    }

    #[test]
    fn comments_with_commas_and_several_lines_parse() {
        let (_, a) = Keyring::generate("a");
        let (_, b) = Keyring::generate("b");
        let text = format!(
            "# keys, newest first\n{}\n  # old, keep until rotated\n{}\n",
            a.expose_secret(),
            b.expose_secret()
        );
        let ring = Keyring::parse(&SecretString::from(text)).unwrap();
        assert_eq!(ring.active_kid(), "a");
        assert!(ring.contains("b"));
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let (ring, spec) = Keyring::generate("k1");
        let shown = format!("{ring:?}");
        let b64 = spec.expose_secret().split_once(':').unwrap().1.to_owned();
        assert!(shown.contains("k1") && !shown.contains(&b64), "{shown}");
    }

    #[test]
    fn tampered_or_malformed_ciphertexts_are_refused() {
        let (ring, _) = Keyring::generate("k1");
        let sealed = ring.seal("value", aad("r", "f"));
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(ring.open(&tampered, aad("r", "f")).is_err());
        for junk in [
            "",
            "v1:",
            "v1:k1:",
            "v2:k1:AAAA",
            "v1:zz:AAAA",
            "plain text",
        ] {
            assert!(ring.open(junk, aad("r", "f")).is_err(), "{junk:?}");
        }
    }
}

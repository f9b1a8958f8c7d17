//! Secrets of a purchase: payment and shipping tokens.
//!
//! Tokens must survive a crash (recovery re-sends an authorization or an order with
//! them), so they are stored, but only encrypted (AES-256-GCM with a fresh random nonce
//! per record) and only until the purchase ends. [`Secret`] keeps them out of logs:
//! its `Debug` and `Display` print `<redacted>`.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret as _, SecretString};

/// Environment variable that may hold the token key (64 hex digits).
pub const TOKEN_KEY_ENV: &str = "BOOKBROKER_TOKEN_KEY";
/// File in the data directory holding a generated token key.
pub const TOKEN_KEY_FILE: &str = "token.key";

/// A string that must never be printed, wiped from memory when dropped (`secrecy`,
/// over `zeroize`).
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Secret {
        Secret(SecretString::from(value))
    }

    /// The value itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl Clone for Secret {
    /// A second copy, wiped on its own drop. (`secrecy` keeps strings from being cloned
    /// by accident; a purchase needs one copy in its record and one in flight.)
    fn clone(&self) -> Secret {
        Secret::new(self.expose().to_owned())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why tokens could not be sealed or opened. Internal faults, never the client's.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key is not 64 hex digits.
    #[error("token key {0}")]
    BadKey(String),
    /// The key file could not be read or written.
    #[error("token key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A sealed value did not decrypt (wrong key, or damaged).
    #[error("sealed tokens do not open with this key")]
    Open,
    /// The system random source failed.
    #[error("no randomness available")]
    Random,
}

/// Encrypts tokens at rest and fingerprints request bodies. Shared by every core.
pub struct TokenCipher {
    key: LessSafeKey,
    mac: ring::hmac::Key,
    rng: SystemRandom,
}

impl TokenCipher {
    /// The key from the config, else from [`TOKEN_KEY_ENV`], else from (or newly into)
    /// `data_dir/token.key`.
    pub fn load(configured: &str, data_dir: &Path) -> Result<TokenCipher, SecretError> {
        let from_env = std::env::var(TOKEN_KEY_ENV).unwrap_or_default();
        let hex_key = if !configured.is_empty() {
            configured.to_string()
        } else if !from_env.is_empty() {
            from_env
        } else {
            key_file(data_dir)?
        };
        let bytes = hex::decode(hex_key.trim())
            .map_err(|_| SecretError::BadKey("is not hexadecimal".into()))?;
        TokenCipher::from_bytes(&bytes)
    }

    /// A cipher from 32 raw key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<TokenCipher, SecretError> {
        if bytes.len() != 32 {
            return Err(SecretError::BadKey(format!(
                "has {} bytes, expected 32",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| SecretError::BadKey("was refused".into()))?;
        Ok(TokenCipher {
            key: LessSafeKey::new(key),
            // A separate key for fingerprints, derived so one secret serves both.
            mac: ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                ring::hmac::sign(
                    &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes),
                    b"bookbroker fingerprint key",
                )
                .as_ref(),
            ),
            rng: SystemRandom::new(),
        })
    }

    /// Encrypts `plain`; the result is hex (nonce, then ciphertext and tag).
    pub fn seal(&self, plain: &[u8]) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| SecretError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(hex::encode(out))
    }

    /// Decrypts what [`TokenCipher::seal`] produced.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let raw = hex::decode(sealed).map_err(|_| SecretError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| SecretError::Open)?;
        Ok(plain.to_vec())
    }

    /// A keyed digest (HMAC-SHA-256, hex) of `data`: request fingerprints contain
    /// tokens, and a plain hash of a short token could be reversed by guessing.
    pub fn fingerprint(&self, data: &[u8]) -> String {
        hex::encode(ring::hmac::sign(&self.mac, data).as_ref())
    }

    /// Random bytes, hex encoded (purchase ids).
    pub fn random_hex(&self, bytes: usize) -> Result<String, SecretError> {
        let mut buf = vec![0u8; bytes];
        self.rng.fill(&mut buf).map_err(|_| SecretError::Random)?;
        Ok(hex::encode(buf))
    }
}

/// Reads the generated key, or generates and stores one (mode 0600).
fn key_file(data_dir: &Path) -> Result<String, SecretError> {
    let path = data_dir.join(TOKEN_KEY_FILE);
    let err = |source| SecretError::KeyFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok(text),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        Err(_) => {}
    }
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| SecretError::Random)?;
    let text = hex::encode(key);
    let tmp = data_dir.join(format!("{TOKEN_KEY_FILE}.tmp"));
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, &path).map_err(err)?;
    // The rename lives in the directory: sync it too, or a power cut could lose the key
    // file while purchases sealed with it are already on disk.
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(err)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_hide_the_plaintext() {
        let c = TokenCipher::from_bytes(&[7u8; 32]).unwrap();
        let sealed = c.seal(b"tok_ok_4242").unwrap();
        assert!(!sealed.contains(&hex::encode(b"tok_ok_4242")));
        assert_eq!(c.open(&sealed).unwrap(), b"tok_ok_4242");
        assert_ne!(
            sealed,
            c.seal(b"tok_ok_4242").unwrap(),
            "fresh nonce each time"
        );
        let other = TokenCipher::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open(&sealed).is_err());
    }

    #[test]
    fn a_generated_key_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let a = TokenCipher::load("", tmp.path()).unwrap();
        let b = TokenCipher::load("", tmp.path()).unwrap();
        assert_eq!(b.open(&a.seal(b"x").unwrap()).unwrap(), b"x");
        assert!(TokenCipher::load("abcd", tmp.path()).is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("tok_live_1".into());
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
    }
}

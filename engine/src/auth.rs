//! API-key authentication. Keys are configured as SHA-256 digests; a presented key is
//! hashed and looked up, so the engine never holds or logs a key in the clear.

use std::collections::HashMap;
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::config::{ConfigError, CustomerConfig, Problem};

/// A customer, as authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomerId(Rc<str>);

impl CustomerId {
    /// The id from the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a request is not authenticated. The reason is for logs; the client sees 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no Authorization header")]
    Missing,
    /// Not `Bearer <key>`.
    #[error("Authorization is not 'Bearer <key>'")]
    Malformed,
    /// No customer has this key.
    #[error("unknown API key")]
    Unknown,
}

/// The API keys of one core.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    by_digest: HashMap<[u8; 32], CustomerId>,
}

/// Hex SHA-256 of an API key, as `api_key_sha256` wants it.
pub fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// Builds the table from the config's customers.
    pub fn from_config(customers: &[CustomerConfig]) -> Result<ApiKeys, ConfigError> {
        let mut by_digest = HashMap::with_capacity(customers.len());
        for (i, c) in customers.iter().enumerate() {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&c.api_key_sha256, &mut digest).map_err(|_| {
                ConfigError::Invalid(vec![Problem {
                    field: format!("customers[{i}].api_key_sha256"),
                    message: "must be 64 hex digits".into(),
                }])
            })?;
            by_digest.insert(digest, CustomerId(Rc::from(c.id.as_str())));
        }
        Ok(ApiKeys { by_digest })
    }

    /// Checks an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<CustomerId, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Malformed)?;
        let (scheme, key) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let key = key.trim();
        if key.is_empty() {
            return Err(AuthError::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_digest
            .get(&digest)
            .cloned()
            .ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::from_config(&[CustomerConfig {
            id: "alice".into(),
            api_key_sha256: sha256_hex("s3cret"),
            rate_per_sec: None,
            burst: None,
        }])
        .unwrap()
    }

    #[test]
    fn accepts_the_right_key_in_any_scheme_case() {
        assert_eq!(
            keys()
                .authenticate(Some(b"Bearer s3cret"))
                .unwrap()
                .as_str(),
            "alice"
        );
        assert_eq!(
            keys()
                .authenticate(Some(b"bearer s3cret"))
                .unwrap()
                .as_str(),
            "alice"
        );
    }

    #[test]
    fn rejects_everything_else() {
        let k = keys();
        assert_eq!(k.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            k.authenticate(Some(b"Bearer nope")),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            k.authenticate(Some(b"Basic s3cret")),
            Err(AuthError::Malformed)
        );
        assert_eq!(k.authenticate(Some(b"Bearer ")), Err(AuthError::Malformed));
        assert_eq!(
            k.authenticate(Some(&[0xff, 0xfe])),
            Err(AuthError::Malformed)
        );
    }
}

//! Bearer API keys: stored as SHA-256 hashes, each mapped to a key id, a tenant and a policy.
//!
//! The key itself is never stored or logged; the audit log records the key id.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::KeyConfig;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Key id from `veil.toml`.
    pub key_id: Arc<str>,
    /// Tenant of the key.
    pub tenant: Arc<str>,
    /// Policy applied to the key's requests.
    pub policy: Arc<str>,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing API key; send `Authorization: Bearer <key>`")]
    Missing,
    /// The header is not `Bearer <key>`.
    #[error("malformed Authorization header; send `Authorization: Bearer <key>`")]
    Malformed,
    /// No key with this hash.
    #[error("invalid API key")]
    Unknown,
    /// The key exists but is revoked.
    #[error("this API key has been revoked")]
    Revoked {
        /// The revoked key's id (recorded in the audit log).
        key_id: Arc<str>,
    },
}

/// Hex SHA-256 of an API key, as stored in `veil.toml`.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[derive(Debug, Clone)]
struct Entry {
    principal: Principal,
    revoked: bool,
}

/// The configured keys, indexed by hash.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    by_hash: HashMap<[u8; 32], Entry>,
}

impl Keys {
    /// Indexes the configured keys.
    pub fn new(keys: &[KeyConfig]) -> Self {
        let mut by_hash = HashMap::new();
        for k in keys {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&k.sha256, &mut hash).is_err() {
                continue; // Config validation already refused malformed hashes.
            }
            by_hash.insert(
                hash,
                Entry {
                    principal: Principal {
                        key_id: Arc::from(k.id.as_str()),
                        tenant: Arc::from(k.tenant.as_str()),
                        policy: Arc::from(k.policy.as_str()),
                    },
                    revoked: k.revoked,
                },
            );
        }
        Self { by_hash }
    }

    /// Policy names the keys refer to.
    pub fn policies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_hash
            .values()
            .map(|e| (&*e.principal.key_id, &*e.principal.policy))
    }

    /// Authenticates an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (scheme, key) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let key = key.trim();
        if key.is_empty() {
            return Err(AuthError::Malformed);
        }
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let entry = self.by_hash.get(&hash).ok_or(AuthError::Unknown)?;
        if entry.revoked {
            return Err(AuthError::Revoked {
                key_id: entry.principal.key_id.clone(),
            });
        }
        Ok(entry.principal.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(&[
            KeyConfig {
                id: "app".into(),
                sha256: hash_key("good-key"),
                tenant: "t1".into(),
                policy: "default".into(),
                revoked: false,
            },
            KeyConfig {
                id: "old".into(),
                sha256: hash_key("old-key"),
                tenant: "t1".into(),
                policy: "default".into(),
                revoked: true,
            },
        ])
    }

    #[test]
    fn authenticates_by_hash() {
        let k = keys();
        let p = k.authenticate(Some(b"Bearer good-key"));
        assert_eq!(p.map(|p| p.key_id.to_string()), Ok("app".to_owned()));
        assert!(k.authenticate(Some(b"bearer  good-key ")).is_ok());
    }

    #[test]
    fn refuses_missing_malformed_unknown_and_revoked() {
        let k = keys();
        assert_eq!(k.authenticate(None), Err(AuthError::Missing));
        assert_eq!(k.authenticate(Some(b"good-key")), Err(AuthError::Malformed));
        assert_eq!(
            k.authenticate(Some(b"Basic good-key")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            k.authenticate(Some(b"Bearer nope")),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            k.authenticate(Some(b"Bearer old-key")),
            Err(AuthError::Revoked {
                key_id: Arc::from("old")
            })
        );
    }
}

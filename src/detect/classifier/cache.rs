//! Classifier findings per message segment, remembered per tenant, so that a conversation that
//! resends its history every turn pays the model only for what is new.
//!
//! Keys are HMAC-SHA256 digests of the segment's text under a key drawn at random when the cache
//! is built (no text is kept, and a digest means nothing outside this process); digests are
//! zeroized when an entry leaves. Values are findings — offsets, types, scores — never text.
//! Each tenant has its own bounded LRU map, entries expire after `ttl`, and a cache belongs to
//! one snapshot's detectors: a policy or model reload builds new detectors with an empty cache.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use lru::LruCache;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::detect::Finding;

/// The keyed digest of one segment's text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Drop for Digest {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

struct Entry {
    findings: Arc<Vec<Finding>>,
    at: Instant,
}

/// Bounded, per-tenant memory of classifier findings by segment.
pub struct SegmentCache {
    /// HMAC-SHA256 keyed with 32 random bytes (the key itself is zeroized once this is made).
    keyed: Hmac<Sha256>,
    per_tenant: NonZeroUsize,
    ttl: Duration,
    tenants: Mutex<HashMap<Arc<str>, LruCache<Digest, Entry>>>,
}

impl std::fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCache")
            .field("per_tenant", &self.per_tenant)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl SegmentCache {
    /// A cache of at most `per_tenant` segments per tenant, each kept at most `ttl`; `None`
    /// when `per_tenant` is 0 (switched off).
    pub fn new(per_tenant: usize, ttl: Duration) -> Option<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::fill(&mut key[..]);
        Some(Self {
            keyed: Hmac::<Sha256>::new_from_slice(&key[..]).ok()?,
            per_tenant: NonZeroUsize::new(per_tenant)?,
            ttl,
            tenants: Mutex::new(HashMap::new()),
        })
    }

    /// The digest of `text` (exactly as the classifier reads it) read the way `how` says (how
    /// much of it is context, say): the same text read another way is another entry.
    pub fn digest(&self, how: &[u8], text: &str) -> Digest {
        let mut mac = self.keyed.clone();
        mac.update(&(how.len() as u64).to_le_bytes());
        mac.update(how);
        mac.update(text.as_bytes());
        Digest(mac.finalize().into_bytes().into())
    }

    /// The findings remembered for `digest` in `tenant`'s map, if fresh.
    pub fn get(&self, tenant: &str, digest: &Digest) -> Option<Arc<Vec<Finding>>> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let Some(map) = tenants.get_mut(tenant) else {
            metrics::counter!("veil_detect_cache_misses_total").increment(1);
            return None;
        };
        let fresh = map.get(digest).map(|e| e.at.elapsed() <= self.ttl);
        match fresh {
            Some(true) => {
                metrics::counter!("veil_detect_cache_hits_total").increment(1);
                map.get(digest).map(|e| e.findings.clone())
            }
            Some(false) => {
                map.pop(digest);
                metrics::counter!("veil_detect_cache_misses_total").increment(1);
                None
            }
            None => {
                metrics::counter!("veil_detect_cache_misses_total").increment(1);
                None
            }
        }
    }

    /// Remembers `findings` for `digest` in `tenant`'s map (the least recently used entry
    /// leaves when the map is full).
    pub fn put(&self, tenant: &str, digest: Digest, findings: Arc<Vec<Finding>>) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let map = tenants
            .entry(Arc::from(tenant))
            .or_insert_with(|| LruCache::new(self.per_tenant));
        if map
            .push(
                digest,
                Entry {
                    findings,
                    at: Instant::now(),
                },
            )
            .is_some()
        {
            metrics::counter!("veil_detect_cache_evictions_total").increment(1);
        }
    }

    /// Entries held for `tenant`.
    pub fn len(&self, tenant: &str) -> usize {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants.get(tenant).map_or(0, LruCache::len)
    }

    /// Whether `tenant` has no entry.
    pub fn is_empty(&self, tenant: &str) -> bool {
        self.len(tenant) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::EntityType;

    fn finding(start: usize) -> Arc<Vec<Finding>> {
        Arc::new(vec![Finding {
            start,
            end: start + 4,
            entity: EntityType::Person,
            score: 0.9,
            recognizer: "classifier",
        }])
    }

    #[test]
    fn tenants_are_apart_bounded_and_entries_expire() {
        let cache = SegmentCache::new(2, Duration::from_millis(200)).unwrap();
        let (a, b, c) = (
            cache.digest(b"", "one"),
            cache.digest(b"", "two"),
            cache.digest(b"", "three"),
        );
        assert!(cache.digest(b"", "one") == a, "same text, same digest");
        assert!(
            cache.digest(b"\x01", "one") != a,
            "the same text read another way"
        );
        cache.put("t1", a.clone(), finding(1));
        assert_eq!(cache.get("t1", &a).unwrap()[0].start, 1);
        assert!(cache.get("t2", &a).is_none(), "another tenant sees nothing");
        cache.put("t1", b.clone(), finding(2));
        assert!(
            cache.get("t1", &a).is_some(),
            "a is now the most recently used"
        );
        cache.put("t1", c.clone(), finding(3));
        assert_eq!(cache.len("t1"), 2);
        assert!(
            cache.get("t1", &b).is_none(),
            "the least recently used left"
        );
        assert!(cache.get("t1", &a).is_some() && cache.get("t1", &c).is_some());
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get("t1", &a).is_none(), "expired");
        assert!(SegmentCache::new(0, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn digests_differ_between_caches() {
        let (x, y) = (
            SegmentCache::new(1, Duration::from_secs(1)).unwrap(),
            SegmentCache::new(1, Duration::from_secs(1)).unwrap(),
        );
        assert!(x.digest(b"", "same text") != y.digest(b"", "same text"));
    }
}

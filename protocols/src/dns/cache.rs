//! Answers kept for their TTL (sans-IO: the caller says what time it is).
//!
//! Keyed by the name asked (lower case, absolute) and the family. A full cache first drops
//! what has expired, then what would expire soonest. Negative answers are kept only when
//! their zone said for how long (RFC 2308); a TTL of zero is not kept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::wire::Family;

/// What the cache holds for a name and family.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cached {
    Addrs {
        addrs: Vec<IpAddr>,
        canonical: String,
    },
    NoData,
    NoName,
}

#[derive(Debug)]
struct Entry {
    value: Cached,
    expires: Instant,
}

#[derive(Debug)]
pub(crate) struct Cache {
    entries: HashMap<(String, Family), Entry>,
    capacity: usize,
    max_ttl: Duration,
}

impl Cache {
    pub(crate) fn new(capacity: usize, max_ttl: Duration) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity,
            max_ttl,
        }
    }

    /// The live entry for `name` and `family`, and when it expires.
    pub(crate) fn get(
        &mut self,
        name: &str,
        family: Family,
        now: Instant,
    ) -> Option<(Cached, Instant)> {
        let key = (name.to_owned(), family);
        match self.entries.get(&key) {
            Some(entry) if entry.expires > now => Some((entry.value.clone(), entry.expires)),
            Some(_) => {
                self.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `ttl` seconds (at most the cache's ceiling); returns when it expires,
    /// or `None` when it is not kept.
    pub(crate) fn insert(
        &mut self,
        name: &str,
        family: Family,
        value: Cached,
        ttl: u32,
        now: Instant,
    ) -> Option<Instant> {
        if self.capacity == 0 || ttl == 0 {
            return None;
        }
        let expires = now + Duration::from_secs(u64::from(ttl)).min(self.max_ttl);
        let key = (name.to_owned(), family);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, entry| entry.expires > now);
            if self.entries.len() >= self.capacity {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires)
                    .map(|(key, _)| key.clone());
                if let Some(soonest) = soonest {
                    self.entries.remove(&soonest);
                }
            }
        }
        self.entries.insert(key, Entry { value, expires });
        Some(expires)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(last: u8) -> Cached {
        Cached::Addrs {
            addrs: vec![[192, 0, 2, last].into()],
            canonical: "x.test".into(),
        }
    }

    #[test]
    fn entries_live_for_their_ttl_under_the_ceiling() {
        let start = Instant::now();
        let mut cache = Cache::new(8, Duration::from_secs(100));
        assert_eq!(
            cache.insert("a.test.", Family::V4, addrs(1), 0, start),
            None
        );
        let until = cache.insert("a.test.", Family::V4, addrs(1), 30, start);
        assert_eq!(until, Some(start + Duration::from_secs(30)));
        assert_eq!(cache.get("a.test.", Family::V6, start), None);
        assert_eq!(
            cache.get("a.test.", Family::V4, start + Duration::from_secs(29)),
            Some((addrs(1), start + Duration::from_secs(30)))
        );
        assert_eq!(
            cache.get("a.test.", Family::V4, start + Duration::from_secs(30)),
            None
        );
        assert_eq!(cache.len(), 0, "an expired entry read is dropped");
        let capped = cache.insert("b.test.", Family::V4, Cached::NoName, 86_400, start);
        assert_eq!(capped, Some(start + Duration::from_secs(100)));
    }

    #[test]
    fn a_full_cache_drops_the_expired_then_the_soonest_to_expire() {
        let start = Instant::now();
        let mut cache = Cache::new(2, Duration::from_secs(1000));
        cache.insert("a.", Family::V4, addrs(1), 10, start);
        cache.insert("b.", Family::V4, addrs(2), 50, start);
        cache.insert("c.", Family::V4, addrs(3), 100, start);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a.", Family::V4, start).is_none());
        assert!(cache.get("b.", Family::V4, start).is_some());
        let later = start + Duration::from_secs(60);
        cache.insert("d.", Family::V4, addrs(4), 100, later);
        assert!(
            cache.get("b.", Family::V4, later).is_none(),
            "b had expired"
        );
        assert!(cache.get("c.", Family::V4, later).is_some());
        assert!(cache.get("d.", Family::V4, later).is_some());
        // Replacing an entry never evicts another.
        cache.insert("d.", Family::V4, addrs(5), 100, later);
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}

//! The checks a source passes before a server spends anything on it (a decryption, a TLS
//! handshake, an HTTP parse): its network (allow and deny lists by CIDR) and its rate (a token
//! bucket per source address in a table of fixed size, allocated once: a flood of new sources
//! evicts old buckets rather than growing memory). The netcode server and the TCP listeners
//! (`serve::Admission`) both use them.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

use crate::cidr::{Cidr, canonical};

/// Which sources may connect: a deny list, an allow list, and what happens to the rest.
#[derive(Debug, Clone)]
pub struct AccessList {
    /// Sources in these networks are refused, whatever else matches.
    pub deny: Vec<Cidr>,
    /// Sources in these networks are admitted.
    pub allow: Vec<Cidr>,
    /// Sources in neither list are admitted unless this is set (deny by default).
    pub deny_by_default: bool,
}

impl Default for AccessList {
    /// Everyone admitted.
    fn default() -> Self {
        AccessList {
            deny: Vec::new(),
            allow: Vec::new(),
            deny_by_default: false,
        }
    }
}

impl AccessList {
    /// Whether `ip` may connect.
    pub fn admits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.iter().any(|c| c.contains(ip)) || !self.deny_by_default
    }
}

/// The rate each source may open connections (or send requests) at.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests a source may send at once.
    pub burst: u32,
    /// Requests per second refilled.
    pub per_second: u32,
    /// Sources tracked at once (rounded up to a multiple of the table's associativity).
    pub sources: usize,
}

impl Default for RateLimit {
    /// A client resends its request ten times a second; a burst of 20 and 20 per second let
    /// one retry through each time and stop a flood from one address.
    fn default() -> Self {
        RateLimit {
            burst: 20,
            per_second: 20,
            sources: 4096,
        }
    }
}

/// Ways per set in the bucket table: a source's bucket is one of these, found by a keyed hash.
const WAYS: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    ip: Option<IpAddr>,
    tokens: f32,
    last: Instant,
}

/// A token bucket per source address, in a table allocated once. A new source takes the
/// least recently used bucket of its set and starts full: a flood from many addresses cannot
/// grow memory, and costs a legitimate source at most its bucket's history.
#[derive(Debug)]
pub struct SourceLimiter {
    limit: RateLimit,
    hasher: RandomState,
    buckets: Box<[Bucket]>,
}

impl SourceLimiter {
    /// A table for `limit`, with every bucket allocated now.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        let sets = limit.sources.div_ceil(WAYS).max(1);
        let empty = Bucket {
            ip: None,
            tokens: 0.0,
            last: now,
        };
        SourceLimiter {
            limit,
            hasher: RandomState::new(),
            buckets: vec![empty; sets * WAYS].into_boxed_slice(),
        }
    }

    /// Takes one token from `ip`'s bucket; `false` if it has none left.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = canonical(ip);
        let sets = self.buckets.len() / WAYS;
        let set = (self.hasher.hash_one(ip) as usize) % sets;
        let ways = &mut self.buckets[set * WAYS..(set + 1) * WAYS];
        let burst = self.limit.burst as f32;
        let bucket = match ways.iter().position(|b| b.ip == Some(ip)) {
            Some(i) => {
                let b = &mut ways[i];
                let elapsed = now.saturating_duration_since(b.last).as_secs_f32();
                b.tokens = (b.tokens + elapsed * self.limit.per_second as f32).min(burst);
                b
            }
            None => {
                let oldest = ways
                    .iter_mut()
                    .min_by_key(|b| (b.ip.is_some(), b.last))
                    .unwrap_or_else(|| unreachable!("a set has {WAYS} ways"));
                *oldest = Bucket {
                    ip: Some(ip),
                    tokens: burst,
                    last: now,
                };
                oldest
            }
        };
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_match_by_prefix_across_address_families() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.1.0.1")));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains(ip("192.0.2.1")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn deny_wins_then_allow_then_the_default() {
        let list = AccessList {
            deny: vec!["10.0.0.66".parse().unwrap()],
            allow: vec!["10.0.0.0/24".parse().unwrap()],
            deny_by_default: true,
        };
        assert!(list.admits(ip("10.0.0.1")));
        assert!(!list.admits(ip("10.0.0.66")));
        assert!(!list.admits(ip("10.0.1.1")));
        assert!(AccessList::default().admits(ip("10.0.1.1")));
    }

    #[test]
    fn a_source_gets_its_burst_then_the_refill_rate_while_others_keep_theirs() {
        let start = Instant::now();
        let limit = RateLimit {
            burst: 3,
            per_second: 10,
            sources: 8,
        };
        let mut l = SourceLimiter::new(limit, start);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert!((0..3).all(|_| l.admit(a, start)));
        assert!(!l.admit(a, start));
        assert!(l.admit(b, start));
        assert!(!l.admit(a, start + Duration::from_millis(50)));
        assert!(l.admit(a, start + Duration::from_millis(160)));
    }

    #[test]
    fn a_flood_of_new_sources_never_grows_the_table() {
        let start = Instant::now();
        let mut l = SourceLimiter::new(RateLimit::default(), start);
        let size = l.buckets.len();
        for i in 0..100_000u32 {
            l.admit(IpAddr::V4(i.into()), start);
        }
        assert_eq!(l.buckets.len(), size);
    }
}

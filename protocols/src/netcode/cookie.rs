//! Address cookies: a check that a connection request's source address is real, made before
//! the server opens the request's token. Not in the standard; both ends must enable it (see
//! `docs/netcode.md`).
//!
//! A server that wants one answers a request with a cookie packet: the prefix byte of type
//! [`COOKIE_KIND`] and a [`COOKIE_BYTES`] cookie, 21 bytes against the request's 1,078. The
//! client sends its request again with the cookie after it. The cookie is the second it was
//! made (the server's Unix clock, 32 bits) and a 16-byte MAC of that second and the client's
//! address under a key only this server holds, so the server keeps nothing per source: it
//! recomputes the MAC and checks the age. A sender of spoofed requests never sees the cookies
//! made for the addresses it forges, so it never gets a token opened.
//!
//! The MAC is a PRF built from HChaCha20 (the core of XChaCha20): the key and the address (as
//! 16 bytes, IPv4 mapped into IPv6) give a subkey, and the subkey and (port, second, family)
//! give the MAC: two ChaCha permutations, a small fraction of one token's opening.

use std::net::SocketAddr;
use std::time::Instant;

use chacha20::cipher::consts::U10;
use chacha20::cipher::generic_array::GenericArray;

use super::crypto::Key;

/// Bytes of a cookie: the second it was made (u32, little endian) and its MAC.
pub const COOKIE_BYTES: usize = 4 + COOKIE_MAC_BYTES;
/// Bytes of a cookie's MAC.
const COOKIE_MAC_BYTES: usize = 16;
/// The packet type of a cookie packet (after the standard's 0–6 and resumption's 7).
pub const COOKIE_KIND: u8 = 8;
/// Bytes of a cookie packet: prefix and cookie.
pub const COOKIE_PACKET_BYTES: usize = 1 + COOKIE_BYTES;
/// How long a cookie is good for, in seconds (a client uses it at once; this allows for
/// resends and for the server's second changing in between).
pub const COOKIE_LIFETIME_SECONDS: u64 = 10;

/// When a server asks for cookies ([`super::ServerConfig::cookies`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Cookies {
    /// Never: the standard's handshake, which every 1.02 client speaks (the default).
    #[default]
    Off,
    /// Every request must carry a valid cookie: only clients that enable cookies
    /// ([`super::Client::with_cookies`]) can connect.
    Always,
    /// Only once `opens_per_second` tokens have been opened in the current second, or were in
    /// the last whole one: standard clients connect while the server is not under a flood,
    /// and during one, requests without a valid cookie get a cookie instead of costing a
    /// decryption (so at most `opens_per_second` openings a second reach the crypto).
    UnderLoad {
        /// Token openings a second from which cookies are asked for.
        opens_per_second: u32,
    },
}

/// Why a cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieError {
    /// Made more than [`COOKIE_LIFETIME_SECONDS`] ago, or in the future.
    Stale,
    /// Not made by this server for this address.
    Forged,
}

/// Makes and checks cookies under one key; keeps nothing per source.
#[derive(Debug, Clone)]
pub(crate) struct CookieJar {
    key: Key,
}

impl CookieJar {
    #[cfg(test)]
    fn new(key: Key) -> Self {
        CookieJar { key }
    }

    /// A jar whose key is derived from `secret` (one-way: a cookie says nothing of `secret`).
    pub(crate) fn derived_from(secret: &Key) -> Self {
        let key = chacha20::hchacha::<U10>(
            GenericArray::from_slice(&secret.0),
            GenericArray::from_slice(b"coring cookie v1"),
        );
        CookieJar {
            key: Key(key.into()),
        }
    }

    /// A cookie for `from`, made at Unix second `unix`.
    pub(crate) fn issue(&self, from: SocketAddr, unix: u64) -> [u8; COOKIE_BYTES] {
        let second = unix as u32;
        let mut cookie = [0u8; COOKIE_BYTES];
        cookie[..4].copy_from_slice(&second.to_le_bytes());
        cookie[4..].copy_from_slice(&self.mac(from, second));
        cookie
    }

    /// Whether `cookie` was made by this jar for `from` within the lifetime, at Unix `unix`.
    pub(crate) fn check(
        &self,
        from: SocketAddr,
        cookie: &[u8; COOKIE_BYTES],
        unix: u64,
    ) -> Result<(), CookieError> {
        let second = u32::from_le_bytes([cookie[0], cookie[1], cookie[2], cookie[3]]);
        // Ages are taken modulo 2^32 seconds (136 years), so the clock's wrap is harmless.
        let age = (unix as u32).wrapping_sub(second);
        if u64::from(age) > COOKIE_LIFETIME_SECONDS {
            return Err(CookieError::Stale);
        }
        let expected = self.mac(from, second);
        // Compared without an early exit, so the time taken says nothing of where they differ.
        let diff = expected
            .iter()
            .zip(&cookie[4..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            Ok(())
        } else {
            Err(CookieError::Forged)
        }
    }

    fn mac(&self, from: SocketAddr, second: u32) -> [u8; COOKIE_MAC_BYTES] {
        let (ip, family) = match from {
            SocketAddr::V4(a) => (a.ip().to_ipv6_mapped().octets(), 4u8),
            SocketAddr::V6(a) => (a.ip().octets(), 6u8),
        };
        let subkey = chacha20::hchacha::<U10>(
            GenericArray::from_slice(&self.key.0),
            GenericArray::from_slice(&ip),
        );
        let mut rest = [0u8; 16];
        rest[..2].copy_from_slice(&from.port().to_le_bytes());
        rest[2..6].copy_from_slice(&second.to_le_bytes());
        rest[6] = family;
        let out = chacha20::hchacha::<U10>(&subkey, GenericArray::from_slice(&rest));
        let mut mac = [0u8; COOKIE_MAC_BYTES];
        mac.copy_from_slice(&out[..COOKIE_MAC_BYTES]);
        mac
    }
}

/// Writes a cookie packet into `out` (at least [`COOKIE_PACKET_BYTES`]); returns its length.
pub(crate) fn write_packet(cookie: &[u8; COOKIE_BYTES], out: &mut [u8]) -> usize {
    out[0] = COOKIE_KIND;
    out[1..COOKIE_PACKET_BYTES].copy_from_slice(cookie);
    COOKIE_PACKET_BYTES
}

/// The cookie in `bytes`, if they are a cookie packet.
pub(crate) fn read_packet(bytes: &[u8]) -> Option<[u8; COOKIE_BYTES]> {
    if bytes.len() != COOKIE_PACKET_BYTES || bytes[0] != COOKIE_KIND {
        return None;
    }
    bytes[1..].try_into().ok()
}

/// The cookie replies a server may still send: a bucket refilled at a rate, holding a tenth of
/// a second's worth, so a flood of spoofed requests costs at most that many sends a second.
#[derive(Debug, Clone)]
pub(crate) struct ReplyBudget {
    per_second: f32,
    tokens: f32,
    last: Instant,
}

impl ReplyBudget {
    pub(crate) fn new(per_second: u32, now: Instant) -> Self {
        let per_second = per_second as f32;
        ReplyBudget {
            per_second,
            tokens: Self::room(per_second),
            last: now,
        }
    }

    fn room(per_second: f32) -> f32 {
        (per_second / 10.0).max(1.0)
    }

    /// Takes one reply if there is one left at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(Self::room(self.per_second));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts token openings per second, for [`Cookies::UnderLoad`].
#[derive(Debug, Clone, Default)]
pub(crate) struct OpenRate {
    /// The Unix second `this` counts.
    second: u64,
    this: u32,
    last: u32,
}

impl OpenRate {
    fn roll(&mut self, unix: u64) {
        if unix != self.second {
            self.last = if unix == self.second + 1 {
                self.this
            } else {
                0
            };
            self.this = 0;
            self.second = unix;
        }
    }

    /// One more opening at Unix second `unix`.
    pub(crate) fn count(&mut self, unix: u64) {
        self.roll(unix);
        self.this = self.this.saturating_add(1);
    }

    /// Whether openings reached `limit` in this second or the last whole one.
    pub(crate) fn reached(&mut self, unix: u64, limit: u32) -> bool {
        self.roll(unix);
        self.this.max(self.last) >= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jar() -> CookieJar {
        CookieJar::new(Key([7; 32]))
    }

    #[test]
    fn a_cookie_checks_for_its_address_within_its_lifetime_only() {
        let jar = jar();
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let cookie = jar.issue(a, 1_000);
        assert_eq!(jar.check(a, &cookie, 1_000), Ok(()));
        assert_eq!(
            jar.check(a, &cookie, 1_000 + COOKIE_LIFETIME_SECONDS),
            Ok(())
        );
        assert_eq!(
            jar.check(a, &cookie, 1_001 + COOKIE_LIFETIME_SECONDS),
            Err(CookieError::Stale)
        );
        // From the future (a clock set back, or a forged second).
        assert_eq!(jar.check(a, &cookie, 999), Err(CookieError::Stale));
        for other in [
            "192.0.2.1:5001",
            "192.0.2.2:5000",
            "[::ffff:192.0.2.1]:5001",
        ] {
            let other: SocketAddr = other.parse().unwrap();
            assert_eq!(
                jar.check(other, &cookie, 1_000),
                Err(CookieError::Forged),
                "{other}"
            );
        }
        // Another server's key, and every single-bit change, are refused.
        let theirs = CookieJar::new(Key([8; 32]));
        assert_eq!(theirs.check(a, &cookie, 1_000), Err(CookieError::Forged));
        for byte in 4..COOKIE_BYTES {
            let mut bent = cookie;
            bent[byte] ^= 1;
            assert_eq!(jar.check(a, &bent, 1_000), Err(CookieError::Forged));
        }
        // A second moved into the lifetime does not carry the MAC with it.
        let mut moved = cookie;
        moved[..4].copy_from_slice(&1_001u32.to_le_bytes());
        assert_eq!(jar.check(a, &moved, 1_001), Err(CookieError::Forged));
    }

    #[test]
    fn ipv6_addresses_have_their_own_cookies() {
        let jar = jar();
        let a: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let b: SocketAddr = "[2001:db8::2]:4000".parse().unwrap();
        let cookie = jar.issue(a, 50);
        assert_eq!(jar.check(a, &cookie, 55), Ok(()));
        assert_eq!(jar.check(b, &cookie, 55), Err(CookieError::Forged));
        assert_ne!(jar.issue(a, 50), jar.issue(b, 50));
        assert_ne!(jar.issue(a, 50), jar.issue(a, 51));
    }

    #[test]
    fn packets_round_trip_and_nothing_else_reads_as_one() {
        let cookie = jar().issue("10.0.0.1:1".parse().unwrap(), 3);
        let mut out = [0u8; 64];
        let n = write_packet(&cookie, &mut out);
        assert_eq!(n, COOKIE_PACKET_BYTES);
        assert_eq!(read_packet(&out[..n]), Some(cookie));
        assert_eq!(read_packet(&out[..n - 1]), None);
        assert_eq!(read_packet(&out[..n + 1]), None);
        out[0] = 7;
        assert_eq!(read_packet(&out[..n]), None);
    }

    #[test]
    fn the_reply_budget_holds_a_tenth_of_a_second_and_refills_at_its_rate() {
        let start = Instant::now();
        let mut budget = ReplyBudget::new(100, start);
        let taken = (0..50).filter(|_| budget.take(start)).count();
        assert_eq!(taken, 10);
        // 50 ms later, five more.
        let later = start + std::time::Duration::from_millis(50);
        assert_eq!((0..50).filter(|_| budget.take(later)).count(), 5);
        // A rate under ten still allows one.
        let mut slow = ReplyBudget::new(1, start);
        assert!(slow.take(start));
        assert!(!slow.take(start));
    }

    #[test]
    fn the_open_rate_looks_at_this_second_and_the_last() {
        let mut rate = OpenRate::default();
        for _ in 0..5 {
            rate.count(100);
        }
        assert!(rate.reached(100, 5));
        assert!(!rate.reached(100, 6));
        // The next second still sees the last one's five.
        assert!(rate.reached(101, 5));
        // Two seconds on, nothing.
        assert!(!rate.reached(103, 1));
    }
}

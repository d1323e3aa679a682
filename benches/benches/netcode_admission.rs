//! What a connection request costs a netcode server before and at the crypto: a request
//! answered with an address cookie (its MAC made), one whose cookie checks out (the MAC again,
//! then its token opened: here under the wrong key, the forged request a flood sends), and the
//! same forged request on a server without cookies (only the opening). The difference is what
//! cookies save per spoofed request once a server asks for them.
//!
//! `cargo bench -p coring-benches --bench netcode_admission`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coring_protocols::netcode::{
    COOKIE_PACKET_BYTES, Cookies, Key, MAX_PACKET_BYTES, REQUEST_BYTES, RateLimit, Server,
    ServerConfig, TokenIssuer, TokenRequest, write_request,
};
use criterion::{Criterion, criterion_group, criterion_main};

const PROTOCOL: u64 = 0x0123_4567_89ab_cdef;
const UNIX: u64 = 1_800_000_000;

fn server(cookies: Cookies, now: Instant) -> Server {
    let mut config = ServerConfig::new(PROTOCOL, Key([1; 32]));
    config.cookies = cookies;
    // The bench sends from one address: no bucket may hold it back.
    config.rate_limit = RateLimit {
        burst: u32::MAX,
        per_second: u32::MAX,
        sources: 64,
    };
    Server::new(config, now, Duration::from_secs(UNIX))
}

/// A request whose token was sealed under another key: it reaches the decryption and fails.
fn forged_request(to: SocketAddr) -> Vec<u8> {
    let token = TokenIssuer::new(PROTOCOL, Key([2; 32]))
        .issue(
            UNIX,
            &TokenRequest {
                client_id: 1,
                server_addresses: &[to],
                expire_seconds: 60,
                timeout_seconds: 5,
                user_data: None,
            },
        )
        .expect("token");
    let mut request = vec![0u8; REQUEST_BYTES];
    write_request(&token, &mut request);
    request
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let from: SocketAddr = "192.0.2.7:4000".parse().expect("addr");
    let to: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
    let request = forged_request(to);
    let mut out = vec![0u8; MAX_PACKET_BYTES];
    let mut group = c.benchmark_group("netcode_request");

    let mut asking = server(Cookies::Always, now);
    let mut bytes = request.clone();
    group.bench_function("answered_with_a_cookie", |b| {
        b.iter(|| {
            bytes.copy_from_slice(&request);
            asking.handle_datagram(now, from, &mut bytes);
            let t = asking.poll_transmit(now, &mut out).expect("a cookie");
            assert_eq!(t.len, COOKIE_PACKET_BYTES);
        })
    });

    // The cookie that server made for `from`, after the request: checked, then the token opened.
    let mut with_cookie = request.clone();
    with_cookie.extend_from_slice(&out[1..COOKIE_PACKET_BYTES]);
    let mut bytes = with_cookie.clone();
    group.bench_function("cookie_checked_then_token_opened", |b| {
        b.iter(|| {
            bytes.copy_from_slice(&with_cookie);
            asking.handle_datagram(now, from, &mut bytes);
            assert!(asking.poll_transmit(now, &mut out).is_none());
        })
    });

    let mut plain = server(Cookies::Off, now);
    let mut bytes = request.clone();
    group.bench_function("token_opened_without_cookies", |b| {
        b.iter(|| {
            bytes.copy_from_slice(&request);
            plain.handle_datagram(now, from, &mut bytes);
        })
    });
    group.finish();
    assert!(plain.stats().drops.total() > 0 && asking.stats().cookies_sent > 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);

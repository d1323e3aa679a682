//! The resolver against a real dnsmasq on loopback (IPv4 and IPv6): A and AAAA at once,
//! aliases, missing names and names without the family asked, the search list, answers kept
//! for their TTL and asked again after it, a truncated answer asked again over TCP, servers
//! that stay silent, refuse or send strays passed over for the next, a whole lookup timing out,
//! resolv.conf and hosts files read from disk; then the HTTP client and connect-by-name
//! reaching a server by name, an IPv6 address that refuses falling back to IPv4.
#![cfg(target_os = "linux")]

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdp};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coring_tests::dnsmasq::{Dnsmasq, free_port};

use coring_protocols::client::{Client, ClientConfig};
use coring_protocols::dns::{self, Config, Family, ResolveError, Resolver, Source};
use coring_protocols::http1::Response;
use coring_protocols::serve::{self, Router};

/// 120 addresses for one name: more than a 1,232-byte datagram holds.
fn many_hosts() -> String {
    (0..120)
        .map(|i| format!("10.9.{}.{} many.test\n", i / 200, i % 200 + 1))
        .collect()
}

const RECORDS: &[&str] = &[
    "--host-record=alpha.test,10.1.2.3,fd00::3,600",
    "--host-record=v4only.test,10.1.2.4,600",
    "--host-record=short.test,10.2.0.1,1",
    "--host-record=api.test,127.0.0.1,600",
    "--host-record=dual.test,127.0.0.1,::1,600",
    "--cname=www.test,alpha.test",
    // Names under test. are answered here (NXDOMAIN when missing), never refused.
    "--local=/test/",
    // A bare name answered here too (NXDOMAIN), not refused for want of an upstream.
    "--local=/nothing/",
];

fn config(servers: impl IntoIterator<Item = SocketAddr>) -> Config {
    Config {
        timeout: Duration::from_millis(500),
        ..Config::with_nameservers(servers)
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[coring::test]
async fn names_aliases_and_missing_names_over_both_families() {
    let dnsmasq = Dnsmasq::start(RECORDS, &many_hosts());
    for server in [dnsmasq.v4(), dnsmasq.v6()] {
        let resolver = Resolver::new(config([server]));
        let both = resolver.lookup_ip("alpha.test").await.unwrap();
        assert_eq!(both.addrs, [ip("fd00::3"), ip("10.1.2.3")], "IPv6 first");
        assert_eq!(both.canonical, "alpha.test");
        assert_eq!(both.source, Source::Network);
        assert!(both.valid_until.is_some());

        let alias = resolver.lookup_ip("WWW.test.").await.unwrap();
        assert_eq!(alias.addrs, both.addrs);
        assert_eq!(
            alias.canonical, "alpha.test",
            "the alias is followed to its name"
        );

        let v4 = resolver.lookup("alpha.test", Family::V4).await.unwrap();
        assert_eq!(v4.addrs, [ip("10.1.2.3")]);
        assert_eq!(v4.source, Source::Cache, "kept from the first lookup");

        assert_eq!(
            resolver.lookup_ip("missing.test").await,
            Err(ResolveError::NotFound {
                name: "missing.test".into()
            })
        );
        assert_eq!(
            resolver.lookup("v4only.test", Family::V6).await,
            Err(ResolveError::NoAddresses {
                name: "v4only.test".into()
            })
        );
        assert_eq!(
            resolver.lookup_ip("v4only.test").await.unwrap().addrs,
            [ip("10.1.2.4")],
            "one family's absence does not hide the other"
        );
        assert!(matches!(
            resolver.lookup_ip("bad..name").await,
            Err(ResolveError::InvalidName(_))
        ));
        let literal = resolver.lookup_ip("[::1]").await.unwrap();
        assert_eq!(
            (literal.addrs, literal.source),
            (vec![ip("::1")], Source::Literal)
        );
        let stats = resolver.stats();
        assert_eq!(stats.timeouts, 0);
        assert_eq!(stats.ignored, 0);
    }
}

#[coring::test]
async fn answers_are_kept_for_their_ttl_then_asked_again() {
    let dnsmasq = Dnsmasq::start(RECORDS, &many_hosts());
    let resolver = Resolver::new(config([dnsmasq.v4()]));
    for _ in 0..3 {
        let long = resolver.lookup("alpha.test", Family::V4).await.unwrap();
        assert_eq!(long.addrs, [ip("10.1.2.3")]);
        let short = resolver.lookup("short.test", Family::V4).await.unwrap();
        assert_eq!(short.addrs, [ip("10.2.0.1")]);
    }
    assert_eq!(dnsmasq.queries("A", "alpha.test"), 1);
    assert_eq!(dnsmasq.queries("A", "short.test"), 1);
    assert_eq!(resolver.stats().cache_hits, 4);

    // short.test's TTL is one second: after it, the server is asked again; alpha.test's 600
    // seconds still hold.
    coring::time::sleep(Duration::from_millis(1100)).await;
    let short = resolver.lookup("short.test", Family::V4).await.unwrap();
    assert_eq!(short.source, Source::Network);
    let long = resolver.lookup("alpha.test", Family::V4).await.unwrap();
    assert_eq!(long.source, Source::Cache);
    assert_eq!(dnsmasq.queries("A", "short.test"), 2);
    assert_eq!(dnsmasq.queries("A", "alpha.test"), 1);

    resolver.clear_cache();
    resolver.lookup("alpha.test", Family::V4).await.unwrap();
    assert_eq!(
        dnsmasq.queries("A", "alpha.test"),
        2,
        "a cleared cache asks again"
    );
}

#[coring::test]
async fn a_truncated_answer_is_asked_again_over_tcp() {
    let dnsmasq = Dnsmasq::start(RECORDS, &many_hosts());
    for payload in [1232, 0] {
        let resolver = Resolver::new(Config {
            udp_payload: payload,
            ..config([dnsmasq.v4()])
        });
        let many = resolver.lookup("many.test", Family::V4).await.unwrap();
        assert_eq!(many.addrs.len(), 120, "every address, from the TCP answer");
        let stats = resolver.stats();
        assert_eq!(
            (stats.udp_queries, stats.truncated, stats.tcp_queries),
            (1, 1, 1)
        );
    }
    let tcp_only = Resolver::new(Config {
        tcp_only: true,
        ..config([dnsmasq.v6()])
    });
    let alpha = tcp_only.lookup_ip("alpha.test").await.unwrap();
    assert_eq!(alpha.addrs.len(), 2);
    let stats = tcp_only.stats();
    assert_eq!((stats.udp_queries, stats.tcp_queries), (0, 2));
}

#[coring::test]
async fn the_search_list_and_ndots_pick_the_names_tried() {
    let dnsmasq = Dnsmasq::start(RECORDS, &many_hosts());
    let resolver = Resolver::new(Config {
        search: vec!["nowhere.test".into(), "test".into()],
        ..config([dnsmasq.v4()])
    });
    let found = resolver.lookup("alpha", Family::V4).await.unwrap();
    assert_eq!(found.addrs, [ip("10.1.2.3")]);
    assert_eq!(found.canonical, "alpha.test");
    assert_eq!(dnsmasq.queries("A", "alpha.nowhere.test"), 1);
    assert_eq!(dnsmasq.queries("A", "alpha.test"), 1);
    assert_eq!(
        dnsmasq.queries("A", "alpha"),
        0,
        "found before the bare name"
    );

    // With a dot (ndots 1) the name is tried as it is first.
    let found = resolver.lookup("www.test", Family::V4).await.unwrap();
    assert_eq!(found.canonical, "alpha.test");
    assert_eq!(dnsmasq.queries("A", "www.test.nowhere.test"), 0);
    assert_eq!(
        resolver.lookup("nothing", Family::V4).await,
        Err(ResolveError::NotFound {
            name: "nothing".into()
        })
    );
    assert_eq!(dnsmasq.queries("A", "nothing.test"), 1);
}

/// A UDP "server" on loopback that counts the queries it gets and answers each with what
/// `strays` makes of it (never a real answer).
fn udp_peer(strays: fn(&[u8]) -> Vec<Vec<u8>>) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = StdUdp::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            counter.fetch_add(1, Ordering::SeqCst);
            for stray in strays(&buf[..n]) {
                let _ = socket.send_to(&stray, from);
            }
        }
    });
    (addr, seen)
}

/// Garbage, the query's id on another question, and another id on the right question.
fn hostile_server() -> (SocketAddr, Arc<AtomicUsize>) {
    udp_peer(|query| {
        // Our id, QR set, but the question rewritten to another name of the same length.
        let mut other_question = query.to_vec();
        other_question[2] |= 0x80;
        if let Some(b) = other_question.get_mut(13) {
            *b = b.wrapping_add(1);
        }
        // The right question, QR set, another id.
        let mut other_id = query.to_vec();
        other_id[2] |= 0x80;
        other_id[0] ^= 0x5a;
        vec![
            b"\x00\x01 not dns at all".to_vec(),
            other_question,
            other_id,
        ]
    })
}

/// Reads and never answers.
fn silent_server() -> (SocketAddr, Arc<AtomicUsize>) {
    udp_peer(|_| Vec::new())
}

#[coring::test]
async fn silent_refusing_and_stray_sending_servers_are_passed_over() {
    let dnsmasq = Dnsmasq::start(RECORDS, &many_hosts());
    let (hostile, hostile_seen) = hostile_server();
    let resolver = Resolver::new(Config {
        timeout: Duration::from_millis(300),
        ..config([hostile, dnsmasq.v4()])
    });
    let found = resolver.lookup("alpha.test", Family::V4).await.unwrap();
    assert_eq!(found.addrs, [ip("10.1.2.3")]);
    let stats = resolver.stats();
    assert_eq!(hostile_seen.load(Ordering::SeqCst), 1);
    assert_eq!(
        stats.ignored, 3,
        "garbage, another question, another id: {stats:?}"
    );
    assert_eq!(stats.timeouts, 1);

    // A dnsmasq with no records and no upstream answers REFUSED: the next server is asked.
    let refusing = Dnsmasq::start(&[], "");
    let refusing_addr = SocketAddr::from(([127, 0, 0, 1], refusing.port()));
    let resolver = Resolver::new(config([refusing_addr, dnsmasq.v4()]));
    let found = resolver.lookup("short.test", Family::V4).await.unwrap();
    assert_eq!(found.addrs, [ip("10.2.0.1")]);
    assert_eq!(resolver.stats().server_failures, 1);
    let alone = Resolver::new(Config {
        attempts: 1,
        ..config([refusing_addr])
    });
    match alone.lookup("uncached.example", Family::V4).await {
        Err(ResolveError::ServerFailure { server, code, .. }) => {
            assert_eq!(server, refusing_addr);
            assert_eq!(code, "Query Refused");
        }
        other => panic!("expected REFUSED, got {other:?}"),
    }

    // Nobody answers: every server, every attempt, then TimedOut.
    let (silent_a, seen_a) = silent_server();
    let (silent_b, seen_b) = silent_server();
    let resolver = Resolver::new(Config {
        timeout: Duration::from_millis(100),
        attempts: 2,
        ..config([silent_a, silent_b])
    });
    let started = Instant::now();
    assert_eq!(
        resolver.lookup("alpha.test", Family::V4).await,
        Err(ResolveError::TimedOut {
            name: "alpha.test".into(),
            queries: 4
        })
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        (seen_a.load(Ordering::SeqCst), seen_b.load(Ordering::SeqCst)),
        (2, 2)
    );

    // A port nothing listens on refuses at once (ICMP), without waiting for the timeout.
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let resolver = Resolver::new(Config {
        timeout: Duration::from_secs(5),
        attempts: 1,
        ..config([closed, dnsmasq.v4()])
    });
    let started = Instant::now();
    assert_eq!(
        resolver
            .lookup("alpha.test", Family::V4)
            .await
            .unwrap()
            .addrs,
        [ip("10.1.2.3")]
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the refusal was not waited out"
    );
}

#[coring::test]
async fn resolv_conf_and_hosts_files_are_read_from_disk() {
    let dnsmasq = Dnsmasq::start(RECORDS, &many_hosts());
    let dir = std::env::temp_dir().join(format!("coring-dns-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv = dir.join("resolv.conf");
    let hosts = dir.join("hosts");
    std::fs::write(
        &resolv,
        "# test\nnameserver 127.0.0.1\nsearch test\noptions ndots:1 timeout:1 attempts:1\n",
    )
    .unwrap();
    std::fs::write(
        &hosts,
        "192.0.2.7 pinned.test pinned\n2001:db8::7 pinned.test\n",
    )
    .unwrap();
    let mut config = Config::from_files(&resolv, Some(&hosts)).unwrap();
    assert_eq!(config.timeout, Duration::from_secs(1));
    assert_eq!(config.attempts, 1);
    // resolv.conf has no port: point its server at dnsmasq's.
    config.nameservers[0].set_port(dnsmasq.port());
    let resolver = Resolver::new(config);
    let pinned = resolver.lookup_ip("pinned.TEST.").await.unwrap();
    assert_eq!(pinned.source, Source::Hosts);
    assert_eq!(pinned.addrs, [ip("2001:db8::7"), ip("192.0.2.7")]);
    let alias = resolver.lookup_ip("PINNED").await.unwrap();
    assert_eq!(
        alias.addrs,
        [ip("192.0.2.7")],
        "the alias is listed on one line only"
    );
    assert_eq!(dnsmasq.queries("A", "pinned.test"), 0);
    let alpha = resolver.lookup_ip("alpha").await.unwrap();
    assert_eq!(alpha.canonical, "alpha.test");
    std::fs::remove_dir_all(&dir).unwrap();

    // The core's own resolver reads the system's files; localhost is in every hosts file.
    let system = Resolver::system().unwrap();
    let local = system.lookup_ip("localhost").await.unwrap();
    assert_eq!(local.source, Source::Hosts);
    assert!(local.addrs.contains(&ip("127.0.0.1")), "{local:?}");
}

#[coring::test]
fn the_http_client_and_connect_by_name_reach_servers_by_name() {
    let dnsmasq = Dnsmasq::start(RECORDS, &many_hosts());
    let server = coring_tests::serve(serve::Config::default(), || {
        Router::new().route("GET", "/hello", |_r, _p| async {
            Response::new(200).body("hello by name")
        })
    });
    let port = server.addr.port();
    let (v4, v6) = (dnsmasq.v4(), dnsmasq.v6());
    coring::block_on(async move {
        let resolver = Resolver::new(config([v6, v4]));
        let client = Client::new(ClientConfig {
            resolver: Some(resolver.clone()),
            ..ClientConfig::default()
        });
        let response = client
            .get(&format!("http://api.test:{port}/hello"))
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(&response.body[..], b"hello by name");
        assert!(resolver.stats().udp_queries >= 1);

        let missing = client.get(&format!("http://missing.test:{port}/")).await;
        assert!(
            matches!(
                &missing,
                Err(coring_protocols::client::ClientError::Resolve(
                    ResolveError::NotFound { .. }
                ))
            ),
            "{missing:?}"
        );

        // dual.test is ::1 then 127.0.0.1; the server listens on IPv4 only, so the IPv6
        // attempt is refused and the IPv4 one connects.
        let stream = dns::connect_with(Some(&resolver), "dual.test", port, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), server.addr);
        // Both of dual.test's addresses refuse a closed port: the last refusal is the error.
        let closed = free_port();
        let refused =
            dns::connect_with(Some(&resolver), "dual.test", closed, Duration::from_secs(5)).await;
        match refused {
            Err(dns::ConnectError::Connect(e)) => {
                assert_eq!(e.kind(), coring::ErrorKind::ConnectionRefused, "{e}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    });
}

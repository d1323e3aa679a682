//! A coring listener that reads the PROXY protocol, over real sockets on both drivers: the
//! header's client reaches every request, bytes sent with the header are served after it, a
//! header may come in pieces, `LOCAL` keeps the real peer, and a slow, cut-short, oversized,
//! missing or untrusted header closes the connection, counted by reason, while the listener
//! goes on serving. (The same against a real HAProxy: `proxy_protocol.rs`.)

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coring_protocols::cidr::Cidr;
use coring_protocols::http1::{Request, Response};
use coring_protocols::proxy;
use coring_protocols::serve::{Config, ProxyProtocol, proxy_counters};
use coring_tests::{TestServer, exchange, serve};

/// Answers every request with the client address it carries.
fn whoami(trusted: &str, proxy: bool) -> TestServer {
    let config = Config {
        client_addr: true,
        proxy_protocol: proxy.then(|| ProxyProtocol {
            timeout: Duration::from_millis(300),
            ..ProxyProtocol::trusting(vec![trusted.parse::<Cidr>().unwrap()])
        }),
        ..Config::default()
    };
    serve(config, || {
        |req: Request| async move {
            let client = req
                .client_addr()
                .map_or("none".to_owned(), |a| a.to_string());
            Response::new(200).body(client)
        }
    })
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
const GET_LAST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// The bodies of the answers in `text`, in order.
fn bodies(text: &str) -> Vec<String> {
    text.split("HTTP/1.1 ")
        .skip(1)
        .map(|answer| answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
        .collect()
}

/// Sends `raw` and expects the connection to end (closed, or reset where the server dropped
/// bytes it never read) without an answer.
fn refused(addr: SocketAddr, raw: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may close before it all arrives.
    let _ = s.write_all(raw);
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "{raw:?}: {e}"
        ),
    }
    assert!(
        got.is_empty(),
        "{raw:?}: {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// How much a counter grows while `f` runs.
fn growth(counter: &AtomicU64, f: impl FnOnce()) -> u64 {
    let before = counter.load(Ordering::Relaxed);
    f();
    counter.load(Ordering::Relaxed) - before
}

#[coring::test]
fn the_header_names_the_client_of_every_request_after_it() {
    let server = whoami("127.0.0.1/32", true);
    // Version 1, with two pipelined requests in the same write as the header.
    let mut raw = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n".to_vec();
    raw.extend_from_slice(GET);
    raw.extend_from_slice(GET_LAST);
    let (text, closed) = exchange(server.addr, &raw, Duration::from_secs(5));
    assert!(closed, "{text}");
    assert_eq!(
        bodies(&text),
        ["192.0.2.7:56324", "192.0.2.7:56324"],
        "{text}"
    );

    // Version 2 over IPv6, one byte a write.
    let client: SocketAddr = "[2001:db8::9]:4000".parse().unwrap();
    let mut header = Vec::new();
    proxy::encode_v2(Some((client, "[::1]:80".parse().unwrap())), &mut header);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for byte in &header {
        s.write_all(std::slice::from_ref(byte)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    s.write_all(GET_LAST).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert_eq!(bodies(&text), [client.to_string()], "{text}");

    // LOCAL (the balancer's own connection): the real peer stands.
    let mut s = TcpStream::connect(server.addr).unwrap();
    let me = s.local_addr().unwrap();
    let mut raw = Vec::new();
    proxy::encode_v2(None, &mut raw);
    raw.extend_from_slice(GET_LAST);
    s.write_all(&raw).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert_eq!(bodies(&text), [me.to_string()], "{text}");
}

#[coring::test]
fn bad_headers_are_closed_and_counted_and_the_listener_carries_on() {
    let server = whoami("127.0.0.1/32", true);
    let counters = proxy_counters();
    let closed_without_answer = |raw: &[u8]| refused(server.addr, raw);
    assert!(growth(&counters.missing, || closed_without_answer(GET)) >= 1);
    assert!(
        growth(&counters.malformed, || {
            closed_without_answer(b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 443\r\nGET /");
            // A version 2 header whose length is over the listener's 1 KiB.
            let mut long = proxy::V2_SIGNATURE.to_vec();
            long.extend_from_slice(&[0x21, 0x11, 0x08, 0x00]);
            closed_without_answer(&long);
        }) >= 2
    );
    // Half a header, then our end closes.
    assert!(
        growth(&counters.cut_short, || {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"PROXY TCP4 192.0.2.7").unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
        }) >= 1
    );
    // Half a header, then nothing: closed once the header's 300 ms are up.
    assert!(
        growth(&counters.timed_out, || {
            let started = Instant::now();
            refused(server.addr, b"PROXY TCP4 192.0.2.7");
            assert!(started.elapsed() >= Duration::from_millis(250));
        }) >= 1
    );
    // Still serving.
    let (text, _) = exchange(
        server.addr,
        &[&b"PROXY TCP4 192.0.2.8 192.0.2.1 1 80\r\n"[..], GET_LAST].concat(),
        Duration::from_secs(5),
    );
    assert_eq!(bodies(&text), ["192.0.2.8:1"], "{text}");
}

#[coring::test]
fn a_peer_outside_the_trusted_list_is_closed_before_its_header_is_read() {
    let server = whoami("10.0.0.0/8", true);
    let grew = growth(&proxy_counters().untrusted, || {
        let raw = [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"[..],
            GET_LAST,
        ]
        .concat();
        refused(server.addr, &raw);
    });
    assert!(grew >= 1);
}

#[coring::test]
fn without_a_proxy_listener_the_client_is_the_peer() {
    let server = whoami("127.0.0.1/32", false);
    let mut s = TcpStream::connect(server.addr).unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(GET_LAST).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert_eq!(bodies(&text), [me.to_string()], "{text}");
}

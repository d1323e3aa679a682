//! The PROXY protocol behind a real HAProxy: the `whoami` example reports the address HAProxy
//! saw its client connect from, over `send-proxy` (v1) and `send-proxy-v2`, for IPv4 and IPv6
//! clients and for several requests on one kept-alive connection; a peer outside the trusted
//! list, a connection without a header and a malformed one are closed and counted while the
//! balancer's clients keep being served; the same over TLS, the header in the clear before the
//! handshake (HAProxy in TCP mode relaying curl's TLS). (`LOCAL` headers are covered by `proxy_listener.rs`:
//! HAProxy's health checks did not send them reliably enough to test on.)
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coring_tests::{Example, connect_from};

/// HAProxy in the foreground with a configuration of its own; killed when dropped.
struct Haproxy {
    child: Child,
    dir: std::path::PathBuf,
}

impl Haproxy {
    /// Frontends on `fronts` (address, backend server line) relaying in TCP mode.
    fn start(fronts: &[(SocketAddr, String)]) -> Haproxy {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("coring-haproxy-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = String::from(
            "global\n  maxconn 256\ndefaults\n  mode tcp\n  timeout connect 2s\n  \
             timeout client 20s\n  timeout server 20s\n",
        );
        for (i, (addr, server)) in fronts.iter().enumerate() {
            config.push_str(&format!(
                "frontend f{i}\n  bind {addr}\n  default_backend b{i}\nbackend b{i}\n  server s{i} {server}\n"
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (the Debian package; .ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        for (addr, _) in fronts {
            while TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "haproxy did not listen on {addr}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Haproxy { child, dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback address nothing listens on yet.
fn free(ip: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    l.local_addr().unwrap()
}

/// Sends `GET path` and reads one answer: its status and body. `None` if the connection
/// closed without one.
fn get(stream: &mut TcpStream, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: whoami\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("a Content-Length");
            if got.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).to_string();
                return Some((status, body));
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A signal landing on this thread is not the server's doing.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn stats(stream: &mut TcpStream) -> HashMap<String, u64> {
    let (status, body) = get(stream, "/stats").expect("stats answered");
    assert_eq!(status, 200);
    body.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn whoami_behind_haproxy_reports_the_address_haproxy_saw() {
    let whoami = Example::start(
        "whoami",
        ["--cores", "2", "--proxy-protocol", "127.0.0.1/32"],
    );
    let backend = whoami.addr();
    let (v2, v1) = (free("127.0.0.1"), free("127.0.0.1"));
    let mut fronts = vec![
        (v2, format!("{backend} send-proxy-v2")),
        (v1, format!("{backend} send-proxy")),
    ];
    let v6 = ipv6_loopback().then(|| free("::1"));
    if let Some(v6) = v6 {
        fronts.push((v6, format!("{backend} send-proxy-v2")));
    }
    let _haproxy = Haproxy::start(&fronts);

    // Clients from addresses other than HAProxy's own: what whoami answers is the client's
    // address and port as HAProxy saw them, not HAProxy's.
    for front in [v2, v1] {
        for source in ["127.0.0.2", "127.0.0.3"] {
            let mut client = connect_from(SocketAddr::new(source.parse().unwrap(), 0), front);
            let me = client.local_addr().unwrap();
            for _ in 0..3 {
                let (status, body) = get(&mut client, "/").expect("an answer through haproxy");
                assert_eq!(status, 200, "{body}");
                assert_eq!(body.trim(), me.to_string(), "through {front}");
            }
        }
    }
    if let Some(v6) = v6 {
        let mut client = connect_from("[::1]:0".parse().unwrap(), v6);
        let me = client.local_addr().unwrap();
        let (_, body) = get(&mut client, "/").expect("an answer over IPv6");
        assert_eq!(body.trim(), me.to_string());
    }

    // Straight to whoami: from an untrusted peer, and from a trusted one without a header.
    let mut untrusted = connect_from("127.0.0.2:0".parse().unwrap(), backend);
    assert_eq!(
        get(&mut untrusted, "/"),
        None,
        "an untrusted peer is closed"
    );
    let mut bare = connect_from("127.0.0.1:0".parse().unwrap(), backend);
    assert_eq!(
        get(&mut bare, "/"),
        None,
        "a connection without a header is closed"
    );
    // A malformed header from a trusted peer.
    let mut bad = connect_from("127.0.0.1:0".parse().unwrap(), backend);
    bad.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 0123 80\r\n")
        .unwrap();
    assert_eq!(get(&mut bad, "/"), None, "a malformed header is closed");

    // The balancer's clients are still served, and the refusals were counted by reason.
    let mut client = connect_from("127.0.0.4:0".parse().unwrap(), v2);
    let counts = stats(&mut client);
    assert_eq!(counts["untrusted"], 1, "{counts:?}");
    assert_eq!(counts["missing"], 1, "{counts:?}");
    assert_eq!(counts["malformed"], 1, "{counts:?}");
    // Every connection HAProxy relayed, this one included (and the start-up probes, when
    // HAProxy reached the server before they closed).
    let relayed = 2 * 2 + u64::from(v6.is_some()) + 1;
    assert!(counts["accepted"] >= relayed, "{counts:?}");
    let (_, body) = get(&mut client, "/").unwrap();
    assert_eq!(body.trim(), client.local_addr().unwrap().to_string());
}

/// TLS behind HAProxy in TCP mode with `send-proxy-v2`: the header comes in the clear before
/// the handshake, and curl, through HAProxy, is told the address HAProxy saw it come from.
#[test]
fn whoami_over_tls_behind_haproxy_reports_the_address_haproxy_saw() {
    let dir = std::env::temp_dir().join(format!("coring-proxy-tls-{}", std::process::id()));
    let pem = coring_tests::pki::SelfSigned::write(&dir, &["localhost"]);
    let (cert_path, key_path) = (pem.cert_path, pem.key_path);
    let whoami = Example::start(
        "whoami",
        [
            "--cores".as_ref(),
            "2".as_ref(),
            "--proxy-protocol".as_ref(),
            "127.0.0.1/32".as_ref(),
            "--tls-cert".as_ref(),
            cert_path.as_os_str(),
            "--tls-key".as_ref(),
            key_path.as_os_str(),
        ],
    );
    let backend = whoami.addr();
    let front = free("127.0.0.1");
    let _haproxy = Haproxy::start(&[(front, format!("{backend} send-proxy-v2"))]);
    let curl = |source: &str, to: SocketAddr| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&cert_path)
            .args(["--interface", source, "--resolve"])
            .arg(format!("localhost:{}:{}", to.port(), to.ip()))
            .arg(format!("https://localhost:{}/", to.port()))
            .output()
            .expect("curl")
    };
    for source in ["127.0.0.2", "127.0.0.3"] {
        let out = curl(source, front);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "curl through haproxy: {out:?}");
        let (ip, port) = body.trim().rsplit_once(':').expect("HOST:PORT");
        assert_eq!(ip, source, "{body}");
        assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{body}");
    }
    // Straight to whoami, from a trusted address but without a header: the ClientHello is not
    // a PROXY header, and the connection is closed.
    let out = curl("127.0.0.1", backend);
    assert!(
        !out.status.success(),
        "a TLS client without a header is refused"
    );
    // HAProxy's clients are still served.
    let out = curl("127.0.0.4", front);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("127.0.0.4:"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

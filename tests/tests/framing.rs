//! The framing codecs on engine streams against peers that are not ours, both drivers:
//! line framing over TCP against `redis-server` (RESP's inline commands and replies, one
//! request and a pipelined hundred), length-prefixed frames over a Unix stream against a
//! Python peer (`struct.pack(">I")`, frames of 0 bytes to 1 MiB, an oversized announcement
//! refused before it is buffered), and lines over TLS against `openssl s_server -rev`.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring::net::{TcpStream, UnixStream};
use coring_protocols::framed::{Framed, FramedError};
use coring_protocols::framing::{FrameError, LengthPrefixed, Lines, Prefix};

/// A child process killed and waited for when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `addr`.
fn listening(addr: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < until, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[coring::test]
fn lines_against_redis() {
    let port = free_port();
    let _redis = Peer(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (the Debian package; .ci/run installs it)"),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    listening(addr);
    coring::block_on(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut redis = Framed::new(stream, Lines::new(512).crlf());
        redis.send("PING").await.unwrap();
        assert_eq!(redis.next().await.unwrap().unwrap(), "+PONG");
        redis.send("SET greeting hello").await.unwrap();
        assert_eq!(redis.next().await.unwrap().unwrap(), "+OK");
        redis.send("GET greeting").await.unwrap();
        assert_eq!(redis.next().await.unwrap().unwrap(), "$5");
        assert_eq!(redis.next().await.unwrap().unwrap(), "hello");
        // A hundred commands in one write; the replies come in order, however they are cut.
        for _ in 0..100 {
            redis.feed("INCR counter").unwrap();
        }
        redis.flush().await.unwrap();
        for n in 1..=100 {
            assert_eq!(redis.next().await.unwrap().unwrap(), format!(":{n}"));
        }
        redis.send("QUIT").await.unwrap();
        assert_eq!(redis.next().await.unwrap().unwrap(), "+OK");
        assert_eq!(redis.next().await.unwrap(), None, "closed between lines");
    });
}

/// Answers each length-prefixed frame with the same frame reversed; asked `BIG`, announces a
/// frame of 2^31 bytes.
const PYTHON_PEER: &str = r#"
import os, socket, struct, sys
path = sys.argv[1]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(1)
print("ready", flush=True)
conn, _ = server.accept()
def exact(n):
    data = b""
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            return None
        data += more
    return data
while True:
    head = exact(4)
    if head is None:
        break
    (n,) = struct.unpack(">I", head)
    body = exact(n)
    if body == b"BIG":
        conn.sendall(struct.pack(">I", 1 << 31))
        continue
    conn.sendall(struct.pack(">I", len(body)) + body[::-1])
"#;

#[coring::test]
fn length_prefixed_frames_against_a_python_peer() {
    let path = std::env::temp_dir().join(coring::__test::unique("framing.sock"));
    let _ = std::fs::remove_file(&path);
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_PEER])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let _peer = Peer(child);
    let at = path.clone();
    coring::block_on(async move {
        let stream = UnixStream::connect(&at).await.unwrap();
        let mut peer = Framed::new(stream, LengthPrefixed::new(Prefix::U32, 2 << 20));
        let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        for frame in [&b""[..], b"a", b"frames", &big] {
            peer.send(frame).await.unwrap();
            let back = peer.next().await.unwrap().expect("an answer");
            let want: Vec<u8> = frame.iter().rev().copied().collect();
            assert!(
                back[..] == want[..],
                "a frame of {} bytes came back wrong",
                frame.len()
            );
        }
        // 2^31 bytes announced, over the 2 MiB limit: refused on the prefix alone.
        peer.send(b"BIG").await.unwrap();
        match peer.next().await {
            Err(FramedError::Frame(FrameError::TooLong { len, max })) => {
                assert_eq!((len, max), (1 << 31, 2 << 20));
            }
            other => panic!("expected TooLong, got {other:?}"),
        }
    });
    let _ = std::fs::remove_file(&path);
}

#[coring::test]
fn lines_over_tls_against_openssl() {
    use coring_protocols::tls::rustls::pki_types::ServerName;
    use coring_protocols::tls::{self, TlsConnector, rustls};

    let dir = std::env::temp_dir().join(coring::__test::unique("framing-tls"));
    let pem = coring_tests::pki::SelfSigned::write(&dir, &["localhost"]);
    let (cert_path, key_path) = (&pem.cert_path, &pem.key_path);
    let port = free_port();
    let _openssl = Peer(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-rev", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert_path)
            .arg("-key")
            .arg(key_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl"),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // A probe connection is one s_server serves and drops; then ours is next.
    listening(addr);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem.cert.clone()).unwrap();
    let config = Arc::new(tls::client_config(roots).unwrap());
    coring::block_on(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::new(config)
            .connect(name, stream)
            .await
            .unwrap();
        let mut peer = Framed::new(tls, Lines::new(1024));
        for line in ["hello", "coring frames lines over tls", "x"] {
            peer.send(line).await.unwrap();
            let back = peer.next().await.unwrap().expect("a line back");
            let want: String = line.chars().rev().collect();
            assert_eq!(back, want.as_bytes(), "{line:?}");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

//! Graceful shutdown under keep-alive load: a request that reaches an idle connection as the
//! shutdown begins is answered (with `Connection: close`), never met with a bare close.
//! Regression: idle connections closed at once, and about one request per busy connection,
//! written 0.5–3 ms after SIGTERM, got an EOF.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use coring_protocols::http1::Response;
use coring_protocols::serve::{Config, Router};

use coring_tests::serve;

const ROUNDS: usize = 30;
const CONNECTIONS: usize = 20;
const REQUEST: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: h\r\n\r\n";

/// Reads one response head and its 13-byte body; the head, or what came before the end.
fn response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"Hello, World!")) {
        match s.read(&mut buf) {
            // A signal landing on this thread is not the server's doing.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[coring::test]
fn requests_that_reached_the_server_before_shutdown_are_answered() {
    let config = Config {
        // Wide enough for this machine's slowest runs (Wine's) to write within it.
        shutdown_drain: Duration::from_millis(800),
        ..Config::default()
    };
    let mut lost = 0;
    for round in 0..ROUNDS {
        let server = serve(config.clone(), || {
            Router::new().route("GET", "/plaintext", |_req, _p| async {
                Response::new(200).body("Hello, World!")
            })
        });
        let mut conns: Vec<TcpStream> = (0..CONNECTIONS)
            .map(|i| {
                let mut s = TcpStream::connect(server.addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(REQUEST).unwrap();
                let first = response(&mut s);
                assert!(
                    first.starts_with("HTTP/1.1 200 OK"),
                    "round {round}, connection {i}: {first:?}"
                );
                s
            })
            .collect();
        // Every connection is idle now. Half the next requests land in the server's sockets
        // before the shutdown, half just after it began (as a busy client's would).
        let (before, after) = conns.split_at_mut(CONNECTIONS / 2);
        for s in before.iter_mut() {
            s.write_all(REQUEST).unwrap();
        }
        server.begin_shutdown();
        std::thread::sleep(Duration::from_millis(3));
        for s in after.iter_mut() {
            s.write_all(REQUEST).unwrap();
        }
        // Each is answered; whether the answer already says `Connection: close` depends on
        // whether the connection saw the shutdown before the request (under Wine it often
        // does not within 3 ms): the unit tests on the simulated pair pin that part down.
        for s in conns.iter_mut() {
            let second = response(s);
            if !second.starts_with("HTTP/1.1 200 OK") {
                lost += 1;
            }
        }
        drop(conns);
        drop(server);
    }
    assert_eq!(
        lost,
        0,
        "{lost} of {} requests sent as the shutdown began got no answer",
        ROUNDS * CONNECTIONS
    );
}

//! Slowloris: 500 connections trickling header bytes do not keep a normal client from being
//! served, and are closed when the header timeout expires. Its own test binary: it holds
//! 1,000+ descriptors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use coring_protocols::http1::Response;
use coring_protocols::serve::{Config, Router};

use coring_tests::{TestServer, exchange, serve};

fn start(config: Config) -> TestServer {
    serve(config, || {
        Router::new().route("GET", "/plaintext", |_req, _p| async {
            Response::new(200).body("Hello, World!")
        })
    })
}

#[coring::test]
fn slowloris_connections_time_out_while_normal_clients_are_served() {
    coring_tests::fd_limit();
    let server = start(Config {
        header_timeout: Duration::from_millis(1500),
        ..Config::default()
    });
    let addr = server.addr;
    let start = Instant::now();
    let mut slow: Vec<TcpStream> = (0..500)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let head = b"GET /plaintext HTTP/1.1\r\nHost: h\r\nX-Slow: ";
    let (mut served_during, mut attempts) = (0, 0);
    let mut byte = 0;
    while start.elapsed() < Duration::from_secs(4) {
        // Each slow connection sends one more header byte, never the end of the head.
        for s in slow.iter_mut() {
            let b = head.get(byte).copied().unwrap_or(b'a');
            let _ = s.write(&[b]);
        }
        byte += 1;
        let (ok, _) = exchange(
            addr,
            b"GET /plaintext HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        );
        attempts += 1;
        if ok.starts_with("HTTP/1.1 200 OK") {
            served_during += 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Every normal request made during the attack was answered (how many fit in the window
    // depends on how fast this machine writes 500 bytes a round).
    assert!(attempts >= 4, "only {attempts} rounds in 4 s");
    assert_eq!(
        served_during, attempts,
        "normal clients starved: {served_during} of {attempts} answered"
    );
    // The slow ones were closed by the header timeout (reads see end of stream).
    let mut closed = 0;
    for s in slow.iter_mut() {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 16];
        let read = loop {
            match s.read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        if matches!(read, Ok(0)) || s.write(b"x").is_err() {
            closed += 1;
        }
    }
    assert_eq!(closed, 500, "every slow connection was closed");
}

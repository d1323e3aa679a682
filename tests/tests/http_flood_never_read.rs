//! A client that floods pipelined requests and never reads its answers is closed by the write
//! timeout, on every driver, whatever state the server's reads and writes are in (regression:
//! on io_uring such a client was never closed, pinning megabytes of socket memory).

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use coring_protocols::http1::Response;
use coring_protocols::serve::{Config, Router};

use coring_tests::serve;

#[coring::test]
fn flooding_client_that_never_reads_is_closed_by_the_write_timeout() {
    let write_timeout = Duration::from_millis(800);
    let server = serve(
        Config {
            write_timeout,
            idle_timeout: Duration::from_secs(3600),
            header_timeout: Duration::from_secs(3600),
            ..Config::default()
        },
        || {
            Router::new().route("GET", "/plaintext", |_req, _p| async {
                Response::new(200).body("Hello, World!")
            })
        },
    );
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let batch = b"GET /plaintext HTTP/1.1\r\nHost: h\r\n\r\n".repeat(256);
    let start = Instant::now();
    // Write until the server's input and our output are both backed up, then keep trying: a
    // closed connection turns the writes into errors (reset or broken pipe).
    let mut sent = 0usize;
    let ended = loop {
        match s.write(&batch) {
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => break Some(e),
        }
        if start.elapsed() > Duration::from_secs(20) {
            break None;
        }
    };
    let after = start.elapsed();
    eprintln!("sent {sent} bytes; ended {ended:?} after {after:?}");
    assert!(
        ended.is_some(),
        "never closed: {sent} bytes sent in {after:?}"
    );
    assert!(
        sent > 1 << 20,
        "the flood backed up the server: {sent} bytes"
    );
}

//! The HTTP codec alone, for callgrind: `ROUNDS` batches of 16 pipelined TechEmpower requests
//! through `ServerConn` (parsed in place, answered by the suite's handler into one buffer),
//! or (`raw`) through the suite's hand-written loop's responder on the same bytes. No
//! sockets, no runtime: what is left of a server's cost per request once I/O is taken away.
//!
//! `benches/scripts/callgrind-codec` runs it twice under callgrind and prints the difference
//! per request; `cargo run --release -p coring-benches --example codec_count -- coring 1000`.

use std::rc::Rc;
use std::time::Instant;

use coring_protocols::http1::{ServerConfig, ServerConn};

const DATE: &[u8] = b"Sun, 22 Nov 2026 00:00:00 GMT";

/// A received buffer, as the server hands it to the connection.
struct Received(Vec<u8>);

impl AsRef<[u8]> for Received {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "coring".into());
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let mut one = String::from("GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n");
    for (name, value) in coring_benches::suite::TFB_HEADERS {
        one.push_str(&format!("{name}: {value}\r\n"));
    }
    one.push_str("\r\n");
    let input = one.repeat(16).into_bytes();
    let mut out = Vec::with_capacity(64 * 1024);
    let now = Instant::now();
    let mut answered = 0usize;
    match which.as_str() {
        "raw" => {
            for _ in 0..rounds {
                out.clear();
                let input = std::hint::black_box(&input);
                if coring_benches::servers::respond(input, &mut out, None) == Ok(input.len()) {
                    answered += 16;
                }
            }
        }
        _ => {
            let mut conn = ServerConn::new(Rc::new(ServerConfig::default()), now);
            let shared: Rc<dyn AsRef<[u8]>> = Rc::new(Received(input));
            for _ in 0..rounds {
                out.clear();
                conn.handle_shared(Rc::clone(&shared), now);
                while let Some(Ok(req)) = conn.poll_request() {
                    let resp = coring_benches::tfb_response(req.path());
                    conn.respond(&resp, now, DATE, &mut out);
                    answered += 1;
                }
            }
        }
    }
    println!("{which}: {answered} requests answered in {rounds} rounds");
}

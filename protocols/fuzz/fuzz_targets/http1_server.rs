//! The connection the server runs (`ServerConn`), fed the way the server feeds it: each read
//! arrives as a shared buffer (heads parsed in place, pieces carried over into the copy
//! buffer), bodies read whole or pulled in pieces, every request answered before the next.
//! It never panics, and it serves the same requests (or ends with the same error) whatever
//! the read boundaries are and whichever way the reads are handed over.
#![no_main]

use std::rc::Rc;
use std::time::{Duration, Instant};

use coring_protocols::http1::{Response, ServerConfig, ServerConn, Status};
use libfuzzer_sys::fuzz_target;

const DATE: &[u8] = b"Tue, 01 Dec 2026 00:00:00 GMT";

/// What the server learns from a byte stream: each request's method, target, body and
/// keep-alive, then the status of the error that ended the stream, if any.
#[derive(Debug, PartialEq)]
struct Seen {
    requests: Vec<(String, String, Vec<u8>, bool)>,
    error: Option<u16>,
}

fn serve(reads: &[&[u8]], shared: bool, buffer_body_up_to: u64) -> Seen {
    let now = Instant::now();
    let config = ServerConfig {
        buffer_body_up_to,
        ..ServerConfig::default()
    };
    let mut conn = ServerConn::new(Rc::new(config), now);
    let mut seen = Seen {
        requests: Vec::new(),
        error: None,
    };
    let mut out = Vec::new();
    // A request whose streamed body is still arriving.
    let mut open: Option<(String, String, Vec<u8>, bool)> = None;
    for (i, read) in reads.iter().enumerate() {
        let at = now + Duration::from_millis(i as u64);
        if shared {
            conn.handle_shared(Rc::new(read.to_vec()), at);
        } else {
            conn.handle_input(read, at);
        }
        loop {
            if let Some((method, target, mut body, keep_alive)) = open.take() {
                match conn.poll_body() {
                    Ok(Status::Complete(Some(piece))) => {
                        body.extend_from_slice(&piece);
                        open = Some((method, target, body, keep_alive));
                        continue;
                    }
                    Ok(Status::Complete(None)) => {
                        seen.requests.push((method, target, body, keep_alive));
                        conn.respond(&Response::new(200), at, DATE, &mut out);
                    }
                    Ok(Status::Partial) => {
                        open = Some((method, target, body, keep_alive));
                        break;
                    }
                    Err(e) => {
                        seen.error = Some(e.status());
                        return seen;
                    }
                }
            }
            match conn.poll_request() {
                None => break,
                Some(Ok(req)) => {
                    let entry = (
                        req.method().to_string(),
                        req.target().to_string(),
                        req.body().to_vec(),
                        req.keep_alive(),
                    );
                    if conn.body_streams() {
                        open = Some(entry);
                    } else {
                        seen.requests.push(entry);
                        conn.respond(&Response::new(200), at, DATE, &mut out);
                    }
                }
                Some(Err(e)) => {
                    seen.error = Some(e.status());
                    return seen;
                }
            }
            out.clear();
        }
        if conn.is_closing() || conn.is_closed() {
            break;
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, stream)) = data.split_first() else {
        return;
    };
    // Bodies read whole and bodies streamed give the same requests.
    let whole = serve(&[stream], true, 64 * 1024);
    assert_eq!(whole, serve(&[stream], true, 0), "streamed bodies");
    // Up to eight read boundaries, placed by the stream's own bytes.
    let mut reads = Vec::new();
    let mut rest = stream;
    for i in 0..(cuts % 8) as usize {
        if rest.is_empty() {
            break;
        }
        let at = usize::from(stream[i % stream.len()]) % (rest.len() + 1);
        let (a, b) = rest.split_at(at);
        reads.push(a);
        rest = b;
    }
    reads.push(rest);
    let lens = reads.iter().map(|r| r.len()).collect::<Vec<_>>();
    assert_eq!(whole, serve(&reads, true, 64 * 1024), "shared reads {lens:?}");
    assert_eq!(whole, serve(&reads, false, 64 * 1024), "copied reads {lens:?}");
});

//! The decoding path the server runs, fed the way the server feeds it: each read arrives as a
//! shared buffer whose heads are parsed in place (`decode_head_shared`); a head cut by the end
//! of a read is carried over into the connection's input buffer and parsed from there
//! (`decode_head`); bodies are read out of the input buffer (`decode_body`). It never panics,
//! and it sees the same requests (or the same error) whatever the read boundaries are.
#![no_main]

use std::rc::Rc;

use bytes::BytesMut;
use coring_protocols::http1::{Framing, Limits, RequestDecoder};
use libfuzzer_sys::fuzz_target;

/// What the server learns from a byte stream: each request's method, target, body and
/// keep-alive, then the error that ended the stream, if any.
#[derive(Debug, PartialEq)]
struct Seen {
    requests: Vec<(String, String, Vec<u8>, bool)>,
    error: Option<u16>,
}

fn serve(reads: &[&[u8]]) -> Seen {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut input = BytesMut::new();
    let mut seen = Seen {
        requests: Vec::new(),
        error: None,
    };
    // A request whose body is still arriving.
    let mut open: Option<(String, String, Vec<u8>, bool)> = None;
    for read in reads {
        let data: Rc<dyn AsRef<[u8]>> = Rc::new(read.to_vec());
        let mut at = 0;
        loop {
            if let Some((method, target, mut body, keep_alive)) = open.take() {
                // The rest of the read goes through the input buffer, as the server does.
                if at < read.len() {
                    input.extend_from_slice(&read[at..]);
                    at = read.len();
                }
                match decoder.decode_body(&mut input, &mut body) {
                    Ok(true) => seen.requests.push((method, target, body, keep_alive)),
                    Ok(false) => {
                        open = Some((method, target, body, keep_alive));
                        break;
                    }
                    Err(e) => {
                        seen.error = Some(e.status());
                        return seen;
                    }
                }
                continue;
            }
            let head = if !input.is_empty() {
                if at < read.len() {
                    input.extend_from_slice(&read[at..]);
                    at = read.len();
                }
                decoder.decode_head(&mut input)
            } else if at < read.len() {
                match decoder.decode_head_shared(&data, at) {
                    Ok(Some((req, framing, end))) => {
                        at = end;
                        Ok(Some((req, framing)))
                    }
                    Ok(None) => {
                        input.extend_from_slice(&read[at..]);
                        at = read.len();
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            } else {
                Ok(None)
            };
            match head {
                Ok(Some((req, framing))) => {
                    let entry = (
                        req.method().to_string(),
                        req.target().to_string(),
                        Vec::new(),
                        req.keep_alive(),
                    );
                    if framing == Framing::None {
                        seen.requests.push(entry);
                    } else {
                        open = Some(entry);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    seen.error = Some(e.status());
                    return seen;
                }
            }
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, stream)) = data.split_first() else {
        return;
    };
    let whole = serve(&[stream]);
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
    let split = serve(&reads);
    assert_eq!(whole, split, "reads {:?}", reads.iter().map(|r| r.len()).collect::<Vec<_>>());
});

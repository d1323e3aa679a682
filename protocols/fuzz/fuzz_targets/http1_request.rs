//! The request decoder never panics, never reads past its input, and whatever it accepts it
//! accepts the same way when the bytes arrive split at any point.
#![no_main]

use bytes::BytesMut;
use coring_protocols::http1::{Decoded, Limits, RequestDecoder};
use libfuzzer_sys::fuzz_target;

fn run(chunks: &[&[u8]]) -> Vec<(String, usize, bool)> {
    let mut d = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Decoded::Request(r)) => {
                    seen.push((r.target().to_string(), r.body().len(), r.keep_alive()))
                }
                Ok(Decoded::Partial { .. }) => break,
                Err(e) => {
                    let _ = e.status();
                    return seen;
                }
            }
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let whole = run(&[data]);
    if data.len() > 1 {
        let mid = data[0] as usize % data.len();
        let split = run(&[&data[..mid], &data[mid..]]);
        assert_eq!(whole, split, "split at {mid}");
    }
});

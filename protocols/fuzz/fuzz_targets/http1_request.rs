//! One request head through the server's connection: it never panics, never reads past its
//! input, and whatever it accepts it accepts the same way when the bytes arrive split at any
//! point; what it hands out answers every accessor.
#![no_main]

use std::rc::Rc;
use std::time::Instant;

use coring_protocols::http1::{ServerConfig, ServerConn};
use libfuzzer_sys::fuzz_target;

fn run(chunks: &[&[u8]]) -> Result<Option<(String, String, bool)>, u16> {
    let now = Instant::now();
    let mut conn = ServerConn::new(Rc::new(ServerConfig::default()), now);
    for chunk in chunks {
        conn.handle_shared(Rc::new(chunk.to_vec()), now);
        match conn.poll_request() {
            None => continue,
            Some(Err(e)) => return Err(e.status()),
            Some(Ok(r)) => {
                // Every accessor works on whatever was accepted.
                let _ = (r.query(), r.host(), r.headers().count(), r.version());
                return Ok(Some((r.target().to_string(), r.path().to_string(), r.keep_alive())));
            }
        }
    }
    Ok(None)
}

fuzz_target!(|data: &[u8]| {
    let whole = run(&[data]);
    if data.len() > 1 {
        let mid = data[0] as usize % data.len();
        let split = run(&[&data[..mid], &data[mid..]]);
        assert_eq!(whole, split, "split at {mid}");
    }
});

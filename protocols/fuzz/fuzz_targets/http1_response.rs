//! The client's response decoder never panics on hostile servers.
#![no_main]

use bytes::BytesMut;
use coring_protocols::http1::{Limits, ResponseDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = data.first().is_some_and(|b| b & 1 == 1);
    let mut d = ResponseDecoder::new(Limits::default());
    let mut buf = BytesMut::from(data);
    while let Ok(Some(r)) = d.decode(&mut buf, head) {
        let _ = (r.status, r.body.len());
    }
    let _ = d.finish();
});

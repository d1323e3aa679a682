//! The chunked decoder never panics, never consumes more than it is given, and decodes the
//! same body whether the input comes at once or a byte at a time.
#![no_main]

use coring_protocols::http1::ChunkedDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut a = ChunkedDecoder::new(1 << 20);
    let mut body_a = Vec::new();
    let whole = a.decode(data, &mut body_a);
    if let Ok(n) = whole {
        assert!(n <= data.len());
    }

    let mut b = ChunkedDecoder::new(1 << 20);
    let mut body_b = Vec::new();
    let mut ok = true;
    for byte in data {
        if b.is_done() {
            break;
        }
        if b.decode(std::slice::from_ref(byte), &mut body_b).is_err() {
            ok = false;
            break;
        }
    }
    assert_eq!(whole.is_ok(), ok);
    if ok {
        assert_eq!(a.is_done(), b.is_done());
        assert_eq!(body_a, body_b);
    }
});

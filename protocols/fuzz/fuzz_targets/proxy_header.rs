//! The PROXY protocol decoder never panics, never reads a header longer than its limit, and
//! decides the same from any prefix: every prefix of a complete header (or of an input still
//! partial) is `Partial`, no prefix of a refused input is complete, and what follows a header
//! never changes it.
#![no_main]

use coring_protocols::proxy::{self, Decoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, bytes)) = data.split_first() else {
        return;
    };
    // Limits from 16 (a bare v2 prefix) to 16 + 255 * 4.
    let max = 16 + usize::from(limit) * 4;
    let whole = proxy::decode(bytes, max);
    match whole {
        Ok(Decoded::Complete { header, len }) => {
            assert!(len <= bytes.len());
            assert!(len <= max.max(proxy::V1_MAX));
            for cut in 0..len {
                assert_eq!(proxy::decode(&bytes[..cut], max), Ok(Decoded::Partial), "cut {cut}");
            }
            assert_eq!(
                proxy::decode(&bytes[..len], max),
                Ok(Decoded::Complete { header, len })
            );
        }
        Ok(Decoded::Partial) => {
            for cut in 0..bytes.len() {
                assert_eq!(proxy::decode(&bytes[..cut], max), Ok(Decoded::Partial));
            }
        }
        Err(_) => {
            for cut in 0..bytes.len() {
                let early = proxy::decode(&bytes[..cut], max);
                assert!(
                    !matches!(early, Ok(Decoded::Complete { .. })),
                    "complete at {cut}, refused whole"
                );
            }
        }
    }
});

//! The WebSocket connection (server role) never panics on any input, and sees the same events
//! whether the bytes come at once or split at a point the input chooses: frames, fragments,
//! control frames, limits and (when the first byte's low bit asks for it) permessage-deflate
//! are decoded the same way from any pieces.
#![no_main]

use std::time::Instant;

use coring_protocols::ws::deflate::Agreed;
use coring_protocols::ws::{Event, Role, WsConfig, WsConn, WsError};
use libfuzzer_sys::fuzz_target;

fn run(pieces: &[&[u8]], deflate: bool) -> (Vec<Result<Event, WsError>>, Vec<u8>) {
    let now = Instant::now();
    let config = WsConfig {
        max_frame_bytes: 1 << 16,
        max_message_bytes: 1 << 17,
        ..WsConfig::default()
    };
    let mut conn = WsConn::new(Role::Server, config, now, 0);
    if deflate {
        conn.enable_deflate(Agreed {
            our_no_context_takeover: false,
            peer_no_context_takeover: false,
            our_window_bits: 15,
            min_compress_bytes: 16,
            level: 1,
        });
    }
    let mut events = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        conn.handle_input(piece, now);
        while let Some(e) = conn.poll_event() {
            events.push(e);
        }
        conn.poll_transmit(&mut out);
    }
    conn.handle_eof(now);
    while let Some(e) = conn.poll_event() {
        events.push(e);
    }
    conn.poll_transmit(&mut out);
    (events, out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let deflate = split & 1 == 1;
    let at = usize::from(split >> 1) * data.len() / 128;
    let whole = run(&[data], deflate);
    let split = run(&[&data[..at], &data[at..]], deflate);
    // The same events and bytes out. When the input is broken, where the break is noticed
    // can depend on the pieces (corrupt deflate data against text that stops being UTF-8 in
    // what was inflated so far), so then the events before the error must agree, and that
    // both end in one.
    let failed = |events: &[Result<Event, WsError>]| events.last().is_some_and(Result::is_err);
    assert_eq!(failed(&whole.0), failed(&split.0));
    if failed(&whole.0) {
        let n = whole.0.len().min(split.0.len()) - 1;
        assert_eq!(whole.0[..n], split.0[..n]);
    } else {
        assert_eq!(whole, split);
    }
    // At most one error, and it is the last event.
    let errors = whole.0.iter().filter(|e| e.is_err()).count();
    assert!(errors <= 1);
    if errors == 1 {
        assert!(whole.0.last().is_some_and(Result::is_err));
    }
});

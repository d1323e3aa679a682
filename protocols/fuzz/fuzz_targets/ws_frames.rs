//! The WebSocket connection (server role) never panics on any input, and sees the same events
//! whether the bytes come at once or split at a point the input chooses: frames, fragments,
//! control frames, limits and (when the first byte's low bit asks for it) permessage-deflate
//! are decoded the same way from any pieces, and the same again when the pieces come as buffers
//! the connection may hand large messages out of (`handle_buffer`).
#![no_main]

use std::time::Instant;

use coring_protocols::ws::deflate::Agreed;
use coring_protocols::ws::{Event, Role, WsConfig, WsConn, WsError};
use libfuzzer_sys::fuzz_target;

type Run = (Vec<Result<Event, WsError>>, Vec<u8>);

fn run(pieces: &[&[u8]], deflate: bool, in_place: bool) -> Run {
    let now = Instant::now();
    let config = WsConfig {
        max_frame_bytes: 1 << 16,
        max_message_bytes: 1 << 17,
        // Small, so that the fuzzer's messages take the in-place path too.
        share_buffers_from: Some(8),
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
        if in_place {
            if let Some(m) = conn.handle_buffer(piece.to_vec(), now) {
                events.push(Ok(Event::Message(m)));
            }
        } else {
            conn.handle_input(piece, now);
        }
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

/// The same events and bytes out. When the input is broken, where the break is noticed can
/// depend on the pieces (corrupt deflate data against text that stops being UTF-8 in what was
/// inflated so far; a whole message checked at once), so then the events before the error must
/// agree, and both end in one.
fn agree(a: &Run, b: &Run) {
    let failed = |events: &[Result<Event, WsError>]| events.last().is_some_and(Result::is_err);
    assert_eq!(failed(&a.0), failed(&b.0));
    if failed(&a.0) {
        let n = a.0.len().min(b.0.len()) - 1;
        assert_eq!(a.0[..n], b.0[..n]);
    } else {
        assert_eq!(a, b);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let deflate = split & 1 == 1;
    let at = usize::from(split >> 1) * data.len() / 128;
    let whole = run(&[data], deflate, false);
    let pieces = [&data[..at], &data[at..]];
    agree(&whole, &run(&pieces, deflate, false));
    agree(&whole, &run(&pieces, deflate, true));
    agree(&whole, &run(&[data], deflate, true));
    // At most one error, and it is the last event.
    let errors = whole.0.iter().filter(|e| e.is_err()).count();
    assert!(errors <= 1);
    if errors == 1 {
        assert!(whole.0.last().is_some_and(Result::is_err));
    }
});

//! The WebSocket connection (server role) never panics on any input, and sees the same events
//! whether the bytes come at once or split at a point the input chooses: frames, fragments,
//! control frames and their limits are decoded the same way from any pieces.
#![no_main]

use std::time::Instant;

use coring_protocols::ws::{Event, Role, WsConfig, WsConn, WsError};
use libfuzzer_sys::fuzz_target;

fn run(pieces: &[&[u8]]) -> (Vec<Result<Event, WsError>>, Vec<u8>) {
    let now = Instant::now();
    let config = WsConfig {
        max_frame_bytes: 1 << 16,
        max_message_bytes: 1 << 17,
        ..WsConfig::default()
    };
    let mut conn = WsConn::new(Role::Server, config, now, 0);
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
    let at = usize::from(split) * data.len() / 256;
    let whole = run(&[data]);
    let split = run(&[&data[..at], &data[at..]]);
    assert_eq!(whole, split);
    // At most one error, and it is the last event.
    let errors = whole.0.iter().filter(|e| e.is_err()).count();
    assert!(errors <= 1);
    if errors == 1 {
        assert!(whole.0.last().is_some_and(Result::is_err));
    }
});

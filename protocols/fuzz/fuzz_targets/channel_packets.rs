//! A channel connection never panics on any packet, and refuses a bad one whole: a packet that
//! does not read changes neither the counters nor what is delivered.
#![no_main]

use std::time::Instant;

use coring_protocols::channel::{Connection, ConnectionConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut rx = Connection::new(ConnectionConfig::default(), now);
    // Packets: a length byte (times 8), then the bytes.
    let mut rest = data;
    while !rest.is_empty() {
        let len = (usize::from(rest[0]) * 8).min(rest.len() - 1);
        let before = rx.stats(now).packets_received;
        let result = rx.handle_packet(now, &rest[1..1 + len]);
        rest = &rest[1 + len..];
        if result.is_err() {
            assert_eq!(rx.stats(now).packets_received, before);
            assert!(rx.receive().is_none(), "a refused packet delivered something");
        }
        while rx.receive().is_some() {}
        let mut out = [0u8; 1200];
        while rx.poll_packet(now, &mut out).is_some() {}
    }
});

//! The connection in both roles, joined by in-memory bytes with a virtual clock.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::{Opcode, apply_mask, encode_header};
use super::*;

/// A server and a client connection and the bytes between them.
struct Pair {
    now: Instant,
    server: WsConn,
    client: WsConn,
    /// Events each side has seen, in order.
    at_server: Vec<Result<Event, WsError>>,
    at_client: Vec<Result<Event, WsError>>,
}

impl Pair {
    fn new(config: WsConfig) -> Pair {
        let now = Instant::now();
        Pair {
            now,
            server: WsConn::new(Role::Server, config.clone(), now, 0),
            client: WsConn::new(Role::Client, config, now, 0x5eed),
            at_server: Vec::new(),
            at_client: Vec::new(),
        }
    }

    /// Client bytes to the server, split at `splits`, and every event and owed byte both
    /// ways until nothing moves (bounded: a livelock fails).
    fn deliver_to_server(&mut self, bytes: &[u8], splits: &[usize]) {
        let mut at = 0;
        for &s in splits.iter().chain(std::iter::once(&bytes.len())) {
            self.server.handle_input(&bytes[at..s], self.now);
            at = s;
            self.settle();
        }
    }

    fn settle(&mut self) {
        for _ in 0..1000 {
            let to_client = pump(
                &mut self.server,
                &mut self.at_server,
                &mut self.client,
                self.now,
            );
            let to_server = pump(
                &mut self.client,
                &mut self.at_client,
                &mut self.server,
                self.now,
            );
            if !(to_client || to_server) {
                return;
            }
        }
        panic!("livelock");
    }

    /// The client sends `message` to the server.
    fn client_sends(&mut self, message: &Message) {
        let mut out = Vec::new();
        self.client.send(message, &mut out).unwrap();
        self.deliver_to_server(&out, &[]);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
        self.client.handle_timeout(self.now);
        self.settle();
    }
}

/// Takes `from`'s events into `seen` and hands what it transmits to `to`; whether anything
/// moved.
fn pump(
    from: &mut WsConn,
    seen: &mut Vec<Result<Event, WsError>>,
    to: &mut WsConn,
    now: Instant,
) -> bool {
    let mut moved = false;
    while let Some(e) = from.poll_event() {
        seen.push(e);
        moved = true;
    }
    let mut out = Vec::new();
    from.poll_transmit(&mut out);
    if !out.is_empty() {
        to.handle_input(&out, now);
        moved = true;
    }
    moved
}

/// A client frame as a browser would send it: masked with `key`.
fn client_frame(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let key = [0xa1, 0xb2, 0xc3, 0xd4];
    let mut out = Vec::new();
    encode_header(
        &mut out,
        fin,
        false,
        opcode,
        Some(key),
        payload.len() as u64,
    );
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
    out
}

fn messages(events: &[Result<Event, WsError>]) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(Event::Message(m)) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// The close code the server sent, if it sent one.
fn close_code_sent_by_server(pair: &Pair) -> Option<u16> {
    pair.at_client.iter().find_map(|e| match e {
        Ok(Event::Close(f)) => Some(f.as_ref().map_or(1005, |f| f.code)),
        _ => None,
    })
}

#[test]
fn messages_of_every_length_form_go_both_ways() {
    let mut pair = Pair::new(WsConfig::default());
    let sizes = [0usize, 1, 125, 126, 127, 65_535, 65_536, 1 << 20];
    for &n in &sizes {
        let body: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
        pair.client_sends(&Message::Binary(Bytes::from(body.clone())));
        let text = "é".repeat(n / 2);
        pair.client_sends(&Message::Text(Bytes::from(text.clone())));
        let got = messages(&pair.at_server);
        assert_eq!(
            got[got.len() - 2],
            Message::Binary(Bytes::from(body.clone()))
        );
        assert_eq!(got[got.len() - 1].as_text(), Some(text.as_str()));
        // And back, unmasked.
        let mut out = Vec::new();
        pair.server
            .send(&Message::Binary(Bytes::from(body.clone())), &mut out)
            .unwrap();
        pair.client.handle_input(&out, pair.now);
        pair.settle();
        assert_eq!(
            messages(&pair.at_client).last(),
            Some(&Message::Binary(Bytes::from(body)))
        );
    }
}

#[test]
fn fragments_with_a_ping_between_them_at_every_split_point() {
    let mut wire = client_frame(false, Opcode::Text, "Hel".as_bytes());
    wire.extend(client_frame(true, Opcode::Ping, b"are you there"));
    wire.extend(client_frame(
        false,
        Opcode::Continuation,
        "lo, wö".as_bytes(),
    ));
    wire.extend(client_frame(true, Opcode::Continuation, "rld".as_bytes()));
    for split in 0..=wire.len() {
        let mut pair = Pair::new(WsConfig::default());
        pair.deliver_to_server(&wire, &[split]);
        assert_eq!(
            pair.at_server,
            vec![
                Ok(Event::Ping(Bytes::from_static(b"are you there"))),
                Ok(Event::Message(Message::Text(Bytes::from("Hello, wörld")))),
            ],
            "split at {split}"
        );
        // The pong went back by itself.
        assert_eq!(
            pair.at_client,
            vec![Ok(Event::Pong(Bytes::from_static(b"are you there")))]
        );
    }
}

#[test]
fn a_whole_single_frame_message_is_handed_out_without_a_copy() {
    let mut pair = Pair::new(WsConfig::default());
    let wire = client_frame(true, Opcode::Binary, &[9u8; 4096]);
    pair.server.handle_input(&wire, pair.now);
    let Some(Ok(Event::Message(Message::Binary(body)))) = pair.server.poll_event() else {
        panic!("a message");
    };
    assert_eq!(body.len(), 4096);
    assert!(body.iter().all(|&b| b == 9));
}

#[test]
fn a_large_message_whole_in_a_buffer_is_handed_out_as_a_view_of_it() {
    let mut pair = Pair::new(WsConfig::default());
    let payload: Vec<u8> = (0..16_384u32).map(|i| (i % 251) as u8).collect();
    let mut wire = client_frame(true, Opcode::Binary, &payload);
    // A ping and the start of the next message follow it in the same buffer.
    wire.extend_from_slice(&client_frame(true, Opcode::Ping, b"hi"));
    let next = client_frame(true, Opcode::Text, "after".repeat(2000).as_bytes());
    wire.extend_from_slice(&next[..100]);
    let buf = bytes::BytesMut::from(&wire[..]);
    let start = buf.as_ptr() as usize;
    let Some(Message::Binary(body)) = pair.server.handle_buffer(buf, pair.now) else {
        panic!("the message at once");
    };
    assert_eq!(body[..], payload[..]);
    let at = body.as_ptr() as usize;
    assert!(
        (start..start + wire.len()).contains(&at),
        "a view of the buffer"
    );
    // What followed comes through the events, in order.
    assert_eq!(
        pair.server.poll_event(),
        Some(Ok(Event::Ping(Bytes::from_static(b"hi"))))
    );
    assert_eq!(pair.server.poll_event(), None);
    pair.server.handle_input(&next[100..], pair.now);
    assert_eq!(
        pair.server.poll_event(),
        Some(Ok(Event::Message(Message::Text(Bytes::from(
            "after".repeat(2000)
        )))))
    );
}

#[test]
fn buffers_that_do_not_begin_with_a_whole_large_message_go_the_usual_way() {
    let large = vec![7u8; 8192];
    // Small; cut short; fragmented; switched off: no view, the same messages through events.
    let cases: [(Vec<u8>, WsConfig); 4] = [
        (
            client_frame(true, Opcode::Binary, &[1, 2, 3]),
            WsConfig::default(),
        ),
        (
            client_frame(true, Opcode::Binary, &large)[..5000].to_vec(),
            WsConfig::default(),
        ),
        (
            client_frame(false, Opcode::Binary, &large),
            WsConfig::default(),
        ),
        (
            client_frame(true, Opcode::Binary, &large),
            WsConfig {
                share_buffers_from: None,
                ..WsConfig::default()
            },
        ),
    ];
    for (wire, config) in cases {
        let mut pair = Pair::new(config);
        assert_eq!(pair.server.handle_buffer(wire.clone(), pair.now), None);
        let mut direct = Pair::new(WsConfig::default());
        direct.server.handle_input(&wire, direct.now);
        assert_eq!(pair.server.poll_event(), direct.server.poll_event());
    }
    // Invalid text found where it lies closes with 1007, as anywhere else.
    let mut bad = "x".repeat(5000).into_bytes();
    bad[4000] = 0xc0;
    let mut pair = Pair::new(WsConfig::default());
    let wire = client_frame(true, Opcode::Text, &bad);
    assert_eq!(pair.server.handle_buffer(wire, pair.now), None);
    pair.settle();
    assert_eq!(pair.at_server, [Err(WsError::InvalidUtf8)]);
    assert_eq!(close_code_sent_by_server(&pair), Some(1007));
    // An unmasked frame from a client is refused with 1002 the usual way.
    let mut pair = Pair::new(WsConfig::default());
    let mut unmasked = Vec::new();
    encode_header(&mut unmasked, true, false, Opcode::Binary, None, 5000);
    unmasked.extend_from_slice(&[0u8; 5000]);
    assert_eq!(pair.server.handle_buffer(unmasked, pair.now), None);
    pair.settle();
    assert_eq!(close_code_sent_by_server(&pair), Some(1002));
}

#[test]
fn a_single_frame_message_arriving_in_pieces_is_checked_as_it_comes() {
    // Valid text in one frame, delivered a few bytes at a time: the same message at the end.
    let text = "ünïcödé ".repeat(300);
    let mut pair = Pair::new(WsConfig::default());
    let wire = client_frame(true, Opcode::Text, text.as_bytes());
    let splits: Vec<usize> = (1..wire.len()).step_by(7).collect();
    pair.deliver_to_server(&wire, &splits);
    assert_eq!(
        messages(&pair.at_server),
        [Message::Text(Bytes::from(text.clone()))]
    );
    // An invalid byte early in a long frame fails it before the rest has come.
    let mut bad = text.into_bytes();
    bad[5] = 0xff;
    let wire = client_frame(true, Opcode::Text, &bad);
    let mut pair = Pair::new(WsConfig::default());
    pair.deliver_to_server(&wire[..20], &[]);
    assert_eq!(pair.at_server, [Err(WsError::InvalidUtf8)]);
    assert_eq!(close_code_sent_by_server(&pair), Some(1007));
}

#[test]
fn protocol_violations_close_with_1002() {
    let unmasked = {
        let mut out = Vec::new();
        encode_header(&mut out, true, false, Opcode::Text, None, 2);
        out.extend_from_slice(b"hi");
        out
    };
    let reserved_bits = {
        let mut f = client_frame(true, Opcode::Binary, b"x");
        f[0] |= 0x20;
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked client frame", unmasked),
        ("reserved bits", reserved_bits),
        (
            "continuation first",
            client_frame(true, Opcode::Continuation, b"x"),
        ),
        ("new message mid-fragment", {
            let mut w = client_frame(false, Opcode::Text, b"a");
            w.extend(client_frame(true, Opcode::Binary, b"b"));
            w
        }),
        ("reserved opcode", {
            let mut f = client_frame(true, Opcode::Binary, b"x");
            f[0] = (f[0] & 0xF0) | 0x3;
            f
        }),
        ("one-byte close", client_frame(true, Opcode::Close, b"\x03")),
        (
            "close code 1005",
            client_frame(true, Opcode::Close, &1005u16.to_be_bytes()),
        ),
        (
            "close code 999",
            client_frame(true, Opcode::Close, &999u16.to_be_bytes()),
        ),
    ];
    for (name, wire) in cases {
        let mut pair = Pair::new(WsConfig::default());
        pair.deliver_to_server(&wire, &[]);
        assert!(
            matches!(pair.at_server.last(), Some(Err(WsError::Protocol(_)))),
            "{name}: {:?}",
            pair.at_server
        );
        assert_eq!(close_code_sent_by_server(&pair), Some(1002), "{name}");
        assert!(pair.server.is_closed(), "{name}");
    }
}

#[test]
fn text_that_is_not_utf8_closes_with_1007_as_soon_as_it_is_seen() {
    // The bad byte is in the first fragment: the error comes before the message ends.
    let mut pair = Pair::new(WsConfig::default());
    pair.deliver_to_server(&client_frame(false, Opcode::Text, b"ok \xed\xa0\x80"), &[]);
    assert_eq!(pair.at_server, vec![Err(WsError::InvalidUtf8)]);
    assert_eq!(close_code_sent_by_server(&pair), Some(1007));
    // A code point cut across fragments is fine; left open at the end it is not.
    let mut cut = client_frame(false, Opcode::Text, b"\xe2\x82");
    cut.extend(client_frame(true, Opcode::Continuation, b"\xac"));
    let mut pair = Pair::new(WsConfig::default());
    pair.deliver_to_server(&cut, &[]);
    assert_eq!(messages(&pair.at_server)[0].as_text(), Some("€"));
    let mut pair = Pair::new(WsConfig::default());
    pair.deliver_to_server(&client_frame(true, Opcode::Text, b"\xe2\x82"), &[]);
    assert_eq!(pair.at_server, vec![Err(WsError::InvalidUtf8)]);
    // A close reason that is not UTF-8.
    let mut pair = Pair::new(WsConfig::default());
    pair.deliver_to_server(&client_frame(true, Opcode::Close, b"\x03\xe8\xff"), &[]);
    assert_eq!(pair.at_server, vec![Err(WsError::InvalidUtf8)]);
}

#[test]
fn limits_close_with_1009_before_the_payload_is_buffered() {
    let config = WsConfig {
        max_frame_bytes: 1000,
        max_message_bytes: 1500,
        ..WsConfig::default()
    };
    // Only the header of a frame over the limit: refused at once.
    let mut header = Vec::new();
    encode_header(
        &mut header,
        true,
        false,
        Opcode::Binary,
        Some([1, 2, 3, 4]),
        1 << 30,
    );
    let mut pair = Pair::new(config.clone());
    pair.deliver_to_server(&header, &[]);
    assert_eq!(pair.at_server, vec![Err(WsError::TooBig("frame"))]);
    assert_eq!(close_code_sent_by_server(&pair), Some(1009));
    // Fragments each under the frame limit, together over the message limit.
    let mut wire = client_frame(false, Opcode::Binary, &[0; 800]);
    wire.extend(client_frame(true, Opcode::Continuation, &[0; 800]));
    let mut pair = Pair::new(config);
    pair.deliver_to_server(&wire, &[]);
    assert_eq!(pair.at_server, vec![Err(WsError::TooBig("message"))]);
}

#[test]
fn the_closing_handshake_both_ways_and_its_timeout() {
    let mut pair = Pair::new(WsConfig::default());
    let mut out = Vec::new();
    pair.client.close(1000, "bye", pair.now, &mut out);
    assert!(!pair.client.can_send());
    assert_eq!(
        pair.client
            .send(&Message::Text(Bytes::from("late")), &mut Vec::new()),
        Err(WsError::Closed)
    );
    pair.deliver_to_server(&out, &[]);
    assert_eq!(
        pair.at_server,
        vec![Ok(Event::Close(Some(CloseFrame {
            code: 1000,
            reason: Bytes::from("bye")
        })))]
    );
    // The server echoed the code; both are done.
    assert_eq!(close_code_sent_by_server(&pair), Some(1000));
    assert!(pair.server.is_closed() && pair.client.is_closed());
    // A peer that never answers the close: given up after close_timeout.
    let mut pair = Pair::new(WsConfig::default());
    let mut out = Vec::new();
    pair.server.close(1001, "going away", pair.now, &mut out);
    assert_eq!(
        pair.server.poll_timeout().map(|(t, _)| t),
        Some(Timer::Close)
    );
    pair.advance(Duration::from_secs(4));
    assert!(!pair.server.is_closed());
    pair.advance(Duration::from_secs(1));
    assert!(pair.server.is_closed());
}

#[test]
fn the_heartbeat_pings_an_idle_peer_and_gives_up_on_a_silent_one() {
    let config = WsConfig {
        ping_after_idle: Some(Duration::from_secs(30)),
        pong_timeout: Duration::from_secs(10),
        ..WsConfig::default()
    };
    let mut pair = Pair::new(config.clone());
    pair.advance(Duration::from_secs(30));
    // Both sides pinged and both answered: the deadlines move on.
    assert!(pair.at_server.contains(&Ok(Event::Pong(Bytes::new()))));
    assert_eq!(
        pair.server.poll_timeout().map(|(t, _)| t),
        Some(Timer::Ping)
    );
    // A peer that stops answering.
    let mut lone = WsConn::new(Role::Server, config, pair.now, 0);
    let start = pair.now;
    lone.handle_timeout(start + Duration::from_secs(30));
    let mut out = Vec::new();
    lone.poll_transmit(&mut out);
    assert_eq!(out, [0x89, 0x00], "an empty ping");
    assert_eq!(lone.poll_timeout().map(|(t, _)| t), Some(Timer::Pong));
    lone.handle_timeout(start + Duration::from_secs(40));
    assert_eq!(lone.poll_event(), Some(Err(WsError::PeerUnresponsive)));
    assert!(lone.is_closed());
}

#[test]
fn an_abrupt_end_is_reported_once() {
    let mut pair = Pair::new(WsConfig::default());
    pair.server
        .handle_input(&client_frame(false, Opcode::Text, b"half"), pair.now);
    assert_eq!(pair.server.poll_event(), None);
    pair.server.handle_eof(pair.now);
    assert_eq!(pair.server.poll_event(), Some(Err(WsError::Abrupt)));
    assert_eq!(pair.server.poll_event(), None);
    assert!(pair.server.is_closed());
}

#[test]
fn compressed_messages_go_both_ways_and_rsv1_needs_the_extension() {
    use super::deflate::Agreed;
    let agreed = Agreed {
        our_no_context_takeover: false,
        peer_no_context_takeover: false,
        our_window_bits: 15,
        min_compress_bytes: 32,
        level: 1,
    };
    let mut pair = Pair::new(WsConfig::default());
    pair.server.enable_deflate(agreed);
    pair.client.enable_deflate(agreed);
    let long = "a message long enough to be worth compressing, ".repeat(40);
    for _ in 0..3 {
        let mut out = Vec::new();
        pair.client
            .send(&Message::Text(Bytes::from(long.clone())), &mut out)
            .unwrap();
        assert_eq!(out[0] & 0x40, 0x40, "RSV1: compressed");
        assert!(out.len() < long.len() / 4);
        // Split at every tenth byte: inflated as it arrives.
        let splits: Vec<usize> = (1..out.len()).step_by(10).collect();
        pair.deliver_to_server(&out, &splits);
        assert_eq!(
            messages(&pair.at_server).last().and_then(Message::as_text),
            Some(long.as_str())
        );
    }
    // Short ones go out as they are.
    let mut out = Vec::new();
    pair.server
        .send(&Message::Binary(Bytes::from_static(b"tiny")), &mut out)
        .unwrap();
    assert_eq!(out, [0x82, 0x04, b't', b'i', b'n', b'y']);
    // Without the extension, RSV1 is a protocol error.
    let mut plain = Pair::new(WsConfig::default());
    let mut frame = client_frame(true, Opcode::Text, b"x");
    frame[0] |= 0x40;
    plain.deliver_to_server(&frame, &[]);
    assert!(matches!(
        plain.at_server.last(),
        Some(Err(WsError::Protocol(_)))
    ));
    // With it, but on a control frame or a continuation: also an error.
    let mut pair = Pair::new(WsConfig::default());
    pair.server.enable_deflate(agreed);
    let mut ping = client_frame(true, Opcode::Ping, b"");
    ping[0] |= 0x40;
    pair.deliver_to_server(&ping, &[]);
    assert!(matches!(
        pair.at_server.last(),
        Some(Err(WsError::Protocol(_)))
    ));
}

#[test]
fn a_shared_frame_reads_at_every_peer_as_its_own_would() {
    use super::deflate::Agreed;
    let no_takeover = Agreed {
        our_no_context_takeover: true,
        peer_no_context_takeover: false,
        our_window_bits: 12,
        min_compress_bytes: 16,
        level: 1,
    };
    let keeps_context = Agreed {
        our_no_context_takeover: false,
        ..no_takeover
    };
    let mut encoder = SharedEncoder::new();
    let long = Message::Text(Bytes::from("tick tock ".repeat(50)));
    let short = Message::Binary(Bytes::from_static(b"hi"));
    for agreed in [None, Some(no_takeover), Some(keeps_context)] {
        let mut pair = Pair::new(WsConfig::default());
        if let Some(a) = agreed {
            pair.server.enable_deflate(a);
            pair.client.enable_deflate(Agreed {
                our_no_context_takeover: a.peer_no_context_takeover,
                peer_no_context_takeover: a.our_no_context_takeover,
                ..a
            });
        }
        let Some(sharing) = pair.server.sharing() else {
            // A compressor that keeps its window frames for its own peer only.
            assert_eq!(agreed, Some(keeps_context));
            continue;
        };
        assert_eq!(
            matches!(sharing, Sharing::Compressed { .. }),
            agreed.is_some()
        );
        // The same encoding twice (no state carried from one to the next), then the short one.
        for message in [&long, &long, &short] {
            let mut frame = Vec::new();
            encoder.encode(message, sharing, &mut frame);
            pair.client.handle_input(&frame, pair.now);
            assert_eq!(
                pair.client.poll_event(),
                Some(Ok(Event::Message(message.clone())))
            );
        }
    }
    // A client masks each frame: nothing to share.
    let pair = Pair::new(WsConfig::default());
    assert_eq!(pair.client.sharing(), None);
}

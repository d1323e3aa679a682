//! The WebSocket server over real loopback sockets: tungstenite as the client (messages of
//! 0 B to 16 MiB both kinds, ping, close), hostile frames over a raw socket, refused
//! upgrades.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use coring_protocols::serve::{Config, Router};
use coring_protocols::websocket::{self as ws, WsConfig};
use coring_tests::serve;
use tungstenite::Message;

fn router() -> Router {
    Router::new()
        .route("GET", "/echo", |req, _p| async move {
            ws::accept(&req, WsConfig::default(), |mut socket| async move {
                while let Ok(Some(message)) = socket.recv().await {
                    if socket.send(&message).await.is_err() {
                        return;
                    }
                }
            })
        })
        // Speaks two subprotocols, and says which one was agreed.
        .route("GET", "/chat", |req, _p| async move {
            let config = WsConfig {
                protocols: vec!["superchat".into(), "chat".into()],
                ..WsConfig::default()
            };
            ws::accept(&req, config, |mut socket| async move {
                let agreed = socket.protocol().unwrap_or("none").to_owned();
                let _ = socket.send(&ws::Message::Text(agreed.into())).await;
                while let Ok(Some(_)) = socket.recv().await {}
            })
        })
        // Says goodbye at once, and waits at most 300 ms for the answer.
        .route("GET", "/bye", |req, _p| async move {
            let config = WsConfig {
                close_timeout: Duration::from_millis(300),
                ..WsConfig::default()
            };
            ws::accept(&req, config, |mut socket| async move {
                let _ = socket.close(1001, "going away").await;
                while let Ok(Some(_)) = socket.recv().await {}
            })
        })
}

#[coring::test]
fn tungstenite_gets_every_message_back_from_0_bytes_to_16_mib() {
    let server = serve(Config::default(), router);
    let (mut socket, answer) =
        tungstenite::connect(format!("ws://{}/echo", server.addr)).expect("handshake");
    assert_eq!(answer.status(), 101);
    for size in [0usize, 1, 125, 126, 65_535, 65_536, 1 << 20, 16 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        socket.send(Message::binary(data.clone())).unwrap();
        match socket.read().unwrap() {
            Message::Binary(got) => assert!(got[..] == data[..], "binary of {size} bytes"),
            other => panic!("{size}: {other:?}"),
        }
        let text: String = "wörld ".chars().cycle().take(size / 2).collect();
        socket.send(Message::text(text.clone())).unwrap();
        match socket.read().unwrap() {
            Message::Text(got) => assert_eq!(got.as_str(), text, "text of {size} bytes"),
            other => panic!("{size}: {other:?}"),
        }
    }
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match socket.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("{other:?}"),
    }
    socket.close(None).unwrap();
    // The server answers the close and closes its side.
    loop {
        match socket.read() {
            Ok(Message::Close(_)) => {}
            Ok(other) => panic!("after close: {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

#[coring::test]
fn the_server_agrees_the_first_of_its_subprotocols_that_the_client_offers() {
    use tungstenite::client::IntoClientRequest;
    let server = serve(Config::default(), router);
    let mut request = format!("ws://{}/chat", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "chat, superchat".parse().unwrap());
    let (mut socket, answer) = tungstenite::connect(request).expect("handshake");
    assert_eq!(answer.headers()["Sec-WebSocket-Protocol"], "superchat");
    match socket.read().unwrap() {
        Message::Text(t) => assert_eq!(t.as_str(), "superchat"),
        other => panic!("{other:?}"),
    }
    // Offering none of them: the answer names none, and the session has none.
    let mut raw = raw_upgrade_offering(server.addr, "/chat", "Sec-WebSocket-Protocol: mqtt\r\n");
    let mut frame = [0u8; 6];
    raw.read_exact(&mut frame).unwrap();
    assert_eq!(&frame, b"\x81\x04none");
}

/// A raw client: the handshake by hand, then whatever frames a test wants to send.
fn raw_upgrade(addr: std::net::SocketAddr) -> TcpStream {
    raw_upgrade_to(addr, "/echo")
}

fn raw_upgrade_to(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    raw_upgrade_offering(addr, path, "")
}

/// [`raw_upgrade_to`] with `extra` header lines in the request; the answer must name no
/// subprotocol.
fn raw_upgrade_offering(addr: std::net::SocketAddr, path: &str, extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
    s
}

/// Everything the server sends until it closes.
fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    all
}

#[coring::test]
fn hostile_frames_get_their_close_code_and_the_server_goes_on() {
    let server = serve(Config::default(), router);
    let cases: [(&str, Vec<u8>, u16); 4] = [
        ("unmasked", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("reserved bits", vec![0xC1, 0x80, 0, 0, 0, 0], 1002),
        ("bad opcode", vec![0x83, 0x80, 0, 0, 0, 0], 1002),
        // Text that is not UTF-8, split over two fragments (mask of zeros: bytes as sent).
        (
            "invalid utf-8",
            vec![
                0x01, 0x82, 0, 0, 0, 0, 0xce, 0xba, 0x80, 0x82, 0, 0, 0, 0, 0xed, 0xa0,
            ],
            1007,
        ),
    ];
    for (name, frames, code) in cases {
        let mut s = raw_upgrade(server.addr);
        s.write_all(&frames).unwrap();
        let got = read_to_end(&mut s);
        // One unmasked close frame carrying the code, then the end of the stream.
        assert!(got.len() >= 4, "{name}: {got:?}");
        assert_eq!(got[0], 0x88, "{name}: a close frame");
        assert_eq!(u16::from_be_bytes([got[2], got[3]]), code, "{name}");
    }
    // An oversized frame is refused from its header alone.
    let mut s = raw_upgrade(server.addr);
    let mut header = vec![0x82, 0xFF];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&header).unwrap();
    let got = read_to_end(&mut s);
    assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1009);
    // Others are still served.
    let (mut ok, _) = tungstenite::connect(format!("ws://{}/echo", server.addr)).unwrap();
    ok.send(Message::text("still here")).unwrap();
    assert_eq!(ok.read().unwrap(), Message::text("still here"));
}

#[coring::test]
fn a_peer_that_never_answers_the_close_is_let_go_after_the_close_timeout() {
    let server = serve(Config::default(), router);
    let mut s = raw_upgrade_to(server.addr, "/bye");
    let started = std::time::Instant::now();
    // The close comes, we never answer it, and the server ends its side when the timeout
    // passes.
    let got = read_to_end(&mut s);
    let waited = started.elapsed();
    assert_eq!(&got[..2], &[0x88, 12], "{got:?}");
    assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1001);
    assert_eq!(&got[4..], b"going away");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(4),
        "ended after {waited:?}"
    );
}

#[coring::test]
fn a_request_that_is_not_an_upgrade_is_refused() {
    let server = serve(Config::default(), router);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let plain = agent
        .get(&format!("http://{}/echo", server.addr))
        .call()
        .unwrap();
    assert_eq!(plain.status(), 426);
    assert_eq!(plain.headers()["upgrade"], "websocket");
    let old = agent
        .get(&format!("http://{}/echo", server.addr))
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "8")
        .call()
        .unwrap();
    assert_eq!(old.status(), 426);
    assert_eq!(old.headers()["sec-websocket-version"], "13");
}

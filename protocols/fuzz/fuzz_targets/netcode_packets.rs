//! The netcode server and client never panic on any datagram, from a stranger or from the
//! address of a connected session, and a session survives whatever a stranger sends: after the
//! input, the client's payload still reaches the server. Bodies of every type are parsed from
//! any plaintext too (what `open` reads once a tag checks out). The server asks for address
//! cookies once a token has been opened, so strangers' requests go through the cookie checks.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coring_protocols::netcode::{
    Body, Client, ClientState, Cookies, Key, Kind, MAX_PACKET_BYTES, REQUEST_BYTES, Server, ServerConfig, TokenIssuer,
    TokenRequest,
};
use libfuzzer_sys::fuzz_target;

const PROTOCOL: u64 = 7;
const UNIX: u64 = 1_800_000_000;

fn connected(now: Instant) -> (Server, Client, SocketAddr, SocketAddr) {
    let server_addr: SocketAddr = "10.0.0.1:1".parse().unwrap();
    let client_addr: SocketAddr = "10.0.0.2:2".parse().unwrap();
    let key = Key([9; 32]);
    let mut config = ServerConfig::new(PROTOCOL, key.clone());
    config.public_addresses = vec![server_addr];
    config.cookies = Cookies::UnderLoad { opens_per_second: 1 };
    let mut server =
        Server::with_challenge_key(config, now, Duration::from_secs(UNIX), Key([8; 32]));
    let token = TokenIssuer::new(PROTOCOL, key)
        .issue_with(
            UNIX,
            &TokenRequest {
                client_id: 1,
                server_addresses: &[server_addr],
                expire_seconds: 60,
                timeout_seconds: 10,
                user_data: None,
            },
            [1; 24],
            Key([2; 32]),
            Key([3; 32]),
        )
        .unwrap();
    let mut client = Client::new(token, now).with_cookies();
    let mut buf = [0u8; REQUEST_BYTES + MAX_PACKET_BYTES];
    for _ in 0..4 {
        while let Some(t) = client.poll_transmit(now + Duration::from_secs(1), &mut buf) {
            server.handle_datagram(now, client_addr, &mut buf[..t.len]);
        }
        while let Some(t) = server.poll_transmit(now, &mut buf) {
            client.handle_datagram(now, server_addr, &mut buf[..t.len]);
        }
    }
    assert_eq!(client.state(), ClientState::Connected);
    (server, client, server_addr, client_addr)
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let (mut server, mut client, server_addr, client_addr) = connected(now);
    let stranger: SocketAddr = "10.0.0.3:3".parse().unwrap();
    // Datagrams: a length byte (times 8), a source byte, then the bytes.
    let mut rest = data;
    while rest.len() >= 2 {
        let len = (usize::from(rest[0]) * 8).min(rest.len() - 2);
        let from = rest[1];
        let mut datagram = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        match from % 3 {
            0 => drop(server.handle_datagram(now, stranger, &mut datagram)),
            1 => drop(server.handle_datagram(now, client_addr, &mut datagram)),
            _ => drop(client.handle_datagram(now, server_addr, &mut datagram)),
        }
        if let Some(kind) = Kind::from_bits(from & 0x0f) {
            let _ = Body::parse(kind, &datagram);
        }
    }
    // The session goes on: a payload from the client still arrives.
    let mut buf = [0u8; MAX_PACKET_BYTES];
    if client.state() == ClientState::Connected {
        let t = client.send(now, b"still here", &mut buf).unwrap();
        let got = server.handle_datagram(now, client_addr, &mut buf[..t.len]);
        assert_eq!(got.map(|r| r.data.to_vec()), Some(b"still here".to_vec()));
    }
});

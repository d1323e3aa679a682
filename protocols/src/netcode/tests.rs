//! A server and clients joined by in-memory queues under a virtual clock: the handshake,
//! sessions, timeouts and every refusal, deterministic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

const PROTOCOL: u64 = 0x1234_5678_9abc_def0;
const KEY: Key = Key([0x42; 32]);
const UNIX: u64 = 1_800_000_000;
const STEP: Duration = Duration::from_millis(10);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One datagram on its way.
struct Flight {
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// The simulated network: one server, any number of clients, a fixed one-way latency, and
/// a loss rate (pseudo-random, from a fixed seed).
struct Net {
    now: Instant,
    server_addr: SocketAddr,
    server: Server,
    clients: Vec<(SocketAddr, Client)>,
    flights: Vec<Flight>,
    latency: Duration,
    loss: f64,
    seed: u64,
    /// Payloads each client received, in order.
    client_got: Vec<Vec<Vec<u8>>>,
    /// Payloads the server received, with their slot.
    server_got: Vec<(ClientIndex, Vec<u8>)>,
    events: Vec<ServerEvent>,
    /// The server echoes every payload back when set.
    echo: bool,
}

impl Net {
    fn new(config: impl FnOnce(&mut ServerConfig)) -> Net {
        let now = Instant::now();
        let server_addr = addr("10.0.0.1:40000");
        let mut cfg = ServerConfig::new(PROTOCOL, KEY);
        cfg.public_addresses = vec![server_addr];
        config(&mut cfg);
        Net {
            now,
            server_addr,
            server: Server::new(cfg, now, Duration::from_secs(UNIX)),
            clients: Vec::new(),
            flights: Vec::new(),
            latency: Duration::from_millis(20),
            loss: 0.0,
            seed: 0x9e37_79b9_7f4a_7c15,
            client_got: Vec::new(),
            server_got: Vec::new(),
            events: Vec::new(),
            echo: true,
        }
    }

    fn token(&self, client_id: u64) -> ConnectToken {
        self.token_with(client_id, &[self.server_addr], 30, 5)
    }

    fn token_with(
        &self,
        client_id: u64,
        servers: &[SocketAddr],
        expire: u64,
        timeout: i32,
    ) -> ConnectToken {
        TokenIssuer::new(PROTOCOL, KEY)
            .issue(
                UNIX,
                &TokenRequest {
                    client_id,
                    server_addresses: servers,
                    expire_seconds: expire,
                    timeout_seconds: timeout,
                    user_data: Some(&[client_id as u8; USER_DATA_BYTES]),
                },
            )
            .unwrap()
    }

    fn add_client(&mut self, from: &str, token: ConnectToken) -> usize {
        self.clients
            .push((addr(from), Client::new(token, self.now)));
        self.client_got.push(Vec::new());
        self.clients.len() - 1
    }

    fn put(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        if ((self.seed >> 11) as f64 / (1u64 << 53) as f64) < self.loss {
            return;
        }
        self.flights.push(Flight {
            at: self.now + self.latency,
            from,
            to,
            bytes: bytes.to_vec(),
        });
    }

    /// One tick: deliver what is due, let everyone send, fire timers, advance the clock.
    fn step(&mut self) {
        let now = self.now;
        let due: Vec<Flight>;
        (due, self.flights) = self.flights.drain(..).partition(|f| f.at <= now);
        let mut out = [0u8; MAX_PACKET_BYTES];
        for mut f in due {
            if f.to == self.server_addr {
                if let Some(r) = self.server.handle_datagram(now, f.from, &mut f.bytes) {
                    let (client, data) = (r.client, r.data.to_vec());
                    self.server_got.push((client, data.clone()));
                    if self.echo {
                        let t = self.server.send(now, client, &data, &mut out).unwrap();
                        let bytes = out[..t.len].to_vec();
                        self.put(self.server_addr, t.to, &bytes);
                    }
                }
            } else if let Some(i) = self.clients.iter().position(|(a, _)| *a == f.to)
                && let Some(p) = self.clients[i].1.handle_datagram(now, f.from, &mut f.bytes)
            {
                self.client_got[i].push(p.to_vec());
            }
        }
        self.server.handle_timeout(now);
        while let Some(t) = self.server.poll_transmit(now, &mut out) {
            let bytes = out[..t.len].to_vec();
            self.put(self.server_addr, t.to, &bytes);
        }
        while let Some(e) = self.server.poll_event() {
            self.events.push(e);
        }
        for i in 0..self.clients.len() {
            let from = self.clients[i].0;
            self.clients[i].1.handle_timeout(now);
            while let Some(t) = self.clients[i].1.poll_transmit(now, &mut out) {
                let bytes = out[..t.len].to_vec();
                self.put(from, t.to, &bytes);
            }
        }
        self.now += STEP;
    }

    /// Steps until `done`, failing after `limit` of simulated time (a livelock or a stall).
    fn drive(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            assert!(self.now < end, "not done after {limit:?}");
            self.step();
        }
    }

    fn state(&self, i: usize) -> ClientState {
        self.clients[i].1.state()
    }

    fn send_from(&mut self, i: usize, payload: &[u8]) {
        let mut out = [0u8; MAX_PACKET_BYTES];
        let t = self.clients[i].1.send(self.now, payload, &mut out).unwrap();
        let from = self.clients[i].0;
        self.put(from, t.to, &out[..t.len]);
    }

    /// The server's handling of raw bytes from `from`.
    fn inject(&mut self, from: &str, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut bytes = bytes.to_vec();
        let now = self.now;
        self.server
            .handle_datagram(now, addr(from), &mut bytes)
            .map(|r| r.data.to_vec())
    }

    fn dropped(&self, reason: DropReason) -> u64 {
        self.server.stats().drops.get(reason)
    }
}

#[test]
fn a_client_connects_exchanges_payloads_and_disconnects() {
    let mut net = Net::new(|_| {});
    let token = net.token(7);
    let c = net.add_client("10.0.0.2:5000", token);
    net.drive(Duration::from_secs(1), |n| {
        n.state(c) == ClientState::Connected
    });
    assert_eq!(net.clients[c].1.slot(), Some((0, 256)));
    match &net.events[0] {
        ServerEvent::Connected {
            client_id,
            addr: a,
            user_data,
            ..
        } => {
            assert_eq!((*client_id, *a), (7, addr("10.0.0.2:5000")));
            assert_eq!(user_data[..], [7; USER_DATA_BYTES]);
        }
        other => panic!("{other:?}"),
    }

    for i in 0..50u8 {
        net.send_from(c, &[i; 100]);
        net.step();
    }
    net.drive(Duration::from_secs(1), |n| n.client_got[c].len() == 50);
    let expected: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 100]).collect();
    assert_eq!(net.client_got[c], expected);

    net.clients[c].1.disconnect();
    net.drive(Duration::from_secs(1), |n| n.server.connected() == 0);
    assert!(matches!(
        net.events.last(),
        Some(ServerEvent::Disconnected {
            reason: DisconnectReason::ByClient,
            client_id: 7,
            ..
        })
    ));
    assert_eq!(
        net.server.stats().drops.total(),
        net.dropped(DropReason::UnknownSource)
    );
}

#[test]
fn every_reply_to_an_unconnected_source_is_smaller_than_what_caused_it() {
    let mut net = Net::new(|_| {});
    let token = net.token(1);
    let mut request = [0u8; REQUEST_BYTES];
    assert_eq!(write_request(&token, &mut request), REQUEST_BYTES);
    let now = net.now;
    let mut bytes = request.to_vec();
    net.server
        .handle_datagram(now, addr("10.0.0.9:1"), &mut bytes);
    let mut out = [0u8; MAX_PACKET_BYTES];
    let t = net.server.poll_transmit(now, &mut out).unwrap();
    assert!(t.len < REQUEST_BYTES / 3, "challenge of {} bytes", t.len);
    // A full server's denial is smaller still.
    let mut net = Net::new(|c| c.max_clients = 0);
    let mut bytes = request.to_vec();
    net.server
        .handle_datagram(now, addr("10.0.0.9:1"), &mut bytes);
    let t = net.server.poll_transmit(now, &mut out).unwrap();
    assert_eq!(t.len, 1 + 1 + MAC_BYTES);
    assert_eq!(net.server.stats().denied, 1);
}

#[test]
fn a_full_server_denies_and_the_client_tries_the_next_address() {
    let mut net = Net::new(|c| c.max_clients = 1);
    let first = net.token(1);
    let a = net.add_client("10.0.0.2:5000", first);
    net.drive(Duration::from_secs(1), |n| {
        n.state(a) == ClientState::Connected
    });
    let second = net.token(2);
    let b = net.add_client("10.0.0.3:5000", second);
    net.drive(Duration::from_secs(1), |n| {
        n.state(b) == ClientState::Denied
    });

    // A token naming an unreachable server first, then this one.
    let servers = [addr("10.9.9.9:1"), net.server_addr];
    let token = net.token_with(3, &servers, 30, 1);
    net.clients[a].1.disconnect();
    let c = net.add_client("10.0.0.4:5000", token);
    net.drive(Duration::from_secs(3), |n| {
        n.state(c) == ClientState::Connected
    });
    assert_eq!(net.clients[c].1.server_addr(), net.server_addr);
}

#[test]
fn silent_peers_time_out_on_both_sides() {
    let mut net = Net::new(|_| {});
    let token = net.token_with(1, &[addr("10.0.0.1:40000")], 30, 1);
    let c = net.add_client("10.0.0.2:5000", token);
    net.drive(Duration::from_secs(1), |n| {
        n.state(c) == ClientState::Connected
    });
    // The client falls silent: it goes away without a word.
    net.clients.clear();
    net.drive(Duration::from_secs(2), |n| n.server.connected() == 0);
    assert!(matches!(
        net.events.last(),
        Some(ServerEvent::Disconnected {
            reason: DisconnectReason::TimedOut,
            ..
        })
    ));

    // A server that never answers: the request times out.
    let mut net = Net::new(|_| {});
    let token = net.token_with(1, &[addr("10.9.9.9:1")], 30, 1);
    let c = net.add_client("10.0.0.2:5000", token);
    net.drive(Duration::from_secs(2), |n| {
        n.state(c) == ClientState::RequestTimedOut
    });

    // A token that expires before any server answers.
    let token = net.token_with(2, &[addr("10.9.9.9:1")], 1, 30);
    let c = net.add_client("10.0.0.3:5000", token);
    net.drive(Duration::from_secs(2), |n| {
        n.state(c) == ClientState::ConnectTokenExpired
    });
}

#[test]
fn the_handshake_survives_loss() {
    let mut net = Net::new(|_| {});
    net.loss = 0.5;
    let token = net.token(5);
    let c = net.add_client("10.0.0.2:5000", token);
    net.drive(Duration::from_secs(3), |n| {
        n.state(c) == ClientState::Connected
    });
}

#[test]
fn hostile_requests_are_dropped_before_and_after_decryption_by_reason() {
    let mut net = Net::new(|c| {
        c.access.deny = vec!["10.66.0.0/16".parse().unwrap()];
    });
    let token = net.token(1);
    let mut request = [0u8; REQUEST_BYTES];
    write_request(&token, &mut request);

    // Cut short, or padded.
    net.inject("10.0.0.2:1", &request[..REQUEST_BYTES - 1]);
    assert_eq!(net.dropped(DropReason::RequestLength), 1);
    // Another version.
    let mut other = request;
    other[12] = b'3';
    net.inject("10.0.0.2:1", &other);
    assert_eq!(net.dropped(DropReason::Version), 1);
    let server = [net.server_addr];
    // Another game.
    let other = request_bytes(&TokenIssuer::new(PROTOCOL + 1, KEY), UNIX, &server);
    net.inject("10.0.0.2:1", &other);
    assert_eq!(net.dropped(DropReason::ProtocolId), 1);
    // Expired: issued long ago.
    let old = request_bytes(&TokenIssuer::new(PROTOCOL, KEY), UNIX - 100, &server);
    net.inject("10.0.0.2:1", &old);
    assert_eq!(net.dropped(DropReason::Expired), 1);
    // Refused network.
    net.inject("10.66.1.1:1", &request);
    assert_eq!(net.dropped(DropReason::NotAdmitted), 1);
    // Sealed under another key.
    let forged = request_bytes(&TokenIssuer::new(PROTOCOL, Key([1; 32])), UNIX, &server);
    net.inject("10.0.0.2:1", &forged);
    assert_eq!(net.dropped(DropReason::TokenForged), 1);
    // A token naming another server.
    let elsewhere = request_bytes(
        &TokenIssuer::new(PROTOCOL, KEY),
        UNIX,
        &[addr("10.0.0.77:1")],
    );
    net.inject("10.0.0.2:1", &elsewhere);
    assert_eq!(net.dropped(DropReason::WrongServer), 1);
    assert_eq!(net.server.stats().tokens_opened, 1);

    // A good request binds the token to its source; the same token from elsewhere is
    // dropped without being opened again.
    net.inject("10.0.0.2:1", &request);
    assert_eq!(net.server.pending(), 1);
    net.inject("10.0.0.3:1", &request);
    assert_eq!(net.dropped(DropReason::TokenReused), 1);
    assert_eq!(net.server.stats().tokens_opened, 2);
    // Nothing above was answered but the good request.
    let mut out = [0u8; MAX_PACKET_BYTES];
    let now = net.now;
    assert!(net.server.poll_transmit(now, &mut out).is_some());
    assert!(net.server.poll_transmit(now, &mut out).is_none());
}

/// The connection request of a token `issuer` made at `unix` for `servers`, good for 10 s.
fn request_bytes(issuer: &TokenIssuer, unix: u64, servers: &[SocketAddr]) -> [u8; REQUEST_BYTES] {
    let token = issuer
        .issue(
            unix,
            &TokenRequest {
                client_id: 1,
                server_addresses: servers,
                expire_seconds: 10,
                timeout_seconds: 5,
                user_data: None,
            },
        )
        .unwrap();
    let mut bytes = [0u8; REQUEST_BYTES];
    write_request(&token, &mut bytes);
    bytes
}

#[test]
fn a_flood_from_one_source_is_rate_limited_and_garbage_is_counted() {
    let mut net = Net::new(|c| {
        c.rate_limit = RateLimit {
            burst: 5,
            per_second: 1,
            sources: 64,
        };
    });
    // Requests with the right header and a private part that is not a token.
    let token = net.token(2);
    let mut junk = [0u8; REQUEST_BYTES];
    write_request(&token, &mut junk);
    junk[200] ^= 1;
    for _ in 0..100 {
        net.inject("10.0.0.66:1", &junk);
    }
    // The first five reach the token (and fail to open); the rest stop at the bucket.
    assert_eq!(net.dropped(DropReason::TokenForged), 5);
    assert_eq!(net.dropped(DropReason::RateLimited), 95);
    // Another source is unaffected.
    let token = net.token(3);
    let c = net.add_client("10.0.0.5:5000", token);
    net.drive(Duration::from_secs(1), |n| {
        n.state(c) == ClientState::Connected
    });

    // Garbage of every size from a stranger: dropped, counted, never answered.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..1500 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8 | 1
            })
            .collect();
        assert_eq!(net.inject("10.0.0.99:1", &bytes), None);
    }
    assert!(net.server.stats().drops.total() >= 1500);
}

#[test]
fn replayed_and_tampered_session_packets_are_dropped() {
    let mut net = Net::new(|_| {});
    net.echo = false;
    let token = net.token(4);
    let c = net.add_client("10.0.0.2:5000", token);
    net.drive(Duration::from_secs(1), |n| {
        n.state(c) == ClientState::Connected
    });

    let mut out = [0u8; MAX_PACKET_BYTES];
    let now = net.now;
    let t = net.clients[c].1.send(now, b"once", &mut out).unwrap();
    let packet = out[..t.len].to_vec();
    assert_eq!(
        net.inject("10.0.0.2:5000", &packet).as_deref(),
        Some(&b"once"[..])
    );
    assert_eq!(net.inject("10.0.0.2:5000", &packet), None);
    assert_eq!(net.dropped(DropReason::Replayed), 1);

    let t = net.clients[c].1.send(now, b"twice", &mut out).unwrap();
    let mut tampered = out[..t.len].to_vec();
    tampered[t.len - 20] ^= 0x80;
    assert_eq!(net.inject("10.0.0.2:5000", &tampered), None);
    assert_eq!(net.dropped(DropReason::Forged), 1);
    // The forged copy did not burn the sequence: the real one still arrives.
    assert_eq!(
        net.inject("10.0.0.2:5000", &out[..t.len]).as_deref(),
        Some(&b"twice"[..])
    );
    // The same bytes from another address belong to no session.
    assert_eq!(net.inject("10.0.0.3:5000", &out[..t.len]), None);
    assert_eq!(net.dropped(DropReason::UnknownSource), 1);
}

#[test]
fn payload_sizes_outside_the_standard_are_typed_errors() {
    let mut net = Net::new(|_| {});
    let token = net.token(4);
    let c = net.add_client("10.0.0.2:5000", token);
    let mut out = [0u8; MAX_PACKET_BYTES];
    let now = net.now;
    assert_eq!(
        net.clients[c].1.send(now, b"early", &mut out),
        Err(SendError::NotConnected)
    );
    net.drive(Duration::from_secs(1), |n| {
        n.state(c) == ClientState::Connected
    });
    let now = net.now;
    assert_eq!(
        net.clients[c].1.send(now, &[], &mut out),
        Err(SendError::PayloadSize(0))
    );
    assert_eq!(
        net.clients[c].1.send(now, &[0; 1201], &mut out),
        Err(SendError::PayloadSize(1201))
    );
    assert!(net.clients[c].1.send(now, &[0; 1200], &mut out).is_ok());
}

#[test]
fn the_server_disconnecting_a_client_frees_its_slot_and_tells_it() {
    let mut net = Net::new(|c| c.max_clients = 1);
    let token = net.token(8);
    let c = net.add_client("10.0.0.2:5000", token);
    net.drive(Duration::from_secs(1), |n| {
        n.state(c) == ClientState::Connected
    });
    let slot = net.server.client_at(addr("10.0.0.2:5000")).unwrap();
    net.server.disconnect(slot);
    assert_eq!(net.server.connected(), 0);
    net.drive(Duration::from_secs(1), |n| {
        n.state(c) == ClientState::Disconnected
    });
    let token = net.token(9);
    let d = net.add_client("10.0.0.3:5000", token);
    net.drive(Duration::from_secs(1), |n| {
        n.state(d) == ClientState::Connected
    });
}

/// A connected client with resumption on both ends.
fn resumable() -> (Net, usize) {
    let mut net = Net::new(|c| c.resumption = true);
    let token = net.token(11);
    net.clients.push((
        addr("10.0.0.2:5000"),
        Client::new(token, net.now).with_resumption(),
    ));
    net.client_got.push(Vec::new());
    net.drive(Duration::from_secs(1), |n| {
        n.state(0) == ClientState::Connected
    });
    (net, 0)
}

#[test]
fn a_session_moves_to_a_new_address_and_carries_on() {
    let (mut net, c) = resumable();
    net.send_from(c, b"before");
    net.drive(Duration::from_secs(1), |n| n.client_got[c].len() == 1);

    // Wi-Fi to mobile: a new address, and the client knows it.
    net.clients[c].0 = addr("10.9.0.7:6000");
    let now = net.now;
    net.clients[c].1.rebind(now);
    net.drive(Duration::from_secs(1), |n| {
        n.events
            .iter()
            .any(|e| matches!(e, ServerEvent::Moved { .. }))
    });
    let slot = net.server.client_at(addr("10.9.0.7:6000")).unwrap();
    assert_eq!(net.server.client_id(slot), Some(11));
    assert_eq!(net.server.client_at(addr("10.0.0.2:5000")), None);
    for i in 0..20u8 {
        net.send_from(c, &[i; 300]);
        net.step();
    }
    net.drive(Duration::from_secs(1), |n| n.client_got[c].len() == 21);
    assert_eq!(net.server.stats().moved, 1);
    assert_eq!(net.server.connected(), 1);
}

#[test]
fn a_client_moved_by_its_nat_without_knowing_it_is_found_again() {
    let (mut net, c) = resumable();
    // The address changes under the client; it notices only the server's silence.
    net.clients[c].0 = addr("10.9.0.8:7000");
    net.drive(Duration::from_secs(3), |n| {
        n.server.client_at(addr("10.9.0.8:7000")).is_some()
    });
    net.send_from(c, b"found");
    net.drive(Duration::from_secs(1), |n| n.client_got[c].len() == 1);
}

#[test]
fn without_resumption_a_new_address_is_a_stranger() {
    let mut net = Net::new(|_| {});
    let token = net.token_with(12, &[addr("10.0.0.1:40000")], 30, 1);
    let c = net.add_client("10.0.0.2:5000", token);
    net.drive(Duration::from_secs(1), |n| {
        n.state(c) == ClientState::Connected
    });
    net.clients[c].0 = addr("10.9.0.7:6000");
    let now = net.now;
    net.clients[c].1.rebind(now);
    net.drive(Duration::from_secs(3), |n| {
        n.state(c) == ClientState::ConnectionTimedOut
    });
    assert!(net.dropped(DropReason::UnknownSource) > 0);
    assert_eq!(net.server.stats().moved, 0);
}

#[test]
fn a_forged_or_stolen_resume_gets_at_most_three_times_its_bytes_and_the_client_returns() {
    let (mut net, c) = resumable();
    let slot = net.server.client_at(addr("10.0.0.2:5000")).unwrap();
    // Forged: the slot in the clear, garbage sealed.
    let mut forged = vec![0x17, 0x05];
    forged.extend_from_slice(&slot.get().to_le_bytes());
    forged.extend_from_slice(&[0xaa; 24]);
    net.inject("10.66.0.1:1", &forged);
    assert_eq!(net.dropped(DropReason::Forged), 1);
    assert_eq!(net.server.stats().moved, 0);

    // Stolen: a genuine resume, captured on the path and raced from the attacker's address.
    let now = net.now;
    net.clients[c].1.rebind(now);
    let mut out = [0u8; MAX_PACKET_BYTES];
    let t = net.clients[c].1.poll_transmit(now, &mut out).unwrap();
    let stolen = out[..t.len].to_vec();
    net.inject("10.66.0.1:1", &stolen);
    assert_eq!(net.server.stats().moved, 1);
    // The genuine copy arrives second: a replay.
    net.inject("10.0.0.2:5000", &stolen);
    assert_eq!(net.dropped(DropReason::Replayed), 1);
    // The attacker's address gets the challenge and little else: 3x what it sent, at most.
    let mut to_attacker = 0;
    // Two seconds of the server trying (the token's timeout is five).
    for _ in 0..20 {
        let now = net.now;
        net.server.handle_timeout(now);
        let slot = net.server.client_at(addr("10.66.0.1:1")).unwrap();
        let _ = net.server.send(now, slot, &[0; 500], &mut out);
        while let Some(t) = net.server.poll_transmit(now, &mut out) {
            if t.to == addr("10.66.0.1:1") {
                to_attacker += t.len;
            }
        }
        net.now += Duration::from_millis(100);
    }
    assert!(to_attacker as u64 <= UNVALIDATED_SEND_FACTOR * stolen.len() as u64);
    assert!(net.server.stats().path_budget_refusals > 0);
    // The real client, hearing nothing, announces itself again and takes its session back.
    net.drive(Duration::from_secs(3), |n| {
        n.server.client_at(addr("10.0.0.2:5000")).is_some()
    });
    net.send_from(c, b"mine");
    net.drive(Duration::from_secs(1), |n| n.client_got[c].len() == 1);
}

/// A client with cookies enabled, in `net`.
fn add_cookie_client(net: &mut Net, from: &str, client_id: u64) -> usize {
    let token = net.token(client_id);
    net.clients
        .push((addr(from), Client::new(token, net.now).with_cookies()));
    net.client_got.push(Vec::new());
    net.clients.len() - 1
}

/// The server's queued replies, as (destination, bytes).
fn replies(net: &mut Net) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = [0u8; MAX_PACKET_BYTES];
    let now = net.now;
    let mut got = Vec::new();
    while let Some(t) = net.server.poll_transmit(now, &mut out) {
        got.push((t.to, out[..t.len].to_vec()));
    }
    got
}

#[test]
fn with_cookies_always_a_request_is_answered_with_a_cookie_before_its_token_is_opened() {
    let mut net = Net::new(|c| c.cookies = Cookies::Always);
    let c = add_cookie_client(&mut net, "10.0.0.2:5000", 3);
    net.drive(Duration::from_secs(1), |n| {
        n.state(c) == ClientState::Connected
    });
    let stats = net.server.stats();
    assert_eq!((stats.cookies_sent, stats.cookies_refused), (1, 0));
    assert_eq!(stats.tokens_opened, 1);
    // The payloads flow as in the standard.
    net.send_from(c, b"after a cookie");
    net.drive(Duration::from_secs(1), |n| !n.client_got[c].is_empty());
    assert_eq!(net.client_got[c][0], b"after a cookie");

    // A standard client never gets past the cookie: its request is not opened.
    let token = net.token(4);
    let plain = net.add_client("10.0.0.3:5000", token);
    for _ in 0..50 {
        net.step();
    }
    assert_eq!(net.state(plain), ClientState::SendingRequest);
    assert_eq!(net.server.stats().tokens_opened, 1);
}

#[test]
fn spoofed_requests_cost_no_decryption_and_bad_cookies_get_good_ones() {
    let mut net = Net::new(|c| c.cookies = Cookies::Always);
    let token = net.token(9);
    let mut request = [0u8; REQUEST_BYTES];
    write_request(&token, &mut request);
    // A flood of requests from forged sources: each gets a 21-byte cookie, nothing is opened.
    for i in 0..200u32 {
        let from = format!(
            "10.{}.{}.{}:{}",
            1 + i / 60000,
            (i / 250) % 250,
            i % 250,
            1000 + i
        );
        net.inject(&from, &request);
    }
    assert_eq!(net.server.stats().tokens_opened, 0);
    assert_eq!(net.server.stats().cookies_sent, 200);
    assert_eq!(net.server.pending(), 0);
    let sent = replies(&mut net);
    assert_eq!(sent.len(), 200);
    assert!(
        sent.iter().all(|(_, b)| b.len() == COOKIE_PACKET_BYTES),
        "every reply a cookie, 51 times smaller than its cause"
    );

    // A cookie made for one address does not open the door for another.
    let (to, packet) = &sent[0];
    let mut with_cookie = request.to_vec();
    with_cookie.extend_from_slice(&packet[1..]);
    net.inject("10.200.0.1:1", &with_cookie);
    assert_eq!(net.server.stats().cookies_refused, 1);
    assert_eq!(net.server.stats().tokens_opened, 0);
    // A forged cookie is refused and answered with a real one.
    let mut bent = with_cookie.clone();
    *bent.last_mut().unwrap() ^= 1;
    net.inject(&to.to_string(), &bent);
    assert_eq!(net.server.stats().cookies_refused, 2);
    assert_eq!(net.server.stats().tokens_opened, 0);
    // The real address with its own cookie gets its token opened and a challenge.
    replies(&mut net);
    net.inject(&to.to_string(), &with_cookie);
    assert_eq!(net.server.stats().tokens_opened, 1);
    assert_eq!(net.server.pending(), 1);
    let challenge = replies(&mut net);
    assert_eq!(challenge.len(), 1);
    assert!(challenge[0].1.len() > COOKIE_PACKET_BYTES, "a challenge");

    // Stale: the same cookie after its lifetime.
    net.now += Duration::from_secs(COOKIE_LIFETIME_SECONDS + 2);
    let later = net.now;
    net.server.handle_timeout(later);
    let token = net.token(10);
    let mut fresh = [0u8; REQUEST_BYTES];
    write_request(&token, &mut fresh);
    let mut stale = fresh.to_vec();
    stale.extend_from_slice(&packet[1..]);
    net.inject(&to.to_string(), &stale);
    assert_eq!(net.server.stats().cookies_refused, 3);
    assert_eq!(net.server.stats().tokens_opened, 1);
}

#[test]
fn under_load_cookies_are_asked_for_only_while_tokens_open_fast() {
    let mut net = Net::new(|c| {
        c.cookies = Cookies::UnderLoad {
            opens_per_second: 3,
        }
    });
    // Quiet: standard clients connect as the standard says.
    let token = net.token(1);
    let plain = net.add_client("10.0.0.2:5000", token);
    net.drive(Duration::from_secs(1), |n| {
        n.state(plain) == ClientState::Connected
    });
    assert_eq!(net.server.stats().cookies_sent, 0);

    // A burst of forged tokens from many sources in the same second: openings stop at the
    // limit (the standard client's was the first), and the rest get cookies.
    let server = [net.server_addr];
    let forged = request_bytes(&TokenIssuer::new(PROTOCOL, Key([1; 32])), UNIX, &server);
    for i in 0..20 {
        net.inject(&format!("10.1.0.{i}:9"), &forged);
    }
    assert_eq!(net.server.stats().tokens_opened, 1);
    assert_eq!(net.dropped(DropReason::TokenForged), 2);
    assert_eq!(net.server.stats().cookies_sent, 18);
    // Meanwhile a client with cookies gets in; a standard one waits.
    let c = add_cookie_client(&mut net, "10.0.0.3:5000", 2);
    let token = net.token(3);
    let waiting = net.add_client("10.0.0.4:5000", token);
    net.drive(Duration::from_secs(1), |n| {
        n.state(c) == ClientState::Connected
    });
    assert_eq!(net.state(waiting), ClientState::SendingRequest);
    // Two quiet seconds later the standard client gets in too.
    net.drive(Duration::from_secs(4), |n| {
        n.state(waiting) == ClientState::Connected
    });
}

#[test]
fn cookie_replies_stop_at_their_budget_and_resume_as_it_refills() {
    let mut net = Net::new(|c| {
        c.cookies = Cookies::Always;
        c.cookie_replies_per_second = 100;
    });
    let token = net.token(9);
    let mut request = [0u8; REQUEST_BYTES];
    write_request(&token, &mut request);
    for i in 0..50u32 {
        net.inject(&format!("10.5.0.{}:{}", i % 250, 2000 + i), &request);
    }
    // A tenth of a second's worth answered, the rest dropped unanswered and counted.
    assert_eq!(net.server.stats().cookies_sent, 10);
    assert_eq!(net.dropped(DropReason::CookieBudget), 40);
    assert_eq!(replies(&mut net).len(), 10);
    assert_eq!(net.server.stats().tokens_opened, 0);
    // 100 ms later the budget has refilled.
    net.now += Duration::from_millis(100);
    for i in 0..20u32 {
        net.inject(&format!("10.6.0.{i}:3000"), &request);
    }
    assert_eq!(net.server.stats().cookies_sent, 20);
    assert_eq!(net.dropped(DropReason::CookieBudget), 50);
}

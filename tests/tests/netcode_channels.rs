//! Channels over netcode sessions over real UDP sockets, through a user-space proxy that loses
//! 5 % of datagrams, delays each by 20–80 ms (so reorders them) and duplicates 1 %: reliable-
//! ordered delivers every message exactly once and in order without a long stall,
//! unreliable-sequenced never delivers an older message after a newer one.
//!
//! Unix only: the proxy's timing needs short sleeps (see `coring_tests::lossy`).

#![cfg(unix)]

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use coring_protocols::channel::{ChannelConfig, ChannelKind, ConnectionConfig};
use coring_protocols::netcode::{Client, Key, Server, ServerConfig, TokenIssuer, TokenRequest};
use coring_protocols::udp::{ChannelClient, ChannelEvent, serve_channels};
use coring_tests::lossy::{Faults, LossyUdpProxy};

const PROTOCOL: u64 = 0xc4a2_2e15;
const KEY: Key = Key([0x33; 32]);
const TICK: Duration = Duration::from_millis(10);

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
}

/// Channel 0 reliable-ordered, 1 unreliable-sequenced (both ends use it).
fn channels() -> ConnectionConfig {
    ConnectionConfig {
        channels: vec![
            ChannelConfig::new(ChannelKind::ReliableOrdered),
            ChannelConfig::new(ChannelKind::UnreliableSequenced),
        ],
        ..ConnectionConfig::default()
    }
}

/// A channel echo server on its own one-core runtime, with session resumption. Its tokens
/// may name any address (the clients may reach it through a proxy). Sessions that move are
/// reported on the channel returned.
fn echo_server() -> (
    SocketAddr,
    coring::ShutdownHandle,
    mpsc::Receiver<(SocketAddr, SocketAddr)>,
) {
    let (moved_tx, moved_rx) = mpsc::channel();
    let (addr, shutdown) = coring_tests::udp_service(move |socket| async move {
        let mut config = ServerConfig::new(PROTOCOL, KEY);
        config.resumption = true;
        let server = Server::new(config, coring::time::now(), unix_now());
        serve_channels(
            socket,
            server,
            channels(),
            TICK,
            |sessions, event| match event {
                ChannelEvent::Message {
                    client,
                    channel,
                    data,
                } => sessions.send(client, channel, data).unwrap(),
                ChannelEvent::Moved { from, to, .. } => moved_tx.send((from, to)).unwrap(),
                _ => {}
            },
        )
        .await;
    });
    (addr, shutdown, moved_rx)
}

fn token(client_id: u64, server: SocketAddr) -> coring_protocols::netcode::ConnectToken {
    TokenIssuer::new(PROTOCOL, KEY)
        .issue(
            unix_now().as_secs(),
            &TokenRequest {
                client_id,
                server_addresses: &[server],
                expire_seconds: 60,
                timeout_seconds: 10,
                user_data: None,
            },
        )
        .unwrap()
}

#[coring::test]
fn channels_keep_their_promises_through_loss_delay_reordering_and_duplication() {
    let (server, shutdown, _moved) = echo_server();
    let proxy = LossyUdpProxy::start(
        server,
        Faults {
            loss: 0.05,
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(60),
            duplicate: 0.01,
            seed: 7,
        },
    );

    let token = token(1, proxy.addr);
    let reliable: Vec<Bytes> = (0..300u32)
        .map(|i| {
            let mut m = vec![(i % 256) as u8; 4 + (i as usize * 131) % 3000];
            m[..4].copy_from_slice(&i.to_le_bytes());
            Bytes::from(m)
        })
        .collect();
    let sent = reliable.clone();
    coring::block_on(async move {
        let mut client = ChannelClient::connect(token, channels(), TICK)
            .await
            .unwrap();
        let mut got_reliable = Vec::new();
        let mut got_sequenced = Vec::new();
        let mut last = coring::time::now();
        let mut worst = Duration::ZERO;
        let mut to_send = sent.iter();
        let mut sequence = 0u32;
        while got_reliable.len() < sent.len() {
            // A few messages each turn, within the channel's window.
            for m in to_send.by_ref().take(3) {
                client.send(0, m.clone()).unwrap();
            }
            client
                .send(1, Bytes::from(sequence.to_le_bytes().to_vec()))
                .unwrap();
            sequence += 1;
            let (channel, data) = coring::time::timeout(Duration::from_secs(10), client.recv())
                .await
                .expect("a message within 10 s")
                .unwrap();
            if channel == 0 {
                let now = coring::time::now();
                worst = worst.max(now - last);
                last = now;
                got_reliable.push(data);
            } else {
                got_sequenced.push(u32::from_le_bytes(data[..4].try_into().unwrap()));
            }
        }
        assert_eq!(
            got_reliable, sent,
            "reliable-ordered: every message once, in order"
        );
        assert!(
            got_sequenced.windows(2).all(|w| w[0] < w[1]),
            "unreliable-sequenced went backwards"
        );
        assert!(!got_sequenced.is_empty());
        let stats = client.stats();
        eprintln!("longest gap between reliable deliveries {worst:?}; {stats:?}");
        // A few RTTs (80-200 ms here) at most between reliable deliveries.
        assert!(
            worst < Duration::from_secs(2),
            "a {worst:?} stall ({stats:?})"
        );
        assert!(
            stats.rtt >= Duration::from_millis(40),
            "rtt {:?}",
            stats.rtt
        );
        client.disconnect().await.unwrap();
    });
    let counts = &proxy.counts;
    assert!(counts.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0);
    shutdown.shutdown();
}

#[coring::test]
fn a_session_survives_its_client_socket_being_replaced_without_losing_a_reliable_message() {
    let (server, shutdown, moved) = echo_server();
    let token = token(2, server);
    let messages: Vec<Bytes> = (0..200u32)
        .map(|i| Bytes::from(i.to_le_bytes().repeat(1 + i as usize % 300)))
        .collect();
    let sent = messages.clone();
    let (old, new) = coring::block_on(async move {
        let socket = coring::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let old = socket.local_addr().unwrap();
        let netcode = Client::new(token, coring::time::now()).with_resumption();
        let mut client = ChannelClient::connect_with(socket, netcode, channels(), TICK)
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut new = None;
        for (i, m) in sent.iter().enumerate() {
            client.send(0, m.clone()).unwrap();
            if i == 100 {
                // Mid-session, mid-stream (some messages unacked): a new socket, a new port.
                let socket = coring::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                new = Some(socket.local_addr().unwrap());
                client.rebind(socket);
            }
            if i % 4 == 3 {
                while got.len() + 4 <= i {
                    let (channel, data) =
                        coring::time::timeout(Duration::from_secs(10), client.recv())
                            .await
                            .expect("an echo within 10 s")
                            .unwrap();
                    assert_eq!(channel, 0);
                    got.push(data);
                }
            }
        }
        while got.len() < sent.len() {
            let (_, data) = coring::time::timeout(Duration::from_secs(10), client.recv())
                .await
                .expect("an echo within 10 s")
                .unwrap();
            got.push(data);
        }
        assert_eq!(got, sent, "every message once, in order, across the move");
        client.disconnect().await.unwrap();
        (old, new.unwrap())
    });
    assert_ne!(old, new);
    assert_eq!(
        moved.recv_timeout(Duration::from_secs(5)).unwrap(),
        (old, new)
    );
    shutdown.shutdown();
}

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
use coring_protocols::netcode::{Key, Server, ServerConfig, TokenIssuer, TokenRequest};
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

/// A channel echo server on its own one-core runtime. Its tokens may name any address (the
/// clients reach it through a proxy).
fn echo_server() -> (SocketAddr, coring::ShutdownHandle) {
    let rt = coring::Runtime::builder()
        .cores(1)
        .shutdown_grace(Duration::from_secs(1))
        .build()
        .unwrap();
    let shutdown = rt.shutdown_handle();
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        rt.run(|_| {
            let socket = coring::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            addr_tx.send(socket.local_addr().unwrap()).unwrap();
            async move {
                let config = ServerConfig::new(PROTOCOL, KEY);
                let server = Server::new(config, coring::time::now(), unix_now());
                serve_channels(socket, server, channels(), TICK, |sessions, event| {
                    if let ChannelEvent::Message {
                        client,
                        channel,
                        data,
                    } = event
                    {
                        sessions.send(client, channel, data).unwrap();
                    }
                })
                .await;
            }
        })
        .unwrap();
    });
    (addr_rx.recv().unwrap(), shutdown)
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
    let (server, shutdown) = echo_server();
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

//! Two connections joined by a simulated network (virtual clock, loss, duplication, latency
//! with jitter, so reordering): every channel kind's promise, the estimates, and bad packets.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

/// The simulated link: the same faults both ways.
#[derive(Clone, Copy)]
struct Faults {
    loss: f64,
    duplicate: f64,
    latency: Duration,
    jitter: Duration,
}

const CLEAN: Faults = Faults {
    loss: 0.0,
    duplicate: 0.0,
    latency: Duration::from_millis(30),
    jitter: Duration::ZERO,
};

const HOSTILE: Faults = Faults {
    loss: 0.2,
    duplicate: 0.05,
    latency: Duration::from_millis(20),
    jitter: Duration::from_millis(60),
};

struct Link {
    now: Instant,
    ends: [Connection; 2],
    /// (due, to end, bytes)
    flights: Vec<(Instant, usize, Vec<u8>)>,
    faults: Faults,
    seed: u64,
    /// What each end received, per channel.
    got: [Vec<(u8, Bytes)>; 2],
    /// When each message arrived at end 1.
    arrivals: Vec<Instant>,
}

impl Link {
    fn new(config: ConnectionConfig, faults: Faults) -> Link {
        let now = Instant::now();
        Link {
            now,
            ends: [
                Connection::new(config.clone(), now),
                Connection::new(config, now),
            ],
            flights: Vec::new(),
            faults,
            seed: 0x853c_49e6_748f_ea9b,
            got: [Vec::new(), Vec::new()],
            arrivals: Vec::new(),
        }
    }

    fn unit(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One millisecond: deliver what is due, then let each end send what it has.
    fn step(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        self.flights.retain(|(at, to, bytes)| {
            if *at <= now {
                due.push((*to, bytes.clone()));
                false
            } else {
                true
            }
        });
        for (to, bytes) in due {
            // Duplicates are refused by design; every other packet reads.
            match self.ends[to].handle_packet(now, &bytes) {
                Ok(()) | Err(PacketError::Duplicate) => {}
                Err(e) => panic!("a packet we wrote did not read: {e}"),
            }
            while let Some(m) = self.ends[to].receive() {
                if to == 1 {
                    self.arrivals.push(now);
                }
                self.got[to].push(m);
            }
        }
        let mut out = [0u8; 1200];
        for from in 0..2 {
            self.ends[from].begin_tick();
            while let Some(n) = self.ends[from].poll_packet(now, &mut out) {
                let bytes = out[..n].to_vec();
                if self.unit() < self.faults.loss {
                    continue;
                }
                let copies = if self.unit() < self.faults.duplicate {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let jitter = self.faults.jitter.mul_f64(self.unit());
                    let at = now + self.faults.latency + jitter;
                    self.flights.push((at, 1 - from, bytes.clone()));
                }
            }
        }
        self.now += Duration::from_millis(1);
    }

    /// Sends `messages` from end 0 on `channel` as the window allows, until `done`; fails if
    /// that takes longer than `limit` of simulated time.
    fn run(
        &mut self,
        channel: u8,
        mut messages: Vec<Bytes>,
        limit: Duration,
        done: impl Fn(&Link) -> bool,
    ) {
        messages.reverse();
        let end = self.now + limit;
        while !done(self) {
            assert!(self.now < end, "not done after {limit:?}");
            while let Some(m) = messages.pop() {
                match self.ends[0].send(channel, m.clone()) {
                    Ok(()) => {}
                    Err(ChannelError::QueueFull(_)) => {
                        messages.push(m);
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            self.step();
        }
    }
}

fn one_channel(kind: ChannelKind) -> ConnectionConfig {
    ConnectionConfig {
        channels: vec![ChannelConfig::new(kind)],
        ..ConnectionConfig::default()
    }
}

/// Messages of sizes from 1 byte to a few fragments, each saying its number.
fn messages(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let len = 4 + (i * 977) % 5000;
            let mut m = vec![(i % 251) as u8; len];
            m[..4].copy_from_slice(&(i as u32).to_le_bytes());
            Bytes::from(m)
        })
        .collect()
}

fn number(m: &Bytes) -> u32 {
    u32::from_le_bytes(m[..4].try_into().unwrap())
}

#[test]
fn reliable_ordered_delivers_everything_once_in_order_through_loss_duplication_and_reordering() {
    let mut link = Link::new(one_channel(ChannelKind::ReliableOrdered), HOSTILE);
    let sent = messages(2000);
    link.run(0, sent.clone(), Duration::from_secs(120), |l| {
        l.got[1].len() >= 2000 && l.ends[0].is_idle()
    });
    let got: Vec<Bytes> = link.got[1].iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(got, sent);
    // No stall longer than a few round trips (the RTO backs off to at most 2 s; with 20 %
    // loss each way a fragment rarely needs more than three tries).
    let worst = link.arrivals.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(worst < Duration::from_secs(2), "a {worst:?} stall");
    let stats = link.ends[0].stats(link.now);
    assert!(stats.packets_lost > 0 && stats.packet_loss > 0.0);
}

#[test]
fn reliable_unordered_delivers_everything_exactly_once() {
    let mut link = Link::new(one_channel(ChannelKind::ReliableUnordered), HOSTILE);
    let sent = messages(1000);
    link.run(0, sent.clone(), Duration::from_secs(120), |l| {
        l.got[1].len() >= 1000 && l.ends[0].is_idle()
    });
    let numbers: Vec<u32> = link.got[1].iter().map(|(_, m)| number(m)).collect();
    let unique: HashSet<u32> = numbers.iter().copied().collect();
    assert_eq!((numbers.len(), unique.len()), (1000, 1000));
    for (_, m) in &link.got[1] {
        assert_eq!(m, &sent[number(m) as usize]);
    }
}

#[test]
fn unreliable_sequenced_never_delivers_an_older_message_after_a_newer_one() {
    let mut link = Link::new(one_channel(ChannelKind::UnreliableSequenced), HOSTILE);
    let small: Vec<Bytes> = (0..3000u32)
        .map(|i| Bytes::from(i.to_le_bytes().repeat(1 + i as usize % 100)))
        .collect();
    let mut sent = small.into_iter();
    let end = link.now + Duration::from_secs(10);
    while link.now < end {
        // Two messages a millisecond: many packets in flight, reordered by the jitter.
        for m in sent.by_ref().take(2) {
            link.ends[0].send(0, m).unwrap();
        }
        link.step();
    }
    let numbers: Vec<u32> = link.got[1].iter().map(|(_, m)| number(m)).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "out of order");
    // Two messages a millisecond under 60 ms of jitter: most arrive after a newer one.
    assert!(numbers.len() > 200, "only {} delivered", numbers.len());
    assert!(
        link.ends[1].stats(link.now).stale > 0,
        "the jitter reordered nothing"
    );
}

#[test]
fn unreliable_fragmented_messages_arrive_whole_or_not_at_all() {
    let mut link = Link::new(
        one_channel(ChannelKind::Unreliable),
        Faults {
            loss: 0.1,
            ..HOSTILE
        },
    );
    let sent = messages(600);
    let mut queue = sent.clone().into_iter();
    // One message every 4 ms, as a 250 Hz snapshot stream would.
    let end = link.now + Duration::from_secs(3);
    while link.now < end {
        if let Some(m) = queue.next() {
            link.ends[0].send(0, m).unwrap();
        }
        for _ in 0..4 {
            link.step();
        }
    }
    for (_, m) in &link.got[1] {
        assert_eq!(m, &sent[number(m) as usize], "a message arrived altered");
    }
    let delivered = link.got[1].len();
    assert!(delivered > 300 && delivered < 600, "{delivered} of 600");
    assert!(link.ends[1].stats(link.now).incomplete > 0);
}

#[test]
fn estimates_follow_the_link() {
    let mut link = Link::new(ConnectionConfig::default(), CLEAN);
    let sent = messages(500);
    link.run(0, sent, Duration::from_secs(30), |l| {
        l.got[1].len() >= 500 && l.ends[0].is_idle()
    });
    for _ in 0..600 {
        link.step();
    }
    let s = link.ends[0].stats(link.now);
    // 30 ms each way; the peer acks within the millisecond it reads.
    assert!(
        s.rtt >= Duration::from_millis(58) && s.rtt <= Duration::from_millis(64),
        "rtt {:?}",
        s.rtt
    );
    assert_eq!(s.packets_lost, 0);
    assert!(s.sent_bandwidth > 0.0);
    assert_eq!(s.queued, 0);
}

#[test]
fn the_tick_budget_goes_to_the_highest_priority_channel_first() {
    let mut config = ConnectionConfig::default();
    config.channels[2].priority = 9; // unreliable first
    config.tick_budget = Some(1100);
    let now = Instant::now();
    let mut c = Connection::new(config, now);
    c.send(0, Bytes::from(vec![0u8; 500])).unwrap();
    c.send(2, Bytes::from(vec![2u8; 500])).unwrap();
    c.send(2, Bytes::from(vec![2u8; 500])).unwrap();
    let mut out = [0u8; 1200];
    let n = c.poll_packet(now, &mut out).unwrap();
    let mut peer = Connection::new(ConnectionConfig::default(), now);
    peer.handle_packet(now, &out[..n]).unwrap();
    let first: Vec<u8> = std::iter::from_fn(|| peer.receive())
        .map(|(ch, _)| ch)
        .collect();
    // Both unreliable messages fit the budget; the reliable one waits for the next tick.
    assert_eq!(first, vec![2, 2]);
    assert_eq!(c.poll_packet(now, &mut out), None);
    c.begin_tick();
    let n = c.poll_packet(now, &mut out).unwrap();
    peer.handle_packet(now, &out[..n]).unwrap();
    let second: Vec<u8> = std::iter::from_fn(|| peer.receive())
        .map(|(ch, _)| ch)
        .collect();
    assert_eq!(second, vec![0]);
}

#[test]
fn sends_that_cannot_be_honoured_are_typed_errors() {
    let mut config = ConnectionConfig::default();
    config.channels[0].max_message_bytes = 2000;
    config.channels[1].max_queued = 2;
    let mut c = Connection::new(config, Instant::now());
    assert_eq!(
        c.send(0, Bytes::from(vec![0u8; 2001])),
        Err(ChannelError::TooLarge {
            channel: 0,
            len: 2001,
            max: 2000
        })
    );
    assert_eq!(
        c.send(7, Bytes::from_static(b"x")),
        Err(ChannelError::UnknownChannel(7))
    );
    assert_eq!(c.send(0, Bytes::new()), Err(ChannelError::Empty));
    c.send(1, Bytes::from_static(b"a")).unwrap();
    c.send(1, Bytes::from_static(b"b")).unwrap();
    assert_eq!(
        c.send(1, Bytes::from_static(b"c")),
        Err(ChannelError::QueueFull(1))
    );
}

#[test]
fn bad_packets_are_refused_whole_and_change_nothing() {
    let now = Instant::now();
    let mut tx = Connection::new(ConnectionConfig::default(), now);
    let mut rx = Connection::new(ConnectionConfig::default(), now);
    tx.send(0, Bytes::from(vec![1u8; 3000])).unwrap();
    let mut out = [0u8; 1200];
    let n = tx.poll_packet(now, &mut out).unwrap();
    let good = out[..n].to_vec();

    assert_eq!(
        rx.handle_packet(now, &good[..5]),
        Err(PacketError::Truncated)
    );
    assert_eq!(
        rx.handle_packet(now, &good[..n - 1]),
        Err(PacketError::Truncated)
    );
    let mut bad = good.clone();
    bad[8] = 9; // channel 9
    assert_eq!(
        rx.handle_packet(now, &bad),
        Err(PacketError::UnknownChannel(9))
    );
    let mut bad = good.clone();
    bad[14] = 200; // fragment count 200 > 64 KiB / 1 KiB
    assert_eq!(rx.handle_packet(now, &bad), Err(PacketError::Fragment));
    let mut bad = good.clone();
    bad[12] = 3; // fragment index 3 of 3
    assert_eq!(rx.handle_packet(now, &bad), Err(PacketError::Fragment));
    // None of that was taken as received: the good packet reads, once.
    rx.handle_packet(now, &good).unwrap();
    assert_eq!(rx.handle_packet(now, &good), Err(PacketError::Duplicate));
    assert_eq!(rx.stats(now).packets_received, 1);

    // Random bytes never panic.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..2000 {
        let bytes: Vec<u8> = (0..len % 1300)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = rx.handle_packet(now, &bytes);
    }
}

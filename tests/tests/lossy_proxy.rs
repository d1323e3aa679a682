//! The lossy UDP proxy the real-time tests put between client and server does what it is
//! asked: the loss, delay, reordering and duplication seen end to end match its settings.
//! (Unix: the proxy naps 200 µs when idle, and Windows sleeps in whole timer ticks, so there
//! its socket buffers overflow and the loss is not the one asked.)

#![cfg(unix)]

use std::collections::HashSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use coring_tests::lossy::{Faults, LossyUdpProxy};

/// A plain echo server on a thread; it ends with the process.
fn echo_server() -> std::net::SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

#[test]
fn loss_delay_reordering_and_duplicates_are_as_asked() {
    const SENT: u32 = 2_000;
    let faults = Faults {
        loss: 0.10,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        duplicate: 0.05,
        seed: 7,
    };
    let proxy = LossyUdpProxy::start(echo_server(), faults);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let start = Instant::now();
    // Replies are read while the rest is sent, so no socket buffer overflows on our side.
    let reader = {
        let client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while let Ok((n, _)) = client.recv_from(&mut buf) {
                assert_eq!(n, 4);
                got.push((
                    u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
                    Instant::now(),
                ));
                assert!(start.elapsed() < Duration::from_secs(20), "bounded run");
            }
            got
        })
    };
    let mut sent_at = Vec::with_capacity(SENT as usize);
    for i in 0..SENT {
        sent_at.push(Instant::now());
        client.send_to(&i.to_be_bytes(), proxy.addr).unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (mut seen, mut order, mut duplicates) = (HashSet::new(), Vec::new(), 0);
    let mut min_rtt = Duration::MAX;
    for (i, at) in reader.join().unwrap() {
        min_rtt = min_rtt.min(at - sent_at[i as usize]);
        if !seen.insert(i) {
            duplicates += 1;
        }
        order.push(i);
    }
    // Each way loses 10%: about 19% of round trips.
    let lost = f64::from(SENT - seen.len() as u32) / f64::from(SENT);
    assert!((0.12..0.27).contains(&lost), "round-trip loss {lost:.3}");
    // Each way adds 20 ms, so no reply comes back in under 40 ms.
    assert!(
        min_rtt >= Duration::from_millis(40),
        "min round trip {min_rtt:?}"
    );
    // 10 ms of jitter on datagrams sent ~µs apart: many arrive out of order.
    let reordered = order.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(reordered > 100, "{reordered} reorderings");
    // Each way duplicates 5%: about 10% of the delivered replies are extra copies.
    assert!(duplicates > 50, "{duplicates} duplicates");
    let received = proxy
        .counts
        .received
        .load(std::sync::atomic::Ordering::Relaxed);
    let dropped = proxy
        .counts
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        received >= u64::from(SENT) && dropped > 0,
        "{:?}",
        proxy.counts
    );
}

#[test]
fn the_same_seed_drops_the_same_datagrams() {
    let run = || {
        let proxy = LossyUdpProxy::start(
            echo_server(),
            Faults {
                loss: 0.3,
                seed: 42,
                ..Faults::default()
            },
        );
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut got = Vec::new();
        // One at a time, so the proxy sees the same sequence each run.
        for i in 0..200u32 {
            client.send_to(&i.to_be_bytes(), proxy.addr).unwrap();
            let mut buf = [0u8; 4];
            if client.recv_from(&mut buf).is_ok() {
                got.push(u32::from_be_bytes(buf));
            }
        }
        got
    };
    let first = run();
    assert!(
        first.len() > 60 && first.len() < 140,
        "{} of 200",
        first.len()
    );
    assert_eq!(first, run());
}

//! UDP over loopback: send/receive with addresses (IPv4 and IPv6), pooled multishot receive,
//! truncation, batched sends, GSO, 100,000 datagrams through a batched echo without loss, and
//! multicast (IPv4 on loopback, IPv6 across a veth pair in a network namespace of the test's).

use std::rc::Rc;
use std::time::Duration;

use coring::net::UdpSocket;
use coring::time::timeout;

#[coring::test]
fn send_to_and_recv_from_report_addresses_v4_and_v6() {
    coring::block_on(async {
        let mut pairs = vec![("127.0.0.1:0", "127.0.0.1:0")];
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            pairs.push(("[::1]:0", "[::1]:0"));
        }
        for (a, b) in pairs {
            let a = UdpSocket::bind(a).unwrap();
            let b = UdpSocket::bind(b).unwrap();
            let (r, _) = a.send_to(b"ping".to_vec(), b.local_addr().unwrap()).await;
            assert_eq!(r.unwrap(), 4);
            let (meta, buf) = b.recv_from(Vec::with_capacity(64)).await;
            let meta = meta.unwrap();
            assert_eq!(meta.len, 4);
            assert_eq!(meta.source, a.local_addr().unwrap());
            assert!(!meta.truncated);
            assert_eq!(buf, b"ping");
        }
    });
}

#[coring::test]
fn truncation_is_reported_not_hidden() {
    coring::block_on(async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        a.send_to(vec![7u8; 100], to).await.0.unwrap();
        let (meta, buf) = b.recv_from(Vec::with_capacity(10)).await;
        let meta = meta.unwrap();
        assert!(meta.truncated);
        assert_eq!(meta.len, 10);
        assert_eq!(buf, vec![7u8; 10]);
    });
    // Pooled: a datagram larger than a pool buffer.
    let rt = coring::Runtime::builder()
        .buffer_pool(8, 1024)
        .build()
        .unwrap();
    rt.block_on(async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rx = b.pooled();
        a.send_to(vec![9u8; 4000], b.local_addr().unwrap())
            .await
            .0
            .unwrap();
        a.send_to(vec![1u8; 10], b.local_addr().unwrap())
            .await
            .0
            .unwrap();
        let big = rx.next().await.unwrap();
        assert!(big.truncated);
        assert!(big.data.len() < 4000 && big.data.iter().all(|&x| x == 9));
        let small = rx.next().await.unwrap();
        assert!(!small.truncated);
        assert_eq!(&*small.data, &[1u8; 10]);
        assert_eq!(small.source, a.local_addr().unwrap());
    });
}

#[coring::test]
fn connected_sockets_send_and_receive_pooled() {
    coring::block_on(async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        assert_eq!(a.peer_addr().unwrap(), b.local_addr().unwrap());
        let mut rx = b.pooled();
        for i in 0..10u8 {
            a.send(vec![i; 3]).await.0.unwrap();
        }
        for i in 0..10u8 {
            let d = rx.next().await.unwrap();
            assert_eq!(&*d.data, &[i; 3], "in order on loopback");
        }
        let pool = coring::runtime::pool_stats();
        assert_eq!(pool.in_use, 0);
    });
}

#[coring::test]
fn gso_cuts_one_buffer_into_many_datagrams() {
    coring::block_on(async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload: Vec<u8> = (0..1050u32).map(|i| (i / 100) as u8).collect();
        let (r, _) = a.send_segments(payload, 100, b.local_addr().unwrap()).await;
        match r {
            Ok(n) => assert_eq!(n, 1050),
            Err(e) if e.kind() == coring::ErrorKind::Unsupported => {
                eprintln!("skipping: no UDP GSO here ({e})");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        let mut rx = b.pooled();
        for i in 0..11u8 {
            let d = rx.next().await.unwrap();
            let expect = if i == 10 { 50 } else { 100 };
            assert_eq!(d.data.len(), expect, "segment {i}");
            assert!(d.data.iter().all(|&x| x == i));
        }
    });
}

const DATAGRAMS: u64 = 100_000;
const WINDOW: u64 = 256;
const BATCH: usize = 32;

#[coring::test]
fn a_hundred_thousand_datagrams_through_a_batched_echo_without_loss() {
    let rt = coring::Runtime::builder().cores(1).build().unwrap();
    let (received, sent, sends_failed) = rt.block_on(async {
        let server = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        server.set_buffer_sizes(4 << 20, 4 << 20).unwrap();
        let server_addr = server.local_addr().unwrap();
        // Echo: take what the pool holds, send it back in batches.
        let echo = {
            let server = server.clone();
            coring::spawn_local(async move {
                let mut rx = server.pooled();
                loop {
                    let mut batch = Vec::with_capacity(BATCH);
                    let first = rx.next().await.unwrap();
                    batch.push((first.data, first.source));
                    while batch.len() < BATCH {
                        match timeout(Duration::ZERO, rx.next()).await {
                            Ok(d) => {
                                let d = d.unwrap();
                                batch.push((d.data, d.source));
                            }
                            Err(_) => break,
                        }
                    }
                    for (r, _) in server.send_many(batch).await {
                        r.unwrap();
                    }
                }
            })
            .cancel_on_drop()
        };
        let client = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        client.set_buffer_sizes(4 << 20, 4 << 20).unwrap();
        let mut rx = client.pooled();
        let mut next_to_send = 0u64;
        let mut received = 0u64;
        let mut seen = vec![false; DATAGRAMS as usize];
        let mut sends_failed = 0;
        while received < DATAGRAMS {
            // Keep at most WINDOW datagrams in flight, sent in batches.
            let mut batch = Vec::new();
            while next_to_send < DATAGRAMS
                && next_to_send - received < WINDOW
                && batch.len() < BATCH
            {
                let mut msg = next_to_send.to_le_bytes().to_vec();
                msg.extend_from_slice(&[0xab; 56]);
                batch.push((msg, server_addr));
                next_to_send += 1;
            }
            if !batch.is_empty() {
                for (r, _) in client.send_many(batch).await {
                    if r.is_err() {
                        sends_failed += 1;
                    }
                }
            }
            let wait = if next_to_send - received < WINDOW && next_to_send < DATAGRAMS {
                Duration::ZERO
            } else {
                Duration::from_secs(5)
            };
            while let Ok(d) = timeout(wait, rx.next()).await {
                let d = d.unwrap();
                assert_eq!(d.data.len(), 64);
                let seq = u64::from_le_bytes(d.data[..8].try_into().unwrap());
                assert!(!seen[seq as usize], "duplicate {seq}");
                seen[seq as usize] = true;
                received += 1;
                if wait.is_zero() || received == next_to_send {
                    break;
                }
            }
            if wait == Duration::from_secs(5) && received < next_to_send {
                break; // lost datagrams: stop and report below
            }
        }
        drop(echo);
        (received, next_to_send, sends_failed)
    });
    assert_eq!(sends_failed, 0);
    assert_eq!(sent, DATAGRAMS);
    assert_eq!(
        received,
        DATAGRAMS,
        "lost {} datagrams on loopback",
        sent - received
    );
}

/// IPv4 multicast on loopback: a member gets what is sent to its group and nothing once it has
/// left; a broadcast send is refused without SO_BROADCAST and delivered with it. (Loopback
/// delivers no IPv6 multicast; IPv6 delivery is tested across a veth pair below.)
#[cfg(target_os = "linux")]
#[coring::test]
fn multicast_groups_and_broadcast_on_loopback() {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    coring::block_on(async {
        let group = Ipv4Addr::new(239, 77, 1, 2);
        let member = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = member.local_addr().unwrap().port();
        member
            .join_multicast_v4(group, Ipv4Addr::LOCALHOST)
            .unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.set_multicast_if_v4(Ipv4Addr::LOCALHOST).unwrap();
        sender.set_multicast_ttl_v4(1).unwrap();
        sender.set_multicast_loop_v4(true).unwrap();
        let to_group = SocketAddr::from((group, port));
        let (r, _) = sender.send_to(b"to the group".to_vec(), to_group).await;
        r.unwrap();
        let (meta, buf) = timeout(
            Duration::from_secs(5),
            member.recv_from(Vec::with_capacity(64)),
        )
        .await
        .expect("the group's datagram");
        assert_eq!(meta.unwrap().source, sender.local_addr().unwrap());
        assert_eq!(buf, b"to the group");

        member
            .leave_multicast_v4(group, Ipv4Addr::LOCALHOST)
            .unwrap();
        let (r, _) = sender.send_to(b"after leaving".to_vec(), to_group).await;
        r.unwrap();
        let late = timeout(
            Duration::from_millis(300),
            member.recv_from(Vec::with_capacity(64)),
        )
        .await;
        assert!(late.is_err(), "delivered after leaving the group");

        let everyone = SocketAddr::from((Ipv4Addr::new(127, 255, 255, 255), port));
        let (r, _) = sender.send_to(b"all".to_vec(), everyone).await;
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EACCES));
        sender.set_broadcast(true).unwrap();
        let (r, _) = sender.send_to(b"all".to_vec(), everyone).await;
        r.unwrap();
        let (meta, buf) = timeout(
            Duration::from_secs(5),
            member.recv_from(Vec::with_capacity(64)),
        )
        .await
        .expect("the broadcast");
        meta.unwrap();
        assert_eq!(buf, b"all");

        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            let v6 = UdpSocket::bind("[::]:0").unwrap();
            let group: Ipv6Addr = "ff02::77:1".parse().unwrap();
            v6.join_multicast_v6(group, 1).unwrap();
            v6.set_multicast_if_v6(1).unwrap();
            v6.set_multicast_loop_v6(true).unwrap();
            v6.leave_multicast_v6(group, 1).unwrap();
            // Leaving twice is an error the caller sees.
            assert!(v6.leave_multicast_v6(group, 1).is_err());
        }
    });
}

/// Runs `ip args` (in the calling thread's network namespace, which the child inherits).
#[cfg(target_os = "linux")]
fn ip(args: &str) {
    let status = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("ip (iproute2; .ci/run installs it)");
    assert!(status.success(), "ip {args}: {status}");
}

/// IPv6 multicast through a real link: in a network namespace of its own, the test makes a
/// veth pair; a socket joined to a group on one end gets what is sent to the group out of the
/// other (multicast loop off, so nothing arrives any other way), and nothing once it has left.
#[cfg(target_os = "linux")]
#[coring::test]
fn ipv6_multicast_crosses_a_veth_pair(driver: coring::driver::probe::DriverChoice) {
    use std::net::{Ipv6Addr, SocketAddr};

    std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET changes only this thread's network namespace;
        // it takes no pointers.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        ip("link add mv0 type veth peer name mv1");
        ip("-6 addr add fd99::1/64 dev mv0 nodad");
        ip("-6 addr add fd99::2/64 dev mv1 nodad");
        ip("link set mv0 up");
        ip("link set mv1 up");
        let index = |name: &str| {
            let name = std::ffi::CString::new(name).unwrap();
            // SAFETY: `name` is a NUL-terminated string that outlives the call.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(index, 0, "if_nametoindex");
            index
        };
        let (out_of, into) = (index("mv0"), index("mv1"));
        let rt = coring::Runtime::builder().driver(driver).build().unwrap();
        rt.block_on(async move {
            let group: Ipv6Addr = "ff02::77:2".parse().unwrap();
            let member = UdpSocket::bind("[::]:0").unwrap();
            let port = member.local_addr().unwrap().port();
            member.join_multicast_v6(group, into).unwrap();
            let sender = UdpSocket::bind("[::]:0").unwrap();
            sender.set_multicast_if_v6(out_of).unwrap();
            sender.set_multicast_loop_v6(false).unwrap();
            let to_group = SocketAddr::new(group.into(), port);
            // The link's carrier comes up a moment after `ip link set up`: send until heard.
            let mut heard = None;
            for _ in 0..50 {
                let (r, _) = sender.send_to(b"across the link".to_vec(), to_group).await;
                r.unwrap();
                if let Ok((meta, buf)) = timeout(
                    Duration::from_millis(100),
                    member.recv_from(Vec::with_capacity(64)),
                )
                .await
                {
                    heard = Some((meta.unwrap().source, buf));
                    break;
                }
            }
            let (source, buf) = heard.expect("the group's datagram across the veth pair");
            assert_eq!(buf, b"across the link");
            assert_eq!(source.port(), sender.local_addr().unwrap().port());

            member.leave_multicast_v6(group, into).unwrap();
            // Drain what was sent before leaving, then nothing more arrives.
            while timeout(
                Duration::from_millis(50),
                member.recv_from(Vec::with_capacity(64)),
            )
            .await
            .is_ok()
            {}
            let (r, _) = sender.send_to(b"after leaving".to_vec(), to_group).await;
            r.unwrap();
            let late = timeout(
                Duration::from_millis(300),
                member.recv_from(Vec::with_capacity(64)),
            )
            .await;
            assert!(late.is_err(), "delivered after leaving the group");
        });
    })
    .join()
    .unwrap();
}

/// Don't-fragment: in a network namespace of its own whose loopback has a 1,500-byte MTU, a
/// 2,000-byte datagram is cut into fragments and arrives whole by default, and with
/// `set_dont_fragment(true)` is refused with EMSGSIZE instead, while one under the MTU still
/// goes; turned off again, the large one goes again. IPv4 and IPv6.
#[cfg(target_os = "linux")]
#[coring::test]
fn dont_fragment_refuses_what_would_be_fragmented(driver: coring::driver::probe::DriverChoice) {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET changes only this thread's network namespace;
        // it takes no pointers.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        ip("link set lo mtu 1500");
        ip("link set lo up");
        let rt = coring::Runtime::builder().driver(driver).build().unwrap();
        rt.block_on(async move {
            for local in ["127.0.0.1:0", "[::1]:0"] {
                let rx = UdpSocket::bind(local).unwrap();
                let tx = UdpSocket::bind(local).unwrap();
                let to = rx.local_addr().unwrap();
                let (r, _) = tx.send_to(vec![1u8; 2000], to).await;
                assert_eq!(r.unwrap(), 2000, "{local}: fragmented by default");
                let (meta, _) = rx.recv_from(Vec::with_capacity(4096)).await;
                assert_eq!(meta.unwrap().len, 2000, "{local}: reassembled");

                tx.set_dont_fragment(true).unwrap();
                let (r, _) = tx.send_to(vec![2u8; 2000], to).await;
                let err = r.expect_err("over the MTU with don't-fragment");
                assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE), "{local}: {err}");
                let (r, _) = tx.send_to(vec![3u8; 1000], to).await;
                assert_eq!(r.unwrap(), 1000, "{local}: under the MTU still goes");
                let (meta, buf) = rx.recv_from(Vec::with_capacity(4096)).await;
                assert_eq!((meta.unwrap().len, buf[0]), (1000, 3), "{local}");

                tx.set_dont_fragment(false).unwrap();
                let (r, _) = tx.send_to(vec![4u8; 2000], to).await;
                assert_eq!(r.unwrap(), 2000, "{local}: fragmented again");
                let (meta, buf) = rx.recv_from(Vec::with_capacity(4096)).await;
                assert_eq!((meta.unwrap().len, buf[0]), (2000, 4), "{local}");
            }
        });
    })
    .join()
    .unwrap();
}

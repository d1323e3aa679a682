//! TCP over real loopback sockets: every stream and listener API, IPv4 and IPv6.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use coring::ErrorKind;
use coring::driver::probe::DriverChoice;
use coring::net::{ListenOptions, TcpListener, TcpStream};

fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[coring::test]
fn accept_reports_peer_and_local_addresses_v4() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        assert_ne!(addr.port(), 0);
        let client = std::thread::spawn(move || {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.local_addr().unwrap()
        });
        let (stream, peer) = listener.accept().await.unwrap();
        let client_addr = client.join().unwrap();
        assert_eq!(peer, client_addr);
        assert_eq!(stream.peer_addr().unwrap(), client_addr);
        assert_eq!(stream.local_addr().unwrap(), addr);
    });
}

#[coring::test]
fn echo_over_ipv6() {
    if !ipv6_available() {
        eprintln!("skipping: no IPv6 loopback on this host");
        return;
    }
    coring::block_on(async {
        let listener = TcpListener::bind("[::1]:0").unwrap();
        let addr = listener.local_addr();
        assert!(addr.is_ipv6());
        coring::spawn_local(async move {
            let (s, peer) = listener.accept().await.unwrap();
            assert!(peer.is_ipv6());
            let (n, buf) = s.read(Vec::with_capacity(32)).await;
            assert_eq!(n.unwrap(), 4);
            s.write_all(buf).await.0.unwrap();
        });
        let c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"six!".to_vec()).await.0.unwrap();
        let (r, buf) = c.read_exact(Vec::with_capacity(4)).await;
        r.unwrap();
        assert_eq!(buf, b"six!");
    });
}

#[coring::test]
fn dual_stack_listener_accepts_ipv4_clients() {
    if !ipv6_available() {
        eprintln!("skipping: no IPv6 on this host");
        return;
    }
    coring::block_on(async {
        let opts = ListenOptions {
            only_v6: Some(false),
            ..ListenOptions::default()
        };
        let listener = TcpListener::bind_with("[::]:0", &opts).unwrap();
        let port = listener.local_addr().port();
        let v4 = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (_s, peer) = listener.accept().await.unwrap();
        // An IPv4 client shows up as an IPv4-mapped IPv6 address.
        match peer {
            std::net::SocketAddr::V6(a) => assert!(a.ip().to_ipv4_mapped().is_some(), "{a}"),
            other => panic!("expected a mapped address, got {other}"),
        }
        let v6 = TcpStream::connect(("::1", port)).await.unwrap();
        let (_s6, peer6) = listener.accept().await.unwrap();
        assert_eq!(peer6.ip(), "::1".parse::<std::net::IpAddr>().unwrap());
        drop((v4, v6));
    });
}

#[coring::test]
fn multishot_incoming_accepts_many_connections(driver: DriverChoice) {
    coring::block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let clients = std::thread::spawn(move || {
            (0..50u8)
                .map(|i| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(&[i]).unwrap();
                    s
                })
                .collect::<Vec<_>>()
        });
        let mut incoming = listener.incoming();
        let mut seen = Vec::new();
        for _ in 0..50 {
            let s = incoming.next().await.unwrap();
            let (r, buf) = s.read_exact(Vec::with_capacity(1)).await;
            r.unwrap();
            seen.push(buf[0]);
        }
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<u8>>());
        if driver == DriverChoice::Uring {
            let stats = coring::runtime::stats();
            assert!(
                stats.ops_submitted < 50 + 60,
                "one accept SQE serves many: {stats:?}"
            );
        }
        drop(clients.join().unwrap());
    });
}

#[coring::test]
fn connect_to_closed_port_is_refused() {
    coring::block_on(async {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
        // The platform's own code: errno, or WSAECONNREFUSED.
        let refused = if cfg!(windows) {
            10061
        } else {
            libc::ECONNREFUSED
        };
        assert_eq!(err.raw_os_error(), Some(refused));
        assert_eq!(err.op(), "connect");
    });
}

#[coring::test]
fn connect_timeout_fires_when_backlog_is_full() {
    coring::block_on(async {
        // A listener that never accepts, with a backlog of 1: once it is full the kernel drops
        // further SYNs and connects hang until the deadline.
        let opts = ListenOptions {
            backlog: 1,
            ..ListenOptions::default()
        };
        let listener = TcpListener::bind_with("127.0.0.1:0", &opts).unwrap();
        let addr = listener.local_addr();
        let mut held = Vec::new();
        let mut timed_out = false;
        for _ in 0..8 {
            let start = Instant::now();
            match TcpStream::connect_timeout(addr, Duration::from_millis(200)).await {
                Ok(s) => held.push(s),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
                    assert!(start.elapsed() >= Duration::from_millis(150));
                    assert!(start.elapsed() < Duration::from_secs(5));
                    timed_out = true;
                    break;
                }
            }
        }
        assert!(
            timed_out,
            "connect never timed out ({} connected)",
            held.len()
        );
        drop(listener);
    });
}

#[coring::test]
fn read_timeout_gives_timed_out_and_stream_stays_usable() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            rx.recv().unwrap();
            s.write_all(b"late").unwrap();
            s
        });
        let (s, _) = listener.accept().await.unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50)));
        let start = Instant::now();
        let (r, buf) = s.read(Vec::with_capacity(16)).await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert!(buf.is_empty());
        s.set_read_timeout(None);
        tx.send(()).unwrap();
        let (r, buf) = s.read_exact(Vec::with_capacity(4)).await;
        r.unwrap();
        assert_eq!(buf, b"late");
        drop(peer.join().unwrap());
    });
}

#[coring::test]
fn write_timeout_fires_against_a_peer_that_stops_reading_and_writes_then_resume() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            rx.recv().unwrap(); // reads nothing until told
            let mut total = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break total,
                    Ok(n) => total += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("peer read: {e}"),
                }
            }
        });
        let (s, _) = listener.accept().await.unwrap();
        s.set_write_timeout(Some(Duration::from_millis(100)));
        // Quick writes first, then a pause past their deadline: a timer armed for them must
        // not cut the next write short.
        for _ in 0..10 {
            let (r, _) = s.write_all(vec![7u8; 1024]).await;
            r.unwrap();
        }
        coring::time::sleep(Duration::from_millis(150)).await;
        // Far more than the socket buffers hold: the write must wait, and time out.
        let big = vec![7u8; 64 << 20];
        let start = Instant::now();
        let (r, big) = s.write_all(big).await;
        let err = r.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(start.elapsed() >= Duration::from_millis(90));
        assert!(start.elapsed() < Duration::from_secs(10));
        // The connection still works: the peer drains, a write without a deadline completes.
        s.set_write_timeout(None);
        tx.send(()).unwrap();
        let (r, _) = s.write_all(big[..1 << 20].to_vec()).await;
        r.unwrap();
        drop(s);
        assert!(peer.join().unwrap() >= (1 << 20) + 10 * 1024);
    });
}

#[coring::test]
fn shutdown_write_gives_peer_eof_and_read_side_keeps_working() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"after-eof").unwrap();
            got
        });
        let (s, _) = listener.accept().await.unwrap();
        s.write_all(b"bye".to_vec()).await.0.unwrap();
        s.shutdown(Shutdown::Write).await.unwrap();
        let (r, buf) = s.read_exact(Vec::with_capacity(9)).await;
        r.unwrap();
        assert_eq!(buf, b"after-eof");
        assert_eq!(peer.join().unwrap(), b"bye");
        let (n, _) = s.read(Vec::with_capacity(8)).await;
        assert_eq!(n.unwrap(), 0, "peer closed: end of stream");
    });
}

#[coring::test]
fn writev_sends_buffers_in_order() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let (s, _) = listener.accept().await.unwrap();
        let bufs = vec![
            b"GET ".to_vec(),
            b"/ ".to_vec(),
            Vec::new(),
            b"HTTP/1.1".to_vec(),
        ];
        let (n, back) = s.writev(bufs).await;
        assert_eq!(n.unwrap(), 14);
        assert_eq!(back.len(), 4, "buffers come back");
        drop(s);
        assert_eq!(peer.join().unwrap(), b"GET / HTTP/1.1");
    });
}

#[coring::test]
fn write_all_moves_large_buffers_intact() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let data: Vec<u8> = (0..8 * 1024 * 1024)
            .map(|i: u32| (i * 7 + i / 251) as u8)
            .collect();
        let expect = data.clone();
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let (s, _) = listener.accept().await.unwrap();
        let (r, back) = s.write_all(data).await;
        r.unwrap();
        assert_eq!(back.len(), expect.len());
        drop(s);
        assert!(peer.join().unwrap() == expect);
    });
}

#[coring::test]
fn socket_options_round_trip() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(listener.local_addr()).await.unwrap();
        c.set_nodelay(true).unwrap();
        assert!(c.nodelay().unwrap());
        c.set_nodelay(false).unwrap();
        assert!(!c.nodelay().unwrap());
        c.set_keepalive(Some(Duration::from_secs(30))).unwrap();
        // Windows sets the keep-alive time but cannot read it back: it says so.
        #[cfg(windows)]
        assert_eq!(c.keepalive().unwrap_err().kind(), ErrorKind::Unsupported);
        #[cfg(not(windows))]
        {
            assert_eq!(c.keepalive().unwrap(), Some(Duration::from_secs(30)));
            c.set_keepalive(None).unwrap();
            assert_eq!(c.keepalive().unwrap(), None);
        }
    });
}

#[coring::test]
fn tcp_info_reports_the_connection_as_the_kernel_sees_it() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(listener.local_addr()).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        {
            assert_eq!(c.tcp_info().unwrap_err().kind(), ErrorKind::Unsupported);
            drop(s);
        }
        #[cfg(target_os = "macos")]
        {
            drop(s);
            // TCP_CONNECTION_INFO: fewer fields, times in milliseconds.
            let info = c.tcp_info().unwrap();
            assert!(info.send_mss > 1400, "{info:?}");
            assert!(info.rto > Duration::ZERO, "{info:?}");
            assert!(info.congestion_window >= 1, "{info:?}");
        }
        #[cfg(target_os = "linux")]
        {
            // A round trip each way, so the kernel has measured one.
            for _ in 0..4 {
                let (r, _) = c.write_all(b"ping".to_vec()).await;
                r.unwrap();
                let (r, _) = s.read_exact(vec![0; 4]).await;
                r.unwrap();
                let (r, _) = s.write_all(b"pong".to_vec()).await;
                r.unwrap();
                let (r, _) = c.read_exact(vec![0; 4]).await;
                r.unwrap();
            }
            let info = c.tcp_info().unwrap();
            assert!(
                info.rtt > Duration::ZERO && info.rtt < Duration::from_secs(1),
                "{info:?}"
            );
            assert!(info.rto >= Duration::from_millis(200), "{info:?}");
            // Loopback's MTU is 65,536: segments are far larger than on a LAN.
            assert!(info.path_mtu > 1500 && info.send_mss > 1400, "{info:?}");
            assert!(info.congestion_window >= 10, "{info:?}");
            assert_eq!(
                (info.unacked, info.lost, info.total_retransmits),
                (0, 0, 0),
                "{info:?}"
            );
        }
    });
}

#[coring::test]
fn writing_to_a_reset_connection_is_a_typed_error() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let (go, reset) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            let s = std::net::TcpStream::connect(addr).unwrap();
            // Reset only once accepted: a connection reset in the backlog may fail the accept
            // itself (Wine: WSAENOTCONN), which is not what this test is about.
            reset.recv().unwrap();
            // Linger 0: close sends RST.
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        });
        let (s, _) = listener.accept().await.unwrap();
        go.send(()).unwrap();
        peer.join().unwrap();
        let mut kinds = Vec::new();
        for _ in 0..10 {
            let (r, _) = s.write(vec![0u8; 1024]).await;
            if let Err(e) = r {
                kinds.push(e.kind());
                break;
            }
            coring::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            matches!(
                kinds.as_slice(),
                [ErrorKind::ConnectionReset | ErrorKind::BrokenPipe]
            ),
            "{kinds:?}"
        );
    });
}

#[coring::test]
fn rebinding_a_used_address_says_addr_in_use() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let opts = ListenOptions {
        reuse_addr: false,
        ..ListenOptions::default()
    };
    let err = TcpListener::bind_with(addr, &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    assert_eq!(err.op(), "bind");
}

/// Stopping a multishot accept loses no connection: what the kernel accepted for it comes back
/// from `close`, and what it had not is still in the listener's queue.
#[coring::test]
fn closing_incoming_hands_back_what_it_accepted() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let mut incoming = listener.incoming();
        let first = std::net::TcpStream::connect(addr).unwrap();
        incoming.next().await.unwrap();
        let clients: Vec<_> = (0..5)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // Time for the kernel to take them off the queue for the armed accept.
        coring::time::sleep(std::time::Duration::from_millis(50)).await;
        let returned = incoming.close().await;
        let mut left = 0;
        while returned.len() + left < clients.len() {
            let accepted =
                coring::time::timeout(std::time::Duration::from_secs(5), listener.accept()).await;
            accepted.expect("a connection is lost").unwrap();
            left += 1;
        }
        assert_eq!(returned.len() + left, clients.len());
        if coring::runtime::driver_kind() == coring::driver::DriverKind::Uring {
            assert_eq!(
                returned.len(),
                clients.len(),
                "the multishot accept took them all"
            );
        }
        drop(first);
    });
}

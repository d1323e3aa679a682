//! Admission control on a coring listener over real sockets, both drivers: deny and allow
//! lists (deny by default), a flood of connections from one source throttled by its bucket
//! while another source keeps being served, a request bucket answering 429, and a cap on one
//! source's open connections. Refusals happen before a byte is read and are counted.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coring_protocols::admission::{AccessList, RateLimit};
use coring_protocols::http1::{Request, Response};
use coring_protocols::serve::{Admission, Config, admission_counters};
use coring_tests::{TestServer, serve};

fn server(admission: Admission) -> TestServer {
    let config = Config {
        admission: Some(admission),
        ..Config::default()
    };
    serve(config, || {
        |_req: Request| async { Response::new(200).body("ok") }
    })
}

/// A connection to `to` from loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let from: IpAddr = from.parse().unwrap();
    coring_tests::connect_from(SocketAddr::new(from, 0), to)
}

/// Sends `n` pipelined requests and reads the statuses of the answers until `n` came or the
/// connection ended (closed or reset without an answer: an empty list).
fn statuses(stream: &mut TcpStream, n: usize) -> Vec<u16> {
    let one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    if stream.write_all(&one.repeat(n)).is_err() {
        return Vec::new();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        let found: Vec<u16> = text
            .match_indices("HTTP/1.1 ")
            .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
            .collect();
        let complete = text.ends_with("ok") || text.ends_with("requests\n");
        if found.len() >= n && complete {
            return found;
        }
        match stream.read(&mut buf) {
            Ok(0) => return found,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            // A signal landing on this thread is not the server's doing.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return found,
        }
    }
}

fn growth(counter: &AtomicU64, f: impl FnOnce()) -> u64 {
    let before = counter.load(Ordering::Relaxed);
    f();
    counter.load(Ordering::Relaxed) - before
}

#[coring::test]
fn deny_and_allow_lists_refuse_before_a_byte_is_read() {
    let s = server(Admission {
        access: AccessList {
            deny: vec!["127.0.0.2".parse().unwrap()],
            allow: vec!["127.0.0.0/29".parse().unwrap()],
            deny_by_default: true,
        },
        ..Admission::default()
    });
    let denied = growth(&admission_counters().denied, || {
        // Denied by the deny list, and by default (outside the allow list).
        for from in ["127.0.0.2", "127.0.0.9"] {
            let mut c = connect_from(from, s.addr);
            assert_eq!(statuses(&mut c, 1), Vec::<u16>::new(), "{from}");
        }
    });
    assert!(denied >= 2);
    let mut c = connect_from("127.0.0.3", s.addr);
    assert_eq!(statuses(&mut c, 2), [200, 200]);
}

#[coring::test]
fn a_connection_flood_from_one_source_is_throttled_while_another_is_served() {
    let s = server(Admission {
        connections: Some(RateLimit {
            burst: 10,
            per_second: 10,
            sources: 64,
        }),
        ..Admission::default()
    });
    let addr = s.addr;
    let flood = std::thread::spawn(move || {
        let started = Instant::now();
        let (mut served, mut refused) = (0u32, 0u32);
        for _ in 0..300 {
            let mut c = connect_from("127.0.0.2", addr);
            match statuses(&mut c, 1).as_slice() {
                [200] => served += 1,
                _ => refused += 1,
            }
        }
        (served, refused, started.elapsed())
    });
    // Meanwhile another source opens connections and sends requests as usual.
    let mut latencies = Vec::new();
    let mut normal_served = 0;
    for _ in 0..8 {
        let mut c = connect_from("127.0.0.3", addr);
        for _ in 0..10 {
            let sent = Instant::now();
            assert_eq!(statuses(&mut c, 1), [200], "the other source is served");
            latencies.push(sent.elapsed());
            normal_served += 1;
        }
    }
    let (served, refused, took) = flood.join().unwrap();
    latencies.sort();
    println!(
        "flood: {served} served, {refused} refused in {took:?}; other source: {normal_served} \
         served, p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // The burst, then ten a second (and a little for timing).
    let allowed = 10 + (took.as_secs_f64() * 10.0).ceil() as u32 + 2;
    assert!(served <= allowed, "{served} served of 300 in {took:?}");
    assert!(served >= 10, "the burst is served: {served}");
    assert!(refused >= 300 - allowed);
}

#[coring::test]
fn a_source_over_its_request_bucket_is_answered_429() {
    let s = server(Admission {
        requests: Some(RateLimit {
            burst: 5,
            per_second: 1,
            sources: 64,
        }),
        ..Admission::default()
    });
    let limited = growth(&admission_counters().requests_limited, || {
        let mut c = connect_from("127.0.0.2", s.addr);
        let got = statuses(&mut c, 10);
        assert_eq!(got.iter().filter(|&&st| st == 200).count(), 5, "{got:?}");
        assert_eq!(got.iter().filter(|&&st| st == 429).count(), 5, "{got:?}");
    });
    assert!(limited >= 5);
    // Another source has its own bucket.
    let mut c = connect_from("127.0.0.3", s.addr);
    assert_eq!(statuses(&mut c, 3), [200, 200, 200]);
}

#[coring::test]
fn one_source_holds_at_most_its_cap_of_connections() {
    let s = server(Admission {
        per_source: Some(3),
        ..Admission::default()
    });
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = connect_from("127.0.0.2", s.addr);
            assert_eq!(statuses(&mut c, 1), [200]);
            c
        })
        .collect();
    let mut fourth = connect_from("127.0.0.2", s.addr);
    assert_eq!(statuses(&mut fourth, 1), Vec::<u16>::new(), "over the cap");
    // Another source is not counted against it.
    let mut other = connect_from("127.0.0.3", s.addr);
    assert_eq!(statuses(&mut other, 1), [200]);
    // One closes: its place is given back once the server has seen the close.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from("127.0.0.2", s.addr);
        if statuses(&mut again, 1) == [200] {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never given back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

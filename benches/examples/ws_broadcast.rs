//! WebSocket sessions at scale on one server core: 10,000 clients (a child process that never
//! reads) each upgraded to a session that joins one `Group` and waits in `recv`.
//!
//! 1. Memory per idle WebSocket connection: resident and heap growth from before the clients
//!    connected to when every session waits (as `http_idle` measures HTTP connections).
//! 2. Broadcast: one 100-byte message published to every session, timed from the publish to the
//!    last frame written (every session's queue flushed), against a raw io_uring loop on the
//!    same core sending the same pre-framed 102 bytes to the same 10,000 sockets (one SEND
//!    each, submitted in batches, every completion reaped). Rounds alternate the two; medians
//!    are printed with the ratio.
//!
//! `cargo run --release -p coring-benches --example ws_broadcast [-- CONNECTIONS [ROUNDS]]`

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coring::net::TcpListener;
use coring::runtime::Runtime;
use coring_benches::measure::{
    Counting, LIVE, hold_idle_clients, raise_fd_limit, rss_bytes, run_idle_clients_if_asked,
};
use coring_protocols::serve::{Router, Server};
use coring_protocols::websocket::{self, Group, Message, WsConfig, WsWriter};

#[global_allocator]
static GLOBAL: Counting = Counting;

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// What the server core measured.
#[derive(Debug, Default)]
struct Timings {
    coring: Vec<Duration>,
    raw: Vec<Duration>,
    error: Option<String>,
}

fn main() {
    run_idle_clients_if_asked();
    let args: Vec<String> = std::env::args().collect();
    let conns: usize = args
        .get(1)
        .map(|a| a.parse().expect("CONNECTIONS must be a number"))
        .unwrap_or(10_000);
    let rounds: usize = args
        .get(2)
        .map(|a| a.parse().expect("ROUNDS must be a number"))
        .unwrap_or(21);
    raise_fd_limit(conns + 256);

    let rt = Runtime::builder().build().expect("runtime");
    let shutdown = rt.shutdown_handle();
    let port = Arc::new(AtomicU16::new(0));
    let joined = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(AtomicUsize::new(0));
    let timings = Arc::new(Mutex::new(Timings::default()));
    let (p, j, go, t) = (port.clone(), joined.clone(), start.clone(), timings.clone());
    let server = std::thread::spawn(move || {
        rt.run(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            p.store(listener.local_addr().port(), Ordering::Release);
            let (j, go, t) = (j.clone(), go.clone(), t.clone());
            async move {
                let group = Rc::new(Group::new());
                let members: Rc<RefCell<Vec<WsWriter>>> = Rc::default();
                // One configuration for every session (a fresh one each would cost an
                // allocation per session).
                let config = Arc::new(WsConfig::default());
                let router = {
                    let (group, members) = (Rc::clone(&group), Rc::clone(&members));
                    Router::new().route("GET", "/", move |req, _p| {
                        let (group, members, j) = (group.clone(), members.clone(), j.clone());
                        let config = Arc::clone(&config);
                        async move {
                            websocket::accept(&req, config, move |mut socket| async move {
                                group.join(&socket.writer());
                                members.borrow_mut().push(socket.writer());
                                j.fetch_add(1, Ordering::Release);
                                while let Ok(Some(_)) = socket.recv().await {}
                            })
                        }
                    })
                };
                coring::spawn_local(Server::new(router).serve(listener));
                while go.load(Ordering::Acquire) == 0 {
                    coring::time::sleep(Duration::from_millis(5)).await;
                }
                // Everyone has joined: the list is final (taken out of its cell, not borrowed
                // across the rounds' awaits).
                let members = members.take();
                let result = broadcast_rounds(&group, &members, rounds).await;
                {
                    let mut t = t.lock().expect("timings");
                    match result {
                        Ok((coring, raw)) => (t.coring, t.raw) = (coring, raw),
                        Err(e) => t.error = Some(e),
                    }
                }
                go.store(2, Ordering::Release);
                coring::runtime::shutdown_signal().await;
            }
        })
        .expect("server");
    });
    while port.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let (rss0, heap0) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    let mut clients = hold_idle_clients(port.load(Ordering::Acquire), conns, Some(UPGRADE));
    while joined.load(Ordering::Acquire) < conns {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let every session reach its wait in the kernel.
    std::thread::sleep(Duration::from_millis(200));
    let (rss1, heap1) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    println!(
        "ws_broadcast: {conns} idle WebSocket sessions: {:.0} B resident and {:.0} B heap per connection",
        (rss1 - rss0) as f64 / conns as f64,
        (heap1 - heap0) as f64 / conns as f64
    );
    start.store(1, Ordering::Release);
    while start.load(Ordering::Acquire) != 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = timings.lock().expect("timings");
    if let Some(e) = &t.error {
        eprintln!("ws_broadcast: {e}");
        std::process::exit(1);
    }
    let (c, r) = (median(&t.coring), median(&t.raw));
    println!(
        "ws_broadcast: 100 B to {conns} sessions, median of {rounds}: coring Group::publish to the last frame written {:.0} µs, raw io_uring loop {:.0} µs: {:.2}× the raw loop",
        c.as_secs_f64() * 1e6,
        r.as_secs_f64() * 1e6,
        c.as_secs_f64() / r.as_secs_f64()
    );
    drop(t);
    drop(clients.stdin.take());
    let _ = clients.wait();
    shutdown.shutdown();
    server.join().expect("server");
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Alternates a publish to the group (until every member's queue is flushed) with the raw
/// loop's sends of the same frame to the same sockets.
async fn broadcast_rounds(
    group: &Group,
    members: &[WsWriter],
    rounds: usize,
) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let payload = vec![b'x'; 100];
    let message = Message::Binary(payload.clone().into());
    // The same frame, framed by hand: a server's unmasked binary frame.
    let mut frame = vec![0x82, 100];
    frame.extend_from_slice(&payload);
    let fds: Vec<i32> = members.iter().map(|m| m.stream().as_raw_fd()).collect();
    let mut ring = io_uring::IoUring::new(4096).map_err(|e| format!("io_uring: {e}"))?;
    let (mut coring, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t0 = Instant::now();
        let published = group.publish(&message).await;
        for m in members {
            m.flush().await.map_err(|e| format!("flush: {e}"))?;
        }
        coring.push(t0.elapsed());
        if published.queued != members.len() {
            return Err(format!(
                "published to {} of {}",
                published.queued,
                members.len()
            ));
        }
        raw.push(raw_sends(&mut ring, &fds, &frame)?);
    }
    Ok((coring, raw))
}

/// One SEND of `frame` to every socket, submitted in batches, every completion reaped.
fn raw_sends(ring: &mut io_uring::IoUring, fds: &[i32], frame: &[u8]) -> Result<Duration, String> {
    use io_uring::{opcode, types};
    let t0 = Instant::now();
    let (mut next, mut done) = (0, 0);
    while done < fds.len() {
        {
            let mut sq = ring.submission();
            while next < fds.len() && !sq.is_full() {
                let send =
                    opcode::Send::new(types::Fd(fds[next]), frame.as_ptr(), frame.len() as u32)
                        .build()
                        .user_data(next as u64);
                // SAFETY: `frame` outlives the loop, which reaps every completion before it
                // returns; the descriptors stay open (their sessions hold them).
                unsafe { sq.push(&send) }.map_err(|_| "submission queue full")?;
                next += 1;
            }
        }
        ring.submit_and_wait(1)
            .map_err(|e| format!("io_uring_enter: {e}"))?;
        for cqe in ring.completion() {
            if cqe.result() != frame.len() as i32 {
                return Err(format!("raw send: {}", cqe.result()));
            }
            done += 1;
        }
    }
    Ok(t0.elapsed())
}

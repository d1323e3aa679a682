//! One room, 10,000 WebSocket members spread over two server cores (SO_REUSEPORT; the
//! clients are a child process that never reads): one 100-byte message published from core 0,
//! timed from the publish to the last member's write completed, against a raw loop doing the
//! same sends: core 0 tells core 1 through the same cross-core mailbox, then each core sends
//! the pre-framed 102 bytes to each of its sockets with one io_uring SEND, submitted in
//! batches, every completion reaped. Rounds alternate the two; medians and p99 are printed
//! with the ratio.
//!
//! `cargo run --release -p coring-benches --example room_broadcast [-- MEMBERS [ROUNDS]]`

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coring::net::TcpListener;
use coring::runtime::Runtime;
use coring::shard::Mailbox;
use coring_benches::measure::{hold_idle_clients, raise_fd_limit, run_idle_clients_if_asked};
use coring_protocols::rooms::{Delivery, Gone, Hub, Member, WsMember};
use coring_protocols::serve::{Router, Server};
use coring_protocols::websocket::{self, WsConfig};

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Members whose write of the current round has not completed, and when the last one did.
#[derive(Default)]
struct Round {
    left: AtomicUsize,
    last: Mutex<Option<Instant>>,
}

impl Round {
    fn one_done(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.last.lock().expect("round") = Some(Instant::now());
        }
    }
}

/// A WebSocket member that reports when its write completed.
struct Timed {
    ws: WsMember,
    round: Arc<Round>,
}

impl Member for Timed {
    async fn send(&self, batch: &[Delivery]) -> Result<(), Gone> {
        let result = self.ws.send(batch).await;
        self.round.one_done();
        result
    }
}

/// What crosses between the cores during the raw rounds: start sending.
struct Go;

fn main() {
    run_idle_clients_if_asked();
    let args: Vec<String> = std::env::args().collect();
    let members: usize = args
        .get(1)
        .map(|a| a.parse().expect("MEMBERS must be a number"))
        .unwrap_or(10_000);
    let rounds: usize = args
        .get(2)
        .map(|a| a.parse().expect("ROUNDS must be a number"))
        .unwrap_or(41);
    raise_fd_limit(members + 256);

    let rt = Runtime::builder()
        .cores(2)
        .shutdown_grace(Duration::from_millis(500))
        .build()
        .expect("runtime");
    let hub: Hub<Timed> = Hub::new(&rt);
    let raw_mail: Mailbox<Go> = Mailbox::new(&rt, 16);
    let shutdown = rt.shutdown_handle();
    let port = Arc::new(AtomicU16::new(0));
    let round = Arc::new(Round::default());
    let fds: Arc<[Mutex<Vec<i32>>; 2]> = Arc::new([Mutex::default(), Mutex::default()]);
    let raw_done = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let results = Arc::new(Mutex::new(
        None::<Result<(Vec<Duration>, Vec<Duration>), String>>,
    ));
    let server = {
        let (hub, port, round, fds, raw_done, results) = (
            hub.clone(),
            port.clone(),
            round.clone(),
            fds.clone(),
            raw_done.clone(),
            results.clone(),
        );
        std::thread::spawn(move || {
            rt.run(|core| {
                let index = core.index();
                let listener = if index == 0 {
                    let l = TcpListener::bind_reuseport("127.0.0.1:0").expect("bind");
                    port.store(l.local_addr().port(), Ordering::Release);
                    l
                } else {
                    while port.load(Ordering::Acquire) == 0 {
                        std::thread::yield_now();
                    }
                    TcpListener::bind_reuseport(("127.0.0.1", port.load(Ordering::Acquire)))
                        .expect("bind")
                };
                let (hub, round, fds, raw_done, results, raw_mail) = (
                    hub.clone(),
                    round.clone(),
                    fds.clone(),
                    raw_done.clone(),
                    results.clone(),
                    raw_mail.clone(),
                );
                async move {
                    let rooms = hub.start();
                    let config = Arc::new(WsConfig::default());
                    let router = {
                        let (rooms, round, fds) = (rooms.clone(), round.clone(), fds.clone());
                        Router::new().route("GET", "/", move |req, _p| {
                            let (rooms, round, fds) = (rooms.clone(), round.clone(), fds.clone());
                            let config = Arc::clone(&config);
                            async move {
                                websocket::accept(&req, config, move |socket| async move {
                                    let (mut reader, writer) = socket.split();
                                    fds[index]
                                        .lock()
                                        .expect("fds")
                                        .push(writer.stream().as_raw_fd());
                                    let member = Timed {
                                        ws: WsMember::binary(writer),
                                        round,
                                    };
                                    let _m = rooms.join("bench", member, None);
                                    while let Ok(Some(_)) = reader.recv().await {}
                                })
                            }
                        })
                    };
                    coring::spawn_local(Server::new(router).serve(listener));
                    let mut ring = io_uring::IoUring::new(4096).expect("io_uring");
                    let mut frame = vec![0x82, 100];
                    frame.extend_from_slice(&[b'x'; 100]);
                    let frame = Rc::new(frame);
                    if index == 1 {
                        // Core 1's side of the raw rounds.
                        while let Some(Go) = coring::runtime::until_shutdown(raw_mail.recv()).await
                        {
                            let my_fds = fds[1].lock().expect("fds").clone();
                            match raw_sends(&mut ring, &my_fds, &frame) {
                                Ok(()) => raw_done.lock().expect("raw").push(Instant::now()),
                                Err(e) => {
                                    eprintln!("room_broadcast: core 1: {e}");
                                    std::process::exit(1);
                                }
                            }
                        }
                    }
                    while fds
                        .iter()
                        .map(|f| f.lock().expect("fds").len())
                        .sum::<usize>()
                        < members
                    {
                        coring::time::sleep(Duration::from_millis(5)).await;
                    }
                    // Every member's join has reached the home and come back.
                    coring::time::sleep(Duration::from_millis(300)).await;
                    let result = rounds_of(
                        &rooms, &round, &raw_mail, &mut ring, &fds, &frame, &raw_done, members,
                        rounds,
                    )
                    .await;
                    *results.lock().expect("results") = Some(result);
                }
            })
            .expect("server");
        })
    };
    while port.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut clients = hold_idle_clients(port.load(Ordering::Acquire), members, Some(UPGRADE));
    let result = loop {
        if let Some(r) = results.lock().expect("results").take() {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let split: Vec<usize> = (0..2).map(|i| fds[i].lock().expect("fds").len()).collect();
    drop(clients.stdin.take());
    let _ = clients.wait();
    shutdown.shutdown();
    let _ = server.join();
    let (coring, raw) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("room_broadcast: {e}");
            std::process::exit(1);
        }
    };
    let (c50, r50) = (quantile(&coring, 0.5), quantile(&raw, 0.5));
    let (c99, r99) = (quantile(&coring, 0.99), quantile(&raw, 0.99));
    println!(
        "room_broadcast: 100 B to {members} members ({} on core 0, {} on core 1), {rounds} rounds: \
         publish to the last write completed p50 {:.0} µs, p99 {:.0} µs; raw loop p50 {:.0} µs, \
         p99 {:.0} µs: {:.2}× the raw loop at p50, {:.2}× at p99",
        split[0],
        split[1],
        us(c50),
        us(c99),
        us(r50),
        us(r99),
        us(c50) / us(r50),
        us(c99) / us(r99)
    );
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn quantile(v: &[Duration], q: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

/// Alternates a publish to the room (until every member's write completed) with the raw
/// loop's round.
#[allow(clippy::too_many_arguments)]
async fn rounds_of(
    rooms: &coring_protocols::rooms::Rooms<Timed>,
    round: &Round,
    raw_mail: &Mailbox<Go>,
    ring: &mut io_uring::IoUring,
    fds: &[Mutex<Vec<i32>>; 2],
    frame: &[u8],
    raw_done: &Mutex<Vec<Instant>>,
    members: usize,
    rounds: usize,
) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let payload = bytes::Bytes::from(vec![b'x'; 100]);
    let my_fds = fds[0].lock().expect("fds").clone();
    let (mut coring, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        round.left.store(members, Ordering::Release);
        *round.last.lock().expect("round") = None;
        let t0 = Instant::now();
        rooms.publish("bench", payload.clone());
        let deadline = t0 + Duration::from_secs(10);
        while round.left.load(Ordering::Acquire) > 0 {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {members} writes still pending",
                    round.left.load(Ordering::Acquire)
                ));
            }
            coring::task::yield_now().await;
        }
        let last = round
            .last
            .lock()
            .expect("round")
            .unwrap_or_else(Instant::now);
        coring.push(last - t0);
        coring::time::sleep(Duration::from_millis(2)).await;

        raw_done.lock().expect("raw").clear();
        let t0 = Instant::now();
        raw_mail
            .try_send(1, Go)
            .map_err(|_| "raw mailbox full".to_string())?;
        raw_sends(ring, &my_fds, frame)?;
        let mine = Instant::now();
        loop {
            if let Some(&theirs) = raw_done.lock().expect("raw").first() {
                raw.push(mine.max(theirs) - t0);
                break;
            }
            if Instant::now() > t0 + Duration::from_secs(10) {
                return Err("raw round on core 1 never finished".into());
            }
            coring::task::yield_now().await;
        }
        coring::time::sleep(Duration::from_millis(2)).await;
    }
    Ok((coring, raw))
}

/// One SEND of `frame` to every socket, submitted in batches, every completion reaped.
fn raw_sends(ring: &mut io_uring::IoUring, fds: &[i32], frame: &[u8]) -> Result<(), String> {
    use io_uring::{opcode, types};
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
    Ok(())
}

//! Tick jitter: how late a 60 Hz [`TickLoop`] starts its ticks, first alone on an idle core,
//! then on a server core that also serves 1,000 WebSocket clients (a client runtime pinned to
//! the other CPU), each sending an input for every snapshot it receives while the tick loop
//! broadcasts a 100-byte snapshot to all of them every tick through a room. Prints the
//! lateness p50, p99 and maximum, the work per tick, overruns and late ticks.
//!
//! `cargo run --release -p coring-benches --example tick_jitter [-- CLIENTS [SECONDS]]`

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coring::net::TcpListener;
use coring::runtime::Runtime;
use coring_benches::measure::raise_fd_limit;
use coring_protocols::rooms::{Hub, Policy, RoomConfig, WsMember};
use coring_protocols::serve::{Router, Server};
use coring_protocols::tick::{TickLoop, TickStats};
use coring_protocols::websocket::{self as ws, WsConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args
        .get(1)
        .map(|a| a.parse().expect("CLIENTS must be a number"))
        .unwrap_or(1000);
    let seconds: u64 = args
        .get(2)
        .map(|a| a.parse().expect("SECONDS must be a number"))
        .unwrap_or(10);
    raise_fd_limit(2 * clients + 256);
    let run_for = Duration::from_secs(seconds);

    let idle = idle_ticks(run_for);
    print("idle core", &idle, None);
    let (loaded, inputs) = loaded_ticks(clients, run_for);
    print(
        &format!("{clients} clients, an input per snapshot"),
        &loaded,
        Some(inputs),
    );
}

fn print(what: &str, s: &TickStats, inputs: Option<u64>) {
    let extra = inputs.map_or(String::new(), |n| {
        format!(
            ", {:.0} inputs/s served",
            n as f64 / (s.ticks as f64 / 60.0)
        )
    });
    println!(
        "tick_jitter: 60 Hz, {what}: {} ticks, start lateness p50 {} µs, p99 {} µs, max {} µs; \
         work p99 {} µs; overruns {}, late {}{extra}",
        s.ticks,
        s.lateness_us(0.5),
        s.lateness_us(0.99),
        s.lateness().max(),
        s.work_us(0.99),
        s.overruns,
        s.late
    );
}

fn idle_ticks(run_for: Duration) -> TickStats {
    let out = Arc::new(Mutex::new(None));
    let o = Arc::clone(&out);
    Runtime::builder()
        .build()
        .expect("runtime")
        .run(move |_| {
            let o = Arc::clone(&o);
            async move {
                let mut ticks = TickLoop::hz(60);
                let start = Instant::now();
                while start.elapsed() < run_for {
                    ticks.next().await;
                }
                ticks.finish();
                *o.lock().expect("stats") = Some(ticks.stats().clone());
            }
        })
        .expect("run");
    out.lock().expect("stats").take().expect("stats")
}

fn loaded_ticks(clients: usize, run_for: Duration) -> (TickStats, u64) {
    let rt = Runtime::builder()
        .shutdown_grace(Duration::from_millis(500))
        .build()
        .expect("runtime");
    let hub: Hub<WsMember> = Hub::with_config(&rt, |_| RoomConfig {
        policy: Policy::Conflate,
        history: 0,
        member_limit: 64 << 10,
    });
    let shutdown = rt.shutdown_handle();
    let addr = Arc::new(Mutex::new(None));
    let joined = Arc::new(AtomicUsize::new(0));
    let inputs = Arc::new(AtomicU64::new(0));
    let out = Arc::new(Mutex::new(None));
    let server = {
        let (addr, joined, inputs, out) =
            (addr.clone(), joined.clone(), inputs.clone(), out.clone());
        std::thread::spawn(move || {
            rt.run(move |_| {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
                *addr.lock().expect("addr") = Some(listener.local_addr());
                let (hub, joined, inputs, out) =
                    (hub.clone(), joined.clone(), inputs.clone(), out.clone());
                async move {
                    let rooms = hub.start();
                    let config = Arc::new(WsConfig::default());
                    let router = {
                        let (rooms, joined, inputs) =
                            (rooms.clone(), joined.clone(), inputs.clone());
                        Router::new().route("GET", "/", move |req, _p| {
                            let (rooms, joined, inputs) =
                                (rooms.clone(), joined.clone(), inputs.clone());
                            let config = Arc::clone(&config);
                            async move {
                                ws::accept(&req, config, move |socket| async move {
                                    let (mut reader, writer) = socket.split();
                                    let _m = rooms.join("game", WsMember::binary(writer), None);
                                    joined.fetch_add(1, Ordering::Relaxed);
                                    while let Ok(Some(_)) = reader.recv().await {
                                        inputs.fetch_add(1, Ordering::Relaxed);
                                    }
                                })
                            }
                        })
                    };
                    coring::spawn_local(Server::new(router).serve(listener));
                    while joined.load(Ordering::Relaxed) < clients {
                        coring::time::sleep(Duration::from_millis(10)).await;
                    }
                    coring::time::sleep(Duration::from_millis(200)).await;
                    let before = inputs.load(Ordering::Relaxed);
                    let mut ticks = TickLoop::hz(60);
                    let snapshot = Bytes::from(vec![7u8; 100]);
                    let start = Instant::now();
                    while start.elapsed() < run_for {
                        ticks.next().await;
                        rooms.publish_keyed("game", Some(0), snapshot.clone());
                    }
                    ticks.finish();
                    let served = inputs.load(Ordering::Relaxed) - before;
                    *out.lock().expect("stats") = Some((ticks.stats().clone(), served));
                }
            })
            .expect("server");
        })
    };
    let addr = loop {
        if let Some(a) = *addr.lock().expect("addr") {
            break a;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let client_shutdown = Arc::new(Mutex::new(None));
    let cs = client_shutdown.clone();
    let client = std::thread::spawn(move || {
        coring_benches::measure::pin_to(1);
        let rt = Runtime::builder()
            .pin(false)
            .shutdown_grace(Duration::from_millis(200))
            .build()
            .expect("client runtime");
        *cs.lock().expect("handle") = Some(rt.shutdown_handle());
        rt.run(move |_| async move {
            let url = format!("ws://{addr}/");
            for _ in 0..clients {
                match ws::connect(&url).await {
                    Ok(mut socket) => {
                        coring::spawn_local(async move {
                            let input = ws::Message::Binary(Bytes::from_static(b"input 1 0"));
                            while let Ok(Some(_)) = socket.recv().await {
                                if socket.send(&input).await.is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    Err(e) => {
                        eprintln!("tick_jitter: connect: {e}");
                        std::process::exit(1);
                    }
                }
            }
            coring::runtime::shutdown_signal().await;
        })
        .expect("clients");
    });
    let result = loop {
        if let Some(r) = out.lock().expect("stats").take() {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(h) = client_shutdown.lock().expect("handle").as_ref() {
        h.shutdown();
    }
    let _ = client.join();
    shutdown.shutdown();
    let _ = server.join();
    result
}

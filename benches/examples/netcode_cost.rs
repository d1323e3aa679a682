//! What netcode's sessions cost the server: CPU per packet of a netcode echo (open, replay
//! window, seal, on every packet) against the engine's plain UDP echo, at the same load: many
//! clients at a game's 60 packets a second each, from the load generator on another CPU. Each
//! runs twice: waking at every arrival, and with wake-up coalescing
//! (`Builder::coalesce_wakeups`), which lets the arrivals of a short window share one wake-up.
//!
//! `cargo run --release -p coring-benches --example netcode_cost [-- CLIENTS RATE SIZE SECONDS
//! WINDOW_US]` (defaults: 1000 clients, 60,000 packets/s in all, 64-byte payloads, 10 s, a
//! 200 µs window; three interleaved rounds, medians). The server runs on CPU 0, the load on
//! CPU 1. The server thread's own CPU (`CLOCK_THREAD_CPUTIME_ID`) and its packet count are
//! sampled inside the measured period (after the handshakes and the warm-up, before the
//! end), so "busy" is the core's steady share at that rate and "per packet" what each echo
//! costs there, idle time included. Latency is the load generator's, from each packet's
//! intended send time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use coring::net::UdpSocket;
use coring::runtime::until_shutdown;
use coring::time::timeout;
use coring_benches::measure::{ThreadClock, pin_to};
use coring_loadgen::netcode::NetcodeEcho;
use coring_loadgen::run::{Options, Workload, run};
use coring_loadgen::udp::UdpEcho;
use coring_protocols::netcode::{Key, Server, ServerConfig};
use coring_protocols::udp::{self, Event};

const PROTOCOL: u64 = 0x6e65_7463_6f64_6531;
const KEY: Key = Key([0x5a; 32]);
const ROUNDS: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Udp,
    Netcode,
}

/// One variant: which echo, and the coalescing window (if any).
#[derive(Clone, Copy)]
struct Variant {
    kind: Kind,
    coalesce: Option<Duration>,
}

impl Variant {
    fn name(&self) -> String {
        let kind = match self.kind {
            Kind::Udp => "udp echo",
            Kind::Netcode => "netcode echo",
        };
        match self.coalesce {
            None => kind.to_string(),
            Some(w) => format!("{kind}, coalesced {} µs", w.as_micros()),
        }
    }
}

/// A running one-core server on CPU 0.
struct Running {
    addr: std::net::SocketAddr,
    shutdown: coring::ShutdownHandle,
    clock: ThreadClock,
    packets: Arc<AtomicU64>,
    coalescing: Option<Duration>,
    stopped: mpsc::Receiver<()>,
}

fn server(variant: Variant, clients: usize) -> Running {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stopped_tx, stopped) = mpsc::channel();
    let packets = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&packets);
    std::thread::spawn(move || {
        pin_to(0);
        let rt = coring::Runtime::builder()
            .cores(1)
            .coalesce_wakeups(variant.coalesce)
            .build()
            .expect("runtime");
        let coalescing = rt.coalescing();
        let shutdown = rt.shutdown_handle();
        let ready = Mutex::new(Some((ready_tx, shutdown, coalescing)));
        rt.run(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let (tx, shutdown, coalescing) = ready.lock().expect("lock").take().expect("one core");
            let addr = socket.local_addr().expect("addr");
            tx.send((addr, shutdown, ThreadClock::current(), coalescing))
                .expect("ready");
            let counter = Arc::clone(&counter);
            async move {
                match variant.kind {
                    Kind::Udp => udp_echo(socket, &counter).await,
                    Kind::Netcode => netcode_echo(socket, clients, &counter).await,
                }
            }
        })
        .expect("run");
        let _ = stopped_tx.send(());
    });
    let (addr, shutdown, clock, coalescing) = ready_rx.recv().expect("server ready");
    Running {
        addr,
        shutdown,
        clock,
        packets,
        coalescing,
        stopped,
    }
}

/// The `udp_echo` example's loop, counting, on a socket set not to fragment as netcode's is.
async fn udp_echo(socket: UdpSocket, packets: &AtomicU64) {
    socket.set_dont_fragment(true).expect("IP_MTU_DISCOVER");
    let mut rx = socket.pooled();
    while let Some(first) = until_shutdown(rx.next()).await {
        let mut batch = Vec::with_capacity(64);
        if let Ok(d) = first {
            batch.push((d.data, d.source));
        }
        while batch.len() < 64 {
            match timeout(Duration::ZERO, rx.next()).await {
                Ok(Ok(d)) => batch.push((d.data, d.source)),
                _ => break,
            }
        }
        packets.fetch_add(batch.len() as u64, Ordering::Relaxed);
        socket.send_many(batch).await;
    }
}

/// The `netcode_echo` example's loop, counting.
async fn netcode_echo(socket: UdpSocket, clients: usize, packets: &AtomicU64) {
    let mut config = ServerConfig::new(PROTOCOL, KEY);
    config.max_clients = clients;
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let server = Server::new(config, coring::time::now(), unix);
    udp::serve(socket, server, |sessions, event| {
        if let Event::Payload { client, data } = event {
            packets.fetch_add(1, Ordering::Relaxed);
            let _ = sessions.send(client, data);
        }
    })
    .await;
}

/// One measured run's figures.
struct Figures {
    per_packet_us: f64,
    busy: f64,
    p50_us: f64,
    p99_us: f64,
}

/// The server's (CPU, packets, when) at one moment.
type Sample = (Duration, u64, Instant);

fn measure(variant: Variant, options: &Options, size: usize) -> Figures {
    let server = server(variant, options.connections);
    if variant.coalesce.is_some() && server.coalescing.is_none() {
        eprintln!("this kernel cannot coalesce wake-ups (min-wait, 6.12): that row is uncoalesced");
    }
    let target = server.addr.to_string();
    let workload: Arc<dyn Workload> = match variant.kind {
        Kind::Udp => Arc::new(UdpEcho::new(&target, size.max(12)).expect("udp")),
        Kind::Netcode => {
            Arc::new(NetcodeEcho::new(&target, size.max(12), PROTOCOL, KEY).expect("nc"))
        }
    };
    let (clock, packets) = (server.clock, Arc::clone(&server.packets));
    let sample = move || {
        (
            clock.read(),
            packets.load(Ordering::Relaxed),
            Instant::now(),
        )
    };
    // Sampled from half a second into the measured period to a quarter second before its end.
    let from = options.warmup + Duration::from_millis(500);
    let to = options.warmup + options.duration - Duration::from_millis(250);
    let options = options.clone();
    let load = std::thread::spawn(move || {
        pin_to(1);
        let mut first: Option<Sample> = None;
        let mut last: Option<Sample> = None;
        let outcome = run(workload, &options, |p| {
            if p.elapsed >= from && first.is_none() {
                first = Some(sample());
            } else if p.elapsed < to && first.is_some() {
                last = Some(sample());
            }
        })
        .expect("load");
        (outcome, first, last)
    });
    let (outcome, first, last) = load.join().expect("load thread");
    server.shutdown.shutdown();
    let _ = server.stopped.recv();
    let errors: u64 = outcome.rec.errors.values().sum();
    assert_eq!(errors, 0, "load errors: {:?}", outcome.rec.errors);
    let ((cpu0, n0, t0), (cpu1, n1, t1)) = first.zip(last).expect("run too short to sample");
    let cpu = (cpu1 - cpu0).as_secs_f64();
    let latency = &outcome.rec.latency;
    Figures {
        per_packet_us: cpu * 1e6 / (n1 - n0).max(1) as f64,
        busy: 100.0 * cpu / (t1 - t0).as_secs_f64(),
        p50_us: latency.value_at_quantile(0.5) as f64,
        p99_us: latency.value_at_quantile(0.99) as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let clients = arg(0, 1000.0) as usize;
    let rate = arg(1, 60_000.0);
    let size = arg(2, 64.0) as usize;
    let seconds = arg(3, 10.0).max(2.0);
    let window = Duration::from_micros(arg(4, 200.0) as u64);
    let options = Options {
        connections: clients,
        cores: 1,
        rate: Some(rate),
        duration: Duration::from_secs_f64(seconds),
        warmup: Duration::from_secs(2),
        pin: false,
        ..Options::default()
    };
    let variants = [
        Variant {
            kind: Kind::Udp,
            coalesce: None,
        },
        Variant {
            kind: Kind::Netcode,
            coalesce: None,
        },
        Variant {
            kind: Kind::Udp,
            coalesce: Some(window),
        },
        Variant {
            kind: Kind::Netcode,
            coalesce: Some(window),
        },
    ];
    let mut runs: Vec<Vec<Figures>> = variants.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (i, variant) in variants.iter().enumerate() {
            runs[i].push(measure(*variant, &options, size));
        }
    }
    println!(
        "netcode_cost: {clients} clients, {rate:.0} packets/s, {size}-byte payloads (medians of {ROUNDS})"
    );
    println!(
        "  {:<34} {:>14} {:>10} {:>9} {:>9}",
        "variant", "CPU-µs/packet", "core busy", "p50", "p99"
    );
    let mut per_packet = Vec::new();
    for (variant, figures) in variants.iter().zip(runs) {
        let pick = |f: fn(&Figures) -> f64| median(figures.iter().map(f).collect());
        let cost = pick(|f| f.per_packet_us);
        per_packet.push(cost);
        println!(
            "  {:<34} {:>14.2} {:>9.0}% {:>7.0}µs {:>7.0}µs",
            variant.name(),
            cost,
            pick(|f| f.busy),
            pick(|f| f.p50_us),
            pick(|f| f.p99_us),
        );
    }
    println!(
        "  netcode / udp: {:.2}x uncoalesced, {:.2}x coalesced",
        per_packet[1] / per_packet[0],
        per_packet[3] / per_packet[2]
    );
}

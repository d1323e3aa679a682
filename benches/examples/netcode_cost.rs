//! What netcode's sessions cost the server: CPU per packet of a netcode echo (open, replay
//! window, seal, on every packet) against the engine's plain UDP echo, at the same load: many
//! clients at a game's 60 packets a second each, from the load generator on another CPU.
//!
//! `cargo run --release -p coring-benches --example netcode_cost [-- CLIENTS RATE SIZE SECONDS]`
//! (defaults: 1000 clients, 60,000 packets/s in all, 64-byte payloads, 10 s; three interleaved
//! rounds, medians). The server runs on CPU 0, the load on CPU 1; CPU is the server thread's own
//! (`CLOCK_THREAD_CPUTIME_ID`), per packet it echoed, handshakes and idle time included.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use coring::net::UdpSocket;
use coring::runtime::until_shutdown;
use coring::time::timeout;
use coring_benches::measure::{pin_to, thread_cpu};
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

/// A one-core server of `kind` on CPU 0; returns its address, its shutdown handle, and where
/// its (CPU time, packets echoed) arrive when it stops.
fn server(
    kind: Kind,
    clients: usize,
) -> (
    std::net::SocketAddr,
    coring::ShutdownHandle,
    mpsc::Receiver<(Duration, u64)>,
) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let (handle_tx, handle_rx) = mpsc::channel();
    std::thread::spawn(move || {
        pin_to(0);
        let rt = coring::Runtime::builder()
            .cores(1)
            .build()
            .expect("runtime");
        handle_tx.send(rt.shutdown_handle()).expect("handle");
        let done_tx = Mutex::new(Some(done_tx));
        rt.run(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            addr_tx
                .send(socket.local_addr().expect("addr"))
                .expect("addr");
            let done = done_tx.lock().expect("lock").take().expect("one core");
            async move {
                let start = thread_cpu();
                let packets = match kind {
                    Kind::Udp => udp_echo(socket).await,
                    Kind::Netcode => netcode_echo(socket, clients).await,
                };
                done.send((thread_cpu() - start, packets)).expect("done");
            }
        })
        .expect("run");
    });
    let handle = handle_rx.recv().expect("handle");
    (addr_rx.recv().expect("addr"), handle, done_rx)
}

/// The `udp_echo` example's loop, counting.
async fn udp_echo(socket: UdpSocket) -> u64 {
    let mut rx = socket.pooled();
    let mut packets = 0;
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
        packets += batch.len() as u64;
        socket.send_many(batch).await;
    }
    packets
}

/// The `netcode_echo` example's loop, counting.
async fn netcode_echo(socket: UdpSocket, clients: usize) -> u64 {
    let mut config = ServerConfig::new(PROTOCOL, KEY);
    config.max_clients = clients;
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let server = Server::new(config, coring::time::now(), unix);
    let mut packets = 0u64;
    udp::serve(socket, server, |sessions, event| {
        if let Event::Payload { client, data } = event {
            packets += 1;
            let _ = sessions.send(client, data);
        }
    })
    .await;
    packets
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
    let seconds = arg(3, 10.0);
    let options = Options {
        connections: clients,
        cores: 1,
        rate: Some(rate),
        duration: Duration::from_secs_f64(seconds),
        warmup: Duration::from_secs(2),
        pin: false,
        ..Options::default()
    };
    let mut per_packet = [Vec::new(), Vec::new()];
    let mut busy = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, kind) in [Kind::Udp, Kind::Netcode].into_iter().enumerate() {
            let (addr, shutdown, done) = server(kind, clients);
            let target = addr.to_string();
            let workload: Arc<dyn Workload> = match kind {
                Kind::Udp => Arc::new(UdpEcho::new(&target, size.max(12)).expect("udp")),
                Kind::Netcode => {
                    Arc::new(NetcodeEcho::new(&target, size.max(12), PROTOCOL, KEY).expect("nc"))
                }
            };
            let options = options.clone();
            let load = std::thread::spawn(move || {
                pin_to(1);
                let start = std::time::Instant::now();
                let outcome = run(workload, &options, |_| {}).expect("load");
                (outcome, start.elapsed())
            });
            let (outcome, wall) = load.join().expect("load thread");
            shutdown.shutdown();
            let (cpu, packets) = done.recv().expect("server stopped");
            let errors: u64 = outcome.rec.errors.values().sum();
            assert_eq!(errors, 0, "load errors: {:?}", outcome.rec.errors);
            per_packet[i].push(cpu.as_secs_f64() * 1e6 / packets.max(1) as f64);
            busy[i].push(100.0 * cpu.as_secs_f64() / wall.as_secs_f64());
        }
    }
    let [udp, netcode] = per_packet.map(median);
    let [udp_busy, netcode_busy] = busy.map(median);
    println!(
        "netcode_cost: {clients} clients, {rate:.0} packets/s, {size}-byte payloads (medians of {ROUNDS})"
    );
    println!("  udp echo      {udp:>6.2} server CPU-µs/packet, server core {udp_busy:>3.0}% busy");
    println!(
        "  netcode echo  {netcode:>6.2} server CPU-µs/packet, server core {netcode_busy:>3.0}% busy"
    );
    println!("  netcode / udp {:>6.2}x", netcode / udp);
}

//! What an RPC call costs the server: `rpc::serve` (postcard, a task per call) against a tokio
//! server speaking the same wire with the same codec in one tight loop (read what arrived,
//! answer every whole frame, one write), both echoing a `u64`. The client is the same for
//! both: coring's `rpc::Client` with `CALLERS` calls in flight on one connection.
//!
//! `cargo run --release -p coring-benches --example rpc_throughput [-- CALLERS SECONDS]`
//! (defaults: 128 callers, 3 s; three interleaved rounds, medians). The server runs on CPU 0,
//! the client on CPU 1; CPU is the server thread's own (`CLOCK_THREAD_CPUTIME_ID`) from the
//! accept to the end, per call answered.

use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coring::net::{TcpListener, TcpStream};
use coring_benches::measure::{pin_to, thread_cpu};
use coring_protocols::rpc::{self, Header, Kind, RpcFormat};
use coring_protocols::serialize::Postcard;

const ROUNDS: usize = 3;
const MAX_FRAME: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    Coring,
    Tokio,
}

/// Serves one connection on CPU 0; sends back the server thread's CPU time once the client
/// has gone.
fn start_server(kind: Server) -> (std::net::SocketAddr, mpsc::Receiver<Duration>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (cpu_tx, cpu_rx) = mpsc::channel();
    std::thread::spawn(move || {
        pin_to(0);
        match kind {
            Server::Coring => coring::block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                addr_tx.send(listener.local_addr()).unwrap();
                let (stream, _) = listener.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                let start = thread_cpu();
                let _ = rpc::serve(
                    stream,
                    Postcard,
                    rpc::Config::default(),
                    |n: u64| async move { Ok::<u64, ()>(n) },
                )
                .await;
                cpu_tx.send(thread_cpu() - start).unwrap();
            }),
            Server::Tokio => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    let (stream, _) = listener.accept().await.unwrap();
                    let _ = stream.set_nodelay(true);
                    let start = thread_cpu();
                    tokio_serve(stream).await;
                    cpu_tx.send(thread_cpu() - start).unwrap();
                });
            }
        }
    });
    (addr_rx.recv().unwrap(), cpu_rx)
}

/// The same wire in one loop: read, answer each whole frame, write the answers at once.
async fn tokio_serve(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut input = bytes::BytesMut::with_capacity(64 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut at = 0;
        while input.len() - at >= 4 {
            let len = u32::from_be_bytes(input[at..at + 4].try_into().unwrap()) as usize;
            if input.len() - at - 4 < len {
                break;
            }
            let message = &input[at + 4..at + 4 + len];
            at += 4 + len;
            let Ok((header, body)) = Postcard::read_header(message) else {
                return;
            };
            if header.kind != Kind::Call {
                continue;
            }
            let Ok(n) = Postcard::read_body::<u64>(message, body) else {
                return;
            };
            let reply = Header {
                id: header.id,
                kind: Kind::Reply,
                timeout_ms: None,
            };
            let _ = rpc::write_frame::<Postcard, u64>(&reply, Some(&n), MAX_FRAME, &mut out);
        }
        let _ = input.split_to(at);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// `callers` tasks calling for `secs` on one connection; calls answered.
fn run_client(addr: std::net::SocketAddr, callers: usize, secs: u64) -> u64 {
    pin_to(1);
    coring::block_on(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.set_nodelay(true);
        let client: Rc<rpc::Client<u64, u64, (), Postcard>> =
            Rc::new(rpc::Client::new(stream, Postcard, rpc::Config::default()));
        let end = Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..callers)
            .map(|i| {
                let client = Rc::clone(&client);
                coring::spawn_local(async move {
                    let mut done = 0u64;
                    let mut n = i as u64;
                    while Instant::now() < end {
                        match client.call(&n, None).await {
                            Ok(back) => {
                                assert_eq!(back, n);
                                done += 1;
                                n += callers as u64;
                            }
                            Err(e) => panic!("call failed: {e:?}"),
                        }
                    }
                    done
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        total
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let callers: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(128);
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let mut per_cpu = [Vec::new(), Vec::new()];
    let mut per_sec = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (i, kind) in [Server::Coring, Server::Tokio].into_iter().enumerate() {
            let (addr, cpu) = start_server(kind);
            let calls = std::thread::spawn(move || run_client(addr, callers, secs))
                .join()
                .unwrap();
            let cpu = cpu.recv_timeout(Duration::from_secs(10)).unwrap();
            let per_server_cpu_s = calls as f64 / cpu.as_secs_f64();
            println!(
                "round {round} {kind:?}: {calls} calls in {secs} s ({:.0}/s), server CPU {:.2} s, \
                 {per_server_cpu_s:.0} calls per server CPU-second",
                calls as f64 / secs as f64,
                cpu.as_secs_f64()
            );
            per_cpu[i].push(per_server_cpu_s);
            per_sec[i].push(calls as f64 / secs as f64);
        }
    }
    let [coring_cpu, tokio_cpu] = per_cpu.map(median);
    let [coring_s, tokio_s] = per_sec.map(median);
    println!(
        "median: coring {coring_cpu:.0} / tokio {tokio_cpu:.0} calls per server CPU-second \
         ({:.2}x); calls/s {coring_s:.0} / {tokio_s:.0} ({:.2}x)",
        coring_cpu / tokio_cpu,
        coring_s / tokio_s
    );
}

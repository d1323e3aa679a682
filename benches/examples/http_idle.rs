//! Memory per idle HTTP/1.1 keep-alive connection: 10,000 connections that each made one
//! request and now sit idle on one server core running coring's HTTP server.
//!
//! `cargo run --release -p coring-benches --example http_idle [-- CONNECTIONS]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use coring::net::TcpListener;
use coring::runtime::Runtime;
use coring_benches::measure::{
    Counting, LIVE, hold_idle_clients, raise_fd_limit, rss_bytes, run_idle_clients_if_asked,
};
use coring_protocols::http1::Response;
use coring_protocols::serve::Server;

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    run_idle_clients_if_asked();
    let args: Vec<String> = std::env::args().collect();
    let conns: usize = args
        .get(1)
        .map(|a| a.parse().expect("CONNECTIONS must be a number"))
        .unwrap_or(10_000);
    raise_fd_limit(conns + 256);
    let (rss, heap) = run(conns);
    println!(
        "http_idle: {conns} idle keep-alive connections: {:.0} B resident and {:.0} B heap per connection",
        rss as f64 / conns as f64,
        heap as f64 / conns as f64
    );
}

fn run(conns: usize) -> (i64, i64) {
    let rt = Runtime::builder().build().expect("runtime");
    let shutdown = rt.shutdown_handle();
    let port = Arc::new(AtomicU16::new(0));
    let waiting = Arc::new(AtomicUsize::new(0));
    let (p, w) = (port.clone(), waiting.clone());
    let server = std::thread::spawn(move || {
        rt.run(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            p.store(listener.local_addr().port(), Ordering::Release);
            let w = w.clone();
            async move {
                let handler = move |_req: coring_protocols::http1::Request| {
                    let w = w.clone();
                    async move {
                        w.fetch_add(1, Ordering::Release);
                        Response::new(200).body("ok")
                    }
                };
                Server::new(handler).serve(listener).await;
            }
        })
        .expect("server");
    });
    while port.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let port = port.load(Ordering::Acquire);
    std::thread::sleep(Duration::from_millis(50));
    let (rss0, heap0) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    let mut clients = hold_idle_clients(port, conns, Some("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    while waiting.load(Ordering::Acquire) < conns {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let every task reach its wait in the kernel.
    std::thread::sleep(Duration::from_millis(200));
    let (rss1, heap1) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    drop(clients.stdin.take());
    let _ = clients.wait();
    shutdown.shutdown();
    server.join().expect("server");
    (rss1 - rss0, heap1 - heap0)
}

//! Heap allocations on the server core per HTTP request (the TechEmpower plaintext handler,
//! pipelined 16 deep and one at a time), counted by a wrapping global allocator.
//!
//! `cargo run --release -p coring-benches --example http_allocs`

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use coring::net::TcpListener;
use coring_benches::measure::{ALLOCS, Counting, count_this_thread};
use coring_protocols::serve::Server;

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUNDS: usize = 20_000;

fn main() {
    let rt = coring::Runtime::builder().build().expect("runtime");
    let shutdown = rt.shutdown_handle();
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        rt.run(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            tx.send(listener.local_addr()).expect("send");
            count_this_thread();
            async move { Server::new(coring_benches::tfb).serve(listener).await }
        })
        .expect("server");
    });
    let addr = rx.recv().expect("addr");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    // TechEmpower's request, as the suite sends it.
    let mut one = format!("GET /plaintext HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in coring_benches::suite::TFB_HEADERS {
        one.push_str(&format!("{name}: {value}\r\n"));
    }
    one.push_str("\r\n");
    let one = one.as_bytes();
    for depth in [16usize, 1] {
        let batch: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * depth)
            .collect();
        let mut buf = vec![0u8; 1 << 16];
        // Warm up, then count.
        let mut run = |rounds: usize| {
            for _ in 0..rounds {
                s.write_all(&batch).expect("write");
                let mut seen = 0;
                while seen < depth {
                    let n = s.read(&mut buf).expect("read");
                    seen += buf[..n].windows(4).filter(|w| w == b"\r\n\r\n").count();
                }
            }
        };
        run(1000);
        let before = ALLOCS.load(Ordering::Relaxed);
        run(ROUNDS);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        let requests = (ROUNDS * depth) as f64;
        println!(
            "http_allocs: pipelining {depth:>2}: {allocs} allocations for {requests} requests = {:.2} per request",
            allocs as f64 / requests
        );
    }
    drop(s);
    shutdown.shutdown();
    server.join().expect("server");
}

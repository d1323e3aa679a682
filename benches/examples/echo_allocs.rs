//! Steady-state heap allocations per echoed message on the server core, counted by a
//! wrapping global allocator (only the server core's thread is counted).
//!
//! `cargo run --release -p coring-benches --example echo_allocs` (target: 0 per message on both read paths).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use coring::net::{TcpListener, TcpStream};
use coring::runtime::{Runtime, until_shutdown};
use coring_benches::measure::{ALLOCS, Counting, count_this_thread};

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONNS: usize = 32;
const WARMUP: u64 = 20_000;
const MEASURED: u64 = 200_000;

fn main() {
    for pooled in [false, true] {
        let before = ALLOCS.load(Ordering::Relaxed);
        let (allocs, msgs) = run(pooled);
        let total = ALLOCS.load(Ordering::Relaxed) - before;
        println!(
            "echo_allocs: {:<6} read path: {allocs} allocations on the server core for {msgs} \
             echoed messages = {:.4} per message ({total} in the whole run, set-up included)",
            if pooled { "pooled" } else { "owned" },
            allocs as f64 / msgs as f64
        );
    }
}

fn run(pooled: bool) -> (u64, u64) {
    let rt = Runtime::builder().build().expect("runtime");
    let shutdown = rt.shutdown_handle();
    let port = Arc::new(AtomicU16::new(0));
    let p = port.clone();
    let server = std::thread::spawn(move || {
        rt.run(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            p.store(listener.local_addr().port(), Ordering::Release);
            count_this_thread();
            async move {
                let mut incoming = listener.incoming();
                while let Some(Ok(conn)) = until_shutdown(incoming.next()).await {
                    coring::spawn_local(async move {
                        if pooled {
                            let mut rx = conn.pooled();
                            while let Some(Ok(Some(buf))) = until_shutdown(rx.next()).await {
                                if conn.write_all(buf).await.0.is_err() {
                                    return;
                                }
                            }
                        } else {
                            let mut buf = Vec::with_capacity(4096);
                            loop {
                                buf.clear();
                                let Some((n, b)) = until_shutdown(conn.read(buf)).await else {
                                    return;
                                };
                                buf = b;
                                if !matches!(n, Ok(n) if n > 0) {
                                    return;
                                }
                                let (r, b) = conn.write_all(buf).await;
                                buf = b;
                                if r.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            }
        })
        .expect("server");
    });
    while port.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let port = port.load(Ordering::Acquire);
    let client = Runtime::builder().build().expect("client runtime");
    let result = client.block_on(async move {
        let count = Rc::new(Cell::new(0u64));
        let mut tasks = Vec::new();
        for _ in 0..CONNS {
            let s = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let count = count.clone();
            tasks.push(coring::spawn_local(async move {
                let mut msg = vec![7u8; 64];
                let mut back = Vec::with_capacity(64);
                while count.get() < WARMUP + MEASURED {
                    let (r, m) = s.write_all(msg).await;
                    msg = m;
                    r.expect("write");
                    back.clear();
                    let (r, b) = s.read_exact(back).await;
                    back = b;
                    r.expect("read");
                    count.set(count.get() + 1);
                }
            }));
        }
        while count.get() < WARMUP {
            coring::time::sleep(Duration::from_millis(1)).await;
        }
        let (a0, m0) = (ALLOCS.load(Ordering::Relaxed), count.get());
        while count.get() < WARMUP + MEASURED {
            coring::time::sleep(Duration::from_millis(1)).await;
        }
        let (a1, m1) = (ALLOCS.load(Ordering::Relaxed), count.get());
        for t in tasks {
            let _ = t.await;
        }
        (a1 - a0, m1 - m0)
    });
    shutdown.shutdown();
    server.join().expect("server");
    result
}

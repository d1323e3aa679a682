//! Memory per idle connection: 10,000 connections open and idle on one server core, each with
//! a task waiting to read. Reports resident memory and heap bytes per connection for the pooled
//! read path (no buffer while idle) and for a 16 KiB buffer per connection (what peers do), and
//! the resident memory per connection of the shipped `echo` example (a process of its own, one
//! core), which users copy.
//!
//! `cargo build --release --example echo && cargo run --release -p coring-benches --example
//! idle_conns [-- CONNECTIONS]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use coring::net::TcpListener;
use coring::runtime::{Runtime, until_shutdown};
use coring_benches::measure::{
    Counting, LIVE, hold_idle_clients, raise_fd_limit, rss_bytes, rss_of, run_idle_clients_if_asked,
};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Per-connection buffer of the owned read path.
const OWNED_BUF: usize = 16 * 1024;

fn main() {
    run_idle_clients_if_asked();
    let args: Vec<String> = std::env::args().collect();
    let conns: usize = args
        .get(1)
        .map(|a| a.parse().expect("CONNECTIONS must be a number"))
        .unwrap_or(10_000);
    raise_fd_limit(conns + 256);
    for pooled in [true, false] {
        let (rss, heap) = run(conns, pooled);
        println!(
            "idle_conns: {conns} idle connections, {:<28} {:>7.0} B resident and {:>7.0} B heap per connection",
            if pooled {
                "pooled reads (multishot):"
            } else {
                "16 KiB buffer per connection:"
            },
            rss as f64 / conns as f64,
            heap as f64 / conns as f64
        );
    }
    match shipped_echo(conns) {
        Ok(rss) => println!(
            "idle_conns: {conns} idle connections, {:<28} {:>7.0} B resident per connection",
            "the shipped echo example:",
            rss as f64 / conns as f64
        ),
        Err(e) => println!("idle_conns: the shipped echo example: {e}"),
    }
}

/// Starts `target/release/examples/echo` on one core, opens `conns` idle connections to it and
/// returns how much its resident memory grew.
fn shipped_echo(conns: usize) -> Result<i64, String> {
    use std::io::BufRead;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let echo = exe.with_file_name("echo");
    if !echo.exists() {
        return Err(format!(
            "{} not built (cargo build --release --example echo)",
            echo.display()
        ));
    }
    let mut server = std::process::Command::new(&echo)
        .args(["--addr", "127.0.0.1:0", "--cores", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {}: {e}", echo.display()))?;
    let mut line = String::new();
    let stdout = server.stdout.take().ok_or("no stdout")?;
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| format!("unexpected ready line {line:?}"))?;
    let before = rss_of(server.id());
    let mut clients = hold_idle_clients(port, conns, None);
    // Let every connection be accepted and its task reach its wait.
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_of(server.id());
    drop(clients.stdin.take());
    let _ = clients.wait();
    let _ = server.kill();
    let _ = server.wait();
    Ok(after - before)
}

fn run(conns: usize, pooled: bool) -> (i64, i64) {
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
                let mut incoming = listener.incoming();
                while let Some(conn) = until_shutdown(incoming.next()).await {
                    let Ok(conn) = conn else { continue };
                    let w = w.clone();
                    coring::spawn_local(async move {
                        w.fetch_add(1, Ordering::Release);
                        if pooled {
                            let mut rx = conn.pooled();
                            while let Some(Ok(Some(_))) = until_shutdown(rx.next()).await {}
                        } else {
                            let buf = Vec::with_capacity(OWNED_BUF);
                            let _ = until_shutdown(conn.read(buf)).await;
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
    std::thread::sleep(Duration::from_millis(50));
    let (rss0, heap0) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    let mut clients = hold_idle_clients(port, conns, None);
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

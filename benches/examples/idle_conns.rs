//! Memory per idle connection: 10,000 connections open and idle on one server core, each with
//! a task waiting to read. Reports resident memory and heap bytes per connection for the pooled
//! read path (no buffer while idle) and for a 16 KiB buffer per connection (what peers do).
//!
//! `cargo run --release --example idle_conns [-- CONNECTIONS]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use coring::net::TcpListener;
use coring::runtime::{Runtime, until_shutdown};

struct Counting;

/// Live heap bytes of the whole process.
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: defers to the system allocator unchanged; it only keeps a byte count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Per-connection buffer of the owned read path.
const OWNED_BUF: usize = 16 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--client") {
        // The clients live in a child process so that each side has its own fd limit.
        let port: u16 = args[2].parse().expect("port");
        let conns: usize = args[3].parse().expect("count");
        raise_fd_limit(conns + 64);
        let mut held = Vec::with_capacity(conns);
        for _ in 0..conns {
            held.push(std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"));
        }
        println!("connected");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
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
    let mut clients = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--client", &port.to_string(), &conns.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("client process");
    let mut ready = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(clients.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("client ready");
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

fn rss_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn raise_fd_limit(want: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur = lim
        .rlim_max
        .min(want.max(lim.rlim_cur as usize) as libc::rlim_t);
    // SAFETY: valid pointer to an rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if (lim.rlim_cur as usize) < want {
        eprintln!(
            "idle_conns: RLIMIT_NOFILE {} is below {want}; expect failures",
            lim.rlim_cur
        );
    }
}

//! Echo throughput on one server core: the project's main job until the bench suite lands.
//!
//! Starts the echo server on one pinned core and a client runtime on another, runs `--conns`
//! connections each doing request/response round trips of `--size` bytes (`--depth` messages in
//! flight per connection), and reports round trips per second and per server CPU-second.
//!
//! `cargo run --release --example echo_bench` (defaults: 64 connections, 64 B, depth 1, 3 s
//! per server mode). The server is run twice, reading into one owned 16 KiB buffer per
//! connection (single-shot recv) and into the core's pool (multishot recv into a provided-buffer
//! ring); both figures and their ratio are printed. `--server owned|pooled` runs one mode;
//! `--target HOST:PORT` benchmarks an already running server instead (e.g. under strace).
//!
//! Linux only: it reads CPU time from `/proc` and pins with `sched_setaffinity`.

#[cfg(target_os = "linux")]
mod support;

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("echo_bench: Linux only (CPU time from /proc, pinning with sched_setaffinity)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::time::{Duration, Instant};

    use coring::net::{TcpListener, TcpStream};
    use coring::runtime::{Runtime, until_shutdown};

    struct Args {
        conns: usize,
        size: usize,
        depth: usize,
        warmup: Duration,
        duration: Duration,
        target: Option<std::net::SocketAddr>,
        modes: Vec<Mode>,
    }

    /// How the server reads.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Mode {
        /// A 16 KiB buffer owned by each connection, single-shot recv.
        Owned,
        /// The core's buffer pool, multishot recv.
        Pooled,
    }

    fn args() -> Args {
        let mut a = Args {
            conns: 64,
            size: 64,
            depth: 1,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(3),
            target: None,
            modes: vec![Mode::Owned, Mode::Pooled],
        };
        let usage = "echo_bench: echo throughput on one server core\n\n\
        usage: echo_bench [--conns N] [--size BYTES] [--depth N] [--secs S] [--warmup S] \
        [--server owned|pooled] [--target HOST:PORT]";
        let mut it = std::env::args().skip(1);
        let fail = |m: String| -> ! {
            eprintln!("echo_bench: {m}");
            std::process::exit(2)
        };
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            let value = it
                .next()
                .unwrap_or_else(|| fail(format!("{flag} needs a value")));
            let num = |v: &str| -> u64 {
                v.parse()
                    .unwrap_or_else(|_| fail(format!("{flag}: {v:?} is not a number")))
            };
            match flag.as_str() {
                "--conns" => a.conns = num(&value).max(1) as usize,
                "--size" => a.size = num(&value).max(1) as usize,
                "--depth" => a.depth = num(&value).max(1) as usize,
                "--secs" => a.duration = Duration::from_secs(num(&value).max(1)),
                "--warmup" => a.warmup = Duration::from_secs(num(&value)),
                "--server" => {
                    a.modes = match value.as_str() {
                        "owned" => vec![Mode::Owned],
                        "pooled" => vec![Mode::Pooled],
                        other => fail(format!("--server: {other:?} is not owned or pooled")),
                    }
                }
                "--target" => {
                    a.target =
                        Some(value.parse().unwrap_or_else(|_| {
                            fail(format!("--target: {value:?} is not HOST:PORT"))
                        }))
                }
                other => fail(format!("unknown argument {other:?} (try --help)")),
            }
        }
        a
    }

    pub fn main() {
        let args = args();
        crate::support::init_logging();
        let cpus = allowed_cpus();
        let (server_cpu, client_cpu) = (cpus[0], cpus[cpus.len().min(2) - 1]);
        println!(
            "echo_bench: {} connections, {} B messages, depth {}, {:?} per run; server cpu {server_cpu}, \
         client cpu {client_cpu}",
            args.conns, args.size, args.depth, args.duration
        );
        if let Some(target) = args.target {
            let r = measure(&args, target, client_cpu, None);
            println!("  external {target}: {:.0} round trips/s", r.per_sec);
            return;
        }
        let mut results = Vec::new();
        for &mode in &args.modes {
            let r = run_mode(&args, mode, server_cpu, client_cpu);
            println!(
                "  server {:<7} {:>10.0} round trips/s  {:>5.1}% server CPU  {:>10.0} round trips/server CPU-s",
                format!("{mode:?}").to_lowercase(),
                r.per_sec,
                r.cpu_share * 100.0,
                r.per_cpu_sec
            );
            results.push((mode, r));
        }
        if let [(_, owned), (_, pooled)] = results.as_slice() {
            println!(
                "  pooled / owned: {:.2}x round trips per server CPU-second",
                pooled.per_cpu_sec / owned.per_cpu_sec
            );
        }
    }

    struct Outcome {
        per_sec: f64,
        cpu_share: f64,
        per_cpu_sec: f64,
    }

    /// Runs the echo server in `mode` on `server_cpu` and measures it.
    fn run_mode(args: &Args, mode: Mode, server_cpu: usize, client_cpu: usize) -> Outcome {
        let rt = Runtime::builder()
            .cores(1)
            .thread_name("echo-srv")
            .build()
            .unwrap_or_else(|e| {
                eprintln!("echo_bench: {e}");
                std::process::exit(1)
            });
        let shutdown = rt.shutdown_handle();
        let port = Arc::new(AtomicU16::new(0));
        let p = port.clone();
        let server = std::thread::spawn(move || {
            pin(server_cpu);
            rt.run(|_| {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
                p.store(listener.local_addr().port(), Ordering::Release);
                async move {
                    let mut incoming = listener.incoming();
                    while let Some(conn) = until_shutdown(incoming.next()).await {
                        if let Ok(conn) = conn {
                            match mode {
                                Mode::Owned => coring::spawn_local(echo(conn)),
                                Mode::Pooled => coring::spawn_local(echo_pooled(conn)),
                            };
                        }
                    }
                }
            })
            .expect("server runtime");
        });
        while port.load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], port.load(Ordering::Acquire)));
        let r = measure(args, target, client_cpu, Some("echo-srv-0"));
        shutdown.shutdown();
        server.join().expect("server");
        r
    }

    /// Drives `target` from a client core and measures round trips (and the server thread's CPU
    /// time when it runs in this process).
    fn measure(
        args: &Args,
        target: std::net::SocketAddr,
        client_cpu: usize,
        server: Option<&'static str>,
    ) -> Outcome {
        let client = Runtime::builder()
            .cores(1)
            .thread_name("echo-cli")
            .build()
            .expect("client runtime");
        let (conns, size, depth, warmup, duration) = (
            args.conns,
            args.size,
            args.depth,
            args.warmup,
            args.duration,
        );
        let bench = std::thread::spawn(move || {
            pin(client_cpu);
            client.block_on(async move {
                let counter = Rc::new(Cell::new(0u64));
                let stop = Rc::new(Cell::new(false));
                let mut tasks = Vec::new();
                for _ in 0..conns {
                    let stream = TcpStream::connect(target).await.expect("connect");
                    stream.set_nodelay(true).expect("nodelay");
                    tasks.push(coring::spawn_local(round_trips(
                        stream,
                        size,
                        depth,
                        counter.clone(),
                        stop.clone(),
                    )));
                }
                coring::time::sleep(warmup).await;
                let cpu0 = server.and_then(thread_cpu);
                let (n0, t0) = (counter.get(), Instant::now());
                coring::time::sleep(duration).await;
                let (n1, t1) = (counter.get(), Instant::now());
                let cpu1 = server.and_then(thread_cpu);
                stop.set(true);
                for t in tasks {
                    let _ = t.await;
                }
                (n1 - n0, t1 - t0, cpu0.zip(cpu1).map(|(a, b)| b - a))
            })
        });
        let (msgs, wall, cpu) = bench.join().expect("client");
        let per_sec = msgs as f64 / wall.as_secs_f64();
        let cpu = cpu.unwrap_or(0.0);
        Outcome {
            per_sec,
            cpu_share: cpu / wall.as_secs_f64(),
            per_cpu_sec: if cpu > 0.0 { msgs as f64 / cpu } else { 0.0 },
        }
    }

    /// Zero-copy echo from the pool: the received buffer itself is written back.
    async fn echo_pooled(stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut reader = stream.pooled();
        while let Some(Ok(Some(buf))) = until_shutdown(reader.next()).await {
            if stream.write_all(buf).await.0.is_err() {
                return;
            }
        }
    }

    async fn echo(stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            let Some((n, b)) = until_shutdown(stream.read(buf)).await else {
                return;
            };
            buf = b;
            if !matches!(n, Ok(n) if n > 0) {
                return;
            }
            let (r, b) = stream.write_all(buf).await;
            buf = b;
            if r.is_err() {
                return;
            }
        }
    }

    /// Sends `depth` messages, then one more each time one comes back, until `stop`.
    async fn round_trips(
        stream: TcpStream,
        size: usize,
        depth: usize,
        counter: Rc<Cell<u64>>,
        stop: Rc<Cell<bool>>,
    ) {
        let (r, _) = stream.write_all(vec![b'x'; size * depth]).await;
        r.expect("write");
        let mut received = 0usize;
        let mut counted = 0usize;
        let mut buf = Vec::with_capacity(size * depth);
        let mut again = Vec::with_capacity(size * depth);
        while !stop.get() {
            buf.clear();
            let (n, b) = stream.read(buf).await;
            buf = b;
            let n = n.expect("read");
            assert!(n > 0, "server closed");
            received += n;
            let fresh = received / size - counted;
            if fresh > 0 {
                counted += fresh;
                counter.set(counter.get() + fresh as u64);
                again.clear();
                again.resize(fresh * size, b'x');
                let (r, b) = stream.write_all(again).await;
                again = b;
                r.expect("write");
            }
        }
    }

    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: plain data, filled by the kernel.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer and size.
        unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        // SAFETY: bounded by CPU_SETSIZE.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }

    fn pin(cpu: usize) {
        // SAFETY: plain data.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` comes from the allowed set, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: valid pointer and size.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    }

    /// User + system CPU seconds of the thread named `name` in this process.
    fn thread_cpu(name: &str) -> Option<f64> {
        // SAFETY: plain syscall.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim() != name {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // Fields after the command name (which is in parentheses): utime is the 12th, stime
            // the 13th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            return Some((utime + stime) / ticks);
        }
        None
    }
}

//! Tools the measurement programs share: a counting global allocator, resident memory, a
//! child process that holds many idle client connections, pinning and thread CPU time.
//!
//! Each program installs the allocator itself:
//! `#[global_allocator] static A: coring_benches::measure::Counting = coring_benches::measure::Counting;`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Allocations (and reallocations) made on threads that called [`count_this_thread`].
pub static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Live heap bytes of the whole process.
pub static LIVE: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Counts this thread's allocations in [`ALLOCS`] from now on.
pub fn count_this_thread() {
    COUNTED.with(|c| c.set(true));
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

/// The system allocator, counting: allocations of opted-in threads and live bytes of all.
#[derive(Debug)]
pub struct Counting;

// SAFETY: defers every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Resident memory of this process, in bytes (VmRSS).
pub fn rss_bytes() -> i64 {
    rss_in("/proc/self/status")
}

/// Resident memory of process `pid`, in bytes (VmRSS).
pub fn rss_of(pid: u32) -> i64 {
    rss_in(&format!("/proc/{pid}/status"))
}

fn rss_in(status: &str) -> i64 {
    let status = std::fs::read_to_string(status).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Raises the soft RLIMIT_NOFILE towards `want` (up to the hard limit); says so if short.
pub fn raise_fd_limit(want: usize) {
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
            "RLIMIT_NOFILE {} is below {want}; expect failures",
            lim.rlim_cur
        );
    }
}

/// The argument that turns a measurement program into its own client process.
const CLIENT_FLAG: &str = "--idle-clients";

/// Opens `conns` connections to `127.0.0.1:port` from a child process (each side then has its
/// own descriptor limit), sends `request` on each and reads one reply when given, and returns
/// once all are open. They stay open until the child is dropped or waited on after closing
/// its stdin.
pub fn hold_idle_clients(port: u16, conns: usize, request: Option<&str>) -> Child {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([CLIENT_FLAG, &port.to_string(), &conns.to_string()])
        .args(request)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client process");
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("client ready");
    child
}

/// In a measurement program's `main`, first: if this process is the client side started by
/// [`hold_idle_clients`], holds the connections until stdin closes and exits.
pub fn run_idle_clients_if_asked() {
    use std::io::{Read, Write};
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(CLIENT_FLAG) {
        return;
    }
    let port: u16 = args[2].parse().expect("port");
    let conns: usize = args[3].parse().expect("count");
    let request = args.get(4);
    raise_fd_limit(conns + 64);
    let mut held = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        if let Some(req) = request {
            s.write_all(req.as_bytes()).expect("write");
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).expect("read");
        }
        held.push(s);
    }
    println!("connected");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    std::process::exit(0);
}

/// Pins the calling thread (and the threads it starts after) to `cpu`; a failure is ignored
/// (the measurement then says less, and its figures show it). Linux.
#[cfg(target_os = "linux")]
pub fn pin_to(cpu: usize) {
    let _ = crate::suite::sys::pin_to(&[cpu]);
}

/// CPU time of the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`). Linux.
#[cfg(target_os = "linux")]
pub fn thread_cpu() -> std::time::Duration {
    read_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// A thread's CPU clock, readable from any thread of the process while that thread lives
/// (a measurement samples a server core's CPU over a window of its own choosing). Linux.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy, Debug)]
pub struct ThreadClock(libc::clockid_t);

#[cfg(target_os = "linux")]
impl ThreadClock {
    /// The calling thread's CPU clock.
    pub fn current() -> ThreadClock {
        let mut id: libc::clockid_t = libc::CLOCK_THREAD_CPUTIME_ID;
        // SAFETY: `pthread_self` names a live thread (this one); `id` is a valid out-pointer.
        unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
        ThreadClock(id)
    }

    /// CPU time the thread has used so far (zero once it has exited).
    pub fn read(&self) -> std::time::Duration {
        read_clock(self.0)
    }
}

#[cfg(target_os = "linux")]
fn read_clock(clock: libc::clockid_t) -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration; a clock that no
    // longer exists is an EINVAL that leaves it zero.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

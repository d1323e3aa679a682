//! What coring's cross-crate tests share, written once.
//!
//! The tests themselves live in `tests/tests/`: the HTTP server and client against third-party
//! clients (ureq, curl) and raw sockets, slow and hostile peers, and the many-connection stress
//! run. Each runs on both drivers through `#[coring::test]`.
//!
//! - [`server`]: a coring HTTP server on its own thread and one-core runtime ([`TestServer`]),
//!   a UDP service likewise ([`udp_service`]), and a raw request/answer exchange over a std
//!   socket.
//! - [`example`]: the workspace's example servers started as users start them ([`Example`]),
//!   stopped with SIGTERM when dropped.
//! - [`known`]: peers whose behaviour is known exactly (delay, stall, reset, corrupt, drop),
//!   plain threads on blocking std sockets, for measuring the measurer.
//! - [`lossy`]: a UDP proxy that loses, delays, reorders and duplicates datagrams as asked,
//!   deterministically (no netem here).
//! - [`fd_limit`]: lifting the soft descriptor limit for tests that hold thousands of sockets.
//! - [`fan_out`]: many client tasks on one core, joined, their results in order.
//! - [`under_wine`]: whether a Windows build runs under Wine.
//! - `pki` (Linux): a CA, a leaf and rustls configurations for TLS tests.
//! - `dnsmasq` (Linux): a real DNS server on loopback serving a test's records.
//! - [`connect_from`]: a std client connection from a chosen local address (another 127/8
//!   source, as a second machine would be).

#[cfg(target_os = "linux")]
pub mod dnsmasq;
pub mod example;
pub mod known;
pub mod lossy;
#[cfg(target_os = "linux")]
pub mod pki;
pub mod server;

pub use example::{Example, example_path};
pub use server::{TestServer, exchange, serve, udp_service};

/// Raises the soft `RLIMIT_NOFILE` towards the hard limit (at most 65,536) and returns the
/// soft limit now in force. Where the platform has no such limit, returns `usize::MAX`.
pub fn fd_limit() -> usize {
    raise_nofile()
}

#[cfg(unix)]
fn raise_nofile() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let want = lim.rlim_max.min(65_536);
    if lim.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit for the call's duration.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = want;
        }
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(not(unix))]
fn raise_nofile() -> usize {
    // Windows has no per-process socket count limit to raise.
    usize::MAX
}

/// Whether this is a Windows build running under Wine, whose socket layer differs from
/// Windows' in ways a few tests allow for, each saying which. Always false elsewhere.
pub fn under_wine() -> bool {
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
        // SAFETY: NUL-terminated names; ntdll is loaded in every process.
        unsafe {
            let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }
    #[cfg(not(windows))]
    false
}

/// Runs `n` tasks made by `make(i)` on the current core at once and returns their outputs in
/// order of `i`. A task that panics fails the caller with its panic.
///
/// # Panics
///
/// When a task panics, or when called outside a coring core.
pub async fn fan_out<F, Fut>(n: usize, make: F) -> Vec<Fut::Output>
where
    F: Fn(usize) -> Fut,
    Fut: Future + 'static,
    Fut::Output: 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| coring::spawn_local(make(i))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok(v) => out.push(v),
            Err(coring::task::JoinError::Panicked(p)) => std::panic::resume_unwind(p),
            Err(coring::task::JoinError::Cancelled) => panic!("a fan_out task was cancelled"),
        }
    }
    out
}

/// One `read` that a signal cannot fail: a socket with a read timeout (SO_RCVTIMEO) is never
/// restarted after a signal handler runs, so its `read` can fail with `Interrupted` when some
/// signal reaches the test's thread; this reads again.
pub fn read_some(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A blocking std connection to `to` from `from` (port 0: the kernel picks one), with a 10 s
/// read timeout so a test that waits for an answer that never comes fails instead of hanging.
pub fn connect_from(from: std::net::SocketAddr, to: std::net::SocketAddr) -> std::net::TcpStream {
    use std::time::Duration;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket.bind(&from.into()).expect("bind the source address");
    socket
        .connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

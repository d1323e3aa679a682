//! TCP listeners and streams.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, SockRef, TcpKeepalive, Type};

use crate::driver::SharedFd;
use crate::error::{Error, ErrorKind, Result};
use crate::net::accept::{Incoming, accept_one};
use crate::net::stream::{StreamIo, connect_socket, new_socket, stream_io_methods};
use crate::runtime::context;
use crate::sys;

/// Listen backlog unless configured.
pub const DEFAULT_BACKLOG: i32 = 1024;

/// How to bind a listener.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// SO_REUSEPORT: several listeners (one per core) share the address and the kernel spreads
    /// connections among them.
    pub reuse_port: bool,
    /// SO_REUSEADDR (default on): rebinding right after a restart works. Unix only: Windows
    /// rebinds over TIME_WAIT without it, and there the option would let a second socket bind
    /// a port that another one listens on.
    pub reuse_addr: bool,
    /// IPV6_V6ONLY for IPv6 addresses. `Some(false)` on `[::]` gives a dual-stack listener
    /// that also accepts IPv4 clients (as `::ffff:a.b.c.d`); `None` keeps the system default.
    pub only_v6: Option<bool>,
    /// Listen backlog.
    pub backlog: i32,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            reuse_port: false,
            reuse_addr: true,
            only_v6: None,
            backlog: DEFAULT_BACKLOG,
        }
    }
}

/// A TCP listener bound on the current core.
#[derive(Debug)]
pub struct TcpListener {
    fd: SharedFd,
    local: SocketAddr,
    /// Windows has no SO_REUSEPORT: per-core listeners on one address share one socket.
    /// Where cores share one socket instead of SO_REUSEPORT: keeps the share alive.
    _shared: Option<super::shared_listen::ShareGuard>,
}

impl TcpListener {
    /// Binds `addr` with [`ListenOptions::default`].
    pub fn bind(addr: impl ToSocketAddrs) -> Result<TcpListener> {
        Self::bind_with(addr, &ListenOptions::default())
    }

    /// Binds `addr` with SO_REUSEPORT, so each core can own a listener on the same address.
    pub fn bind_reuseport(addr: impl ToSocketAddrs) -> Result<TcpListener> {
        Self::bind_with(
            addr,
            &ListenOptions {
                reuse_port: true,
                ..ListenOptions::default()
            },
        )
    }

    /// Binds the first address of `addr` that works with `options`.
    pub fn bind_with(addr: impl ToSocketAddrs, options: &ListenOptions) -> Result<TcpListener> {
        let addrs = addr
            .to_socket_addrs()
            .map_err(|e| Error::from_io(e, "resolve"))?;
        let mut last = Error::new(ErrorKind::InvalidInput, "bind (no address)");
        for addr in addrs {
            match listen_on(addr, options) {
                Ok(l) => return Ok(l),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Accepts one connection and its peer address.
    pub async fn accept(&self) -> Result<(TcpStream, SocketAddr)> {
        let (fd, peer) = accept_one(&self.fd).await?;
        let stream = TcpStream::from_shared(fd);
        let peer = match peer.as_socket() {
            Some(peer) => peer,
            None => stream.peer_addr()?,
        };
        Ok((stream, peer))
    }

    /// A stream of accepted connections fed by one multishot accept (5.19): one SQE serves
    /// many connections; it is re-armed if the kernel ends it.
    pub fn incoming(&self) -> Incoming<TcpStream> {
        Incoming::new(self.fd.clone(), TcpStream::from_shared)
    }

    /// The bound address (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Wraps a bound, listening std socket (made non-blocking).
    pub fn from_std(listener: std::net::TcpListener) -> Result<TcpListener> {
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::from_io(e, "fcntl(O_NONBLOCK)"))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::from_io(e, "getsockname"))?;
        Ok(TcpListener {
            fd: SharedFd::socket(listener),
            local,
            _shared: None,
        })
    }

    /// Adopts a listening socket this process was given (by a predecessor in a restart, see
    /// `coring::restart`, or with [`UnixStream::recv_fds`](crate::net::UnixStream::recv_fds)):
    /// made non-blocking, and served from this core.
    #[cfg(unix)]
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<TcpListener> {
        let socket = socket2::Socket::from(fd);
        let ty = socket
            .r#type()
            .map_err(|e| Error::from_io(e, "getsockopt(SO_TYPE)"))?;
        if ty != Type::STREAM {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "adopt a TCP listener (the socket is not a stream socket)",
            ));
        }
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::from_io(e, "fcntl(O_NONBLOCK)"))?;
        listener_of(socket)
    }
}

/// The listening socket, to pass to another process ([`UnixStream::send_fds`]) or for options
/// this type has no method for; the listener still owns it.
///
/// [`UnixStream::send_fds`]: crate::net::UnixStream::send_fds
#[cfg(unix)]
impl std::os::fd::AsFd for TcpListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor stays open while `self` (which holds a share of it) lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd.raw()) }
    }
}

fn listen_on(addr: SocketAddr, options: &ListenOptions) -> Result<TcpListener> {
    if options.reuse_port && !sys::sock::HAS_REUSE_PORT {
        // Emulated: the first core binds, the others share its socket.
        let plain = ListenOptions {
            reuse_port: false,
            ..options.clone()
        };
        let (socket, guard) =
            super::shared_listen::listen(addr, Type::STREAM, || bind_socket(addr, &plain))?;
        let mut listener = listener_of(socket)?;
        listener._shared = Some(guard);
        return Ok(listener);
    }
    listener_of(bind_socket(addr, options)?)
}

/// A new socket bound to `addr` and listening.
fn bind_socket(addr: SocketAddr, options: &ListenOptions) -> Result<socket2::Socket> {
    let socket = new_socket(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    let opt = |r: std::io::Result<()>, op| r.map_err(|e| Error::from_io(e, op));
    if sys::sock::REUSE_ADDR_REBINDS {
        opt(
            socket.set_reuse_address(options.reuse_addr),
            "setsockopt(SO_REUSEADDR)",
        )?;
    }
    if options.reuse_port {
        opt(
            sys::sock::set_reuse_port(&socket),
            "setsockopt(SO_REUSEPORT)",
        )?;
    }
    if let (SocketAddr::V6(_), Some(only)) = (addr, options.only_v6) {
        opt(socket.set_only_v6(only), "setsockopt(IPV6_V6ONLY)")?;
    }
    opt(socket.bind(&addr.into()), "bind")?;
    opt(socket.listen(options.backlog), "listen")?;
    Ok(socket)
}

fn listener_of(socket: socket2::Socket) -> Result<TcpListener> {
    let local = socket
        .local_addr()
        .map_err(|e| Error::from_io(e, "getsockname"))?
        .as_socket()
        .ok_or(Error::new(ErrorKind::InvalidInput, "getsockname"))?;
    Ok(TcpListener {
        fd: SharedFd::socket(socket),
        local,
        _shared: None,
    })
}

/// A TCP connection.
///
/// Methods take `&self`, so one task can read while another writes (share it with `Rc`).
/// Buffers are passed by value and handed back with the result.
#[derive(Debug)]
pub struct TcpStream {
    pub(crate) io: StreamIo,
}

impl TcpStream {
    /// Connects to the first address of `addr` that accepts. A host name in `addr` is looked
    /// up by the C library, which blocks the core while it runs: give addresses here, and
    /// connect by name with `coring_protocols::dns::connect`, which resolves on the engine.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<TcpStream> {
        Self::connect_inner(addr, None).await
    }

    /// Connects, giving up with `TimedOut` after `timeout` (per address tried; a core timer
    /// cancels the connect).
    pub async fn connect_timeout(addr: impl ToSocketAddrs, timeout: Duration) -> Result<TcpStream> {
        Self::connect_inner(addr, Some(timeout)).await
    }

    async fn connect_inner(
        addr: impl ToSocketAddrs,
        timeout: Option<Duration>,
    ) -> Result<TcpStream> {
        let addrs = addr
            .to_socket_addrs()
            .map_err(|e| Error::from_io(e, "resolve"))?;
        let mut last = Error::new(ErrorKind::InvalidInput, "connect (no address)");
        for addr in addrs {
            let domain = Domain::for_address(addr);
            match connect_socket(domain, Some(Protocol::TCP), addr.into(), timeout).await {
                Ok(fd) => return Ok(TcpStream::from_shared(fd)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub(crate) fn from_shared(fd: SharedFd) -> TcpStream {
        TcpStream {
            io: StreamIo::new(fd),
        }
    }

    /// Wraps a connected std stream (made non-blocking).
    pub fn from_std(stream: std::net::TcpStream) -> Result<TcpStream> {
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::from_io(e, "fcntl(O_NONBLOCK)"))?;
        context::count(|n| n.connected += 1);
        Ok(Self::from_shared(SharedFd::socket(stream)))
    }

    stream_io_methods!();

    /// TCP_NODELAY.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<()> {
        self.sock()
            .set_tcp_nodelay(nodelay)
            .map_err(|e| Error::from_io(e, "setsockopt(TCP_NODELAY)"))
    }

    /// Whether TCP_NODELAY is set.
    pub fn nodelay(&self) -> Result<bool> {
        self.sock()
            .tcp_nodelay()
            .map_err(|e| Error::from_io(e, "getsockopt(TCP_NODELAY)"))
    }

    /// SO_KEEPALIVE, with the idle time before the first probe when `Some`.
    pub fn set_keepalive(&self, idle: Option<Duration>) -> Result<()> {
        let sock = self.sock();
        let r = match idle {
            None => sock.set_keepalive(false),
            Some(idle) => sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle)),
        };
        r.map_err(|e| Error::from_io(e, "setsockopt(SO_KEEPALIVE)"))
    }

    /// The keepalive idle time, `None` when keepalive is off.
    pub fn keepalive(&self) -> Result<Option<Duration>> {
        let sock = self.sock();
        if !sock
            .keepalive()
            .map_err(|e| Error::from_io(e, "getsockopt(SO_KEEPALIVE)"))?
        {
            return Ok(None);
        }
        sys::sock::keepalive_time(&sock)
            .map(Some)
            .map_err(|e| Error::from_io(e, "getsockopt(TCP_KEEPIDLE)"))
    }

    /// What the kernel knows of the connection: round-trip time, retransmits, congestion
    /// window ([`TcpInfo`]). One `getsockopt`: TCP_INFO on Linux, TCP_CONNECTION_INFO on
    /// macOS (which reports fewer fields: see [`TcpInfo`]); `Unsupported` elsewhere.
    pub fn tcp_info(&self) -> Result<TcpInfo> {
        sys::sock::tcp_info(&self.sock()).map_err(|e| Error::from_io(e, "getsockopt(TCP_INFO)"))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        sock_addr(self.sock().peer_addr(), "getpeername")
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        sock_addr(self.sock().local_addr(), "getsockname")
    }

    fn sock(&self) -> SockRef<'_> {
        self.io.fd.sock()
    }
}

/// A TCP connection as the kernel sees it ([`TcpStream::tcp_info`]). macOS does not report
/// `retransmits`, `lost`, `unacked` or `path_mtu` (they are 0 there) and counts retransmitted
/// bytes, given here in segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Its variation.
    pub rtt_var: Duration,
    /// The retransmission timeout now in force.
    pub rto: Duration,
    /// Retransmits of the segment now timing out (0 when nothing is).
    pub retransmits: u32,
    /// Segments retransmitted over the connection's life.
    pub total_retransmits: u32,
    /// Segments thought lost now.
    pub lost: u32,
    /// Segments sent and not yet acknowledged.
    pub unacked: u32,
    /// The congestion window, in segments.
    pub congestion_window: u32,
    /// The slow-start threshold, in segments (a very large value until the first loss).
    pub slow_start_threshold: u32,
    /// The largest segment sent, in bytes.
    pub send_mss: u32,
    /// The path MTU, in bytes.
    pub path_mtu: u32,
}

/// The socket, for options this type has no method for; the stream still owns it (do not
/// close it, and do not read or write it behind the stream's back).
#[cfg(unix)]
impl std::os::fd::AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.io.fd.raw()
    }
}

/// The connection, to pass to another process ([`UnixStream::send_fds`]); the stream still
/// owns it here.
///
/// [`UnixStream::send_fds`]: crate::net::UnixStream::send_fds
#[cfg(unix)]
impl std::os::fd::AsFd for TcpStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor stays open while `self` (which holds a share of it) lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.io.fd.raw()) }
    }
}

/// The socket, for options this type has no method for; the stream still owns it.
#[cfg(windows)]
impl std::os::windows::io::AsRawSocket for TcpStream {
    fn as_raw_socket(&self) -> std::os::windows::io::RawSocket {
        self.io.fd.raw()
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        context::count(|n| n.closed += 1);
    }
}

fn sock_addr(r: std::io::Result<SockAddr>, op: &'static str) -> Result<SocketAddr> {
    r.map_err(|e| Error::from_io(e, op))?
        .as_socket()
        .ok_or(Error::new(ErrorKind::InvalidInput, op))
}

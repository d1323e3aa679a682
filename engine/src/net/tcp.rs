//! TCP listeners and streams.

use std::cell::Cell;
use std::net::{Shutdown as How, SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, TcpKeepalive, Type};

use std::rc::Rc;

use crate::buf::{IoBuf, IoBufMut, PooledBuf, Slice};
use crate::driver::{MultiOp, Op};
use crate::error::{Error, ErrorKind, Result};
use crate::op::{Accept, AcceptMulti, Connect, Recv, RecvMulti, Send, SendVectored, Shutdown};
use crate::runtime::context;
use crate::sys::SharedFd;

/// Listen backlog unless configured.
pub const DEFAULT_BACKLOG: i32 = 1024;

/// How to bind a listener.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// SO_REUSEPORT: several listeners (one per core) share the address and the kernel spreads
    /// connections among them.
    pub reuse_port: bool,
    /// SO_REUSEADDR (default on): rebinding right after a restart works.
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
        let done = Op::submit(Accept::new(self.fd.clone())).await;
        let fd = done.result?;
        // SAFETY: a successful accept returns a new descriptor that nothing else owns.
        let stream = TcpStream::from_shared(unsafe { SharedFd::from_raw(fd as i32) });
        context::count(|n| n.accepted += 1);
        let peer = done.op.peer_addr().map_or_else(|| stream.peer_addr(), Ok)?;
        Ok((stream, peer))
    }

    /// A stream of accepted connections fed by one multishot accept (5.19): one SQE serves
    /// many connections; it is re-armed if the kernel ends it.
    pub fn incoming(&self) -> Incoming {
        Incoming {
            fd: self.fd.clone(),
            op: None,
        }
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
            fd: SharedFd::new(OwnedFd::from(listener)),
            local,
        })
    }
}

fn listen_on(addr: SocketAddr, options: &ListenOptions) -> Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| Error::from_io(e, "socket"))?;
    let opt = |r: std::io::Result<()>, op| r.map_err(|e| Error::from_io(e, op));
    opt(
        socket.set_reuse_address(options.reuse_addr),
        "setsockopt(SO_REUSEADDR)",
    )?;
    if options.reuse_port {
        opt(socket.set_reuse_port(true), "setsockopt(SO_REUSEPORT)")?;
    }
    if let (SocketAddr::V6(_), Some(only)) = (addr, options.only_v6) {
        opt(socket.set_only_v6(only), "setsockopt(IPV6_V6ONLY)")?;
    }
    opt(socket.set_nonblocking(true), "fcntl(O_NONBLOCK)")?;
    opt(socket.bind(&addr.into()), "bind")?;
    opt(socket.listen(options.backlog), "listen")?;
    let local = socket
        .local_addr()
        .map_err(|e| Error::from_io(e, "getsockname"))?
        .as_socket()
        .ok_or(Error::new(ErrorKind::InvalidInput, "getsockname"))?;
    Ok(TcpListener {
        fd: SharedFd::new(OwnedFd::from(socket)),
        local,
    })
}

/// Connections from a multishot accept; see [`TcpListener::incoming`].
///
/// Dropping it cancels the accept; connections the kernel accepted for it afterwards are
/// closed, not leaked.
pub struct Incoming {
    fd: SharedFd,
    op: Option<MultiOp<AcceptMulti>>,
}

impl Incoming {
    /// The next connection. Errors (EMFILE, say) are per connection: the stream goes on.
    pub async fn next(&mut self) -> Result<TcpStream> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next connection.
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<TcpStream>> {
        loop {
            let op = self.op.get_or_insert_with(|| {
                MultiOp::submit(AcceptMulti {
                    fd: self.fd.clone(),
                })
            });
            match op.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // The kernel ended the multishot; arm a new one.
                    self.op = None;
                }
                Poll::Ready(Some(cqe)) => {
                    if op.is_finished() {
                        self.op = None;
                    }
                    return Poll::Ready(cqe.result("accept").map(|fd| {
                        context::count(|n| n.accepted += 1);
                        // SAFETY: a successful accept returns a new descriptor nobody owns.
                        TcpStream::from_shared(unsafe { SharedFd::from_raw(fd as i32) })
                    }));
                }
            }
        }
    }
}

impl futures_core::Stream for Incoming {
    type Item = Result<TcpStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_accept(cx).map(Some)
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("armed", &self.op.is_some())
            .finish()
    }
}

/// Receives a connection's bytes into pooled buffers; see [`TcpStream::pooled`].
///
/// One multishot receive serves it on io_uring. If the pool runs dry (ENOBUFS) it waits until
/// a buffer comes back and re-arms, and it re-arms when the kernel ends the multishot; neither
/// is an error and neither spins. Dropping it cancels the receive; buffers the kernel filled
/// for it meanwhile go back to the pool.
pub struct PooledReader {
    fd: SharedFd,
    op: Option<MultiOp<RecvMulti>>,
    eof: bool,
    /// Our place in the pool's queue while waiting for a buffer.
    waiting: Option<u64>,
    /// We hold a claim on a free buffer for the receive we re-armed after ENOBUFS.
    reserved: bool,
}

impl PooledReader {
    /// The next received bytes; `None` once the peer has closed its side.
    pub async fn next(&mut self) -> Result<Option<PooledBuf>> {
        std::future::poll_fn(|cx| self.poll_next_buf(cx)).await
    }

    /// Polls for the next received bytes.
    pub fn poll_next_buf(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<PooledBuf>>> {
        loop {
            if self.eof {
                return Poll::Ready(Ok(None));
            }
            if let Some(ticket) = self.waiting {
                // Woken (or polled spuriously) while waiting for a buffer: re-arm only with a
                // free buffer to go with it.
                let pool = context::with_current(|ctx| Rc::clone(&ctx.pool));
                if !pool.reserve() {
                    self.waiting = Some(pool.rewait(ticket, cx.waker()));
                    return Poll::Pending;
                }
                self.waiting = None;
                self.reserved = true;
            }
            let op = self.op.get_or_insert_with(|| {
                let pool = context::with_current(|ctx| Rc::clone(&ctx.pool));
                MultiOp::submit(RecvMulti {
                    fd: self.fd.clone(),
                    pool,
                    filled: None,
                })
            });
            let cqe = match op.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.op = None;
                    continue;
                }
                Poll::Ready(Some(cqe)) => cqe,
            };
            if op.is_finished() {
                self.op = None;
            }
            let pool = context::with_current(|ctx| Rc::clone(&ctx.pool));
            let buffer = crate::driver::buffer_id(cqe.flags);
            if cqe.res == -libc::ENOBUFS {
                // The pool ran dry. Re-arm at once only if a free buffer can be claimed for us;
                // otherwise queue up and sleep until one comes back.
                pool.count_enobufs();
                self.op = None;
                if std::mem::take(&mut self.reserved) {
                    pool.unreserve();
                }
                if pool.reserve() {
                    self.reserved = true;
                    continue;
                }
                self.waiting = Some(pool.wait_for_buffer(cx.waker()));
                return Poll::Pending;
            }
            self.reserved = false;
            if cqe.res <= 0 {
                if let Some(bid) = buffer {
                    pool.give_back(bid);
                }
                if cqe.res == 0 {
                    self.eof = true;
                    return Poll::Ready(Ok(None));
                }
                return Poll::Ready(Err(Error::from_os(-cqe.res, "recv")));
            }
            let Some(bid) = buffer else {
                return Poll::Ready(Err(Error::new(ErrorKind::Other, "recv (no buffer)")));
            };
            context::count(|c| c.bytes_in += cqe.res as u64);
            return Poll::Ready(Ok(Some(pool.hand_out(bid, cqe.res as usize))));
        }
    }
}

impl Drop for PooledReader {
    fn drop(&mut self) {
        let (waiting, reserved) = (self.waiting.take(), self.reserved);
        context::try_with_current(|ctx| {
            if let Some(ticket) = waiting {
                ctx.pool.stop_waiting(ticket);
            }
            if reserved {
                ctx.pool.unreserve();
            }
        });
    }
}

impl std::fmt::Debug for PooledReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledReader")
            .field("armed", &self.op.is_some())
            .field("eof", &self.eof)
            .finish()
    }
}

/// A TCP connection.
///
/// Methods take `&self`, so one task can read while another writes (share it with `Rc`).
/// Buffers are passed by value and handed back with the result.
#[derive(Debug)]
pub struct TcpStream {
    fd: SharedFd,
    read_timeout: Cell<Option<Duration>>,
    write_timeout: Cell<Option<Duration>>,
}

impl TcpStream {
    /// Connects to the first address of `addr` that accepts.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<TcpStream> {
        Self::connect_inner(addr, None).await
    }

    /// Connects, giving up with `TimedOut` after `timeout` (enforced by the kernel with a
    /// linked timeout, per address tried).
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
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
                .map_err(|e| Error::from_io(e, "socket"))?;
            socket
                .set_nonblocking(true)
                .map_err(|e| Error::from_io(e, "fcntl(O_NONBLOCK)"))?;
            let fd = SharedFd::new(OwnedFd::from(socket));
            let op = Connect {
                fd: fd.clone(),
                addr: Box::new(SockAddr::from(addr)),
                started: false,
            };
            match Op::submit_with_timeout(op, timeout).await.result {
                Ok(_) => {
                    context::count(|n| n.connected += 1);
                    return Ok(TcpStream::from_shared(fd));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub(crate) fn from_shared(fd: SharedFd) -> TcpStream {
        TcpStream {
            fd,
            read_timeout: Cell::new(None),
            write_timeout: Cell::new(None),
        }
    }

    /// Wraps a connected std stream (made non-blocking).
    pub fn from_std(stream: std::net::TcpStream) -> Result<TcpStream> {
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::from_io(e, "fcntl(O_NONBLOCK)"))?;
        context::count(|n| n.connected += 1);
        Ok(Self::from_shared(SharedFd::new(OwnedFd::from(stream))))
    }

    /// Reads into the spare capacity of `buf` (`len..capacity`) and extends its length.
    /// `Ok(0)` means the peer closed its side (or `buf` had no spare room).
    pub async fn read<B: IoBufMut>(&self, buf: B) -> (Result<usize>, B) {
        let op = Recv {
            fd: self.fd.clone(),
            buf,
        };
        let done = Op::submit_with_timeout(op, self.read_timeout.get()).await;
        let mut buf = done.op.buf;
        let result = done.result.map(|n| {
            let n = n as usize;
            let init = buf.bytes_init() + n;
            // SAFETY: the kernel wrote `n` bytes right after the initialised part.
            unsafe { buf.set_init(init) };
            context::count(|c| c.bytes_in += n as u64);
            n
        });
        (result, buf)
    }

    /// A receiver that reads into the core's buffer pool: the buffer is picked when data
    /// arrives (multishot receive on io_uring), so an idle connection holds none. Drop the
    /// returned buffers when done with them; they go back to the pool.
    pub fn pooled(&self) -> PooledReader {
        PooledReader {
            fd: self.fd.clone(),
            op: None,
            eof: false,
            waiting: None,
            reserved: false,
        }
    }

    /// Writes some of `buf`; returns how many bytes were taken.
    pub async fn write<B: IoBuf>(&self, buf: B) -> (Result<usize>, B) {
        let op = Send {
            fd: self.fd.clone(),
            buf,
        };
        let done = Op::submit_with_timeout(op, self.write_timeout.get()).await;
        if let Ok(n) = done.result {
            context::count(|c| c.bytes_out += u64::from(n));
        }
        (done.result.map(|n| n as usize), done.op.buf)
    }

    /// Writes all of `buf`.
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> (Result<()>, B) {
        let total = buf.bytes_init();
        let mut slice = Slice::new(buf, 0, total);
        let mut written = 0;
        while written < total {
            let (result, back) = self.write(slice).await;
            let buf = back.into_inner();
            match result {
                Ok(0) => return (Err(Error::new(ErrorKind::WriteZero, "send")), buf),
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
            slice = Slice::new(buf, written, total);
        }
        (Ok(()), slice.into_inner())
    }

    /// Writes several buffers with one sendmsg; returns how many bytes were taken in all.
    pub async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> (Result<usize>, Vec<B>) {
        let op = SendVectored::new(self.fd.clone(), bufs);
        let done = Op::submit_with_timeout(op, self.write_timeout.get()).await;
        if let Ok(n) = done.result {
            context::count(|c| c.bytes_out += u64::from(n));
        }
        (done.result.map(|n| n as usize), done.op.bufs)
    }

    /// Reads until `buf` is full (`len == capacity`), or fails with `UnexpectedEof`.
    pub async fn read_exact<B: IoBufMut>(&self, mut buf: B) -> (Result<()>, B) {
        while buf.bytes_init() < buf.bytes_total() {
            let (result, back) = self.read(buf).await;
            buf = back;
            match result {
                Ok(0) => return (Err(Error::new(ErrorKind::UnexpectedEof, "recv")), buf),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Shuts down the read side, the write side (the peer reads end-of-stream), or both.
    pub async fn shutdown(&self, how: How) -> Result<()> {
        let how_raw = match how {
            How::Read => libc::SHUT_RD,
            How::Write => libc::SHUT_WR,
            How::Both => libc::SHUT_RDWR,
        };
        let op = Shutdown {
            fd: self.fd.clone(),
            how: how_raw,
        };
        Op::submit(op).await.result?;
        Ok(())
    }

    /// Deadline for each read; a read that takes longer fails with `TimedOut`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.read_timeout.set(timeout);
    }

    /// Deadline for each write.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        self.write_timeout.set(timeout);
    }

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
        sock.tcp_keepalive_time()
            .map(Some)
            .map_err(|e| Error::from_io(e, "getsockopt(TCP_KEEPIDLE)"))
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
        SockRef::from(&self.fd)
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

//! Unix-domain sockets: stream listeners and connections, datagram sockets; filesystem paths
//! and (Linux) abstract names.

use std::ffi::OsStr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::buf::{IoBuf, IoBufMut};
use crate::driver::{Op, SharedFd};
use crate::error::{Error, Result};
use crate::net::accept::{Incoming, accept_one};
use crate::net::dgram::{Datagram, DatagramIo, PooledDatagrams, RecvMeta};
use crate::net::stream::{StreamIo, connect_socket, new_socket, stream_io_methods};
use crate::op::{RecvFds, SendFds};

/// The address of a Unix socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A filesystem path.
    Pathname(PathBuf),
    /// A name in the abstract namespace (Linux): no file, gone when the socket closes.
    Abstract(Vec<u8>),
    /// No name (an unbound socket, or one end of a pair).
    Unnamed,
}

impl UnixAddr {
    fn from_sockaddr(addr: &SockAddr) -> UnixAddr {
        if let Some(path) = addr.as_pathname() {
            UnixAddr::Pathname(path.to_path_buf())
        } else if let Some(name) = addr.as_abstract_namespace() {
            UnixAddr::Abstract(name.to_vec())
        } else {
            UnixAddr::Unnamed
        }
    }

    fn to_sockaddr(&self) -> Result<SockAddr> {
        let r = match self {
            UnixAddr::Pathname(p) => SockAddr::unix(p),
            UnixAddr::Abstract(name) => {
                let mut bytes = Vec::with_capacity(name.len() + 1);
                bytes.push(0);
                bytes.extend_from_slice(name);
                SockAddr::unix(Path::new(OsStr::from_bytes(&bytes)))
            }
            UnixAddr::Unnamed => {
                return Err(Error::new(crate::ErrorKind::InvalidInput, "unix address"));
            }
        };
        r.map_err(|e| Error::from_io(e, "unix address"))
    }
}

fn bind_unix(ty: Type, addr: &UnixAddr) -> Result<Socket> {
    let socket = new_socket(Domain::UNIX, ty, None)?;
    socket
        .bind(&addr.to_sockaddr()?)
        .map_err(|e| Error::from_io(e, "bind"))?;
    Ok(socket)
}

fn local_of(fd: &SharedFd) -> Result<UnixAddr> {
    let addr = fd
        .sock()
        .local_addr()
        .map_err(|e| Error::from_io(e, "getsockname"))?;
    Ok(UnixAddr::from_sockaddr(&addr))
}

fn peer_of(fd: &SharedFd) -> Result<UnixAddr> {
    let addr = fd
        .sock()
        .peer_addr()
        .map_err(|e| Error::from_io(e, "getpeername"))?;
    Ok(UnixAddr::from_sockaddr(&addr))
}

fn pair(ty: Type) -> Result<(SharedFd, SharedFd)> {
    let (a, b) =
        Socket::pair(Domain::UNIX, ty, None).map_err(|e| Error::from_io(e, "socketpair"))?;
    for s in [&a, &b] {
        s.set_nonblocking(true)
            .map_err(|e| Error::from_io(e, "fcntl(O_NONBLOCK)"))?;
        crate::sys::sock::prepare(s).map_err(|e| Error::from_io(e, "setsockopt(SO_NOSIGPIPE)"))?;
    }
    Ok((SharedFd::socket(a), SharedFd::socket(b)))
}

/// A Unix stream listener on the current core.
#[derive(Debug)]
pub struct UnixListener {
    fd: SharedFd,
}

impl UnixListener {
    /// Binds a filesystem path (which must not exist yet).
    pub fn bind(path: impl AsRef<Path>) -> Result<UnixListener> {
        Self::bind_addr(&UnixAddr::Pathname(path.as_ref().to_path_buf()))
    }

    /// Binds a name in the abstract namespace (Linux).
    pub fn bind_abstract(name: &[u8]) -> Result<UnixListener> {
        Self::bind_addr(&UnixAddr::Abstract(name.to_vec()))
    }

    fn bind_addr(addr: &UnixAddr) -> Result<UnixListener> {
        let socket = bind_unix(Type::STREAM, addr)?;
        socket
            .listen(crate::net::DEFAULT_BACKLOG)
            .map_err(|e| Error::from_io(e, "listen"))?;
        Ok(UnixListener {
            fd: SharedFd::socket(socket),
        })
    }

    /// Accepts one connection and the peer's address (usually unnamed).
    pub async fn accept(&self) -> Result<(UnixStream, UnixAddr)> {
        let (fd, peer) = accept_one(&self.fd).await?;
        Ok((UnixStream::from_shared(fd), UnixAddr::from_sockaddr(&peer)))
    }

    /// Connections from one multishot accept.
    pub fn incoming(&self) -> Incoming<UnixStream> {
        Incoming::new(self.fd.clone(), UnixStream::from_shared)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<UnixAddr> {
        local_of(&self.fd)
    }
}

/// A Unix stream connection.
#[derive(Debug)]
pub struct UnixStream {
    io: StreamIo,
}

impl UnixStream {
    /// Connects to the listener at a filesystem path.
    pub async fn connect(path: impl AsRef<Path>) -> Result<UnixStream> {
        Self::connect_addr(&UnixAddr::Pathname(path.as_ref().to_path_buf())).await
    }

    /// Connects to the listener with an abstract name (Linux).
    pub async fn connect_abstract(name: &[u8]) -> Result<UnixStream> {
        Self::connect_addr(&UnixAddr::Abstract(name.to_vec())).await
    }

    async fn connect_addr(addr: &UnixAddr) -> Result<UnixStream> {
        let fd = connect_socket(Domain::UNIX, None, addr.to_sockaddr()?, None).await?;
        Ok(Self::from_shared(fd))
    }

    /// Two connected streams.
    pub fn pair() -> Result<(UnixStream, UnixStream)> {
        let (a, b) = pair(Type::STREAM)?;
        Ok((Self::from_shared(a), Self::from_shared(b)))
    }

    pub(crate) fn from_shared(fd: SharedFd) -> UnixStream {
        UnixStream {
            io: StreamIo::new(fd),
        }
    }

    stream_io_methods!();

    /// Sends some of `buf` with `fds` attached (listeners, accepted connections, files: any
    /// descriptor), and returns how many bytes were taken. The descriptors travel with the
    /// first byte, so `buf` must not be empty; send what is left of it with `write_all`.
    ///
    /// The receiver gets its own descriptors for the same open sockets or files (`SCM_RIGHTS`):
    /// closing ours afterwards does not close theirs. At most 253 descriptors per call.
    pub async fn send_fds<B: IoBuf>(&self, buf: B, fds: &[BorrowedFd<'_>]) -> (Result<usize>, B) {
        if buf.bytes_init() == 0 || fds.len() > crate::sys::fds::MAX_FDS {
            let why = if fds.len() > crate::sys::fds::MAX_FDS {
                "send_fds (more than 253 descriptors)"
            } else {
                "send_fds (descriptors need at least one byte to travel with)"
            };
            return (Err(Error::new(crate::ErrorKind::InvalidInput, why)), buf);
        }
        // Our own duplicates: the kernel reads the numbers when the op runs, by which time
        // the caller may have closed theirs.
        let held = match fds.iter().map(|f| f.try_clone_to_owned()).collect() {
            Ok(held) => held,
            Err(e) => return (Err(Error::from_io(e, "fcntl(F_DUPFD_CLOEXEC)")), buf),
        };
        let done = Op::submit(SendFds::new(self.io.fd.clone(), buf, held)).await;
        let result = done.result.map(|n| {
            crate::runtime::context::count(|c| c.bytes_out += u64::from(n));
            n as usize
        });
        (result, done.op.buf)
    }

    /// Receives into the spare capacity of `buf`, with the descriptors that came with those
    /// bytes (up to `max_fds`; each new, close-on-exec, and ours to close). A message that
    /// carried more than `max_fds` fails with `InvalidData` (the kernel closes the surplus; the
    /// ones that fitted are closed too). `Ok((0, _))` is the end of the stream.
    pub async fn recv_fds<B: IoBufMut>(
        &self,
        buf: B,
        max_fds: usize,
    ) -> (Result<(usize, Vec<OwnedFd>)>, B) {
        let max_fds = max_fds.clamp(1, crate::sys::fds::MAX_FDS);
        let op = RecvFds::new(self.io.fd.clone(), buf, max_fds);
        let done = Op::submit_with_timeout(op, self.io.read_timeout.get()).await;
        let mut op = done.op;
        let result = match done.result {
            Ok(n) => {
                // SAFETY: the receive succeeded; its descriptors are taken this once.
                let (fds, cut) = unsafe { op.take_fds() };
                let n = n as usize;
                let init = op.buf.bytes_init() + n;
                // SAFETY: the kernel wrote `n` bytes right after the initialised part.
                unsafe { op.buf.set_init(init) };
                crate::runtime::context::count(|c| c.bytes_in += n as u64);
                if cut {
                    drop(fds);
                    Err(Error::from_io(crate::sys::fds::truncated(), "recvmsg"))
                } else {
                    Ok((n, fds))
                }
            }
            Err(e) => Err(e),
        };
        (result, op.buf)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<UnixAddr> {
        peer_of(&self.io.fd)
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<UnixAddr> {
        local_of(&self.io.fd)
    }
}

/// A Unix datagram socket.
#[derive(Debug)]
pub struct UnixDatagram {
    io: DatagramIo,
}

impl UnixDatagram {
    /// Binds a filesystem path.
    pub fn bind(path: impl AsRef<Path>) -> Result<UnixDatagram> {
        Self::bind_addr(&UnixAddr::Pathname(path.as_ref().to_path_buf()))
    }

    /// Binds an abstract name (Linux).
    pub fn bind_abstract(name: &[u8]) -> Result<UnixDatagram> {
        Self::bind_addr(&UnixAddr::Abstract(name.to_vec()))
    }

    fn bind_addr(addr: &UnixAddr) -> Result<UnixDatagram> {
        let socket = bind_unix(Type::DGRAM, addr)?;
        Ok(Self::from_fd(SharedFd::socket(socket)))
    }

    /// A socket with no name (it can send; replies need a name or a pair).
    pub fn unbound() -> Result<UnixDatagram> {
        let socket = new_socket(Domain::UNIX, Type::DGRAM, None)?;
        Ok(Self::from_fd(SharedFd::socket(socket)))
    }

    /// Two connected datagram sockets.
    pub fn pair() -> Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = pair(Type::DGRAM)?;
        Ok((Self::from_fd(a), Self::from_fd(b)))
    }

    fn from_fd(fd: SharedFd) -> UnixDatagram {
        UnixDatagram {
            io: DatagramIo { fd },
        }
    }

    /// Sets the default destination.
    pub fn connect(&self, addr: &UnixAddr) -> Result<()> {
        self.io
            .fd
            .sock()
            .connect(&addr.to_sockaddr()?)
            .map_err(|e| Error::from_io(e, "connect"))
    }

    /// Sends `buf` as one datagram to `addr`.
    pub async fn send_to<B: IoBuf>(&self, buf: B, addr: &UnixAddr) -> (Result<usize>, B) {
        match addr.to_sockaddr() {
            Ok(a) => self.io.send_to(buf, Some(a), None).await,
            Err(e) => (Err(e), buf),
        }
    }

    /// Sends `buf` to the connected peer.
    pub async fn send<B: IoBuf>(&self, buf: B) -> (Result<usize>, B) {
        self.io.send_to(buf, None, None).await
    }

    /// Receives one datagram into the spare capacity of `buf`, with its source.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> (Result<RecvMeta<UnixAddr>>, B) {
        let (r, buf) = self.io.recv_from(buf).await;
        let r = r.map(|m| RecvMeta {
            len: m.len,
            source: UnixAddr::from_sockaddr(&m.source),
            truncated: m.truncated,
        });
        (r, buf)
    }

    /// Receives datagrams into the core's buffer pool.
    pub fn pooled(&self) -> UnixPooled {
        UnixPooled {
            inner: self.io.pooled(),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<UnixAddr> {
        local_of(&self.io.fd)
    }
}

/// Pooled datagrams of a [`UnixDatagram`].
#[derive(Debug)]
pub struct UnixPooled {
    inner: PooledDatagrams,
}

impl UnixPooled {
    /// The next datagram.
    pub async fn next(&mut self) -> Result<Datagram<UnixAddr>> {
        let d = self.inner.next_raw().await?;
        Ok(Datagram {
            source: d
                .source
                .as_ref()
                .map_or(UnixAddr::Unnamed, UnixAddr::from_sockaddr),
            data: d.data,
            truncated: d.truncated,
        })
    }
}

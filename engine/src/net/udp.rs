//! UDP sockets.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::buf::{IoBuf, IoBufMut};
use crate::driver::SharedFd;
use crate::error::{Error, ErrorKind, Result};
use crate::net::dgram::{Datagram, DatagramIo, PooledDatagrams, RecvMeta};

/// A UDP socket on the current core.
#[derive(Debug)]
pub struct UdpSocket {
    io: DatagramIo,
    /// Where cores share one socket instead of SO_REUSEPORT: keeps the share alive.
    _shared: Option<super::shared_listen::ShareGuard>,
}

impl UdpSocket {
    /// Binds the first address of `addr` that works (IPv4 or IPv6; port 0 picks one).
    pub fn bind(addr: impl ToSocketAddrs) -> Result<UdpSocket> {
        Self::bind_inner(addr, false)
    }

    /// Binds with SO_REUSEPORT, so each core can own a socket on the same address and the
    /// kernel spreads datagrams among them by source. Where SO_REUSEPORT does not exist
    /// (Windows) the cores share one socket and whichever core is receiving gets a datagram:
    /// spread, but not by source.
    pub fn bind_reuseport(addr: impl ToSocketAddrs) -> Result<UdpSocket> {
        Self::bind_inner(addr, true)
    }

    fn bind_inner(addr: impl ToSocketAddrs, reuse_port: bool) -> Result<UdpSocket> {
        let addrs = addr
            .to_socket_addrs()
            .map_err(|e| Error::from_io(e, "resolve"))?;
        let mut last = Error::new(ErrorKind::InvalidInput, "bind (no address)");
        for addr in addrs {
            match bind_one(addr, reuse_port) {
                Ok((socket, guard)) => {
                    return Ok(UdpSocket {
                        io: DatagramIo {
                            fd: SharedFd::socket(socket),
                        },
                        _shared: guard,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sets the default destination: `send` goes there and only its datagrams are received.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> Result<()> {
        let addr = first(addr)?;
        self.sock()
            .connect(&addr.into())
            .map_err(|e| Error::from_io(e, "connect"))
    }

    /// Sends `buf` as one datagram to `addr`.
    pub async fn send_to<B: IoBuf>(&self, buf: B, addr: SocketAddr) -> (Result<usize>, B) {
        self.io.send_to(buf, Some(addr.into()), None).await
    }

    /// Sends `buf` to the connected peer.
    pub async fn send<B: IoBuf>(&self, buf: B) -> (Result<usize>, B) {
        self.io.send_to(buf, None, None).await
    }

    /// Sends many datagrams with one submission (one `io_uring_enter` for the lot); each
    /// result says how its datagram fared, in order.
    pub async fn send_many<B: IoBuf>(
        &self,
        datagrams: Vec<(B, SocketAddr)>,
    ) -> Vec<(Result<usize>, B)> {
        let datagrams = datagrams
            .into_iter()
            .map(|(b, a)| (b, SockAddr::from(a)))
            .collect();
        self.io.send_many(datagrams).await
    }

    /// Whether [`send_segments`](Self::send_segments) can work on this platform (UDP GSO:
    /// Linux); elsewhere it is `Unsupported`.
    pub const SEGMENTATION: bool = crate::sys::udp::GSO_AVAILABLE;

    /// Sends `buf` to `addr` as datagrams of `segment` bytes each (the last may be shorter),
    /// cut by the kernel: UDP GSO, one syscall and one pass through the stack for the lot.
    /// Use it when many datagrams share a destination.
    pub async fn send_segments<B: IoBuf>(
        &self,
        buf: B,
        segment: u16,
        addr: SocketAddr,
    ) -> (Result<usize>, B) {
        if !Self::SEGMENTATION {
            return (Err(Error::new(ErrorKind::Unsupported, "UDP GSO")), buf);
        }
        self.io.send_to(buf, Some(addr.into()), Some(segment)).await
    }

    /// Receives one datagram into the spare capacity of `buf`, with its source.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> (Result<RecvMeta<SocketAddr>>, B) {
        let (r, buf) = self.io.recv_from(buf).await;
        let r = r.and_then(|m| {
            Ok(RecvMeta {
                len: m.len,
                source: inet(&m.source)?,
                truncated: m.truncated,
            })
        });
        (r, buf)
    }

    /// Receives datagrams into the core's buffer pool (multishot recvmsg on io_uring).
    pub fn pooled(&self) -> UdpPooled {
        UdpPooled {
            inner: self.io.pooled(),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        inet(
            &self
                .sock()
                .local_addr()
                .map_err(|e| Error::from_io(e, "getsockname"))?,
        )
    }

    /// The connected peer.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        inet(
            &self
                .sock()
                .peer_addr()
                .map_err(|e| Error::from_io(e, "getpeername"))?,
        )
    }

    /// SO_RCVBUF / SO_SNDBUF, in bytes (the kernel may double or cap it).
    pub fn set_buffer_sizes(&self, recv: usize, send: usize) -> Result<()> {
        let s = self.sock();
        s.set_recv_buffer_size(recv)
            .and_then(|()| s.set_send_buffer_size(send))
            .map_err(|e| Error::from_io(e, "setsockopt(SO_RCVBUF/SO_SNDBUF)"))
    }

    /// SO_BROADCAST: whether sends to a broadcast address (`255.255.255.255`, a subnet's
    /// last address) are allowed; without it they fail with `PermissionDenied`.
    pub fn set_broadcast(&self, on: bool) -> Result<()> {
        self.sock()
            .set_broadcast(on)
            .map_err(|e| Error::from_io(e, "setsockopt(SO_BROADCAST)"))
    }

    /// Joins IPv4 multicast group `group` on the interface with address `interface`
    /// (`0.0.0.0`: the one the kernel's routes pick). Datagrams sent to the group then arrive
    /// on this socket if its bound port matches.
    pub fn join_multicast_v4(&self, group: Ipv4Addr, interface: Ipv4Addr) -> Result<()> {
        self.sock()
            .join_multicast_v4(&group, &interface)
            .map_err(|e| Error::from_io(e, "setsockopt(IP_ADD_MEMBERSHIP)"))
    }

    /// Leaves a group joined with [`UdpSocket::join_multicast_v4`].
    pub fn leave_multicast_v4(&self, group: Ipv4Addr, interface: Ipv4Addr) -> Result<()> {
        self.sock()
            .leave_multicast_v4(&group, &interface)
            .map_err(|e| Error::from_io(e, "setsockopt(IP_DROP_MEMBERSHIP)"))
    }

    /// Joins IPv6 multicast group `group` on the interface with index `interface` (0: the
    /// kernel's choice).
    pub fn join_multicast_v6(&self, group: Ipv6Addr, interface: u32) -> Result<()> {
        self.sock()
            .join_multicast_v6(&group, interface)
            .map_err(|e| Error::from_io(e, "setsockopt(IPV6_JOIN_GROUP)"))
    }

    /// Leaves a group joined with [`UdpSocket::join_multicast_v6`].
    pub fn leave_multicast_v6(&self, group: Ipv6Addr, interface: u32) -> Result<()> {
        self.sock()
            .leave_multicast_v6(&group, interface)
            .map_err(|e| Error::from_io(e, "setsockopt(IPV6_LEAVE_GROUP)"))
    }

    /// The interface (by address) IPv4 multicast sends leave from.
    pub fn set_multicast_if_v4(&self, interface: Ipv4Addr) -> Result<()> {
        self.sock()
            .set_multicast_if_v4(&interface)
            .map_err(|e| Error::from_io(e, "setsockopt(IP_MULTICAST_IF)"))
    }

    /// The interface (by index) IPv6 multicast sends leave from.
    pub fn set_multicast_if_v6(&self, interface: u32) -> Result<()> {
        self.sock()
            .set_multicast_if_v6(interface)
            .map_err(|e| Error::from_io(e, "setsockopt(IPV6_MULTICAST_IF)"))
    }

    /// With `on`, every datagram goes out with the IP "don't fragment" bit and one larger
    /// than the path MTU the kernel knows is refused (`EMSGSIZE`) instead of being cut into
    /// fragments (`IP_PMTUDISC_DO`, and `IPV6_PMTUDISC_DO` on IPv6 sockets). Protocols that keep
    /// their datagrams under the MTU (netcode, QUIC) want a loss they can see rather than a
    /// fragment train; on Linux it also spares each IPv4 datagram the kernel's IP ID hash
    /// (about 4% of a netcode server's CPU per packet, `docs/benchmarks.md`). `off` restores
    /// the kernel's default. Linux; `Unsupported` elsewhere.
    pub fn set_dont_fragment(&self, on: bool) -> Result<()> {
        crate::sys::sock::set_dont_fragment(&self.sock(), on)
            .map_err(|e| Error::from_io(e, "setsockopt(IP_MTU_DISCOVER)"))
    }

    /// Whether this host's own members get the IPv4 multicast it sends (on by default).
    pub fn set_multicast_loop_v4(&self, on: bool) -> Result<()> {
        self.sock()
            .set_multicast_loop_v4(on)
            .map_err(|e| Error::from_io(e, "setsockopt(IP_MULTICAST_LOOP)"))
    }

    /// Whether this host's own members get the IPv6 multicast it sends (on by default).
    pub fn set_multicast_loop_v6(&self, on: bool) -> Result<()> {
        self.sock()
            .set_multicast_loop_v6(on)
            .map_err(|e| Error::from_io(e, "setsockopt(IPV6_MULTICAST_LOOP)"))
    }

    /// How many routers IPv4 multicast sends may cross (1 by default: this network only).
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> Result<()> {
        self.sock()
            .set_multicast_ttl_v4(ttl)
            .map_err(|e| Error::from_io(e, "setsockopt(IP_MULTICAST_TTL)"))
    }

    fn sock(&self) -> SockRef<'_> {
        self.io.fd.sock()
    }

    /// Adopts a bound UDP socket this process was given (by a predecessor in a restart, see
    /// `coring::restart`, or with [`UnixStream::recv_fds`](crate::net::UnixStream::recv_fds)).
    #[cfg(unix)]
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<UdpSocket> {
        let socket = Socket::from(fd);
        let ty = socket
            .r#type()
            .map_err(|e| Error::from_io(e, "getsockopt(SO_TYPE)"))?;
        if ty != Type::DGRAM {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "adopt a UDP socket (the socket is not a datagram socket)",
            ));
        }
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::from_io(e, "fcntl(O_NONBLOCK)"))?;
        Ok(UdpSocket {
            io: DatagramIo {
                fd: SharedFd::socket(socket),
            },
            _shared: None,
        })
    }
}

/// The socket, to pass to another process (`UnixStream::send_fds`) or for options this type
/// has no method for; the socket still owns it.
#[cfg(unix)]
impl std::os::fd::AsFd for UdpSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor stays open while `self` (which holds a share of it) lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.io.fd.raw()) }
    }
}

/// Pooled datagrams of a [`UdpSocket`].
#[derive(Debug)]
pub struct UdpPooled {
    inner: PooledDatagrams,
}

impl UdpPooled {
    /// The next datagram. Errors are per datagram; the receiver goes on.
    pub async fn next(&mut self) -> Result<Datagram<SocketAddr>> {
        let d = self.inner.next_raw().await?;
        let source = d
            .source
            .ok_or(Error::new(ErrorKind::Other, "recvmsg (no source)"))?;
        Ok(Datagram {
            source: inet(&source)?,
            data: d.data,
            truncated: d.truncated,
        })
    }
}

fn inet(addr: &SockAddr) -> Result<SocketAddr> {
    addr.as_socket().ok_or(Error::new(
        ErrorKind::InvalidInput,
        "address is not IPv4/IPv6",
    ))
}

fn first(addr: impl ToSocketAddrs) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| Error::from_io(e, "resolve"))?
        .next()
        .ok_or(Error::new(ErrorKind::InvalidInput, "resolve (no address)"))
}

/// A UDP socket bound to `addr`, non-blocking; with `reuse_port`, one of the per-core sockets
/// on that address.
fn bind_one(
    addr: SocketAddr,
    reuse_port: bool,
) -> Result<(Socket, Option<super::shared_listen::ShareGuard>)> {
    let fresh = |reuse_port: bool| {
        let attempt = (|| {
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_nonblocking(true)?;
            if reuse_port {
                crate::sys::sock::set_reuse_port(&socket)?;
            }
            socket.bind(&addr.into())?;
            Ok::<_, std::io::Error>(socket)
        })();
        attempt.map_err(|e| Error::from_io(e, "bind"))
    };
    if reuse_port && !crate::sys::sock::HAS_REUSE_PORT {
        let (socket, guard) = super::shared_listen::listen(addr, Type::DGRAM, || fresh(false))?;
        return Ok((socket, Some(guard)));
    }
    Ok((fresh(reuse_port)?, None))
}

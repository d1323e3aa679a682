//! Netlink sockets (Linux): messages from the kernel (rtnetlink's links, addresses and routes
//! among them) received on a core with the owned-buffer API. What the messages mean is the
//! caller's to read (`coring_protocols::netwatch` reads rtnetlink's).

use std::mem::size_of;

use socket2::{Domain, Protocol, SockAddr, Type};

use crate::buf::{IoBuf, IoBufMut};
use crate::driver::SharedFd;
use crate::error::{Error, Result};
use crate::net::dgram::{DatagramIo, RecvMeta};
use crate::net::stream::new_socket;

/// `NETLINK_ROUTE`: links, addresses, routes, neighbours.
pub const NETLINK_ROUTE: i32 = libc::NETLINK_ROUTE;

/// A netlink socket bound to the kernel's multicast groups it was asked for.
#[derive(Debug)]
pub struct NetlinkSocket {
    io: DatagramIo,
}

/// A netlink address: a port id (0 is the kernel) and a bitmask of multicast groups.
fn netlink_addr(port: u32, groups: u32) -> SockAddr {
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: sockaddr_nl is one of this platform's sockaddr types (the storage is large
    // enough and aligned for it); it is written whole before the storage is handed to
    // SockAddr with a sockaddr_nl's length and the AF_NETLINK family the kernel reads it by.
    unsafe {
        let nl = storage.view_as::<libc::sockaddr_nl>();
        nl.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        nl.nl_pid = port;
        nl.nl_groups = groups;
        SockAddr::new(storage, size_of::<libc::sockaddr_nl>() as libc::socklen_t)
    }
}

/// The port id in a netlink address (`None` for another family).
fn port_of(addr: &SockAddr) -> Option<u32> {
    if i32::from(addr.family()) != libc::AF_NETLINK
        || (addr.len() as usize) < size_of::<libc::sockaddr_nl>()
    {
        return None;
    }
    // SAFETY: the family is AF_NETLINK and the address is at least a sockaddr_nl long, so
    // the storage holds a sockaddr_nl (read unaligned: the storage's own alignment is larger).
    let nl = unsafe { std::ptr::read_unaligned(addr.as_ptr().cast::<libc::sockaddr_nl>()) };
    Some(nl.nl_pid)
}

impl NetlinkSocket {
    /// A socket of netlink `protocol` (such as [`NETLINK_ROUTE`]) that receives the multicast
    /// `groups` (a bitmask of `RTMGRP_*` values; 0 for requests and their answers only).
    pub fn bind(protocol: i32, groups: u32) -> Result<NetlinkSocket> {
        let socket = new_socket(
            Domain::from(libc::AF_NETLINK),
            Type::DGRAM,
            Some(Protocol::from(protocol)),
        )?;
        socket
            .bind(&netlink_addr(0, groups))
            .map_err(|e| Error::from_io(e, "bind(AF_NETLINK)"))?;
        Ok(NetlinkSocket {
            io: DatagramIo {
                fd: SharedFd::socket(socket),
            },
        })
    }

    /// Sends `buf` (one or more netlink messages) to the kernel.
    pub async fn send<B: IoBuf>(&self, buf: B) -> (Result<usize>, B) {
        self.io.send_to(buf, Some(netlink_addr(0, 0)), None).await
    }

    /// Receives one datagram (one or more messages) into the spare capacity of `buf`, with the
    /// sender's port id (0: the kernel). `ENOBUFS` means the socket's receive buffer overflowed
    /// and messages were lost: state read from earlier messages is stale.
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> (Result<RecvMeta<u32>>, B) {
        let (r, buf) = self.io.recv_from(buf).await;
        let r = r.map(|m| RecvMeta {
            len: m.len,
            source: port_of(&m.source).unwrap_or(0),
            truncated: m.truncated,
        });
        (r, buf)
    }

    /// SO_RCVBUF: how much the kernel queues before dropping (and reporting `ENOBUFS`).
    pub fn set_recv_buffer_size(&self, bytes: usize) -> Result<()> {
        self.io
            .fd
            .sock()
            .set_recv_buffer_size(bytes)
            .map_err(|e| Error::from_io(e, "setsockopt(SO_RCVBUF)"))
    }

    /// This socket's port id (the kernel picks one at bind).
    pub fn port_id(&self) -> Result<u32> {
        let addr = self
            .io
            .fd
            .sock()
            .local_addr()
            .map_err(|e| Error::from_io(e, "getsockname"))?;
        port_of(&addr)
            .ok_or_else(|| Error::new(crate::ErrorKind::Other, "getsockname: not netlink"))
    }
}

//! Per-core sockets on one address where the system has no SO_REUSEPORT (Windows): TCP
//! listeners and UDP sockets.
//!
//! The first core to bind an address creates the socket; later cores binding the same address
//! (and type) get duplicates of it, so every core accepts from one queue, or receives from one
//! socket's datagrams, each core's reactor waiting on its own duplicate. The socket closes when the last core's listener is
//! dropped. A bind to port 0 never gets a duplicate: as with SO_REUSEPORT, each such bind
//! picks its own port. The port it picked is then shared like any other, so that the other
//! cores can join the first with its real address (the servers' `--addr HOST:0 --cores N`).

use std::net::SocketAddr;
use std::sync::Mutex;

/// What a shared socket is known by: its address and type (TCP and UDP may share a port).
type Key = (SocketAddr, socket2::Type);

/// Sockets shared by address and type, with the number of holders of each.
static SHARED: Mutex<Vec<(Key, socket2::Socket, usize)>> = Mutex::new(Vec::new());

/// Keeps a shared address's entry alive; the last one removes it.
#[derive(Debug)]
pub(crate) struct ShareGuard {
    key: Key,
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = shared.iter().position(|(k, ..)| *k == self.key) {
            shared[i].2 -= 1;
            if shared[i].2 == 0 {
                shared.swap_remove(i);
            }
        }
    }
}

/// A duplicate of the listener already bound on `addr`, or the one `bind` makes (which is
/// then shared under the address it got). Port 0 binds afresh each time.
pub(crate) fn listen(
    addr: SocketAddr,
    ty: socket2::Type,
    bind: impl FnOnce() -> crate::Result<socket2::Socket>,
) -> crate::Result<(socket2::Socket, ShareGuard)> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if addr.port() != 0
        && let Some(entry) = shared.iter_mut().find(|(k, ..)| *k == (addr, ty))
    {
        let dup = entry
            .1
            .try_clone()
            .map_err(|e| crate::Error::from_io(e, "WSADuplicateSocket"))?;
        // A duplicate is a new socket: its blocking mode is its own.
        dup.set_nonblocking(true)
            .map_err(|e| crate::Error::from_io(e, "ioctlsocket(FIONBIO)"))?;
        entry.2 += 1;
        return Ok((dup, ShareGuard { key: (addr, ty) }));
    }
    let socket = bind()?;
    let bound = socket
        .local_addr()
        .map_err(|e| crate::Error::from_io(e, "getsockname"))?
        .as_socket()
        .ok_or_else(|| crate::Error::new(crate::ErrorKind::InvalidInput, "getsockname (not IP)"))?;
    let keep = socket
        .try_clone()
        .map_err(|e| crate::Error::from_io(e, "WSADuplicateSocket"))?;
    shared.push(((bound, ty), keep, 1));
    Ok((socket, ShareGuard { key: (bound, ty) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Socket, Type};

    fn bind(addr: SocketAddr) -> crate::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)
            .map_err(|e| crate::Error::from_io(e, "socket"))?;
        // As the engine's listeners do: rebinding over TIME_WAIT connections works.
        s.set_reuse_address(true)
            .map_err(|e| crate::Error::from_io(e, "setsockopt"))?;
        s.bind(&addr.into())
            .map_err(|e| crate::Error::from_io(e, "bind"))?;
        s.listen(16)
            .map_err(|e| crate::Error::from_io(e, "listen"))?;
        Ok(s)
    }

    fn entries(addr: SocketAddr) -> Option<usize> {
        let shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        shared
            .iter()
            .find(|(k, ..)| *k == (addr, Type::STREAM))
            .map(|e| e.2)
    }

    #[test]
    fn cores_share_one_socket_until_the_last_lets_go() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        let addr = free.local_addr().expect("addr");
        drop(free);
        let (first, g1) = listen(addr, Type::STREAM, || bind(addr)).expect("first");
        // A second bind of the same address would fail without sharing.
        let (second, g2) =
            listen(addr, Type::STREAM, || panic!("must not bind again")).expect("second");
        assert_eq!(entries(addr), Some(2));
        // Both accept from one queue: a connection shows up on either.
        let client = std::net::TcpStream::connect(addr).expect("connect");
        second.set_nonblocking(false).expect("blocking");
        let (conn, _) = second.accept().expect("accept on the duplicate");
        drop((client, conn));
        drop((first, g1));
        assert_eq!(entries(addr), Some(1));
        drop((second, g2));
        assert_eq!(entries(addr), None);
        // The address is free again once every holder is gone.
        std::net::TcpListener::bind(addr).expect("rebind after the last listener");
    }

    #[test]
    fn port_zero_picks_a_port_of_its_own_which_others_then_share() {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let port = |s: &Socket| {
            s.local_addr()
                .expect("addr")
                .as_socket()
                .expect("ip")
                .port()
        };
        let (a, ga) = listen(any, Type::STREAM, || bind(any)).expect("a");
        let (b, gb) = listen(any, Type::STREAM, || bind(any)).expect("b");
        assert_ne!(port(&a), port(&b), "each port-0 bind picks its own port");
        // Another core joining with the real address gets a duplicate of the first.
        let picked = SocketAddr::new(any.ip(), port(&a));
        let (c, gc) = listen(picked, Type::STREAM, || panic!("must share, not bind")).expect("c");
        assert_eq!(port(&c), port(&a));
        assert_eq!(entries(picked), Some(2));
        drop((a, ga, c, gc));
        assert_eq!(entries(picked), None);
        drop((b, gb));
    }
}

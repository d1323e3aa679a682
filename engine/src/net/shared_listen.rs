//! Per-core listeners on one address where the system has no SO_REUSEPORT (Windows).
//!
//! The first core to bind an address creates the listening socket; later cores binding the
//! same address get duplicates of it, so every core accepts from one queue (each core's
//! reactor waits on its own duplicate). The socket closes when the last core's listener is
//! dropped. Port 0 is never shared: as with SO_REUSEPORT, each such bind picks its own port.

use std::net::SocketAddr;
use std::sync::Mutex;

/// Listening sockets shared by address, with the number of listeners holding each.
static SHARED: Mutex<Vec<(SocketAddr, socket2::Socket, usize)>> = Mutex::new(Vec::new());

/// Keeps a shared address's entry alive; the last one removes it.
#[derive(Debug)]
pub(crate) struct ShareGuard {
    addr: SocketAddr,
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = shared.iter().position(|(a, ..)| *a == self.addr) {
            shared[i].2 -= 1;
            if shared[i].2 == 0 {
                shared.swap_remove(i);
            }
        }
    }
}

/// A duplicate of the listener already bound on `addr`, or the one `bind` makes (which is
/// then shared). Port 0 binds afresh each time.
pub(crate) fn listen(
    addr: SocketAddr,
    bind: impl FnOnce() -> crate::Result<socket2::Socket>,
) -> crate::Result<(socket2::Socket, Option<ShareGuard>)> {
    if addr.port() == 0 {
        return Ok((bind()?, None));
    }
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = shared.iter_mut().find(|(a, ..)| *a == addr) {
        let dup = entry
            .1
            .try_clone()
            .map_err(|e| crate::Error::from_io(e, "WSADuplicateSocket"))?;
        // A duplicate is a new socket: its blocking mode is its own.
        dup.set_nonblocking(true)
            .map_err(|e| crate::Error::from_io(e, "ioctlsocket(FIONBIO)"))?;
        entry.2 += 1;
        return Ok((dup, Some(ShareGuard { addr })));
    }
    let socket = bind()?;
    let keep = socket
        .try_clone()
        .map_err(|e| crate::Error::from_io(e, "WSADuplicateSocket"))?;
    shared.push((addr, keep, 1));
    Ok((socket, Some(ShareGuard { addr })))
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
        shared.iter().find(|(a, ..)| *a == addr).map(|e| e.2)
    }

    #[test]
    fn cores_share_one_socket_until_the_last_lets_go() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        let addr = free.local_addr().expect("addr");
        drop(free);
        let (first, g1) = listen(addr, || bind(addr)).expect("first");
        // A second bind of the same address would fail without sharing.
        let (second, g2) = listen(addr, || panic!("must not bind again")).expect("second");
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
    fn port_zero_is_never_shared() {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (a, ga) = listen(any, || bind(any)).expect("a");
        let (b, gb) = listen(any, || bind(any)).expect("b");
        assert!(ga.is_none() && gb.is_none());
        let port = |s: &Socket| {
            s.local_addr()
                .expect("addr")
                .as_socket()
                .expect("ip")
                .port()
        };
        assert_ne!(port(&a), port(&b));
    }
}

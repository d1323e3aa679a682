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

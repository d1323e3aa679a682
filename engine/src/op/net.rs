//! Socket operations.

use coring_compat::sys::{IoVec, MsgHdr, SockLen};
use socket2::{SockAddr, SockAddrStorage};

use std::rc::Rc;

use crate::buf::pool::Pool;
use crate::buf::{IoBuf, IoBufMut};
use crate::driver::SharedFd;

/// Accept one connection, with the peer's address.
pub(crate) struct Accept {
    pub(crate) fd: SharedFd,
    /// INVARIANT: boxed; the kernel writes the address and its length here.
    pub(crate) addr: Box<(SockAddrStorage, SockLen)>,
}

impl Accept {
    pub(crate) fn new(fd: SharedFd) -> Self {
        Accept {
            fd,
            addr: Box::new((
                SockAddrStorage::zeroed(),
                size_of::<SockAddrStorage>() as SockLen,
            )),
        }
    }

    /// The peer address written by a successful accept.
    pub(crate) fn peer_sockaddr(&self) -> SockAddr {
        let (storage, len) = &*self.addr;
        // SAFETY: `SockAddrStorage` is plain old data (a `sockaddr_storage`), so a bitwise copy
        // is a valid value; it starts zeroed and a successful accept wrote `len` bytes of a valid
        // address into it (the kernel never writes past the size we passed).
        unsafe { SockAddr::new(std::ptr::read(storage), *len) }
    }
}

/// Accept connections until cancelled (multishot accept, 5.19).
pub(crate) struct AcceptMulti {
    pub(crate) fd: SharedFd,
}

/// Connect a socket.
pub(crate) struct Connect {
    pub(crate) fd: SharedFd,
    /// INVARIANT: boxed; the kernel reads the address when the connect starts.
    pub(crate) addr: Box<SockAddr>,
    /// Readiness mode: the non-blocking connect has been started.
    pub(crate) started: bool,
}

/// Receive into the spare capacity of `buf`.
pub(crate) struct Recv<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
}

/// Receive into buffers of the core's pool, picked when data arrives (multishot recv with a
/// provided-buffer ring on io_uring, 6.0; a free buffer taken on readiness on compat).
pub(crate) struct RecvMulti {
    pub(crate) fd: SharedFd,
    /// Keeps the pool (and its memory) alive while the kernel may write into it.
    pub(crate) pool: Rc<Pool>,
    /// Readiness mode: the buffer the last successful receive filled.
    pub(crate) filled: Option<u16>,
}

/// Send the initialised bytes of `buf`.
pub(crate) struct Send<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
}

/// Send several buffers in one call (sendmsg with an iovec array).
pub(crate) struct SendVectored<B> {
    pub(crate) fd: SharedFd,
    pub(crate) bufs: Vec<B>,
    /// INVARIANT: the iovecs point into `bufs`' heap memory; both stay until completion.
    #[allow(
        dead_code,
        reason = "owned for the kernel, which reads it through `msg`"
    )]
    pub(crate) iovecs: Vec<IoVec>,
    /// INVARIANT: boxed; points at `iovecs`' heap block.
    pub(crate) msg: Box<MsgHdr>,
}

impl<B: IoBuf> SendVectored<B> {
    pub(crate) fn new(fd: SharedFd, bufs: Vec<B>) -> Self {
        let mut iovecs: Vec<IoVec> = bufs
            .iter()
            .map(|b| coring_compat::sys::io_vec(b.stable_ptr().cast_mut(), b.bytes_init()))
            .collect();
        let msg = Box::new(coring_compat::sys::msg_header(
            std::ptr::null_mut(),
            0,
            iovecs.as_mut_ptr(),
            iovecs.len(),
        ));
        SendVectored {
            fd,
            bufs,
            iovecs,
            msg,
        }
    }
}

impl<B: IoBufMut> Recv<B> {
    /// Where the kernel writes and how much room there is.
    pub(crate) fn spare(&mut self) -> (*mut u8, u32) {
        let (ptr, room) = crate::buf::spare_of(&mut self.buf);
        (ptr, room.min(u32::MAX as usize) as u32)
    }
}

//! Readiness mode: which readiness each op waits for and the non-blocking syscall it makes.
//!
//! Every call here must return `WouldBlock` instead of blocking: sockets are created
//! non-blocking, and recv/send also pass MSG_DONTWAIT for descriptors adopted from elsewhere.

use std::io;
use std::os::fd::RawFd;

use crate::buf::{IoBuf, IoBufMut};
use crate::op::{
    Accept, AcceptMulti, Connect, RECVMSG_NAME_BYTES, RECVMSG_OUT_BYTES, Recv, RecvFrom,
    RecvMsgMulti, RecvMulti, Send, SendTo, SendVectored, Shutdown,
};

/// What an op waits for before trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// The readiness-mode half of an op.
pub(crate) trait ReadyOp {
    /// The descriptor and readiness to wait for when [`ReadyOp::perform`] would block.
    fn readiness(&self) -> (RawFd, Interest);

    /// Makes the non-blocking syscall: the op's result (as a CQE result would carry it), or
    /// `WouldBlock` to wait for readiness and call again.
    fn perform(&mut self) -> io::Result<usize>;

    /// Flags of the last successful `perform`, as a CQE would carry them (the buffer id of a
    /// pooled receive).
    fn result_flags(&mut self) -> u32 {
        0
    }
}

/// Turns a libc return value into a result.
fn check(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

impl ReadyOp for Accept {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let (storage, len) = &mut *self.addr;
        let storage: *mut socket2::SockAddrStorage = storage;
        // SAFETY: `storage` and `len` are live, boxed, and `len` holds the storage's size.
        let fd = unsafe {
            libc::accept4(
                self.fd.raw(),
                storage.cast(),
                len,
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        check(fd as isize)
    }
}

impl ReadyOp for AcceptMulti {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: null address and length are allowed and mean "do not report the peer".
        let fd = unsafe {
            libc::accept4(
                self.fd.raw(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        check(fd as isize)
    }
}

impl ReadyOp for Connect {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // The first call starts the connect (EINPROGRESS); later calls ask again, which answers
        // EALREADY while in progress, EISCONN once connected, or the connect's own error.
        // SAFETY: the boxed address is valid for its length.
        let ret =
            unsafe { libc::connect(self.fd.raw(), self.addr.as_ptr().cast(), self.addr.len()) };
        if ret == 0 {
            return Ok(0);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EISCONN) if self.started => Ok(0),
            Some(libc::EINPROGRESS | libc::EALREADY) => {
                self.started = true;
                Err(io::ErrorKind::WouldBlock.into())
            }
            _ => Err(err),
        }
    }
}

impl<B: IoBufMut> ReadyOp for Recv<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let (ptr, len) = self.spare();
        // SAFETY: `ptr..ptr+len` is the buffer's spare capacity, owned by this op.
        let n = unsafe { libc::recv(self.fd.raw(), ptr.cast(), len as usize, libc::MSG_DONTWAIT) };
        check(n)
    }
}

impl ReadyOp for RecvMulti {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // A buffer is taken only now that the socket is (probably) readable, and put back if
        // it was not: an idle connection holds none.
        let Some(bid) = self.pool.take() else {
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        };
        let (ptr, len) = self.pool.slot(bid);
        // SAFETY: buffer `bid` was just taken from the pool, so nobody else uses it; it is
        // `len` writable bytes of the pool's allocation, kept alive by `self.pool`.
        let n = unsafe { libc::recv(self.fd.raw(), ptr.cast(), len, libc::MSG_DONTWAIT) };
        match check(n) {
            Ok(n) if n > 0 => {
                self.filled = Some(bid);
                Ok(n)
            }
            other => {
                self.pool.untake(bid);
                other
            }
        }
    }

    fn result_flags(&mut self) -> u32 {
        match self.filled.take() {
            Some(bid) => crate::driver::CQE_F_BUFFER | (u32::from(bid) << 16),
            None => 0,
        }
    }
}

impl ReadyOp for RecvMsgMulti {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let Some(bid) = self.pool.take() else {
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        };
        let (base, len) = self.pool.slot(bid);
        let skip = RECVMSG_OUT_BYTES + RECVMSG_NAME_BYTES;
        let mut iov = libc::iovec {
            // SAFETY: the pool's buffers are larger than the header and name area (64 bytes
            // minimum is raised to fit in `Pool::new` callers; checked by `len > skip` below).
            iov_base: unsafe { base.add(skip.min(len)) }.cast(),
            iov_len: len.saturating_sub(skip),
        };
        // SAFETY: plain data.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // SAFETY: the name area lies inside buffer `bid`, which we hold.
        msg.msg_name = unsafe { base.add(RECVMSG_OUT_BYTES) }.cast();
        msg.msg_namelen = RECVMSG_NAME_BYTES as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: `msg` describes memory of buffer `bid`, taken from the pool for us.
        let n = unsafe { libc::recvmsg(self.fd.raw(), &mut msg, libc::MSG_DONTWAIT) };
        match check(n) {
            Ok(n) => {
                // Same layout as io_uring's `io_uring_recvmsg_out`.
                let head = [msg.msg_namelen, 0, n as u32, msg.msg_flags as u32];
                for (i, word) in head.iter().enumerate() {
                    // SAFETY: 16 header bytes at the start of buffer `bid`.
                    unsafe {
                        std::ptr::write_unaligned(base.add(i * 4).cast::<u32>(), *word);
                    }
                }
                self.filled = Some(bid);
                Ok(skip + n)
            }
            Err(e) => {
                self.pool.untake(bid);
                Err(e)
            }
        }
    }

    fn result_flags(&mut self) -> u32 {
        match self.filled.take() {
            Some(bid) => crate::driver::CQE_F_BUFFER | (u32::from(bid) << 16),
            None => 0,
        }
    }
}

impl<B: IoBuf> ReadyOp for SendTo<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        // SAFETY: `msg` points at this op's address, iovec, control data and buffer.
        check(unsafe { libc::sendmsg(self.fd.raw(), &*self.msg, flags) })
    }
}

impl<B: IoBufMut> ReadyOp for RecvFrom<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: `msg` points at this op's address storage, iovec and buffer.
        check(unsafe { libc::recvmsg(self.fd.raw(), &mut *self.msg, libc::MSG_DONTWAIT) })
    }
}

impl<B: IoBuf> ReadyOp for Send<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        // SAFETY: the buffer's first `bytes_init` bytes are initialised and owned by this op.
        let n = unsafe {
            libc::send(
                self.fd.raw(),
                self.buf.stable_ptr().cast(),
                self.buf.bytes_init(),
                flags,
            )
        };
        check(n)
    }
}

impl<B: IoBuf> ReadyOp for SendVectored<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        // SAFETY: `msg` points at this op's iovecs, which point at its buffers.
        let n = unsafe { libc::sendmsg(self.fd.raw(), &*self.msg, flags) };
        check(n)
    }
}

impl ReadyOp for Shutdown {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: plain syscall on a descriptor this op keeps open.
        let ret = unsafe { libc::shutdown(self.fd.raw(), self.how) };
        check(ret as isize)
    }
}

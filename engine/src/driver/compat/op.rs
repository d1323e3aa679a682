//! Readiness mode: which readiness each op waits for and the non-blocking syscall it makes.
//!
//! Every call here must return `WouldBlock` instead of blocking: sockets are created
//! non-blocking, and recv/send also pass MSG_DONTWAIT for descriptors adopted from elsewhere.

use std::io;

use coring_compat::sys::{self, RawSource as RawFd};

use crate::buf::{IoBuf, IoBufMut};
use crate::op::{
    Accept, AcceptMulti, Connect, RECVMSG_NAME_BYTES, RECVMSG_OUT_BYTES, ReadAt, Recv, RecvFrom,
    RecvMsgMulti, RecvMulti, Send, SendTo, SendVectored, Splice,
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

impl ReadyOp for Accept {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let (storage, len) = &mut *self.addr;
        let storage: *mut socket2::SockAddrStorage = storage;
        // SAFETY: `storage` and `len` are live, boxed, and `len` holds the storage's size.
        unsafe { sys::accept(self.fd.raw(), storage.cast(), len) }.map(|fd| fd as usize)
    }
}

impl ReadyOp for AcceptMulti {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: null address and length are allowed and mean "do not report the peer".
        unsafe { sys::accept(self.fd.raw(), std::ptr::null_mut(), std::ptr::null_mut()) }
            .map(|fd| fd as usize)
    }
}

impl ReadyOp for Connect {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // The first call starts the connect; later calls ask again, which answers "in
        // progress", "connected" or the connect's own error.
        // SAFETY: the boxed address is valid for its length.
        let r = unsafe {
            sys::connect(
                self.fd.raw(),
                self.addr.as_ptr().cast(),
                self.addr.len(),
                self.started,
            )
        };
        self.started = true;
        r.map(|()| 0)
    }
}

impl<B: IoBufMut> ReadyOp for Recv<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let (ptr, len) = self.spare();
        // SAFETY: `ptr..ptr+len` is the buffer's spare capacity, owned by this op.
        unsafe { sys::recv(self.fd.raw(), ptr, len as usize) }
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
            return Err(io::Error::from_raw_os_error(crate::driver::NO_BUFFERS));
        };
        let (ptr, len) = self.pool.slot(bid);
        // SAFETY: buffer `bid` was just taken from the pool, so nobody else uses it; it is
        // `len` writable bytes of the pool's allocation, kept alive by `self.pool`.
        match unsafe { sys::recv(self.fd.raw(), ptr, len) } {
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
            return Err(io::Error::from_raw_os_error(crate::driver::NO_BUFFERS));
        };
        let (base, len) = self.pool.slot(bid);
        let skip = RECVMSG_OUT_BYTES + RECVMSG_NAME_BYTES;
        let mut iov = sys::io_vec(
            // SAFETY: the pool's buffers are larger than the header and name area (64 bytes
            // minimum is raised to fit in `Pool::new` callers); `min` keeps it in bounds anyway.
            unsafe { base.add(skip.min(len)) },
            len.saturating_sub(skip),
        );
        let mut msg = sys::msg_header(
            // SAFETY: the name area lies inside buffer `bid`, which we hold.
            unsafe { base.add(RECVMSG_OUT_BYTES) },
            RECVMSG_NAME_BYTES as sys::SockLen,
            &mut iov,
            1,
        );
        // SAFETY: `msg` describes memory of buffer `bid`, taken from the pool for us.
        match unsafe { sys::recvmsg(self.fd.raw(), &mut msg) } {
            Ok(n) => {
                // Same layout as io_uring's `io_uring_recvmsg_out`.
                let head = [
                    sys::msg_name_len(&msg) as u32,
                    0,
                    n as u32,
                    sys::msg_flags(&msg) as u32,
                ];
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
        // SAFETY: `msg` points at this op's address, iovec, control data and buffer.
        unsafe { sys::sendmsg(self.fd.raw(), self.msghdr()) }
    }
}

impl<B: IoBufMut> ReadyOp for RecvFrom<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: `msg` points at this op's address storage, iovec and buffer.
        unsafe { sys::recvmsg(self.fd.raw(), self.msghdr_mut()) }
    }
}

impl<B: IoBuf> ReadyOp for Send<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: the buffer's first `bytes_init` bytes are initialised and owned by this op.
        unsafe { sys::send(self.fd.raw(), self.buf.stable_ptr(), self.buf.bytes_init()) }
    }
}

impl<B: IoBuf> ReadyOp for SendVectored<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: `msg` points at this op's iovecs, which point at its buffers.
        unsafe { sys::sendmsg(self.fd.raw(), &*self.msg) }
    }
}

impl<B: IoBufMut> ReadyOp for ReadAt<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let (ptr, len) = self.spare();
        // SAFETY: `ptr..ptr+len` is the buffer's spare capacity, owned by this op.
        unsafe { sys::pread(self.fd.raw(), ptr, len as usize, self.offset) }
    }
}

impl ReadyOp for Splice {
    fn readiness(&self) -> (RawFd, Interest) {
        // The only end that can make a splice wait is a socket or pipe being written.
        (self.fd_out.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        sys::splice(
            self.fd_in.raw(),
            self.off_in,
            self.fd_out.raw(),
            self.len as usize,
        )
    }
}

#[cfg(unix)]
impl<B: IoBuf> ReadyOp for crate::op::SendFds<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: `msg` points at this op's iovec (into its buffer) and control data.
        unsafe { sys::sendmsg(self.fd.raw(), self.msghdr()) }
    }
}

#[cfg(unix)]
impl<B: IoBufMut> ReadyOp for crate::op::RecvFds<B> {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Read)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let fd = self.fd.raw();
        // SAFETY: `msg` points at this op's iovec (into its buffer's spare room) and control
        // block, both sized in the header.
        let n = unsafe { libc::recvmsg(fd, self.msghdr_mut(), crate::sys::fds::RECV_FLAGS) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(unix)]
impl ReadyOp for crate::op::PollWritable {
    fn readiness(&self) -> (RawFd, Interest) {
        (self.fd.raw(), Interest::Write)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // Asks the socket itself: a wake-up for any other reason (a timer, the read side)
        // must not pass for room.
        let mut pfd = libc::pollfd {
            fd: self.fd.raw(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout: a plain readiness check.
        match unsafe { libc::poll(&mut pfd, 1, 0) } {
            n if n < 0 => Err(io::Error::last_os_error()),
            0 => Err(io::ErrorKind::WouldBlock.into()),
            _ => Ok(pfd.revents as usize),
        }
    }
}

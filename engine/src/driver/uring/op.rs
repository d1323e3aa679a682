//! io_uring: how each op becomes an SQE. The CQE result is the op's result as-is.

use io_uring::{opcode, squeue::Entry, types::Fd};

use crate::buf::{IoBuf, IoBufMut};
use crate::op::{
    Accept, AcceptMulti, Connect, ReadAt, Recv, RecvFrom, RecvMsgMulti, RecvMulti, Send, SendTo,
    SendVectored, Splice,
};

/// The completion-mode half of an op.
pub(crate) trait UringOp {
    /// The SQE that starts the op. Called once, right before the op is queued; the memory it
    /// points at is owned by the op (see the INVARIANT in `op/mod.rs`).
    fn entry(&mut self) -> Entry;
}

impl UringOp for Accept {
    fn entry(&mut self) -> Entry {
        let (storage, len) = &mut *self.addr;
        let storage: *mut socket2::SockAddrStorage = storage;
        opcode::Accept::new(Fd(self.fd.raw()), storage.cast(), len)
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
    }
}

impl UringOp for AcceptMulti {
    fn entry(&mut self) -> Entry {
        opcode::AcceptMulti::new(Fd(self.fd.raw()))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
    }
}

impl UringOp for Connect {
    fn entry(&mut self) -> Entry {
        opcode::Connect::new(
            Fd(self.fd.raw()),
            self.addr.as_ptr().cast(),
            self.addr.len(),
        )
        .build()
    }
}

impl<B: IoBufMut> UringOp for Recv<B> {
    fn entry(&mut self) -> Entry {
        let (ptr, len) = self.spare();
        opcode::Recv::new(Fd(self.fd.raw()), ptr, len).build()
    }
}

impl UringOp for RecvMulti {
    fn entry(&mut self) -> Entry {
        opcode::RecvMulti::new(Fd(self.fd.raw()), super::bufring::POOL_GROUP).build()
    }
}

impl UringOp for RecvMsgMulti {
    fn entry(&mut self) -> Entry {
        opcode::RecvMsgMulti::new(Fd(self.fd.raw()), &*self.msg, super::bufring::POOL_GROUP).build()
    }
}

impl<B: IoBuf> UringOp for SendTo<B> {
    fn entry(&mut self) -> Entry {
        opcode::SendMsg::new(Fd(self.fd.raw()), self.msghdr())
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }
}

impl<B: IoBufMut> UringOp for RecvFrom<B> {
    fn entry(&mut self) -> Entry {
        opcode::RecvMsg::new(Fd(self.fd.raw()), self.msghdr_mut()).build()
    }
}

impl<B: IoBuf> UringOp for Send<B> {
    fn entry(&mut self) -> Entry {
        let len = self.buf.bytes_init().min(u32::MAX as usize) as u32;
        opcode::Send::new(Fd(self.fd.raw()), self.buf.stable_ptr(), len)
            // No SIGPIPE when the peer has gone: the op fails with BrokenPipe instead.
            .flags(libc::MSG_NOSIGNAL)
            .build()
    }
}

impl<B: IoBuf> UringOp for SendVectored<B> {
    fn entry(&mut self) -> Entry {
        opcode::SendMsg::new(Fd(self.fd.raw()), &*self.msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }
}

impl<B: IoBufMut> UringOp for ReadAt<B> {
    fn entry(&mut self) -> Entry {
        let (ptr, len) = self.spare();
        opcode::Read::new(Fd(self.fd.raw()), ptr, len)
            .offset(self.offset)
            .build()
    }
}

impl UringOp for Splice {
    fn entry(&mut self) -> Entry {
        // -1: no offset (a pipe end).
        let off_in = self.off_in.map_or(-1, |o| o as i64);
        opcode::Splice::new(Fd(self.fd_in.raw()), off_in, Fd(self.fd_out.raw()), -1, self.len)
            .build()
    }
}

impl<B: IoBuf> UringOp for crate::op::SendFds<B> {
    fn entry(&mut self) -> Entry {
        opcode::SendMsg::new(Fd(self.fd.raw()), self.msghdr())
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }
}

impl<B: IoBufMut> UringOp for crate::op::RecvFds<B> {
    fn entry(&mut self) -> Entry {
        opcode::RecvMsg::new(Fd(self.fd.raw()), self.msghdr_mut())
            .flags(crate::sys::fds::RECV_FLAGS as u32)
            .build()
    }
}

impl UringOp for crate::op::PollWritable {
    fn entry(&mut self) -> Entry {
        opcode::PollAdd::new(Fd(self.fd.raw()), libc::POLLOUT as u32).build()
    }
}


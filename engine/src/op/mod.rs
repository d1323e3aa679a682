//! Operation structs, declared once and shared by every backend.
//!
//! Each op owns what the kernel may touch until its last completion: the descriptor (a
//! [`SharedFd`] clone, so the number cannot be closed and reused under it), buffers, and
//! addresses. How an op becomes an SQE lives in `driver/uring/op.rs`; how it runs on a readiness
//! reactor will live in `driver/compat/op.rs`.
//!
//! INVARIANT (all ops): memory whose address goes to the kernel is on the heap (a buffer's own
//! allocation, a `Box`), never inline in the op struct, so moving the op does not move it.

mod dgram;
#[cfg(unix)]
mod fds;
mod fs;
mod net;

pub(crate) use dgram::{
    GSO_CMSG_BYTES, RECVMSG_NAME_BYTES, RECVMSG_OUT_BYTES, RecvFrom, RecvMsgMulti, SendTo,
    parse_datagram,
};
#[cfg(unix)]
pub(crate) use fds::{RecvFds, SendFds};
#[cfg(unix)]
pub(crate) use fs::PollWritable;
pub(crate) use fs::{ReadAt, Splice};
pub(crate) use net::{Accept, AcceptMulti, Connect, Recv, RecvMulti, Send, SendVectored};

use crate::driver::OpCode;
use crate::sys::fd::close_accepted;

impl OpCode for Accept {
    const NAME: &'static str = "accept";

    fn complete_orphan(&mut self, res: i32, _flags: u32) {
        if res >= 0 {
            // Nobody waits for this connection any more: close it rather than leak it.
            tracing::debug!("a connection accepted for a dropped accept is closed");
            close_accepted(res);
        }
    }
}

impl OpCode for AcceptMulti {
    const NAME: &'static str = "accept";

    fn complete_orphan(&mut self, res: i32, _flags: u32) {
        if res >= 0 {
            tracing::debug!("a connection accepted for a dropped multishot accept is closed");
            close_accepted(res);
        }
    }
}

impl OpCode for RecvMulti {
    const NAME: &'static str = "recv";

    fn complete_orphan(&mut self, res: i32, flags: u32) {
        if let Some(bid) = crate::driver::buffer_id(flags) {
            // The kernel filled a buffer for a receive nobody reads: back to the pool.
            tracing::trace!(
                bytes = res,
                "bytes received for a dropped reader are discarded"
            );
            self.pool.give_back(bid);
        }
    }
}

impl OpCode for RecvMsgMulti {
    const NAME: &'static str = "recvmsg";

    fn complete_orphan(&mut self, _res: i32, flags: u32) {
        if let Some(bid) = crate::driver::buffer_id(flags) {
            self.pool.give_back(bid);
        }
    }
}

impl<B: crate::buf::IoBuf> OpCode for SendTo<B> {
    const NAME: &'static str = "sendmsg";
}

impl<B: crate::buf::IoBufMut> OpCode for RecvFrom<B> {
    const NAME: &'static str = "recvmsg";
}

#[cfg(unix)]
impl<B: crate::buf::IoBuf> OpCode for SendFds<B> {
    const NAME: &'static str = "sendmsg";
}

#[cfg(unix)]
impl<B: crate::buf::IoBufMut> OpCode for RecvFds<B> {
    const NAME: &'static str = "recvmsg";

    fn complete_orphan(&mut self, res: i32, _flags: u32) {
        if res >= 0 {
            // Nobody waits for these descriptors any more: close them rather than leak them.
            // SAFETY: the receive succeeded and this is its one completion.
            let (fds, _) = unsafe { self.take_fds() };
            tracing::debug!(
                fds = fds.len(),
                "descriptors received for a dropped recv_fds are closed"
            );
        }
    }
}

impl<B: crate::buf::IoBufMut> OpCode for ReadAt<B> {
    const NAME: &'static str = "read";
}

impl OpCode for Splice {
    const NAME: &'static str = "splice";
}

#[cfg(unix)]
impl OpCode for PollWritable {
    const NAME: &'static str = "poll";
}

impl OpCode for Connect {
    const NAME: &'static str = "connect";
}

impl<B: crate::buf::IoBufMut> OpCode for Recv<B> {
    const NAME: &'static str = "recv";
}

impl<B: crate::buf::IoBuf> OpCode for Send<B> {
    const NAME: &'static str = "send";
}

impl<B: crate::buf::IoBuf> OpCode for SendVectored<B> {
    const NAME: &'static str = "sendmsg";
}

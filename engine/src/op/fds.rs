//! Passing descriptors over a Unix stream socket: sendmsg and recvmsg with `SCM_RIGHTS`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::buf::{IoBuf, IoBufMut, spare_of};
use crate::driver::SharedFd;
use crate::sys::fds::{control_words, take_rights, write_rights};

/// Send `buf` with descriptors attached to its first byte.
pub(crate) struct SendFds<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
    parts: Box<FdParts>,
    /// Duplicates of the descriptors sent, kept open until the kernel has read the message:
    /// the caller may close its own the moment this op is dropped.
    _held: Vec<OwnedFd>,
}

/// What the kernel reads (send) or writes (receive) besides the buffer, in one allocation.
///
/// INVARIANT: boxed and never moved out; `msg` points at `iov` and `control` inside the same
/// box, and `iov` at the buffer's heap memory. All stay until the last completion.
struct FdParts {
    msg: libc::msghdr,
    iov: libc::iovec,
    control: Vec<u64>,
}

impl FdParts {
    fn new(base: *mut u8, len: usize, control_words: usize) -> Box<FdParts> {
        let mut parts = Box::new(FdParts {
            // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no control).
            msg: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: base.cast(),
                iov_len: len,
            },
            control: vec![0; control_words],
        });
        let FdParts { msg, iov, control } = &mut *parts;
        msg.msg_iov = iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = (control.len() * 8) as _;
        parts
    }
}

impl<B: IoBuf> SendFds<B> {
    /// `held`: the descriptors to send, owned by the op until it completes.
    pub(crate) fn new(fd: SharedFd, buf: B, held: Vec<OwnedFd>) -> Self {
        let raw: Vec<RawFd> = held.iter().map(|f| f.as_raw_fd()).collect();
        let mut parts = FdParts::new(
            buf.stable_ptr().cast_mut(),
            buf.bytes_init(),
            control_words(raw.len()),
        );
        let FdParts { msg, control, .. } = &mut *parts;
        write_rights(msg, control, &raw);
        SendFds {
            fd,
            buf,
            parts,
            _held: held,
        }
    }

    /// The message header the kernel reads.
    pub(crate) fn msghdr(&self) -> &libc::msghdr {
        &self.parts.msg
    }
}

/// Receive into the spare capacity of `buf`, with the descriptors that come along.
pub(crate) struct RecvFds<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
    parts: Box<FdParts>,
}

impl<B: IoBufMut> RecvFds<B> {
    /// Room for up to `max_fds` descriptors.
    pub(crate) fn new(fd: SharedFd, mut buf: B, max_fds: usize) -> Self {
        let (base, room) = spare_of(&mut buf);
        let parts = FdParts::new(base, room, control_words(max_fds.max(1)));
        RecvFds { fd, buf, parts }
    }

    /// The message header the kernel fills.
    pub(crate) fn msghdr_mut(&mut self) -> &mut libc::msghdr {
        &mut self.parts.msg
    }

    /// Takes the descriptors a successful receive brought, and whether some were cut off
    /// (more came than there was room for; the kernel closed those).
    ///
    /// # Safety
    ///
    /// Only after the receive succeeded, and once: the control data is the kernel's and its
    /// descriptors are owned by nobody until taken here.
    pub(crate) unsafe fn take_fds(&mut self) -> (Vec<OwnedFd>, bool) {
        // SAFETY: the caller says the receive completed, so the kernel wrote the control data.
        let fds = unsafe { take_rights(&self.parts.msg) };
        self.parts.msg.msg_controllen = 0;
        let cut = self.parts.msg.msg_flags & libc::MSG_CTRUNC != 0;
        (fds, cut)
    }
}

//! File operations.

use crate::buf::IoBufMut;
use crate::driver::SharedFd;

/// Read into the spare capacity of `buf` from `offset`.
pub(crate) struct ReadAt<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
    pub(crate) offset: u64,
}

impl<B: IoBufMut> ReadAt<B> {
    /// Where the kernel writes and how much room there is.
    pub(crate) fn spare(&mut self) -> (*mut u8, u32) {
        let (ptr, room) = crate::buf::spare_of(&mut self.buf);
        (ptr, room.min(u32::MAX as usize) as u32)
    }
}

/// Wait until `fd` can be written (a socket a splice or sendfile found full).
#[cfg(unix)]
pub(crate) struct PollWritable {
    pub(crate) fd: SharedFd,
}

/// Move up to `len` bytes from `fd_in` (at `off_in` for a file, `None` for a pipe) into
/// `fd_out`, one of the two being a pipe: the kernel copies pages, user space sees none.
#[cfg_attr(
    not(target_os = "linux"),
    allow(
        dead_code,
        reason = "used by the io_uring backend, which only Linux has"
    )
)]
pub(crate) struct Splice {
    pub(crate) fd_in: SharedFd,
    pub(crate) off_in: Option<u64>,
    pub(crate) fd_out: SharedFd,
    pub(crate) len: u32,
}

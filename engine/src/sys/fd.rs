//! Owned file descriptors shared between a handle and the operations in flight on it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// A descriptor owned by a socket handle and, while they run, by its in-flight operations.
///
/// Each op keeps a clone, so the descriptor is closed only after the handle is gone *and* the
/// kernel has posted the last completion for it: a number the kernel may still act on is never
/// closed and handed out again.
#[derive(Clone, Debug)]
pub(crate) struct SharedFd {
    inner: Rc<OwnedFd>,
}

impl SharedFd {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        SharedFd { inner: Rc::new(fd) }
    }

    /// Takes ownership of a raw descriptor returned by the kernel (an accept result).
    ///
    /// # Safety
    ///
    /// `fd` must be an open descriptor that nothing else owns.
    pub(crate) unsafe fn from_raw(fd: RawFd) -> Self {
        // SAFETY: the caller hands over sole ownership of an open descriptor.
        Self::new(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl SharedFd {
    /// A duplicate descriptor for calls that want ownership (fstat through std).
    pub(crate) fn as_owned_clone(&self) -> std::io::Result<OwnedFd> {
        self.inner.try_clone()
    }
}

/// A pipe `(read end, write end)`, close-on-exec, blocking (io_uring splices through it from
/// its worker threads). Made as large as the system allows, up to `bytes`.
pub(crate) fn pipe(bytes: usize) -> std::io::Result<(SharedFd, SharedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe(2) just returned two new descriptors nobody else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&r, &w] {
        // SAFETY: plain fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    #[cfg(target_os = "linux")]
    // SAFETY: plain fcntl; a refusal (above the system's maximum) keeps the default size.
    unsafe {
        libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int)
    };
    let _ = bytes;
    Ok((SharedFd::new(r), SharedFd::new(w)))
}

impl Drop for SharedFd {
    fn drop(&mut self) {
        if Rc::strong_count(&self.inner) == 1 {
            // The last owner: the descriptor closes right after this; the driver lets go first.
            crate::runtime::context::forget_fd(self.raw());
        }
    }
}

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

/// Closes a raw descriptor the engine owns but never wrapped (an accept that completed after
/// its future was dropped). Errors from close are not actionable: the number is released
/// either way on Linux.
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: the caller owns `fd` (the kernel just returned it to us) and nothing else refers
    // to it; wrapping it in `OwnedFd` closes it exactly once.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

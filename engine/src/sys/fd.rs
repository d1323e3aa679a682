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

//! The descriptor the engine shares between a handle (socket, listener, file) and the
//! operations in flight on it, and the driver's part in closing it.

use std::rc::Rc;

use crate::sys::fd::{OwnedSocket, RawDesc, owned_socket, raw_of_file, raw_of_socket};

/// What a [`SharedFd`] owns.
#[derive(Debug)]
enum Desc {
    Socket(OwnedSocket),
    /// On Unix files are plain descriptors like sockets; kept apart so Windows closes them
    /// with the right call.
    File(std::fs::File),
}

/// A descriptor owned by a socket or file handle and, while they run, by its in-flight
/// operations.
///
/// Each op keeps a clone, so the descriptor is closed only after the handle is gone *and* the
/// kernel has posted the last completion for it: a number the kernel may still act on is never
/// closed and handed out again.
#[derive(Clone, Debug)]
pub(crate) struct SharedFd {
    inner: Rc<Desc>,
}

impl SharedFd {
    /// Takes ownership of a socket (a `socket2::Socket`, a std listener or stream).
    pub(crate) fn socket(socket: impl Into<OwnedSocket>) -> Self {
        SharedFd {
            inner: Rc::new(Desc::Socket(socket.into())),
        }
    }

    /// Takes ownership of an open file.
    pub(crate) fn file(file: std::fs::File) -> Self {
        SharedFd {
            inner: Rc::new(Desc::File(file)),
        }
    }

    /// Takes ownership of the socket an accept returned, as its result carries it (a
    /// non-negative `i32`; Windows handle values fit in 32 bits, which Windows documents for
    /// 32/64-bit interoperability).
    ///
    /// # Safety
    ///
    /// `res` must be an open socket that nothing else owns.
    pub(crate) unsafe fn from_accepted(res: u32) -> Self {
        // SAFETY: the caller hands over sole ownership of an open socket.
        Self::socket(unsafe { owned_socket(res) })
    }

    pub(crate) fn raw(&self) -> RawDesc {
        match &*self.inner {
            Desc::Socket(s) => raw_of_socket(s),
            Desc::File(f) => raw_of_file(f),
        }
    }

    /// Socket options of a socket handle (streams, listeners, datagram sockets only hold
    /// sockets; files never reach here).
    pub(crate) fn sock(&self) -> socket2::SockRef<'_> {
        match &*self.inner {
            Desc::Socket(s) => socket2::SockRef::from(s),
            Desc::File(_) => unreachable!("socket options asked of a file"),
        }
    }

    /// The file's metadata (one `statx`, on the descriptor itself: no duplicate to open and
    /// close).
    pub(crate) fn file_metadata(&self) -> std::io::Result<std::fs::Metadata> {
        match &*self.inner {
            Desc::File(f) => f.metadata(),
            Desc::Socket(_) => Err(std::io::ErrorKind::InvalidInput.into()),
        }
    }
}

impl Drop for SharedFd {
    fn drop(&mut self) {
        if Rc::strong_count(&self.inner) == 1 {
            // The last owner: the descriptor closes right after this; the driver lets go first.
            super::forget_fd(self.raw());
        }
    }
}

//! Descriptors as each platform has them: Unix names sockets, files and pipes with one kind
//! of descriptor; Windows has socket handles (`SOCKET`) and file handles, closed by different
//! calls. The raw value is the compat layer's `RawSource` on every platform. The descriptor
//! the engine shares between a handle and its operations in flight is `driver::SharedFd`.

pub(crate) use coring_compat::sys::RawSource as RawDesc;

/// An owned socket: `OwnedFd` on Unix, `OwnedSocket` on Windows.
#[cfg(unix)]
pub(crate) type OwnedSocket = std::os::fd::OwnedFd;
#[cfg(windows)]
pub(crate) use std::os::windows::io::OwnedSocket;

/// An owned descriptor of any kind (the io_uring driver's ring and eventfd on Linux).
#[cfg(unix)]
pub(crate) type OwnedDesc = std::os::fd::OwnedFd;
#[cfg(windows)]
pub(crate) type OwnedDesc = std::os::windows::io::OwnedHandle;

/// The raw value of an owned descriptor.
#[cfg_attr(
    not(target_os = "linux"),
    allow(
        dead_code,
        reason = "used by the io_uring backend, which only Linux has"
    )
)]
pub(crate) fn raw_of(desc: &OwnedDesc) -> RawDesc {
    #[cfg(unix)]
    {
        std::os::fd::AsRawFd::as_raw_fd(desc)
    }
    #[cfg(windows)]
    {
        std::os::windows::io::AsRawHandle::as_raw_handle(desc) as usize as RawDesc
    }
}

/// The raw value of a socket (a `socket2::Socket` before the engine takes it).
#[cfg(unix)]
pub(crate) fn raw_of_socket(socket: &impl std::os::fd::AsRawFd) -> RawDesc {
    socket.as_raw_fd()
}

/// The raw value of a socket (a `socket2::Socket` before the engine takes it).
#[cfg(windows)]
pub(crate) fn raw_of_socket(socket: &impl std::os::windows::io::AsRawSocket) -> RawDesc {
    socket.as_raw_socket()
}

/// The raw value of a file.
pub(crate) fn raw_of_file(file: &std::fs::File) -> RawDesc {
    #[cfg(unix)]
    {
        std::os::fd::AsRawFd::as_raw_fd(file)
    }
    #[cfg(windows)]
    {
        std::os::windows::io::AsRawHandle::as_raw_handle(file) as usize as RawDesc
    }
}

/// # Safety
///
/// `res` must be an open socket that nothing else owns.
pub(crate) unsafe fn owned_socket(res: u32) -> OwnedSocket {
    #[cfg(unix)]
    // SAFETY: per the caller's contract.
    unsafe {
        std::os::fd::FromRawFd::from_raw_fd(res as RawDesc)
    }
    #[cfg(windows)]
    // SAFETY: per the caller's contract.
    unsafe {
        std::os::windows::io::FromRawSocket::from_raw_socket(RawDesc::from(res))
    }
}

/// A pipe `(read end, write end)`, close-on-exec, blocking (io_uring splices through it from
/// its worker threads). Made as large as the system allows, up to `bytes`. Linux: the io_uring
/// backend's `send_file` splices through it.
#[cfg(target_os = "linux")]
pub(crate) fn pipe(bytes: usize) -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2(2) writes; O_CLOEXEC is set
    // atomically with their creation (no separate fcntl per end).
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2(2) just returned two new descriptors nobody else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: plain fcntl; a refusal (above the system's maximum) keeps the default size.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int) };
    // A pipe end is read and written like a file.
    Ok((std::fs::File::from(r), std::fs::File::from(w)))
}

/// Closes a socket the engine owns but never wrapped (an accept that completed after its
/// future was dropped), as its result carries it. Errors from close are not actionable: the
/// number is released either way.
#[cfg_attr(
    not(target_os = "linux"),
    allow(
        dead_code,
        reason = "used by the io_uring backend, which only Linux has"
    )
)]
pub(crate) fn close_accepted(res: i32) {
    // SAFETY: the caller owns the socket (the kernel just returned it to us) and nothing else
    // refers to it; wrapping it closes it exactly once.
    drop(unsafe { owned_socket(res as u32) });
}

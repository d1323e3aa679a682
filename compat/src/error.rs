//! The portable error kind and the translation of OS error codes into it.
//!
//! Every backend maps its codes here (errno on Unix; WSA codes on Windows when that backend
//! lands), so code above sees one vocabulary and the raw code stays available next to it.

use std::io;

/// What went wrong, independent of the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer reset the connection (ECONNRESET).
    ConnectionReset,
    /// Nobody listens at the address (ECONNREFUSED).
    ConnectionRefused,
    /// The connection was aborted locally (ECONNABORTED).
    ConnectionAborted,
    /// Writing to a connection whose peer has gone (EPIPE).
    BrokenPipe,
    /// The socket is not connected (ENOTCONN).
    NotConnected,
    /// The address is already bound (EADDRINUSE).
    AddrInUse,
    /// The address is not local (EADDRNOTAVAIL).
    AddrNotAvailable,
    /// The network or host cannot be reached (ENETUNREACH, EHOSTUNREACH).
    Unreachable,
    /// A deadline passed before the operation completed.
    TimedOut,
    /// The operation was cancelled (ECANCELED) without a deadline being involved.
    Cancelled,
    /// The operation would block; only seen on the readiness path.
    WouldBlock,
    /// A signal interrupted the call (EINTR).
    Interrupted,
    /// An argument was not valid (EINVAL, EBADF, ENOTSOCK, …).
    InvalidInput,
    /// The operation is not permitted (EPERM, EACCES), seccomp filters included.
    PermissionDenied,
    /// The kernel or platform lacks the feature (ENOSYS, EOPNOTSUPP).
    Unsupported,
    /// Out of kernel memory or buffer space (ENOMEM, ENOBUFS).
    OutOfMemory,
    /// The process or system ran out of file descriptors (EMFILE, ENFILE).
    TooManyOpenFiles,
    /// A file or path does not exist (ENOENT).
    NotFound,
    /// The peer closed before all expected bytes arrived.
    UnexpectedEof,
    /// What arrived is not what the operation can take (a message with more descriptors
    /// than there was room for, say).
    InvalidData,
    /// A write accepted zero bytes.
    WriteZero,
    /// The runtime is shutting down or the API was used outside a coring core.
    RuntimeUnavailable,
    /// Anything else; the raw OS code says more.
    Other,
}

/// The portable kind of a raw OS error code (a positive errno).
#[cfg(unix)]
pub fn kind_of_os(code: i32) -> ErrorKind {
    use ErrorKind::*;
    match code {
        libc::ECONNRESET => ConnectionReset,
        libc::ECONNREFUSED => ConnectionRefused,
        libc::ECONNABORTED => ConnectionAborted,
        libc::EPIPE => BrokenPipe,
        libc::ENOTCONN => NotConnected,
        libc::EADDRINUSE => AddrInUse,
        libc::EADDRNOTAVAIL => AddrNotAvailable,
        libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN => Unreachable,
        libc::ETIMEDOUT | libc::ETIME => TimedOut,
        libc::ECANCELED => Cancelled,
        libc::EAGAIN | libc::EINPROGRESS | libc::EALREADY => WouldBlock,
        libc::EINTR => Interrupted,
        libc::EINVAL | libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EISCONN => InvalidInput,
        libc::EPERM | libc::EACCES => PermissionDenied,
        libc::ENOSYS | libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => Unsupported,
        libc::ENOMEM | libc::ENOBUFS => OutOfMemory,
        libc::EMFILE | libc::ENFILE => TooManyOpenFiles,
        libc::ENOENT => NotFound,
        _ => Other,
    }
}

/// The portable kind of a raw OS error code (a Winsock `WSAE*` code or a Win32 `ERROR_*`).
#[cfg(windows)]
pub fn kind_of_os(code: i32) -> ErrorKind {
    use ErrorKind::*;
    use windows_sys::Win32::Foundation as f;
    use windows_sys::Win32::Networking::WinSock as ws;
    match code {
        ws::WSAECONNRESET | ws::WSAENETRESET => ConnectionReset,
        ws::WSAECONNREFUSED => ConnectionRefused,
        ws::WSAECONNABORTED => ConnectionAborted,
        ws::WSAESHUTDOWN => BrokenPipe,
        ws::WSAENOTCONN => NotConnected,
        ws::WSAEADDRINUSE => AddrInUse,
        ws::WSAEADDRNOTAVAIL => AddrNotAvailable,
        ws::WSAENETUNREACH | ws::WSAEHOSTUNREACH | ws::WSAENETDOWN => Unreachable,
        ws::WSAETIMEDOUT => TimedOut,
        ws::WSA_OPERATION_ABORTED => Cancelled,
        ws::WSAEWOULDBLOCK | ws::WSAEINPROGRESS | ws::WSAEALREADY => WouldBlock,
        ws::WSAEINTR => Interrupted,
        ws::WSAEINVAL | ws::WSAEBADF | ws::WSAENOTSOCK | ws::WSAEFAULT | ws::WSAEISCONN => {
            InvalidInput
        }
        ws::WSAEACCES => PermissionDenied,
        ws::WSAEOPNOTSUPP | ws::WSAEAFNOSUPPORT | ws::WSAEPROTONOSUPPORT => Unsupported,
        ws::WSAENOBUFS => OutOfMemory,
        ws::WSAEMFILE => TooManyOpenFiles,
        c => match c as u32 {
            f::ERROR_FILE_NOT_FOUND | f::ERROR_PATH_NOT_FOUND => NotFound,
            f::ERROR_ACCESS_DENIED => PermissionDenied,
            f::ERROR_NOT_ENOUGH_MEMORY | f::ERROR_OUTOFMEMORY => OutOfMemory,
            f::ERROR_TOO_MANY_OPEN_FILES => TooManyOpenFiles,
            f::ERROR_OPERATION_ABORTED => Cancelled,
            f::ERROR_NOT_SUPPORTED => Unsupported,
            f::ERROR_BROKEN_PIPE | f::ERROR_NO_DATA => BrokenPipe,
            _ => Other,
        },
    }
}

/// The portable kind of a `std::io::ErrorKind` (for errors without an OS code).
pub fn kind_of_io(kind: io::ErrorKind) -> ErrorKind {
    use io::ErrorKind as K;
    match kind {
        K::ConnectionReset => ErrorKind::ConnectionReset,
        K::ConnectionRefused => ErrorKind::ConnectionRefused,
        K::ConnectionAborted => ErrorKind::ConnectionAborted,
        K::BrokenPipe => ErrorKind::BrokenPipe,
        K::NotConnected => ErrorKind::NotConnected,
        K::AddrInUse => ErrorKind::AddrInUse,
        K::AddrNotAvailable => ErrorKind::AddrNotAvailable,
        K::TimedOut => ErrorKind::TimedOut,
        K::WouldBlock => ErrorKind::WouldBlock,
        K::Interrupted => ErrorKind::Interrupted,
        K::InvalidInput => ErrorKind::InvalidInput,
        K::PermissionDenied => ErrorKind::PermissionDenied,
        K::Unsupported => ErrorKind::Unsupported,
        K::OutOfMemory => ErrorKind::OutOfMemory,
        K::NotFound => ErrorKind::NotFound,
        K::UnexpectedEof => ErrorKind::UnexpectedEof,
        K::InvalidData => ErrorKind::InvalidData,
        K::WriteZero => ErrorKind::WriteZero,
        _ => ErrorKind::Other,
    }
}

/// The `std::io::ErrorKind` closest to a portable kind.
pub fn io_kind_of(kind: ErrorKind) -> io::ErrorKind {
    use io::ErrorKind as K;
    match kind {
        ErrorKind::ConnectionReset => K::ConnectionReset,
        ErrorKind::ConnectionRefused => K::ConnectionRefused,
        ErrorKind::ConnectionAborted => K::ConnectionAborted,
        ErrorKind::BrokenPipe => K::BrokenPipe,
        ErrorKind::NotConnected => K::NotConnected,
        ErrorKind::AddrInUse => K::AddrInUse,
        ErrorKind::AddrNotAvailable => K::AddrNotAvailable,
        ErrorKind::TimedOut => K::TimedOut,
        ErrorKind::WouldBlock => K::WouldBlock,
        ErrorKind::Interrupted => K::Interrupted,
        ErrorKind::InvalidInput => K::InvalidInput,
        ErrorKind::PermissionDenied => K::PermissionDenied,
        ErrorKind::Unsupported => K::Unsupported,
        ErrorKind::OutOfMemory => K::OutOfMemory,
        ErrorKind::NotFound => K::NotFound,
        ErrorKind::UnexpectedEof => K::UnexpectedEof,
        ErrorKind::InvalidData => K::InvalidData,
        ErrorKind::WriteZero => K::WriteZero,
        _ => K::Other,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn common_codes_map_to_their_kinds() {
        assert_eq!(kind_of_os(libc::ECONNRESET), ErrorKind::ConnectionReset);
        assert_eq!(kind_of_os(libc::EMFILE), ErrorKind::TooManyOpenFiles);
        assert_eq!(kind_of_os(libc::EAGAIN), ErrorKind::WouldBlock);
        assert_eq!(kind_of_io(io::ErrorKind::TimedOut), ErrorKind::TimedOut);
        assert_eq!(io_kind_of(ErrorKind::BrokenPipe), io::ErrorKind::BrokenPipe);
    }
}

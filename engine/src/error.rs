//! The one error type of the engine.
//!
//! Every failing operation yields an [`Error`]: a portable [`ErrorKind`] that callers match on,
//! the raw OS code when the kernel produced one (errno on Unix, WSA codes on Windows later), and
//! the name of the operation that failed (`"recv"`, `"accept"`, `"io_uring_setup"`, …). It is
//! `Copy`, carries no allocation, and converts into [`std::io::Error`] so `?` works in code that
//! speaks `io::Result`.

use std::fmt;
use std::io;

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    /// A write accepted zero bytes.
    WriteZero,
    /// The runtime is shutting down or the API was used outside a coring core.
    RuntimeUnavailable,
    /// Anything else; the raw OS code says more.
    Other,
}

/// An engine error: a portable kind, the raw OS code if any, and the failing operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    os: Option<i32>,
    op: &'static str,
}

impl Error {
    /// An error of `kind` raised by `op`, with no OS code.
    pub const fn new(kind: ErrorKind, op: &'static str) -> Self {
        Error { kind, os: None, op }
    }

    /// The error for a raw OS code (a positive errno) returned by `op`.
    pub fn from_os(code: i32, op: &'static str) -> Self {
        Error {
            kind: kind_of_errno(code),
            os: Some(code),
            op,
        }
    }

    /// The error for the thread's last OS error, as left by a failed libc call made by `op`.
    pub fn last_os(op: &'static str) -> Self {
        Self::from_io(io::Error::last_os_error(), op)
    }

    /// Converts a `std::io::Error` raised by `op`, keeping its OS code.
    pub fn from_io(err: io::Error, op: &'static str) -> Self {
        match err.raw_os_error() {
            Some(code) => Self::from_os(code, op),
            None => Error {
                kind: kind_of_io(err.kind()),
                os: None,
                op,
            },
        }
    }

    /// The portable kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The raw OS code (errno), when the error came from the kernel.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.os
    }

    /// The operation that failed.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The same error with another kind, keeping code and op (a cancelled op whose deadline
    /// passed becomes `TimedOut`).
    pub(crate) fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("op", &self.op);
        if let Some(code) = self.os {
            d.field("os", &code);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.os {
            Some(code) => write!(
                f,
                "{} failed: {} (os error {code})",
                self.op,
                io::Error::from_raw_os_error(code)
                    .to_string()
                    .split(" (os error")
                    .next()
                    .unwrap_or("")
            ),
            None => write!(f, "{} failed: {:?}", self.op, self.kind),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        match err.os {
            // Keeping the raw code lets `io::Error::raw_os_error` and `kind` work as usual.
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(io_kind_of(err.kind), err),
        }
    }
}

fn kind_of_errno(code: i32) -> ErrorKind {
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

fn kind_of_io(kind: io::ErrorKind) -> ErrorKind {
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
        K::InvalidInput | K::InvalidData => ErrorKind::InvalidInput,
        K::PermissionDenied => ErrorKind::PermissionDenied,
        K::Unsupported => ErrorKind::Unsupported,
        K::OutOfMemory => ErrorKind::OutOfMemory,
        K::NotFound => ErrorKind::NotFound,
        K::UnexpectedEof => ErrorKind::UnexpectedEof,
        K::WriteZero => ErrorKind::WriteZero,
        _ => ErrorKind::Other,
    }
}

fn io_kind_of(kind: ErrorKind) -> io::ErrorKind {
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
        ErrorKind::WriteZero => K::WriteZero,
        _ => K::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_keeps_code_kind_and_op() {
        let e = Error::from_os(libc::ECONNRESET, "recv");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
        assert_eq!(e.op(), "recv");
        let io: io::Error = e.into();
        assert_eq!(io.raw_os_error(), Some(libc::ECONNRESET));
        assert!(e.to_string().starts_with("recv failed"));
    }

    #[test]
    fn kind_without_code_survives_io_conversion() {
        let e = Error::new(ErrorKind::TimedOut, "connect");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
        assert_eq!(Error::from_io(io, "connect").kind(), ErrorKind::TimedOut);
    }
}

//! The one error type of the engine.
//!
//! Every failing operation yields an [`Error`]: a portable [`ErrorKind`] that callers match on,
//! the raw OS code when the kernel produced one (errno on Unix, WSA codes on Windows later), and
//! the name of the operation that failed (`"recv"`, `"accept"`, `"io_uring_setup"`, …). It is
//! `Copy`, carries no allocation, and converts into [`std::io::Error`] so `?` works in code that
//! speaks `io::Result`.

use std::fmt;
use std::io;

pub use coring_compat::ErrorKind;
use coring_compat::error::{io_kind_of, kind_of_io, kind_of_os};

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
            kind: kind_of_os(code),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_keeps_code_kind_and_op() {
        // The platform's own code for a reset connection (errno, or WSAECONNRESET).
        #[cfg(unix)]
        let reset = libc::ECONNRESET;
        #[cfg(windows)]
        let reset = 10054;
        let e = Error::from_os(reset, "recv");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        assert_eq!(e.raw_os_error(), Some(reset));
        assert_eq!(e.op(), "recv");
        let io: io::Error = e.into();
        assert_eq!(io.raw_os_error(), Some(reset));
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
